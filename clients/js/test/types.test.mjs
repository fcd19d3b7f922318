// The committed declarations in types/ are what tsc generates from the JSDoc today.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

test('types/ is up to date (npm run types)', () => {
  const out = mkdtempSync(join(tmpdir(), 'herald-types-'));
  try {
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const run = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.types.json', '--outDir', out], { cwd: root, encoding: 'utf8' });
    assert.equal(run.status, 0, run.stdout + run.stderr);
    const generated = readdirSync(out).sort();
    assert.deepEqual(readdirSync(join(root, 'types')).sort(), generated);
    for (const f of generated) {
      assert.equal(readFileSync(join(root, 'types', f), 'utf8'), readFileSync(join(out, f), 'utf8'), `types/${f} is stale: run npm run types`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
