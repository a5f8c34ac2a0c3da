/**
 * The library in PostgreSQL-only mode, as a team uses it: `createWorker` and `createProducer`
 * given a `database` and no `redis`. One effect per message under repeated enqueues with one
 * token; nothing of onceq's in Redis; BullMQ's tables in the schema named by the prefix; the
 * readiness check, Bull Board and the queue metrics on that backend; and a process that would
 * run the same prefix in the other mode refused at start, naming the mode it would break.
 */
import { expect } from 'chai';
import { Type } from '@sinclair/typebox';
import { sql, type Generated } from 'kysely';
import type { Redis } from 'ioredis';
import {
  ConfigError,
  createProducer,
  createWorker,
  defineJob,
  migrateToLatest,
} from '../../src/index.js';
import { createDb, type Db } from '../../src/db/create-db.js';
import { closeRedis } from '../../src/redis/connection.js';
import { createPostgresBackend } from '../../src/queues/postgres-backend.js';
import { createIdService } from '../../src/ids/id-service.js';
import { createProducer as createCoreProducer } from '../../src/producer/producer.js';
import { JobRegistry } from '../../src/jobs/registry.js';
import { buildApp } from '../../src/http/build-app.js';
import { createMetrics } from '../../src/metrics/metrics.js';
import { addStateCollectors } from '../../src/metrics/state-collectors.js';
import { mintApiKey } from '../../src/core/api-key.js';
import { insertApiKey } from '../../src/db/api-keys.repository.js';
import {
  dropQueueSchema,
  testRedis,
  TEST_DATABASE_URL,
  TEST_REDIS_URL,
  uniqueName,
} from '../support/env.js';
import { waitFor } from '../support/ledger.js';
import { sample } from '../support/metrics.js';

interface AppDatabase {
  pg_notes: { id: string; body: string; version: Generated<number> };
}

const addNote = defineJob<AppDatabase>()({
  name: 'pg.note.add',
  queue: 'pg-notes',
  schema: Type.Object({ body: Type.String() }),
  async handle(ctx) {
    const inserted = await ctx.insertOnce('pg_notes', { id: ctx.messageId, body: ctx.data.body });
    return { inserted };
  },
});

