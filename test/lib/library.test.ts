/**
 * The library's entry points, from source: options checked at creation (one line per bad value,
 * the combinations config.ts refuses refused here too, naming the options), and a producer and a
 * worker made from one options object each, over connections given as URLs or as instances the
 * caller keeps: one effect per message under a repeated enqueue with the same token, and the
 * caller's ioredis and pg.Pool still open after both are closed. Real Redis and PostgreSQL.
 */
import { expect } from 'chai';
import { Type } from '@sinclair/typebox';
import { sql, type Generated } from 'kysely';
import pg from 'pg';
import type { Redis } from 'ioredis';
import {
  ConfigError,
  createProducer,
  createWorker,
  defineJob,
  migrateToLatest,
  migrations,
  ServiceUnreachableError,
  type WorkerOptions,
} from '../../src/index.js';
import * as api from '../../src/index.js';
import { createDb } from '../../src/db/create-db.js';
import { closeRedis } from '../../src/redis/connection.js';
import {
  deletePrefix,
  testRedis,
  TEST_DATABASE_URL,
  TEST_REDIS_URL,
  uniqueName,
} from '../support/env.js';
import { waitFor } from '../support/ledger.js';

interface AppDatabase {
  lib_notes: { id: string; body: string; version: Generated<number> };
}

const defineAppJob = defineJob<AppDatabase>();
const addNote = defineAppJob({
  name: 'lib.note.add',
  queue: 'lib-notes',
  schema: Type.Object({ body: Type.String() }),
  async handle(ctx) {
    const inserted = await ctx.insertOnce('lib_notes', { id: ctx.messageId, body: ctx.data.body });
    return { inserted };
  },
});

async function configError(make: () => Promise<unknown>): Promise<string[]> {
  try {
    await make();
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).details;
  }
  throw new Error('expected a ConfigError');
}

