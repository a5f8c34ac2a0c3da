/**
 * A server that loses its script cache while a connection believes its scripts are loaded
 * (a node restarted empty behind a cluster connection, a `SCRIPT FLUSH`): every call of a
 * script still runs. ioredis answers one NOSCRIPT by sending the script again, but that resend
 * can itself meet a cache flushed again (or an EVAL a cluster refused before running it, which
 * leaves the connection marked as loaded): onceq then retries the call, which is safe because a
 * NOSCRIPT reply means the script did not run. A private redis-server, flushed in a loop.
 */
import { expect } from 'chai';
import { createRedis, closeRedis } from '../../src/redis/connection.js';
import { runScript } from '../../src/redis/scripts.js';
import { startPrivateRedis, type PrivateRedis } from '../support/redis-server.js';

describe('redis: scripts under a script cache that keeps being flushed', function () {
  this.timeout(60_000);
  let server: PrivateRedis;
  before(async () => {
    server = await startPrivateRedis();
  });
  after(async () => {
    await server?.stop();
  });

  it('runs every call, none failing with NOSCRIPT', async () => {
    const redis = createRedis({ url: server.url });
    const flusher = createRedis({ url: server.url });
    let flushing = true;
    const flushes = (async () => {
      let n = 0;
      while (flushing) {
        await flusher.script('FLUSH');
        n++;
        await new Promise((r) => setImmediate(r));
      }
      return n;
    })();
    const failures: string[] = [];
    try {
      for (let round = 0; round < 40; round++) {
        const calls = Array.from({ length: 100 }, (_, i) =>
          runScript(redis, 'renew', [`t:{x}:${round}:${i}`], ['owner', 1000]).catch((err) => {
            failures.push(String((err as Error).message));
          }),
        );
        await Promise.all(calls);
      }
    } finally {
      flushing = false;
      const n = await flushes;
      expect(n).to.be.greaterThan(10);
      await closeRedis(flusher);
      await closeRedis(redis);
    }
    expect(failures.filter((f) => f.includes('NOSCRIPT'))).to.deep.equal([]);
  });
});
