/**
 * The upgrade from worker-id leases in Redis to leases in PostgreSQL: a process of this version
 * must not mint ids beside a process of the previous one, which cannot see the PostgreSQL leases
 * and could hold the same worker id. The real CLI in child processes, against the real services;
 * the previous version's live lease is written as it wrote them (`owner|expiresAtMs` on Redis's
 * clock, in `<prefix>:~worker-ids`).
 */
import { expect } from 'chai';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import {
  createTestSchema,
  deletePrefix,
  testRedis,
  uniqueName,
  type TestSchema,
} from '../support/env.js';
import { closeRedis } from '../../src/redis/connection.js';
import { legacyWorkerIdsKey } from '../../src/ids/legacy-lease-check.js';

describe('cli: upgrade guard against the Redis worker-id leases', function () {
  this.timeout(60_000);
  const redis = testRedis();
  let t: TestSchema;
  let prefix: string;
  const children: WorkerChild[] = [];

  beforeEach(async () => {
    t = await createTestSchema('upgrade', 2);
    prefix = uniqueName('upgrade');
  });
  afterEach(async () => {
    await Promise.all(children.splice(0).map((c) => c.destroy()));
    await deletePrefix(redis, prefix);
    await t.drop();
  });
  after(async () => closeRedis(redis));

  async function redisNowMs(): Promise<number> {
    const [s, us] = await redis.time();
    return Number(s) * 1000 + Math.floor(Number(us) / 1000);
  }

  function run(args: string[]): WorkerChild {
    const child = spawnWorker({ schema: t.schema, prefix, args });
    children.push(child);
    return child;
  }

  it('onceq worker and onceq enqueue refuse to start beside a live Redis lease, in one line', async () => {
    await redis.hset(legacyWorkerIdsKey(prefix), {
      epoch: 'e|1',
      '7': `old-host:123:abc|${(await redisNowMs()) + 30_000}`,
    });
    for (const args of [
      ['worker'],
      ['enqueue', 'account.open', '--data', '{"owner":"a","openingBalance":1}'],
    ]) {
      const child = run(args);
      const { code } = await child.exited;
      expect(code, child.output()).to.equal(1);
      const lines = child.stderr().trim().split('\n');
      expect(lines, child.stderr()).to.have.length(1);
      expect(lines[0]).to.match(
        /^onceq: processes of an older onceq still lease worker id 7 in Redis/,
      );
      expect(child.stdout()).to.not.contain('worker started');
    }
    // Nothing was accepted while refusing.
    const accepted = await t.db.selectFrom('accepted_messages').select('message_id').execute();
    expect(accepted).to.deep.equal([]);
  });

  it('starts once the old leases have expired', async () => {
    await redis.hset(legacyWorkerIdsKey(prefix), {
      epoch: 'e|1',
      '7': `old-host:123:abc|${(await redisNowMs()) - 1}`,
      '8': `|${(await redisNowMs()) - 1_000}`,
    });
    const worker = run(['worker']);
    await worker.waitForOutput('worker started');
    worker.child.kill('SIGTERM');
    expect((await worker.exited).code, worker.output()).to.equal(0);
  });
});
