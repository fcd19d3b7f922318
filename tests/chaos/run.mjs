// The chaos suite's runner: `node run.mjs [--short] [scenario ...]` runs the scenarios (restarts,
// drops, storm, slow, soak) one after another against Herald nodes they start themselves, prints
// each one's account, writes it to target/chaos/<scenario>.md, and exits non-zero when any
// scenario missed a goal it asserts.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { arch, cpus, release } from 'node:os';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const ALL = ['restarts', 'drops', 'storm', 'slow', 'soak'];
const args = process.argv.slice(2);
const short = args.includes('--short');
const picked = args.filter((a) => !a.startsWith('--'));
for (const p of picked) if (!ALL.includes(p)) throw new Error(`unknown scenario "${p}" (one of ${ALL.join(', ')})`);
const scenarios = picked.length ? picked : ALL;

const outDir = join(ROOT, 'target', 'chaos');
await mkdir(outDir, { recursive: true });
const machine = `Linux ${release()} ${arch()}, ${cpus().length} vCPU, node ${process.version}`;
let failed = 0;
for (const s of scenarios) {
  const mod = await import(`./scenarios/${s}.mjs`);
  const started = new Date();
  const t0 = Date.now();
  console.log(`\n==> ${s}${short ? ' (short)' : ''}: started ${started.toISOString()}`);
  let result;
  try {
    result = await mod.run(short);
  } catch (err) {
    result = { name: s, md: '', failures: [`the scenario threw: ${err?.stack ?? err}`] };
  }
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  const cmd = `scripts/chaos${short ? ' --short' : ''} ${s}`;
  const verdict = result.failures.length ? `FAILED:\n${result.failures.map((f) => `- ${f}`).join('\n')}` : 'passed';
  const report = [`### ${s}`, '', `\`${cmd}\`, ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC, ${machine}, ${secs} s`, '', result.md, '', verdict, ''].join('\n');
  console.log(report);
  await writeFile(join(outDir, `${s}${short ? '-short' : ''}.md`), report);
  if (result.data) await writeFile(join(outDir, `${s}${short ? '-short' : ''}.json`), JSON.stringify(result.data, null, 1));
  if (result.failures.length) failed += 1;
}
console.log(failed ? `\nchaos: ${failed} of ${scenarios.length} scenarios FAILED` : `\nchaos: all ${scenarios.length} scenarios passed`);
process.exit(failed ? 1 : 0);
