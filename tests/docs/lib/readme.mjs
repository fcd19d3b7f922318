// Reads the README's fenced code blocks (with the section each stands in) and runs commands and
// snippets as printed: a shell line or block through bash from the repository root, a JavaScript
// snippet as an ES module in this package (so its imports resolve to the locked packages). Output is
// collected so a test can wait, with a deadline, for what the README says will appear.
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { waitFor } from '../../support/wait.mjs';

export const HERE = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = resolve(HERE, '../..');

/** The fenced blocks of a Markdown file: `{ lang, text, section }`, in order. */
export function fencedBlocks(path) {
  const blocks = [];
  let section = '';
  let open = null;
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (open) {
      if (line.startsWith('```')) {
        blocks.push(open);
        open = null;
      } else {
        open.text += `${line}\n`;
      }
      continue;
    }
    const heading = /^#{1,6}\s+(.*)$/.exec(line);
    if (heading) section = heading[1].trim();
    const fence = /^```(\w*)\s*$/.exec(line);
    if (fence) open = { lang: fence[1], text: '', section };
  }
  return blocks;
}

/** The one block of `lang` in `section` (throws when there is not exactly one). */
export function blockIn(blocks, section, lang) {
  const found = blocks.filter((b) => b.section === section && b.lang === lang);
  if (found.length !== 1) {
    throw new Error(`README: expected one ${lang} block in "${section}", found ${found.length}`);
  }
  return found[0].text;
}

/** A shell line without its trailing comment. */
export function withoutComment(line) {
  return line.replace(/\s+#.*$/, '').trim();
}

/** A running command: its output so far, and waits on it. */
export class Run {
  constructor(label, child) {
    this.label = label;
    this.child = child;
    this.stdout = '';
    this.stderr = '';
    this.exit = new Promise((resolveExit) => {
      child.on('exit', (code, signal) => resolveExit({ code, signal }));
    });
    child.stdout.on('data', (d) => {
      this.stdout += d;
    });
    child.stderr.on('data', (d) => {
      this.stderr += d;
    });
  }

  /** Waits until stdout contains `text` (a string or a RegExp); returns the match. */
  async waitForOutput(text, ms) {
    const test = () =>
      typeof text === 'string' ? this.stdout.includes(text) && text : this.stdout.match(text);
    return waitFor(
      async () => {
        if (this.exited) throw new Error(`${this.label} exited early:\n${this.output()}`);
        return test();
      },
      ms,
      () => `${JSON.stringify(String(text))} from ${this.label}; it printed:\n${this.output()}`,
    );
  }

  /** Waits for the command to end; returns its exit status. */
  async finished(ms) {
    const status = await waitFor(this.exit, ms, () => `${this.label} to finish:\n${this.output()}`);
    this.exited = true;
    return status;
  }

  output() {
    return `--- stdout\n${this.stdout.slice(-8000)}\n--- stderr\n${this.stderr.slice(-8000)}`;
  }

  /** Stops the command and everything it started (its process group). */
  async stop() {
    if (this.exited || this.child.exitCode !== null || this.child.signalCode !== null) return;
    try {
      process.kill(-this.child.pid, 'SIGTERM');
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-this.child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, 10_000);
    await this.exit;
    clearTimeout(timer);
    this.exited = true;
  }
}

/**
 * The environment a newcomer's shell has: this process's, without Herald's settings (which the test
 * runner may carry), plus `extra`.
 */
export function newcomerEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('HERALD_') && k !== 'DATABASE_URL' && k !== 'REDIS_URL') env[k] = v;
  }
  return { ...env, ...extra };
}

/** Starts `command` in its own process group, collecting its output. */
function start(label, command, args, cwd, env) {
  const child = spawn(command, args, { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const run = new Run(label, child);
  run.exit.then(() => {
    run.exited = true;
  });
  return run;
}

/** Runs a shell script (as printed in the README) from the repository root, in `env`. */
export function runShell(label, script, env = newcomerEnv()) {
  return start(label, 'bash', ['-euo', 'pipefail', '-c', script], REPO_ROOT, env);
}

/** Writes a JavaScript snippet into this package as a module and runs it with node. */
export function runModule(label, name, source, env = newcomerEnv()) {
  const dir = join(HERE, '.run');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, name);
  writeFileSync(file, source);
  return start(label, process.execPath, [file], HERE, env);
}

/** True when nothing listens on 127.0.0.1:`port`. */
export function portIsFree(port) {
  return new Promise((resolveFree) => {
    const srv = createServer();
    srv.once('error', () => resolveFree(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolveFree(true)));
  });
}
