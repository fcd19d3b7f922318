// PostgreSQL for the Postgres Changes tests: a fresh database per test on the throwaway cluster that
// scripts/test starts (HERALD_TEST_DATABASE_URL), with the Supabase roles, and a private cluster for
// tests that restart PostgreSQL (scripts/throwaway-postgres, HERALD_TEST_PG_SCRIPT overrides it).
// The npm `pg` client is loaded from the calling suite's node_modules (tests/compat by default).
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SCRIPT_MS = 120_000;
const DROP_MS = 15_000;

let pgModule;
/** The npm `pg` module, from the current suite's node_modules or tests/compat's. */
function pg() {
  if (pgModule) return pgModule;
  for (const base of [process.cwd(), join(REPO_ROOT, 'tests', 'compat')]) {
    try {
      pgModule = createRequire(join(base, 'package.json'))('pg');
      return pgModule;
    } catch {
      // Not installed there.
    }
  }
  throw new Error('the npm package `pg` is not installed: run `npm ci` in tests/compat');
}

/** The URL of the cluster the tests use; throws when scripts/test did not provide one. */
export function testDatabaseUrl() {
  const url = process.env.HERALD_TEST_DATABASE_URL;
  if (!url) {
    throw new Error('HERALD_TEST_DATABASE_URL is not set: run scripts/test, which starts a throwaway PostgreSQL');
  }
  return url;
}

/** `url` with its database replaced by `database`. */
function withDatabase(url, database) {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

const ident = (name) => `"${name.replaceAll('"', '""')}"`;

/** Connects a pg.Client to `url`; an error on an idle connection (e.g. a server restart) is kept, not thrown. */
async function connect(url) {
  const { Client } = pg();
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  client.broken = null;
  client.on('error', (err) => {
    client.broken = err;
  });
  client.on('end', () => {
    client.broken ??= new Error('connection ended');
  });
  await client.connect();
  return client;
}

/** Runs `fn(client)` on a short-lived connection to `url`. */
async function withClient(url, fn) {
  const client = await connect(url);
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Creates a cluster role unless it exists (tolerates another session creating it at the same time). */
async function ensureRole(client, name, options) {
  await client.query(`do $$
    begin
      if not exists (select 1 from pg_roles where rolname = '${name}') then
        create role ${ident(name)} ${options};
      end if;
    exception when duplicate_object or unique_violation then null;
    end $$`);
}

/**
 * Creates a database `herald_<label>_<random>` on HERALD_TEST_DATABASE_URL's cluster (or on
 * `baseUrl`), with the roles anon, authenticated (no BYPASSRLS) and service_role (BYPASSRLS), and
 * public tables readable by them. Returns { name, url, slot, query(text, params), close(), drop() }:
 * `slot` is a replication slot name for this database's Herald (`herald_<random>`), `query` runs on
 * one connection that is opened again after it broke, `drop()` ends every session of the database,
 * drops the slot when it exists and drops the database.
 */
export async function freshDatabase(label, { baseUrl } = {}) {
  const base = baseUrl ?? testDatabaseUrl();
  const suffix = randomBytes(5).toString('hex');
  const safeLabel = String(label).toLowerCase().replace(/[^a-z0-9_]+/g, '_').slice(0, 30);
  const name = `herald_${safeLabel}_${suffix}`;
  const slot = `herald_${suffix}`;
  const url = withDatabase(base, name);

  await withClient(base, async (admin) => {
    await ensureRole(admin, 'anon', 'nologin nobypassrls');
    await ensureRole(admin, 'authenticated', 'nologin nobypassrls');
    await ensureRole(admin, 'service_role', 'nologin bypassrls');
    await admin.query(`create database ${ident(name)}`);
  });
  await withClient(url, async (c) => {
    await c.query('grant usage on schema public to anon, authenticated, service_role');
    await c.query('alter default privileges in schema public grant all on tables to anon, authenticated, service_role');
    await c.query('alter default privileges in schema public grant all on sequences to anon, authenticated, service_role');
  });

  let conn = null;
  const session = async () => {
    if (conn && !conn.broken) return conn;
    if (conn) conn.end().catch(() => {});
    conn = null;
    conn = await connect(url);
    return conn;
  };
  const close = async () => {
    const c = conn;
    conn = null;
    if (c) await c.end().catch(() => {});
  };

  return {
    name,
    url,
    slot,
    /** Runs `text` with `params` on this database's connection; resolves the pg result. */
    async query(text, params) {
      const c = await session();
      return c.query(text, params);
    },
    /** A new connection of its own (for transactions beside the shared one); the caller ends it. */
    connect: () => connect(url),
    close,
    async drop() {
      await close();
      await withClient(base, async (admin) => {
        const deadline = Date.now() + DROP_MS;
        for (;;) {
          await admin.query(
            'select pg_terminate_backend(pid) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()',
            [name],
          );
          await admin.query(
            'select pg_terminate_backend(active_pid) from pg_replication_slots where slot_name = $1 and active_pid is not null',
            [slot],
          );
          try {
            await admin.query(
              'select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1',
              [slot],
            );
            await admin.query(`drop database if exists ${ident(name)} with (force)`);
            return;
          } catch (err) {
            // A terminated walsender may still hold the slot for a moment (55006: object in use).
            if (Date.now() > deadline) throw new Error(`could not drop ${name} / slot ${slot}: ${err.message}`);
          }
        }
      });
    },
  };
}

/** The script that runs a throwaway cluster. */
function pgScript() {
  return process.env.HERALD_TEST_PG_SCRIPT || join(REPO_ROOT, 'scripts', 'throwaway-postgres');
}

function runScript(args) {
  return new Promise((resolvePromise, reject) => {
    execFile(pgScript(), args, { timeout: SCRIPT_MS }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`${pgScript()} ${args.join(' ')} failed (${err.message}):\n${stderr}${stdout}`));
      } else {
        resolvePromise(stdout.trim().split('\n').pop());
      }
    });
  });
}

/**
 * Starts a private throwaway cluster in a new temporary directory (for tests that restart
 * PostgreSQL). Returns { url, dir, restart(), stop() }: restart() is a fast restart on the same port
 * that resolves once the server accepts connections again; stop() shuts it down and removes it.
 */
export async function startOwnPostgres() {
  const dir = await mkdtemp(join(tmpdir(), 'herald-pg-'));
  // The cluster runs as the postgres user when the tests run as root: it must reach dir/cluster.
  await chmod(dir, 0o755);
  const clusterDir = join(dir, 'cluster');
  let url;
  try {
    url = await runScript(['start', clusterDir]);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    url,
    dir: clusterDir,
    restart: () => runScript(['restart', clusterDir]),
    async stop() {
      try {
        await runScript(['stop', clusterDir]);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}
