/**
 * A private `redis-server` on a free loopback port, for the tests that must lose Redis data (a
 * restart without persistence, a restore from an older snapshot): the shared Redis is never
 * restarted or flushed. No persistence unless a snapshot is asked for; its folder is removed by
 * `stop()`, which after-hooks call.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, sleep } from '../../tools/support/child.js';
import { createRedis } from '../../src/redis/connection.js';

export interface PrivateRedis {
  readonly port: number;
  readonly url: string;
  /** Its working folder: `dump.rdb` lives here. */
  readonly dir: string;
  /** Starts the server (again) on the same port and folder, loading `dump.rdb` if there is one. */
  start(): Promise<void>;
  /** SIGKILLs the server: everything not in a snapshot is lost. */
  kill(): Promise<void>;
  /** Kills the server and removes its folder. */
  stop(): Promise<void>;
}

/** Starts a private redis-server and waits until it answers. */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'onceq-redis-'));
  let server: ChildProcess | undefined;

  async function start(): Promise<void> {
    server = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
      ],
      { stdio: 'ignore' },
    );
    const probe = createRedis({ url: `redis://127.0.0.1:${port}`, failFast: true });
    try {
      for (let i = 0; ; i++) {
        if ((await probe.ping().catch(() => '')) === 'PONG') break;
        if (i > 100) throw new Error(`the private redis-server on port ${port} did not start`);
        await sleep(50);
      }
    } finally {
      probe.disconnect();
    }
  }
  async function kill(): Promise<void> {
    const s = server;
    server = undefined;
    if (!s || s.exitCode !== null || s.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      s.once('exit', () => resolve());
      s.kill('SIGKILL');
    });
  }

  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    start,
    kill,
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
