/**
 * Worker ids on a Redis Cluster. The leases live in PostgreSQL, so what the cluster changes is
 * the upgrade guard, the one Redis key the id minting still reads (`<prefix>:~worker-ids`, the
 * previous version's lease hash, src/ids/legacy-lease-check.ts), in whatever slot it hashes to:
 * `createProducer` and `createWorker` on the cluster start, lease worker ids of their own and
 * mint with them (the producer its messages, the worker a follow-up); a live lease of the
 * previous version in that hash refuses both starts, as on one Redis
 * (test/cli/upgrade-guard.test.ts); expired ones do not.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import type { Cluster } from 'ioredis';
import { createProducer, createWorker, ErrorCode, OnceqError } from '../../src/index.js';
import { decodeSnowflake } from '../../src/core/snowflake.js';
import { legacyWorkerIdsKey } from '../../src/ids/legacy-lease-check.js';
import { closeRedis } from '../../src/redis/connection.js';
import {
  createTestSchema,
  deletePrefix,
  TEST_DATABASE_URL,
  uniqueName,
  type TestSchema,
} from '../support/env.js';
import { waitFor } from '../support/ledger.js';
import { sharedCluster, sharedClusterClient } from '../support/shared-cluster.js';
import { createFixtureTables, effectCounts, fixtureJobs } from '../fixtures/jobs.js';

describe('ids: worker ids on a Redis Cluster', function () {
  this.timeout(60_000);
  let redis: Cluster;
  let nodes: string[];
  let t: TestSchema;
  let prefix: string;

  before(async () => {
    nodes = (await sharedCluster()).nodesSpec.split(',');
    redis = await sharedClusterClient();
  });
  beforeEach(async () => {
    t = await createTestSchema('idclu', 4);
    await createFixtureTables(t.db);
    prefix = uniqueName('idclu');
  });
  afterEach(async () => {
    await deletePrefix(redis, prefix);
    await t.drop();
  });
  after(async () => closeRedis(redis));

  const options = () => ({
    redis: nodes,
    database: TEST_DATABASE_URL,
    schema: t.schema,
    prefix,
    jobs: fixtureJobs,
  });

  async function redisNowMs(): Promise<number> {
    const [s, us] = await redis.time();
    return Number(s) * 1000 + Math.floor(Number(us) / 1000);
  }

  /** The worker ids held in PostgreSQL now. */
  async function heldWorkerIds(): Promise<number[]> {
    const { rows } = await sql<{ worker_id: number }>`
      select worker_id from worker_id_leases where owner is not null and expires_at > now()
      order by worker_id`.execute(t.db);
    return rows.map((r) => r.worker_id);
  }

  it('createProducer and createWorker start, each minting under a worker id of its own', async () => {
    const producer = await createProducer(options());
    const worker = await createWorker({ ...options(), concurrency: 2 });
    try {
      const sent = await producer.enqueue('fixture.parent', { n: 1, throwAfter: false });
      const followUp = await waitFor('the follow-up applied', async () => {
        const counts = await effectCounts(t.db);
        return counts.size === 1 ? [...counts.keys()][0] : undefined;
      });
      const { rows } = await sql<{ result: { followUp: string } }>`
        select result from inbox where message_id = ${sent.messageId}`.execute(t.db);
      expect(rows[0]!.result.followUp).to.equal(followUp);
      const minted = [sent.messageId, followUp].map((id) => decodeSnowflake(id).workerId);
      expect(minted[0]).to.not.equal(minted[1]);
      expect(await heldWorkerIds()).to.deep.equal([...minted].sort((a, b) => a - b));
    } finally {
      await worker.close();
      await producer.close();
    }
    expect(await heldWorkerIds(), 'both leases given back').to.deep.equal([]);
  });

  it('a live lease of the previous version in the cluster refuses both starts; expired ones do not', async () => {
    const key = legacyWorkerIdsKey(prefix);
    await redis.hset(key, {
      epoch: 'e|1',
      '7': `old-host:123:abc|${(await redisNowMs()) + 30_000}`,
    });
    for (const start of [
      () => createProducer(options()),
      () => createWorker({ ...options(), concurrency: 1 }),
    ]) {
      const refusal = await start().then(
        async (started) => {
          await started.close();
          return undefined;
        },
        (err: unknown) => err,
      );
      expect(refusal).to.be.instanceOf(OnceqError);
      expect((refusal as OnceqError).code).to.equal(ErrorCode.WorkerIdUnavailable);
      expect((refusal as Error).message).to.match(
        /^processes of an older onceq still lease worker id 7 in Redis/,
      );
    }
    expect(await heldWorkerIds(), 'no id leased while refusing').to.deep.equal([]);

    await redis.hset(key, {
      '7': `old-host:123:abc|${(await redisNowMs()) - 1}`,
      '8': `|${(await redisNowMs()) - 1_000}`,
    });
    const producer = await createProducer(options());
    const worker = await createWorker({ ...options(), concurrency: 1 });
    try {
      const sent = await producer.enqueue('fixture.bump', { n: 2 });
      await waitFor('applied', async () => (await effectCounts(t.db)).get(sent.messageId) === 1);
    } finally {
      await worker.close();
      await producer.close();
    }
  });
});
