/**
 * The compiled CLI for tests that run what users run (`node bin/onceq.js`): builds it once per
 * test process when `dist/` is missing or older than any of its inputs. A clean clone gets its
 * build from `npm ci` (`prepare`); after an edit, the first such test rebuilds (a few seconds).
 */
import { execFile } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/** The repository root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The published entry point. */
export const BIN = path.join(ROOT, 'bin', 'onceq.js');
/** A file every build writes. */
const BUILT = path.join(ROOT, 'dist', 'src', 'cli', 'index.js');
const INPUTS = [
  'src',
  'tools',
  'migrations',
  'package.json',
  'tsconfig.json',
  'tsconfig.build.json',
];

let building: Promise<void> | undefined;

/**
 * Set by the parallel run's global setup once it has built (test/support/hooks.ts), and seen by
 * the worker processes it starts: they never build. A build deletes `dist/` first, so a build
 * in one process would break the compiled children of the other for as long as it runs.
 */
export const BUILT_FOR_RUN = 'ONCEQ_TEST_BUILT_FOR_RUN';

/** Resolves once `dist/` is at least as new as the sources; builds it if not. */
export function ensureBuilt(): Promise<void> {
  building ??= (async () => {
    const newest = newestInput();
    if (builtAt() >= newest.mtimeMs) return;
    if (process.env[BUILT_FOR_RUN]) {
      // Built for this run, and an input changed since: said, and the build is used as it is.
      process.stderr.write(
        `test build: ${newest.file} is newer than dist/; not rebuilding mid-run\n`,
      );
      return;
    }
    await promisify(execFile)('npm', ['run', 'build'], { cwd: ROOT, timeout: 120_000 });
  })().catch((err: unknown) => {
    building = undefined;
    throw err;
  });
  return building;
}

let fresh = false;

/**
 * Whether `dist/` is up to date now, without building: child processes then run the compiled
 * code (about 0.4 s and 0.6 s of CPU less per start than the sources through tsx, for the
 * hundreds a run starts). Once true it stays true: the sources do not change during a run.
 */
export function isBuilt(): boolean {
  fresh ||= Boolean(process.env[BUILT_FOR_RUN]) || builtAt() >= newestInput().mtimeMs;
  return fresh;
}

function builtAt(): number {
  try {
    return statSync(BUILT).mtimeMs;
  } catch {
    return 0;
  }
}

function newestInput(): { mtimeMs: number; file: string } {
  let newest = { mtimeMs: 0, file: '' };
  const visit = (p: string) => {
    const st = statSync(p);
    if (st.isDirectory()) for (const name of readdirSync(p)) visit(path.join(p, name));
    else if (st.mtimeMs > newest.mtimeMs) newest = { mtimeMs: st.mtimeMs, file: p };
  };
  for (const input of INPUTS) visit(path.join(ROOT, input));
  return newest;
}
