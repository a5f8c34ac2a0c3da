/**
 * onceq on a Redis Cluster (3 masters, one replica each, on loopback): the library's `redis`
 * option as a node list (a cluster connection onceq opens and closes) and as a caller's ioredis
 * `Cluster` (left open), every queue's keys in one slot of its own and the queues on different
 * slots, one effect per message under a repeated enqueue, and bad node lists refused by name.
 * Real Redis Cluster and PostgreSQL, no stand-ins.
 */
import { expect } from 'chai';
import { Type } from '@sinclair/typebox';
import { sql, type Generated } from 'kysely';
import { Cluster as IoredisCluster, type Cluster } from 'ioredis';
import {
  ConfigError,
  createProducer,
  createWorker,
  defineJob,
  migrateToLatest,
} from '../../src/index.js';
import { createDb } from '../../src/db/create-db.js';
import { closeRedis } from '../../src/redis/connection.js';
import { bullmqPrefix } from '../../src/queues/redis-backend.js';
import { deletePrefix, TEST_DATABASE_URL, uniqueName } from '../support/env.js';
import { waitFor } from '../support/ledger.js';
import { sharedCluster, sharedClusterClient } from '../support/shared-cluster.js';
import type { RedisCluster } from '../../tools/support/redis-cluster.js';

interface AppDatabase {
  cluster_notes: { id: string; body: string; version: Generated<number> };
}

/** A note job: one insert keyed by the messageId (so a second delivery adds nothing). */
function noteJob<Name extends string>(
  name: Name,
  queue: string,
  extra: { queues?: string[]; partitions?: number },
) {
  return defineJob<AppDatabase>()({
    name,
    queue,
    ...extra,
    schema: Type.Object({ body: Type.String() }),
    async handle(ctx) {
      const inserted = await ctx.insertOnce('cluster_notes', {
        id: ctx.messageId,
        body: ctx.data.body,
      });
      return { inserted };
    },
  });
}

const note = noteJob('cluster.note.add', 'cluster-a', { queues: ['cluster-b'] });
const parted = noteJob('cluster.note.parted', 'cluster-p', { partitions: 6 });

/** Every key under `prefix` on every master of the cluster, with its slot. */
async function keysWithSlots(redis: Cluster, prefix: string): Promise<Map<string, number>> {
  const found = new Map<string, number>();
  for (const node of redis.nodes('master')) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      for (const key of keys) found.set(key, Number(await node.cluster('KEYSLOT', key)));
    } while (cursor !== '0');
  }
  return found;
}

