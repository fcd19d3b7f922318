// The servers the cases attack, each started through tests/support/herald-process.mjs with a canary
// of its own: development mode with default limits, production mode, one with small limits, and two
// with the per-client-address caps (directly and behind a trusted proxy).
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnHerald } from '../../support/herald-process.mjs';
import { Canary } from './canary.mjs';

export const METRICS_TOKEN = 'security-suite-metrics-token-7f3a9c1e5b';
export const PROD_ORIGIN = 'https://app.example';

/** Every server the suite may start: its secret, settings and what it is for. */
export const SERVERS = {
  dev: {
    about: 'development mode, default limits',
    secret: 'herald-security-dev-secret-0123456789-abcdefghij',
    env: {},
  },
  prod: {
    about: 'production mode (--production, 48-byte secret, metrics token, one listed CORS origin)',
    secret: 'herald-security-production-secret-0123456789-abcdefghijklmnop',
    env: { HERALD_PRODUCTION: 'true', HERALD_METRICS_TOKEN: METRICS_TOKEN, HERALD_CORS_ORIGINS: `["${PROD_ORIGIN}"]` },
  },
  small: {
    about: 'small limits',
    secret: 'herald-security-small-secret-0123456789-abcdefghij',
    env: {
      HERALD_MAX_CONNECTIONS: '20',
      HERALD_MAX_CHANNELS_PER_CONNECTION: '5',
      HERALD_MAX_JOINS_PER_SECOND: '10',
      HERALD_MAX_MESSAGES_PER_SECOND: '20',
      HERALD_MAX_HTTP_MESSAGES_PER_SECOND: '50',
      HERALD_MAX_HTTP_BATCH: '10',
      HERALD_MAX_FRAME_BYTES: '65536',
      HERALD_MAX_PAYLOAD_BYTES: '4096',
      HERALD_IDLE_TIMEOUT_SECS: '3',
      HERALD_OUTBOUND_QUEUE_FRAMES: '64',
      HERALD_MAX_PRESENCE_MEMBERS: '3',
    },
  },
  caps: {
    about: 'max_connections_per_ip = 4, max_channels = 10',
    secret: 'herald-security-caps-secret-0123456789-abcdefghij',
    env: { HERALD_MAX_CONNECTIONS_PER_IP: '4', HERALD_MAX_CHANNELS: '10' },
  },
  keys: {
    about: 'an RSA public key (jwt_keys_file), jwt_issuer, jwt_audience, allowed_origins = https://app.example',
    secret: 'herald-security-keys-secret-0123456789-abcdefghij',
    env: { HERALD_JWT_ISSUER: 'https://issuer.example', HERALD_JWT_AUDIENCE: 'realtime', HERALD_ALLOWED_ORIGINS: PROD_ORIGIN },
    claims: { iss: 'https://issuer.example', aud: 'realtime' },
    rsaKey: true,
  },
  proxy: {
    about: 'trusted_proxies = 127.0.0.1, max_connections_per_ip = 3',
    secret: 'herald-security-proxy-secret-0123456789-abcdefghij',
    env: { HERALD_TRUSTED_PROXIES: '127.0.0.1', HERALD_MAX_CONNECTIONS_PER_IP: '3' },
  },
};

/** Starts server `name` and its canary. */
export async function startServer(name) {
  const def = SERVERS[name];
  const env = { HERALD_LOG: 'info', ...def.env };
  let keyDir;
  let keys;
  if (def.rsaKey) {
    // The node's public key, in a file of its own; the suite keeps the private key to sign with.
    keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
    keyDir = mkdtempSync(join(tmpdir(), 'herald-security-keys-'));
    env.HERALD_JWT_KEYS_FILE = join(keyDir, 'rsa.pub');
    writeFileSync(env.HERALD_JWT_KEYS_FILE, keys.publicKey.export({ type: 'spki', format: 'pem' }));
  }
  const proc = await spawnHerald({ secret: def.secret, env, label: `herald-security-${name}` });
  const server = {
    ...proc,
    name,
    secret: def.secret,
    about: def.about,
    claims: def.claims ?? {},
    privateKey: keys?.privateKey,
    publicKeyPem: keys?.publicKey.export({ type: 'spki', format: 'pem' }),
    async stop() {
      try {
        await proc.stop();
      } finally {
        if (keyDir) rmSync(keyDir, { recursive: true, force: true });
      }
    },
  };
  server.canary = new Canary(server, name);
  await server.canary.start();
  return server;
}

/** Resident set size of `pid` in MB (VmRSS of /proc/<pid>/status), or null when unreadable. */
export function rssMb(pid) {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('VmRSS:'));
    return line ? Number(line.split(/\s+/)[1]) / 1024 : null;
  } catch {
    return null;
  }
}
