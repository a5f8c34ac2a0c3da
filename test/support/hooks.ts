/**
 * Root hooks: create the test database once, and fail the run if any test left a socket, a
 * child process or a timer behind: a suite that needs `--exit` to stop is hiding a leak.
 */
import { ensureDatabase } from '../../src/db/migrate.js';
import { TEST_DATABASE_URL } from './env.js';

const LEAKY = new Set(['TCPSocketWrap', 'TCPWRAP', 'ProcessWrap', 'PipeWrap', 'Timeout']);

export const mochaHooks = {
  async beforeAll(this: Mocha.Context) {
    this.timeout(30_000);
    await ensureDatabase(TEST_DATABASE_URL);
  },
  async afterAll(this: Mocha.Context) {
    this.timeout(10_000);
    // Give closed sockets a moment to release their handles.
    for (let i = 0; i < 50; i++) {
      if (leaked().length === 0) return;
      await new Promise((r) => setTimeout(r, 100).unref());
    }
    const left = leaked();
    if (left.length > 0) {
      throw new Error(`tests leaked resources: ${left.join(', ')}`);
    }
  },
};

function leaked(): string[] {
  // Unref'd timers and Mocha's own are not leaks; getActiveResourcesInfo lists only ref'd ones.
  return process.getActiveResourcesInfo().filter((r) => LEAKY.has(r));
}