describe('lib: onceq on a Redis Cluster', function () {
  this.timeout(60_000);
  const schema = uniqueName('clu');
  const prefix = uniqueName('clu');
  let cluster: RedisCluster;
  let redis: Cluster;
  /** The options every component of this suite shares, on the given cluster connection. */
  const connection = <R>(target: R) => ({
    redis: target,
    database: TEST_DATABASE_URL,
    schema,
    prefix,
  });

  before(async () => {
    cluster = await sharedCluster();
    redis = await sharedClusterClient();
    await migrateToLatest({ database: TEST_DATABASE_URL, schema });
    const db = createDb({ url: TEST_DATABASE_URL, schema });
    await sql`create table cluster_notes (id text primary key, body text not null, version int not null default 1)`.execute(
      db,
    );
    await db.destroy();
  });
  after(async () => {
    const db = createDb({ url: TEST_DATABASE_URL, schema });
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
    await db.destroy();
    if (redis) {
      await deletePrefix(redis, prefix);
      await closeRedis(redis);
    }
  });

  it('applies each message once, from a node list, with each queue in a slot of its own', async () => {
    const options = { ...connection(cluster.nodesSpec.split(',').slice(0, 2)), jobs: [note] };
    const producer = await createProducer(options);
    const worker = await createWorker({ ...options, concurrency: 5 });
    try {
      const token = await producer.issueToken();
      const first = await producer.enqueue('cluster.note.add', { body: 'a' }, { token });
      const again = await producer.enqueue('cluster.note.add', { body: 'a' }, { token });
      expect(again.messageId).to.equal(first.messageId);
      expect(again.replayed).to.equal(true);
      const other = await producer.enqueue(
        'cluster.note.add',
        { body: 'b' },
        { queue: 'cluster-b' },
      );
      const db = createDb({ url: TEST_DATABASE_URL, schema });
      try {
        const notes = () =>
          sql<{ id: string }>`select id from cluster_notes order by id`.execute(db);
        await waitFor('both notes written', async () => (await notes()).rows.length === 2);
        expect((await notes()).rows.map((r) => r.id)).to.deep.equal(
          [first.messageId, other.messageId].sort(),
        );
        const inbox = await sql<{ n: string }>`select count(*) as n from inbox`.execute(db);
        expect(Number(inbox.rows[0]!.n)).to.equal(2);
      } finally {
        await db.destroy();
      }

      // Every BullMQ key of a queue in the queue's slot; the two queues in different slots.
      const slots = await keysWithSlots(redis, prefix);
      const slotsOf = (queue: string) =>
        new Set(
          [...slots]
            .filter(([key]) => key.startsWith(`${bullmqPrefix(prefix, queue, true)}:`))
            .map(([, slot]) => slot),
        );
      const a = slotsOf('cluster-a');
      const b = slotsOf('cluster-b');
      expect(a.size).to.equal(1);
      expect(b.size).to.equal(1);
      expect([...a][0]).to.not.equal([...b][0]);
      // onceq's own keys (tokens) are one key per script: not under a queue's tag.
      const tokenKeys = [...slots.keys()].filter((k) => k.startsWith(`${prefix}:~token:`));
      expect(tokenKeys.length).to.be.at.least(2);
    } finally {
      await worker.close();
      await producer.close();
    }
  });

  it('spreads a partitioned queue over slots and masters, each message applied once', async () => {
    const options = { ...connection(cluster.nodesSpec.split(',')), jobs: [parted] };
    const producer = await createProducer(options);
    const worker = await createWorker({ ...options, concurrency: 6 });
    const db = createDb({ url: TEST_DATABASE_URL, schema });
    try {
      const sent = await Promise.all(
        Array.from({ length: 60 }, (_, i) =>
          producer.enqueue('cluster.note.parted', { body: `p${i}` }),
        ),
      );
      const ids = new Set(sent.map((s) => s.messageId));
      const applied = async () =>
        (await sql<{ id: string }>`select id from cluster_notes`.execute(db)).rows.filter((r) =>
          ids.has(r.id),
        ).length;
      await waitFor('the 60 notes written', async () => (await applied()) === 60);
      expect(await applied()).to.equal(60);
      // Six partitions, six slots; the slots on more than one master.
      const slots = await keysWithSlots(redis, prefix);
      const partitionSlots = new Set(
        [...slots]
          .filter(([key]) => key.startsWith(`${prefix}:{cluster-p#`))
          .map(([, slot]) => slot),
      );
      expect(partitionSlots.size).to.equal(6);
      const owners = new Set(
        await Promise.all(
          [...Array(6).keys()].map(
            async (i) => (await cluster.slotOwner(`${prefix}:{cluster-p#${i}}:x`)).port,
          ),
        ),
      );
      expect(owners.size).to.be.at.least(2);
    } finally {
      await db.destroy();
      await worker.close();
      await producer.close();
    }
  });

  it("uses a caller's Cluster and leaves it open", async () => {
    const own = await sharedClusterClient('onceq-test-own');
    try {
      const producer = await createProducer({ ...connection(own), jobs: [note] });
      await producer.enqueue('cluster.note.add', { body: 'c' });
      await producer.close();
      expect(own.status).to.equal('ready');
      expect(await own.ping()).to.equal('PONG');
    } finally {
      await closeRedis(own);
    }
  });

  it("refuses for a worker a caller's Cluster made with ioredis's ready check on", async () => {
    const nodes = cluster.nodes.map((n) => ({ host: n.host, port: n.port }));
    const redisOptions = { maxRetriesPerRequest: null };
    const checked = new IoredisCluster(nodes, { lazyConnect: true, redisOptions });
    try {
      await createWorker({ ...connection(checked), jobs: [note] });
      expect.fail('expected a ConfigError');
    } catch (err) {
      expect(err).to.be.instanceOf(ConfigError);
      expect((err as ConfigError).details).to.have.length(1);
      expect((err as ConfigError).details[0]).to.match(/^redis: .*`enableReadyCheck: false`$/);
      // Refused before anything was opened: the caller's connection was not even connected.
      expect(checked.status).to.equal('wait');
    } finally {
      checked.disconnect();
    }
    const unchecked = new IoredisCluster(nodes, {
      lazyConnect: true,
      enableReadyCheck: false,
      redisOptions,
    });
    try {
      const worker = await createWorker({ ...connection(unchecked), jobs: [note] });
      await worker.close();
    } finally {
      await closeRedis(unchecked);
    }
  });

  it('refuses a node list with an entry that is not host:port, naming it', async () => {
    try {
      await createProducer({
        ...connection(['127.0.0.1:7000', 'nope', { host: '127.0.0.1', port: 0 }]),
        jobs: [note],
      });
      expect.fail('expected a ConfigError');
    } catch (err) {
      expect(err).to.be.instanceOf(ConfigError);
      const details = (err as ConfigError).details;
      expect(details).to.have.length(2);
      expect(details[0]).to.equal(
        'redis: node 2 ("nope") is not host:port (an IPv6 address in brackets: [::1]:7000)',
      );
      expect(details[1]).to.include('node 3 ("127.0.0.1:0")');
    }
    try {
      await createProducer({ ...connection([]), jobs: [note] });
      expect.fail('expected a ConfigError');
    } catch (err) {
      expect((err as ConfigError).details).to.deep.equal([
        'redis: no nodes: expected host:port (an IPv6 address in brackets: [::1]:7000), …',
      ]);
    }
  });
});