describe('lib: PostgreSQL-only mode (no redis option)', function () {
  this.timeout(60_000);
  const schema = uniqueName('pgonly');
  const prefix = uniqueName('pgonly');
  const base = { database: TEST_DATABASE_URL, schema, prefix };
  let db: Db;
  let redis: Redis;

  before(async () => {
    redis = testRedis();
    await migrateToLatest({ database: TEST_DATABASE_URL, schema });
    db = createDb({ url: TEST_DATABASE_URL, schema });
    await sql`create table pg_notes (id text primary key, body text not null, version int not null default 1)`.execute(
      db,
    );
  });
  after(async () => {
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
    await dropQueueSchema(db, prefix);
    await db.destroy();
    await closeRedis(redis);
  });

  it('applies each message once under repeated enqueues, with nothing in Redis', async () => {
    const worker = await createWorker({ ...base, jobs: [addNote], concurrency: 4 });
    const producer = await createProducer({ ...base, jobs: [addNote] });
    try {
      const tokens = await Promise.all([1, 2, 3].map(() => producer.issueToken()));
      const first = await Promise.all(
        tokens.map((token, i) => producer.enqueue('pg.note.add', { body: `n${i}` }, { token })),
      );
      // Every token three more times, at once: replays of the first answers.
      const again = await Promise.all(
        tokens.flatMap((token, i) =>
          [1, 2, 3].map(() => producer.enqueue('pg.note.add', { body: `n${i}` }, { token })),
        ),
      );
      again.forEach((r, k) => {
        expect(r).to.include({ messageId: first[Math.floor(k / 3)]!.messageId, replayed: true });
      });
      await waitFor('the three messages applied', async () => {
        const { rows } = await sql<{ n: string }>`select count(*) as n from pg_notes`.execute(db);
        return rows[0]!.n === '3';
      });
      // The jobs are in BullMQ's tables in the prefix's schema, the tokens in onceq's schema.
      const { rows: jobs } = await sql<{ n: string }>`
        select count(*) as n from ${sql.id(prefix, 'job')}`.execute(db);
      expect(Number(jobs[0]!.n)).to.be.at.least(3);
      // Each token is marked done just after its message's commit, not with it: wait for the last.
      await waitFor('the three tokens done', async () => {
        const { rows: done } = await sql<{ n: string }>`
          select count(*) as n from message_tokens where state = 'done'`.execute(db);
        return done[0]!.n === '3';
      });
      expect(await redis.keys(`${prefix}*`)).to.deep.equal([]);
    } finally {
      await producer.close();
      await worker.close();
    }
    const { rows } = await sql<{ n: string }>`select count(*) as n from pg_notes`.execute(db);
    expect(rows[0]!.n).to.equal('3');
  });

  it('refuses to run the prefix in Redis mode once it ran on PostgreSQL alone', async () => {
    let error: unknown;
    await createProducer({ ...base, redis: TEST_REDIS_URL, jobs: [addNote] }).then(
      (p) => p.close(),
      (err: unknown) => (error = err),
    );
    expect(error).to.be.instanceOf(ConfigError);
    const [line] = (error as ConfigError).details;
    expect(line).to.include(`prefix ${prefix} runs on PostgreSQL alone`);
    expect(line).to.include('unset REDIS_URL');
    // Nothing was written for it: the recorded mode is still the first one.
    const { rows } = await sql<{ kind: string }>`
      select kind from queue_backends where prefix = ${prefix}`.execute(db);
    expect(rows).to.deep.equal([{ kind: 'postgres' }]);
  });

  it('refuses a prefix that cannot name a schema of its own for BullMQ, before writing anything', async () => {
    for (const bad of ['my-app', '1x', 'public', schema]) {
      let error: unknown;
      await createWorker({ ...base, prefix: bad, jobs: [addNote] }).then(
        (w) => w.close(),
        (err: unknown) => (error = err),
      );
      expect(error, bad).to.be.instanceOf(ConfigError);
      expect((error as ConfigError).details[0]).to.match(new RegExp(`^prefix ${bad}: .*BullMQ`));
      const { rows } = await sql<{ n: string }>`
        select count(*) as n from queue_backends where prefix = ${bad}`.execute(db);
      expect(rows[0]!.n, `${bad} recorded`).to.equal('0');
    }
  });

  it('serves /readyz, Bull Board and the queue metrics from the PostgreSQL backend', async () => {
    const backend = createPostgresBackend({ connection: TEST_DATABASE_URL, prefix });
    const ids = await createIdService(db);
    const producer = createCoreProducer({
      db,
      backend,
      registry: new JobRegistry([addNote]),
      ids,
    });
    const metrics = createMetrics();
    const removeCollectors = addStateCollectors(metrics, { db, backend, queues: ['pg-notes'] });
    const app = await buildApp({
      db,
      backend,
      producer,
      ids,
      metrics,
      adminQueues: { queues: ['pg-notes'] },
    });
    try {
      const minted = mintApiKey();
      await insertApiKey(db, { id: minted.id, principal: 'ops', hash: minted.hash, admin: true });
      const ready = await app.inject({ method: 'GET', url: '/readyz' });
      expect(ready.statusCode).to.equal(200);
      expect(ready.json()).to.deep.equal({
        status: 'ready',
        checks: { postgres: 'ok', ids: 'ok' },
      });
      // A waiting job (no worker runs now), seen by the board and the metrics.
      await producer.enqueue('pg.note.add', { body: 'waiting' });
      const board = await app.inject({
        method: 'GET',
        url: '/admin/queues/api/queues',
        headers: { authorization: `Bearer ${minted.key}` },
      });
      expect(board.statusCode).to.equal(200);
      const queues = (board.json() as { queues: { name: string; counts: { waiting: number } }[] })
        .queues;
      expect(queues.map((q) => q.name).sort()).to.deep.equal(['pg-notes', 'pg-notes.dlq']);
      expect(queues.find((q) => q.name === 'pg-notes')!.counts.waiting).to.equal(1);
      const exposition = await metrics.registry.metrics();
      expect(
        sample(exposition, 'onceq_queue_jobs', { queue: 'pg-notes', state: 'waiting' }),
      ).to.equal(1);
    } finally {
      await app.close();
      await removeCollectors();
      await producer.close();
      await ids.close();
      await backend.close();
    }
  });
});
