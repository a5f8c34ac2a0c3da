/**
 * Root hooks: create the test database once, and fail the run if any test left a socket, a
 * child process or a timer behind: a suite that needs `--exit` to stop is hiding a leak.
 * Resources alive when the run began (mocha's own stdio pipes, its hook timer) are the baseline.
 * In parallel mode each file runs as a root suite of its own in one of the worker processes, so
 * these run around every file.
 */
import { ensureDatabase } from '../../src/db/migrate.js';
import { BUILT_FOR_RUN, ensureBuilt } from './build.js';
import { TEST_DATABASE_URL } from './env.js';
import { stopSharedCluster } from './shared-cluster.js';

/**
 * Once, in mocha's own process before any file runs. In parallel mode (`npm test` runs two
 * processes) the build is made here, while nothing runs yet: two processes building `dist/` at
 * once, or one starting the compiled CLI while the other is half way through writing it, would
 * fail in ways that have nothing to do with the tests. A serial run builds when a test first
 * asks (`ensureBuilt()`), so that one file can be run without waiting for a build.
 */
export async function mochaGlobalSetup(): Promise<void> {
  const parallel = process.argv.some(
    (a) => a === '--parallel' || a === '-p' || a === '--parallel=true',
  );
  if (!parallel) return;
  await ensureBuilt();
  // Inherited by the worker processes, which mocha starts after this.
  process.env[BUILT_FOR_RUN] = '1';
}

const WATCHED = new Set(['TCPSocketWrap', 'TCPWRAP', 'ProcessWrap', 'PipeWrap', 'Timeout']);
let baseline = new Map<string, number>();

export const mochaHooks = {
  async beforeAll(this: Mocha.Context) {
    this.timeout(30_000);
    baseline = counts();
    await ensureDatabase(TEST_DATABASE_URL);
  },
  async afterAll(this: Mocha.Context) {
    this.timeout(20_000);
    await stopSharedCluster();
    // Mocha arms this hook's timer once the hook has returned its promise; that timer is not a
    // leak, and unref'd it is not counted.
    await new Promise((r) => setImmediate(r));
    (this.runnable() as unknown as { timer?: NodeJS.Timeout }).timer?.unref();
    // Give closed sockets a moment to release their handles.
    for (let i = 0; i < 50; i++) {
      if (leaked().length === 0) return;
      // A ref'd timer: with only unref'd ones left, Node could exit in the middle of this hook.
      await new Promise((r) => setTimeout(r, 100));
    }
    const left = leaked();
    if (left.length > 0) throw new Error(`tests leaked resources: ${left.join(', ')}`);
  },
};

function counts(): Map<string, number> {
  const result = new Map<string, number>();
  // Only ref'd resources are listed: unref'd timers and sockets cannot keep the process alive.
  for (const r of process.getActiveResourcesInfo()) {
    if (WATCHED.has(r)) result.set(r, (result.get(r) ?? 0) + 1);
  }
  return result;
}

function leaked(): string[] {
  const now = counts();
  const extra: string[] = [];
  for (const [kind, n] of now) {
    const more = n - (baseline.get(kind) ?? 0);
    if (more > 0) extra.push(`${more} × ${kind}`);
  }
  return extra;
}
