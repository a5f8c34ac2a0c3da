/**
 * onceq as `npm pack` makes it, once per test process: the package test and the example app
 * test both install this one tarball. The folder holding it is removed when the process exits.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ensureBuilt, ROOT } from './build.js';

const run = promisify(execFile);

/** The repository's own TypeScript compiler, by absolute path, for projects that install none. */
export const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

export interface Packed {
  /** Absolute path of the `.tgz`, for `npm install <path>` or a `file:` dependency. */
  tarball: string;
  /** What the tarball holds, as `npm pack --json` lists it. */
  files: { path: string }[];
}

let packing: Promise<Packed> | undefined;

/** Builds `dist/` when stale, packs it once, and resolves with the tarball. */
export function packOnce(): Promise<Packed> {
  packing ??= (async () => {
    await ensureBuilt();
    const dir = mkdtempSync(path.join(tmpdir(), 'onceq-pack-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    // dist/ is fresh (ensureBuilt), so the pack need not build again through `prepare`.
    const { stdout } = await run(
      'npm',
      ['pack', '--json', '--ignore-scripts', '--pack-destination', dir],
      { cwd: ROOT, timeout: 60_000 },
    );
    const [info] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
    return { tarball: path.join(dir, info!.filename), files: info!.files };
  })().catch((err: unknown) => {
    packing = undefined;
    throw err;
  });
  return packing;
}
