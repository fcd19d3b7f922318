// The examples of docs/ that can run here: every TOML block is a configuration `herald config check`
// accepts, and the EventSource example of docs/history.md receives broadcasts and, run again after
// messages were published while it was away, receives exactly those (its cursor in sessionStorage).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';

import { REPO_ROOT, blockIn, fencedBlocks, newcomerEnv, portIsFree, runModule, runShell } from './lib/readme.mjs';

const BIN = process.env.HERALD_BIN || join(REPO_ROOT, 'target', 'debug', 'herald');
const DOCS = join(REPO_ROOT, 'docs');
const STEP_MS = 30_000;
const ORIGIN = 'http://127.0.0.1:4000';
const scratch = mkdtempSync(join(tmpdir(), 'herald-docs-examples-'));

after(() => rmSync(scratch, { recursive: true, force: true }));

describe('docs/', () => {
  const tomlBlocks = readdirSync(DOCS)
    .filter((f) => f.endsWith('.md'))
    .flatMap((f) =>
      fencedBlocks(join(DOCS, f))
        .filter((b) => b.lang === 'toml')
        .map((b, i) => ({ ...b, file: f, index: i })),
    );

  test('there are configuration examples to check', () => {
    assert.ok(tomlBlocks.length >= 3, `found ${tomlBlocks.length} TOML blocks in docs/`);
  });

  for (const block of tomlBlocks) {
    test(`the TOML example in ${block.file} (${block.section}) is a valid configuration`, () => {
      const file = join(scratch, `${block.file}.${block.index}.toml`);
      writeFileSync(file, block.text);
      // The environment such a file is used with: a secret, as operations.md's environment file gives.
      const env = newcomerEnv({ HERALD_JWT_SECRET: 'a-secret-of-at-least-thirty-two-bytes-0123456789' });
      let out;
      try {
        out = execFileSync(BIN, ['config', 'check', '--config', file], { env, encoding: 'utf8', stdio: 'pipe' });
      } catch (e) {
        assert.fail(`herald config check refused it:\n${e.stdout}${e.stderr}\n--- the block:\n${block.text}`);
      }
      assert.match(out, /the configuration is valid/);
      assert.doesNotMatch(out, /warning/, out);
    });
  }

  test('the EventSource example of history.md receives broadcasts, and after a reconnect exactly what it missed', async () => {
    assert.ok(await portIsFree(4000), 'port 4000 is in use: the example connects to 127.0.0.1:4000');
    const data = join(scratch, 'data');
    const server = runShell('herald serve', `exec '${BIN}' serve --data-dir '${data}'`, newcomerEnv());
    try {
      const [, anon, serviceRole] = await server.waitForOutput(
        /anon token:\s+(\S+)\n\s+service_role token:\s+(\S+)\n/,
        STEP_MS,
      );
      const publish = async (topic, text) => {
        const res = await fetch(`${ORIGIN}/api/broadcast/${topic}/events/chat`, {
          method: 'POST',
          headers: { authorization: `Bearer ${serviceRole}`, 'content-type': 'application/json' },
          body: JSON.stringify({ text }),
        });
        assert.equal(res.status, 202, await res.text());
      };
      const code = blockIn(fencedBlocks(join(DOCS, 'history.md')), 'Server-Sent Events', 'js');
      const storage = join(scratch, 'session-storage.json');
      // What a browser tab provides: EventSource, and a sessionStorage that outlives a reconnect.
      const source = [
        "import { EventSource as Base } from 'eventsource'",
        "import { existsSync, readFileSync, writeFileSync } from 'node:fs'",
        `const FILE = ${JSON.stringify(storage)}`,
        'const kept = existsSync(FILE) ? JSON.parse(readFileSync(FILE, "utf8")) : {}',
        'globalThis.sessionStorage = { getItem: (k) => kept[k] ?? null, setItem: (k, v) => { kept[k] = String(v); writeFileSync(FILE, JSON.stringify(kept)) } }',
        "globalThis.EventSource = class extends Base { constructor(...a) { super(...a); this.addEventListener('ready', () => console.log('[ready]')) } }",
        `const ANON = '${anon}'`,
        code,
      ].join('\n');
      const first = runModule('the history.md example', 'history-sse.mjs', source);
      await first.waitForOutput('[ready]', STEP_MS);
      await publish('room1', 'one');
      await publish('room2', 'two');
      await first.waitForOutput("room1 chat { text: 'one' }", STEP_MS);
      await first.waitForOutput("room2 chat { text: 'two' }", STEP_MS);
      await first.stop();

      await publish('room1', 'missed while away');
      await publish('room2', 'also missed');
      const again = runModule('the history.md example, again', 'history-sse.mjs', source);
      try {
        await again.waitForOutput("room1 chat { text: 'missed while away' }", STEP_MS);
        await again.waitForOutput("room2 chat { text: 'also missed' }", STEP_MS);
        await again.waitForOutput('[ready]', STEP_MS);
        await publish('room1', 'live again');
        await again.waitForOutput("room1 chat { text: 'live again' }", STEP_MS);
        assert.ok(!again.stdout.includes("{ text: 'one' }"), `the reconnect replayed what it had seen:\n${again.output()}`);
        assert.ok(!again.stdout.includes('reload the state'), `the reconnect was not recovered:\n${again.output()}`);
      } finally {
        await again.stop();
      }
    } finally {
      await server.stop();
    }
  });
});
