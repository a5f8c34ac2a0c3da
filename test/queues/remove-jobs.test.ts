/**
 * `removeJobs` (src/queues/remove-jobs.ts, `lua/remove-jobs-10.lua`) against BullMQ's own
 * removal: the same jobs, in every state, removed from two queues, one by `queue.remove` one job
 * at a time and one by the batch; both queues must be left key for key the same.
 */
import { expect } from 'chai';
import { FlowProducer, Job, Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { closeRedis } from '../../src/redis/connection.js';
import { removeJobs } from '../../src/queues/remove-jobs.js';
import { deletePrefix, testRedis, uniqueName } from '../support/env.js';

describe('queues: removeJobs', function () {
  this.timeout(60_000);
  let redis: Redis;
  let prefix: string;
  before(() => {
    redis = testRedis();
  });
  beforeEach(() => {
    prefix = uniqueName('remove');
  });
  afterEach(async () => deletePrefix(redis, prefix));
  after(async () => closeRedis(redis));

  it('leaves each queue as queue.remove would, job by job, in every state', async () => {
    const names = ['remove-by-bullmq', 'remove-by-batch'] as const;
    const queues = names.map((name) => new Queue(name, { connection: redis, prefix }));
    const flows = new FlowProducer({ connection: redis, prefix });
    const workers = names.map(
      (name) => new Worker(name, null, { connection: redis, prefix, autorun: false }),
    );
    try {
      // The same jobs, in the same states, in both queues.
      for (const [i, queue] of queues.entries()) {
        const worker = workers[i]!;
        // Ids unlike BullMQ's own key names: a job `completed` would be the key of the set.
        await queue.add('j', {}, { jobId: 'j-active' });
        expect((await worker.getNextJob('lock-token'))!.id).to.equal('j-active');
        await queue.add('j', {}, { jobId: 'j-completed' });
        await (await worker.getNextJob('t'))!.moveToCompleted('done', 't', false);
        await queue.add('j', {}, { jobId: 'j-failed', attempts: 1 });
        await (await worker.getNextJob('t'))!.moveToFailed(new Error('boom'), 't', false);
        await queue.add('j', {}, { jobId: 'j-waiting' });
        await queue.add('j', {}, { jobId: 'j-logged' });
        await (await Job.fromId(queue, 'j-logged'))!.log('a line');
        await queue.add('j', {}, { jobId: 'j-delayed', delay: 60_000 });
        await queue.add('j', {}, { jobId: 'j-prioritized', priority: 5 });
        await queue.add('j', {}, { jobId: 'j-deduplicated', deduplication: { id: 'dedup' } });
        await flows.add({
          name: 'parent',
          queueName: queue.name,
          opts: { jobId: 'j-parent' },
          children: [{ name: 'child', queueName: queue.name, opts: { jobId: 'j-child' } }],
        });
        await flows.add({
          name: 'parent',
          queueName: queue.name,
          opts: { jobId: 'j-parent-2' },
          children: [{ name: 'child', queueName: queue.name, opts: { jobId: 'j-child-2' } }],
        });
      }
      const ids = [
        'j-active',
        'j-completed',
        'j-failed',
        'j-child-2',
        'j-waiting',
        'j-never-existed',
        'j-logged',
        'j-delayed',
        'j-prioritized',
        'j-deduplicated',
        'j-parent',
        'j-child',
        'j-parent-2',
      ];
      const byBullmq = await Promise.all(ids.map((id) => queues[0]!.remove(id)));
      const result = await removeJobs(redis, queues[1]!, ids);
      expect(byBullmq[0], 'a locked job stays').to.equal(0);
      expect(result.refused).to.deep.equal(['j-active']);
      expect(result.removed + result.missing + result.refused.length).to.equal(ids.length);
      expect(result.missing).to.be.at.least(1);

      const [left, right] = await Promise.all(
        queues.map((q) => dumpQueue(redis, `${prefix}:${q.name}:`, q.name)),
      );
      expect(right).to.deep.equal(left);
      expect(Object.keys(left!)).to.include('j-active').and.not.include('j-waiting');
    } finally {
      await Promise.all(workers.map((w) => w.close()));
      await flows.close();
      await Promise.all(queues.map((q) => q.close()));
    }
  });
});

async function keysMatching(redis: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...found);
  } while (cursor !== '0');
  return keys.sort();
}

/**
 * Every key of a queue and what it holds, with the queue's name and everything that differs
 * between two identical runs (times, stream ids, lock values) left out: key types, the members
 * of its lists, sets and sorted sets, the field names of its hashes, and its events as a
 * multiset (the batch removes in another order than one by one).
 */
async function dumpQueue(redis: Redis, keyPrefix: string, name: string) {
  const out: Record<string, unknown> = {};
  const anon = (text: string) => text.split(name).join('<queue>');
  for (const key of await keysMatching(redis, `${keyPrefix}*`)) {
    const type = await redis.type(key);
    let value: unknown;
    if (type === 'list') value = await redis.lrange(key, 0, -1);
    else if (type === 'zset') value = await redis.zrange(key, '0', '-1');
    else if (type === 'set') value = (await redis.smembers(key)).sort();
    else if (type === 'hash') value = Object.keys(await redis.hgetall(key)).sort();
    else if (type === 'stream') {
      value = (await redis.xrange(key, '-', '+'))
        .map(([, fields]) => {
          const f = new Map<string, string>();
          for (let i = 0; i < fields.length; i += 2) f.set(fields[i]!, fields[i + 1]!);
          return `${f.get('event')} ${f.get('jobId')} ${f.get('prev') ?? ''}`;
        })
        .sort();
    } else value = type;
    out[anon(key.slice(keyPrefix.length))] = JSON.parse(anon(JSON.stringify(value)));
  }
  return out;
}