describe('lib: the onceq entry point', function () {
  this.timeout(60_000);
  const schema = uniqueName('lib');
  const prefix = uniqueName('lib');
  const base = { redis: TEST_REDIS_URL, database: TEST_DATABASE_URL, schema, prefix };
  let redis: Redis;

  before(async () => {
    redis = testRedis();
    const migrated = await migrateToLatest({ database: TEST_DATABASE_URL, schema });
    expect(migrated.map((m) => m.status)).to.satisfy((s: string[]) =>
      s.every((x) => x === 'Success'),
    );
    const db = createDb({ url: TEST_DATABASE_URL, schema });
    await sql`create table lib_notes (id text primary key, body text not null, version int not null default 1)`.execute(
      db,
    );
    await db.destroy();
  });
  after(async () => {
    const db = createDb({ url: TEST_DATABASE_URL, schema });
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
    await db.destroy();
    await deletePrefix(redis, prefix);
    await closeRedis(redis);
  });

  it('exports exactly the public API', () => {
    expect(Object.keys(api).sort()).to.deep.equal(
      [
        'ConfigError',
        'DEFAULT_QUEUE',
        'EnqueueOptionsError',
        'ErrorCode',
        'IdGeneratorStoppedError',
        'InvalidArgumentError',
        'MAX_PARTITIONS',
        'NestedTransactionError',
        'NonRetryableError',
        'OnceqError',
        'ServiceUnreachableError',
        'TokenLimitError',
        'TokenMismatchError',
        'ValidationError',
        'VersionConflictError',
        'WorkerIdUnavailableError',
        'createProducer',
        'createWorker',
        'defineJob',
        'migrateToLatest',
        'migrations',
        'traceLogFields',
      ].sort(),
    );
  });

  it('migrateToLatest runs nothing the second time; migrations lists the same names', async () => {
    expect(await migrateToLatest({ database: TEST_DATABASE_URL, schema })).to.deep.equal([]);
    const names = Object.keys(await migrations.getMigrations());
    expect(names.length).to.be.greaterThan(0);
    expect(names).to.deep.equal([...names].sort());
  });

  it('reports every bad worker option at once, one line each, naming the option', async () => {
    const lines = await configError(() =>
      createWorker({
        ...base,
        jobs: [addNote],
        concurrency: 0,
        lockDurationMs: 10,
        prefix: 'a:b',
        reconciler: { intervalMs: -1 },
        // A caller without types can still misspell an option.
        ...({ concurency: 5 } as object),
      } as WorkerOptions),
    );
    expect(lines).to.deep.equal([
      'concurency: not an option of createWorker',
      'prefix="a:b": expected letters, digits, _ . - (no ":" or braces)',
      'concurrency=0: expected an integer from 1 to 10000',
      'lockDurationMs=10: expected a whole number of milliseconds, at least 1000 (1s)',
      'reconciler.intervalMs=-1: expected a whole number of milliseconds, at least 100 (100ms)',
    ]);
  });

  it('checks the group commit options, naming each bad one', async () => {
    const lines = await configError(() =>
      createWorker({
        ...base,
        jobs: [addNote],
        groupCommit: {
          maxSize: 0,
          maxGroups: 0,
          lockTimeoutMs: 0,
          ...({ savepoints: 'yes', size: 5 } as object),
        },
      } as WorkerOptions),
    );
    expect(lines).to.deep.equal([
      'groupCommit.size: not an option of createWorker',
      'groupCommit.maxSize=0: expected an integer from 1 to 1000',
      'groupCommit.maxGroups=0: expected an integer from 1 to 100',
      'groupCommit.savepoints="yes": expected true or false',
      'groupCommit.lockTimeoutMs=0: expected an integer from 1 to 60000',
    ]);
  });

  it('refuses the combinations the CLI refuses, naming the options', async () => {
    const lines = await configError(() =>
      createWorker({
        ...base,
        jobs: [addNote],
        tokenTtlMs: 2 * 86_400_000,
        dedupeWindowMs: 86_400_000,
        statementTimeoutMs: 1_000,
        lockDurationMs: 5_000,
      }),
    );
    expect(lines).to.have.length(2);
    expect(lines[0]).to.match(/^tokenTtlMs=2d is longer than dedupeWindowMs=1d: /);
    expect(lines[1]).to.match(/^statementTimeoutMs=1s is shorter than lockDurationMs=5s: /);
    const grace = await configError(() =>
      createWorker({ ...base, jobs: [addNote], reconciler: { graceMs: 8 * 86_400_000 } }),
    );
    expect(grace).to.have.length(1);
    expect(grace[0]).to.match(
      /^reconciler.graceMs=8d is not shorter than dedupeWindowMs=7d \(the default\): /,
    );
    // With the reconciler off, its grace is no constraint.
    const producerLines = await configError(() =>
      createProducer({
        ...base,
        jobs: [addNote],
        tokenTtlMs: 2 * 86_400_000,
        dedupeWindowMs: 86_400_000,
      }),
    );
    expect(producerLines).to.have.length(1);
  });

  it('refuses a worker with no jobs or a job given twice: the library registers nothing else', async () => {
    expect(await configError(() => createWorker({ ...base, jobs: [] }))).to.deep.equal([
      'jobs: expected a non-empty array of job definitions (defineJob)',
    ]);
    expect(
      await configError(() => createWorker({ ...base, jobs: [addNote, addNote] })),
    ).to.deep.equal(['jobs[1]: job lib.note.add is given twice (job names are unique)']);
  });

  it('names the service that does not answer', async () => {
    try {
      await createProducer({ ...base, redis: 'redis://127.0.0.1:1', jobs: [addNote] });
      expect.fail('expected a ServiceUnreachableError');
    } catch (err) {
      expect(err).to.be.instanceOf(ServiceUnreachableError);
      expect((err as Error).message).to.match(/^Redis is not reachable at redis:\/\/127.0.0.1:1/);
    }
  });

  it('URL connections: one effect per message under a repeated enqueue with the same token', async () => {
    const worker = await createWorker({ ...base, jobs: [addNote], concurrency: 2 });
    const producer = await createProducer({ ...base, jobs: [addNote] });
    try {
      expect(worker.queues).to.deep.equal(['lib-notes']);
      const token = await producer.issueToken();
      const first = await producer.enqueue('lib.note.add', { body: 'once' }, { token });
      const again = await Promise.all(
        [1, 2, 3].map(() => producer.enqueue('lib.note.add', { body: 'once' }, { token })),
      );
      expect(first.replayed).to.equal(false);
      for (const r of again) {
        expect(r).to.include({ messageId: first.messageId, jobId: first.jobId, replayed: true });
      }
      const db = createDb({ url: TEST_DATABASE_URL, schema });
      try {
        await waitFor('the message applied', async () => {
          const row = await db
            .selectFrom('inbox')
            .select('message_id')
            .where('message_id', '=', first.messageId)
            .executeTakeFirst();
          return row !== undefined;
        });
        const { rows } = await sql<{ n: string }>`
          select count(*) as n from lib_notes where id = ${first.messageId}`.execute(db);
        expect(rows[0]!.n).to.equal('1');
      } finally {
        await db.destroy();
      }
    } finally {
      await producer.close();
      await worker.close();
    }
  });

  it("given connections: uses the caller's ioredis and pg.Pool and leaves them open", async () => {
    const own = testRedis();
    // BullMQ's workers need an instance that retries forever.
    const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 5 });
    try {
      const options = { redis: own, database: pool, schema, prefix, jobs: [addNote] };
      const worker = await createWorker({ ...options, reconciler: false, pruner: false });
      const producer = await createProducer(options).catch(async (err: unknown) => {
        await worker.close();
        throw err;
      });
      const result = await producer
        .enqueue('lib.note.add', { body: 'given' })
        .catch(async (err: unknown) => {
          await producer.close();
          await worker.close();
          throw err;
        });
      await waitFor('the note written', async () => {
        const { rows } = await pool.query(`select 1 from ${schema}.lib_notes where id = $1`, [
          result.messageId,
        ]);
        return rows.length === 1;
      });
      await producer.close();
      await worker.close();
      expect(await own.ping()).to.equal('PONG');
      expect((await pool.query('select 1 as one')).rows[0].one).to.equal(1);
    } finally {
      await closeRedis(own);
      await pool.end();
    }
  });
});
