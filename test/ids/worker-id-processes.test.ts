/**
 * Worker ids across real processes: child processes (test/fixtures/id-minter.ts) that lease a
 * worker id from PostgreSQL and mint, started, paused (SIGSTOP), resumed and killed with real
 * signals; and an API on a private redis-server that is flushed and restarted (the shared Redis
 * is never touched). Each test has its own schema; leases are short (a couple of seconds).
 */
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { decodeSnowflake, encodeSnowflake, snowflakeTimeMs } from '../../src/core/snowflake.js';
import { createRedis } from '../../src/redis/connection.js';
import { createApiTest, type ApiTest } from '../support/api.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { createTestSchema, uniqueName, type TestSchema } from '../support/env.js';
import { startPrivateRedis, type PrivateRedis } from '../support/redis-server.js';

const MINTER = fileURLToPath(new URL('../fixtures/id-minter.ts', import.meta.url));
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs: number) {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(10);
  }
}

/** What a minter reported: its lease and the ids it printed, in order. */
function report(child: WorkerChild): {
  workerId: number;
  floorMs: number;
  ids: string[];
  stopped: string[];
} {
  const lines = child.stdout().split('\n');
  const leased = lines.find((l) => l.startsWith('leased '))?.split(' ');
  return {
    workerId: Number(leased?.[1]),
    floorMs: Number(leased?.[2]),
    ids: lines.filter((l) => l.startsWith('id ')).map((l) => l.slice(3)),
    stopped: lines.filter((l) => l.startsWith('stopped ')),
  };
}

function expectStrictlyIncreasing(ids: string[]): void {
  for (let i = 1; i < ids.length; i++) {
    if (!(BigInt(ids[i]!) > BigInt(ids[i - 1]!))) {
      expect.fail(`id #${i} ${ids[i]} is not above #${i - 1} ${ids[i - 1]}`);
    }
  }
}

