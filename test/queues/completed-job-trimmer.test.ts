/**
 * The completed-job trimmer (src/queues/completed-job-trimmer.ts): BullMQ trims completed jobs
 * only when another job completes, so after a burst a quiet queue keeps every job; the trimmer
 * removes those past the retention, and with tokens of a short ttl Redis holds for the burst only
 * the queue's fixed keys. Counts of jobs and keys, not bytes: nothing here depends on timing but
 * "finished more than 1 ms ago".
 */
import { expect } from 'chai';
import { Queue, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { closeRedis } from '../../src/redis/connection.js';
import { messageJobOptions } from '../../src/queues/message-job-options.js';
import { startCompletedJobTrimmer } from '../../src/queues/completed-job-trimmer.js';
import { createTokenStore } from '../../src/redis/token-store.js';
import { tokenKey } from '../../src/redis/keys.js';
import { deletePrefix, testRedis, uniqueName } from '../support/env.js';
import { completeMessages } from '../support/redis-memory.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe('queues: completed-job trimmer', function () {
  this.timeout(30_000);
  let redis: Redis;
  let prefix: string;
  before(() => {
    redis = testRedis();
  });
  beforeEach(() => {
    prefix = uniqueName('trim');
  });
  afterEach(async () => deletePrefix(redis, prefix));
  after(async () => closeRedis(redis));

  /** Adds `count` message jobs and runs them to completion; returns the queue. */
  async function completedJobs(count: number, name = 'ledger'): Promise<Queue> {
    const queue = new Queue(name, { connection: redis, prefix });
    await queue.addBulk(
      Array.from({ length: count }, (_, i) => {
        const messageId = String(7_203_691_551_471_493_121n + BigInt(i));
        return { name: 'ledger.transfer', data: { messageId }, opts: messageJobOptions(messageId) };
      }),
    );
    const connection = testRedis();
    const worker = new Worker(name, async (job: Job) => ({ result: job.id }), {
      connection,
      prefix,
      concurrency: 20,
    });
    try {
      for (let i = 0; (await queue.getCompletedCount()) < count; i++) {
        if (i > 500) throw new Error('the jobs did not complete');
        await sleep(20);
      }
    } finally {
      await worker.close();
      await closeRedis(connection);
    }
    return queue;
  }

  it('removes the completed jobs past the retention that BullMQ keeps on a quiet queue', async () => {
    const queue = await completedJobs(50);
    try {
      // What BullMQ leaves: its age-based removal waits for the next completion.
      expect(await queue.getCompletedCount()).to.equal(50);
      const keep = startCompletedJobTrimmer({ queues: () => [queue], keepMs: 86_400_000 });
      expect(await keep.trim()).to.equal(0);
      await keep.close();

      await sleep(5);
      const trimmer = startCompletedJobTrimmer({ queues: () => [queue], keepMs: 1, batch: 7 });
      try {
        expect(await trimmer.trim()).to.equal(50);
      } finally {
        await trimmer.close();
      }
      expect(await queue.getCompletedCount()).to.equal(0);
      const jobKeys = await redis.keys(`${prefix}:ledger:m-*`);
      expect(jobKeys).to.deep.equal([]);
    } finally {
      await queue.close();
    }
  });

  it('with a short token ttl, leaves Redis holding only the queue’s fixed keys', async () => {
    const store = createTokenStore(redis, { prefix });
    const done = await completeMessages(store, 50, { ttlMs: 300, leaseMs: 300 });
    const queue = await completedJobs(50);
    const trimmer = startCompletedJobTrimmer({ queues: () => [queue], keepMs: 300, everyMs: 50 });
    try {
      for (let i = 0; ; i++) {
        const left = (await redis.keys(`${prefix}:*`)).filter(
          (k) => k.includes(':~') || /:m-\d+$/.test(k),
        );
        if (left.length === 0) break;
        if (i > 200) throw new Error(`still in Redis: ${left.length} keys`);
        await sleep(50);
      }
      expect(await redis.exists(tokenKey(prefix, done[0]!.token))).to.equal(0);
      expect(await queue.getCompletedCount()).to.equal(0);
    } finally {
      await trimmer.close();
      await queue.close();
    }
  });

  it('refuses a retention that is not a positive number of milliseconds', () => {
    for (const keepMs of [0, -1, 1.5, Number.NaN]) {
      expect(() => startCompletedJobTrimmer({ queues: () => [], keepMs })).to.throw(RangeError);
    }
  });
});