describe('worker ids across processes', function () {
  this.timeout(60_000);

  describe('child processes leasing from PostgreSQL', () => {
    let t: TestSchema;
    let children: WorkerChild[];

    beforeEach(async () => {
      t = await createTestSchema('idproc', 2);
      children = [];
    });

    afterEach(async () => {
      await Promise.all(children.map((c) => c.destroy()));
      await t.drop();
    });

    function minter(env: Record<string, string>): WorkerChild {
      const child = spawnWorker({
        schema: t.schema,
        prefix: uniqueName('minter'),
        script: MINTER,
        args: [],
        env,
      });
      children.push(child);
      return child;
    }

    it('never lets two processes hold one worker id: six starting at once share three', async () => {
      const all = Array.from({ length: 6 }, () =>
        minter({ MINTER_MAX_WORKER_ID: '3', MINTER_TTL_MS: '3000' }),
      );
      await Promise.all(
        all.map((c) =>
          Promise.race([c.waitForOutput('\nid ', 30_000), c.waitForOutput('unavailable', 30_000)]),
        ),
      );
      const holders = all.filter((c) => c.stdout().includes('leased '));
      const refused = all.filter((c) => c.stdout().includes('unavailable'));
      expect(holders).to.have.length(3);
      expect(refused).to.have.length(3);
      for (const c of refused) expect((await c.exited).code).to.equal(3);
      const workerIds = holders.map((c) => report(c).workerId).sort();
      expect(workerIds).to.deep.equal([1, 2, 3]);
      await sleep(300);
      for (const c of holders) c.child.kill('SIGTERM');
      for (const c of holders) expect((await c.exited).code).to.equal(0);
      const ids = holders.flatMap((c) => report(c).ids);
      expect(ids.length).to.be.greaterThan(30);
      expect(new Set(ids).size).to.equal(ids.length);
      for (const c of holders) {
        const { workerId, ids: own } = report(c);
        expect(own.every((id) => decodeSnowflake(id).workerId === workerId)).to.equal(true);
      }
      const held = await t.db
        .selectFrom('worker_id_leases')
        .select('worker_id')
        .where('owner', 'is not', null)
        .execute();
      expect(held, 'released at SIGTERM').to.deep.equal([]);
    });

    it('a holder paused past its lease (SIGSTOP) mints nothing after SIGCONT; its taker mints above it', async () => {
      // A reservation far longer than the pause: only the lease check can stop the paused
      // holder, not the end of its reserved time.
      const env = {
        MINTER_MAX_WORKER_ID: '1',
        MINTER_TTL_MS: '2000',
        MINTER_HEARTBEAT_MS: '400',
        MINTER_RESERVE_MS: '20000',
      };
      const a = minter(env);
      await a.waitForOutput('\nid ');
      await sleep(300);
      a.child.kill('SIGSTOP');
      const stoppedAtMs = Date.now();
      await sleep(2_600); // past the lease's expiry in PostgreSQL
      const b = minter(env);
      await b.waitForOutput('\nid ');
      const taken = report(b);
      expect(taken.workerId).to.equal(1);
      a.child.kill('SIGCONT');
      await a.waitForOutput('stopped ');
      await sleep(500);

      const paused = report(a);
      // Every id the paused holder printed was minted before it was stopped: none after.
      expect(paused.ids.length).to.be.greaterThan(10);
      for (const id of paused.ids) expect(snowflakeTimeMs(id)).to.be.at.most(stoppedAtMs);
      expect(paused.stopped[0]).to.match(/no longer leased|taken by another process/);
      // The taker started at the paused holder's mark, above all of its ids.
      expect(taken.floorMs).to.be.greaterThan(snowflakeTimeMs(paused.ids.at(-1)!));
      const afterTaker = report(b).ids;
      expectStrictlyIncreasing([...paused.ids, ...afterTaker]);
      // And the paused holder stays stopped: its id is held, and it is the only one.
      await sleep(600);
      expect(report(a).ids).to.deep.equal(paused.ids);
    });

    it('after a crash and a restart with the clock set back an hour, ids rise above the mark', async () => {
      const env = { MINTER_MAX_WORKER_ID: '1', MINTER_TTL_MS: '1500', MINTER_HEARTBEAT_MS: '300' };
      const a = minter(env);
      await a.waitForOutput('\nid ');
      await sleep(500);
      a.child.kill('SIGKILL'); // no release: the row keeps its reservation
      await a.exited;
      const before = report(a).ids;
      const mark = Number(
        (
          await t.db
            .selectFrom('worker_id_leases')
            .select('reserved_until_ms')
            .where('worker_id', '=', 1)
            .executeTakeFirstOrThrow()
        ).reserved_until_ms,
      );
      expect(mark).to.be.greaterThan(snowflakeTimeMs(before.at(-1)!));
      await sleep(1_600); // the crashed holder's lease expires

      const b = minter({ ...env, MINTER_CLOCK_OFFSET_MS: String(-3_600_000) });
      await b.waitForOutput('\nid ');
      await sleep(300);
      const restarted = report(b);
      expect(restarted.workerId).to.equal(1);
      expect(restarted.floorMs).to.equal(mark);
      const first = restarted.ids[0]!;
      expect(
        BigInt(first) >= BigInt(encodeSnowflake({ timestampMs: mark, workerId: 1, sequence: 0 })),
      ).to.equal(true);
      expectStrictlyIncreasing([...before, ...restarted.ids]);
      expect(restarted.stopped).to.deep.equal([]);
    });
  });

  describe('a Redis flushed and restarted under a running API', () => {
    // A private redis-server without persistence: a restart loses everything, like a flush.
    let server: PrivateRedis;
    let t: ApiTest | undefined;

    before(async () => {
      server = await startPrivateRedis();
    });
    after(async () => {
      await t?.close();
      await server?.stop();
    });

    it('costs no 503 and no pause in minting', async () => {
      // The short lease the old Redis lease needed to fail fast: a loss was noticed within 100 ms.
      t = await createApiTest('idredis', {
        stack: { redisUrl: server.url, ids: { ttlMs: 1_500, heartbeatMs: 100 } },
      });
      const api = t;
      const alice = await api.key('alice');
      const ids = api.stack.ids;
      let notReady = 0;
      const sampler = setInterval(() => {
        if (!ids.isReady()) notReady++;
      }, 5);
      const statuses: number[] = [];
      /** Token and enqueue; undefined while Redis is down (no token can be issued). */
      async function request(): Promise<number | undefined> {
        const token = await api.token(alice).catch(() => undefined);
        if (token === undefined) return undefined;
        const res = await api.enqueue(alice, token, {
          name: 'account.open',
          data: { owner: 'a', openingBalance: 1 },
        });
        statuses.push(res.statusCode);
        return res.statusCode;
      }
      async function requestsFor(ms: number): Promise<void> {
        const until = performance.now() + ms;
        while (performance.now() < until) await request();
      }
      try {
        await requestsFor(500);
        const flush = createRedis({ url: server.url, failFast: true });
        await flush.connect();
        await flush.flushall();
        flush.disconnect();
        await requestsFor(2_000); // twenty heartbeats: the old lease was lost on the first

        await server.kill();
        const minted: string[] = [];
        for (let i = 0; i < 50; i++) {
          minted.push(ids.nextId()); // minting goes on while Redis is down
          await sleep(10);
        }
        expectStrictlyIncreasing(minted);
        await server.start();
        await waitUntil(async () => (await request()) !== undefined, 15_000);
        await requestsFor(2_000);
      } finally {
        clearInterval(sampler);
      }
      expect(statuses.length).to.be.greaterThan(20);
      expect(
        statuses.filter((s) => s !== 202),
        'answers other than 202',
      ).to.deep.equal([]);
      expect(notReady, 'samples in which the id service could not mint').to.equal(0);
    });
  });
});
