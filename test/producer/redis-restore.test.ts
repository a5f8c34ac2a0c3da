/**
 * Redis gone back in time: a private redis-server (the shared one is never restarted) saves a
 * snapshot, takes more writes, and is then restarted from the older dump.rdb, as a restore from a
 * backup or a promoted async replica would leave it. PostgreSQL's acceptance record is the truth:
 * the API answers from it, and Redis is rebound to it, so a message accepted before the restore
 * is applied exactly once and its replays keep their first answer.
 */
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import type { Redis } from 'ioredis';
import type { Job } from 'bullmq';
import { sleep } from '../../tools/support/child.js';
import { mintApiKey } from '../../src/core/api-key.js';
import { jobIdFor } from '../../src/core/message.js';
import type { DeliveryOutcome } from '../../src/core/outcome.js';
import { insertApiKey } from '../../src/db/api-keys.repository.js';
import { buildApp } from '../../src/http/build-app.js';
import { SnowflakeGenerator } from '../../src/ids/snowflake-generator.js';
import { ledgerJobs } from '../../src/jobs/examples/ledger/index.js';
import { JobRegistry } from '../../src/jobs/registry.js';
import { createProducer, type Producer } from '../../src/producer/producer.js';
import { closeRedis, createRedis } from '../../src/redis/connection.js';
import { startWorker, type OnceqWorker } from '../../src/worker/worker.js';
import { startPrivateRedis, type PrivateRedis } from '../support/redis-server.js';
import {
  createTestSchema,
  deletePrefix,
  uniqueName,
  type TestSchema,
  redisBackend,
} from '../support/env.js';

const BODY = { name: 'account.open', data: { owner: 'alice', openingBalance: 100 } };
const OTHER_BODY = { name: 'account.open', data: { owner: 'mallory', openingBalance: 1 } };

describe('producer: Redis restored from an older snapshot (private redis-server)', function () {
  this.timeout(60_000);
  let server: PrivateRedis;
  let t: TestSchema;
  let dropSchema: (() => Promise<void>) | undefined;
  let prefix: string;
  let apiKey: string;
  const registry = new JobRegistry([...ledgerJobs]);
  // Ids that no Redis can take away, so that the restore tests the token path alone.
  const ids = new SnowflakeGenerator({ workerId: 7 });
  const outcomes: { outcome: DeliveryOutcome; messageId: string }[] = [];

  /** The connections and components of one side of the restore; closed before it. */
  let redis: Redis | undefined;
  let producer: Producer | undefined;
  let app: FastifyInstance | undefined;
  let worker: OnceqWorker | undefined;

  /** Connects the producer, the API and (optionally) a worker to the private server. */
  async function connect(withWorker: boolean): Promise<void> {
    redis = createRedis({ url: server.url, connectionName: 'onceq-test' });
    await redis.connect();
    const backend = redisBackend(redis, prefix);
    producer = createProducer({ db: t.db, backend, registry, ids, backoffMs: 50 });
    app = await buildApp({ db: t.db, backend, producer, keyCacheMs: 0, rateLimit: false });
    await app.ready();
    if (withWorker) await startOwnWorker();
  }
  async function startOwnWorker(): Promise<void> {
    worker = await startWorker({
      db: t.db,
      backend: redisBackend(redis!, prefix),
      registry,
      concurrency: 4,
      lockDurationMs: 2_000,
      outbox: false,
      pruner: false,
      // Run by hand: it stands for the reconciler's pass that finds the job the restore lost.
      reconciler: { graceMs: 0, intervalMs: 3_600_000 },
      onOutcome: (outcome: DeliveryOutcome, job: Job) =>
        outcomes.push({ outcome, messageId: (job.data as { messageId: string }).messageId }),
    });
  }
  async function disconnect(): Promise<void> {
    await worker?.close(5_000);
    worker = undefined;
    await app?.close();
    app = undefined;
    await producer?.close();
    producer = undefined;
    if (redis) await closeRedis(redis);
    redis = undefined;
  }

  /** Snapshot now (SAVE), keep a copy; `restore()` restarts the server from that copy. */
  async function snapshot(): Promise<void> {
    await redis!.save();
    copyFileSync(join(server.dir, 'dump.rdb'), join(server.dir, 'older.rdb'));
  }
  async function restore(withWorker: boolean): Promise<void> {
    await disconnect();
    await server.kill();
    copyFileSync(join(server.dir, 'older.rdb'), join(server.dir, 'dump.rdb'));
    await server.start();
    await connect(withWorker);
  }

  async function token(): Promise<string> {
    const res = await app!.inject({
      method: 'POST',
      url: '/v1/tokens',
      headers: { authorization: `Bearer ${apiKey}` },
    });
    expect(res.statusCode).to.equal(201);
    return (res.json() as { token: string }).token;
  }
  function enqueue(tok: string, body: unknown = BODY): Promise<LightMyRequestResponse> {
    return app!.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: { authorization: `Bearer ${apiKey}`, 'idempotency-key': tok },
      payload: body as object,
    });
  }
  async function accepted(tok: string): Promise<string> {
    const res = await enqueue(tok);
    expect(res.statusCode, res.body).to.equal(202);
    return (res.json() as { messageId: string }).messageId;
  }
  function expectReplayOf(res: LightMyRequestResponse, messageId: string): void {
    expect(res.statusCode, res.body).to.equal(202);
    expect(res.headers['idempotent-replayed']).to.equal('true');
    expect(res.json()).to.include({ messageId, jobId: jobIdFor(messageId) });
  }
  function expectReused(res: LightMyRequestResponse): void {
    expect(res.statusCode, res.body).to.equal(422);
    expect(res.json()).to.include({ code: 'idempotency_key_reused' });
  }

  async function inboxHas(messageId: string): Promise<boolean> {
    const row = await t.db
      .selectFrom('inbox')
      .select('message_id')
      .where('message_id', '=', messageId)
      .executeTakeFirst();
    return row !== undefined;
  }
  async function waitApplied(messageId: string): Promise<void> {
    for (let i = 0; !(await inboxHas(messageId)); i++) {
      const dead = await t.db.selectFrom('dead_letters').selectAll().execute();
      if (dead.length > 0) throw new Error(`dead-lettered instead: ${JSON.stringify(dead)}`);
      if (i > 200) throw new Error(`message ${messageId} was never applied`);
      await sleep(50);
    }
  }
  /** One account, one inbox row, no dead letter, one `applied` delivery: exactly once. */
  async function expectAppliedOnce(messageId: string): Promise<void> {
    const accounts = await t.db.selectFrom('accounts').select('id').execute();
    expect(accounts.map((a) => a.id)).to.deep.equal([messageId]);
    expect(await t.db.selectFrom('dead_letters').selectAll().execute()).to.deep.equal([]);
    const mine = outcomes.filter((o) => o.messageId === messageId).map((o) => o.outcome);
    expect(mine.filter((o) => o === 'applied')).to.have.length(1);
    expect(mine).not.to.include('invalid');
  }
  async function jobsInRedis(): Promise<number> {
    const counts = await producer!.queue('ledger').getJobCounts();
    return Object.values(counts).reduce((a, b) => a + b, 0);
  }

  before(async () => {
    server = await startPrivateRedis();
  });
  after(async () => {
    await disconnect();
    await server?.stop();
  });
  beforeEach(async () => {
    t = await createTestSchema('restore', 6);
    dropSchema = () => t.drop();
    prefix = uniqueName('restore');
    outcomes.length = 0;
    const minted = mintApiKey();
    await insertApiKey(t.db, {
      id: minted.id,
      principal: 'alice',
      hash: minted.hash,
      admin: false,
    });
    apiKey = minted.key;
    await connect(false);
  });
  afterEach(async () => {
    try {
      if (redis) await deletePrefix(redis, prefix);
    } finally {
      await disconnect();
      const drop = dropSchema;
      dropSchema = undefined;
      await drop?.();
    }
  });

  it('a retry after the restore answers M1, and the worker applies M1 once (no invalid)', async () => {
    const tok = await token();
    await snapshot(); // the token is `issued` in it
    const m1 = await accepted(tok);
    // Back in time: the token is `issued` again and M1's job is gone. The client, which never
    // saw the answer, retries the same request: Redis takes it for a first use under a new id.
    await restore(true);
    const retry = await enqueue(tok);
    expectReplayOf(retry, m1);
    expect((await producer!.tokens.inspect(tok))?.messageId, 'Redis rebound to M1').to.equal(m1);
    await waitApplied(m1);
    await expectAppliedOnce(m1);
    // Later replays keep the first answer, and bring no job back for an applied message.
    for (let i = 0; i < 3; i++) expectReplayOf(await enqueue(tok), m1);
    // Another request with the token is still refused, and the original is untouched.
    expectReused(await enqueue(tok, OTHER_BODY));
    expectReplayOf(await enqueue(tok), m1);
    await sleep(300);
    await expectAppliedOnce(m1);
  });

  it('a different body after the restore gets 422, and the original still replays', async () => {
    const tok = await token();
    await snapshot();
    const m1 = await accepted(tok);
    await restore(true);
    // The restored `issued` token takes the other request for a first use; PostgreSQL refuses.
    expectReused(await enqueue(tok, OTHER_BODY));
    expectReused(await enqueue(tok, OTHER_BODY));
    expectReplayOf(await enqueue(tok), m1);
    await waitApplied(m1);
    await expectAppliedOnce(m1);
    const row = await t.db
      .selectFrom('accepted_messages')
      .select(['message_id', 'data'])
      .executeTakeFirstOrThrow();
    expect(row).to.deep.equal({ message_id: m1, data: BODY.data });
  });

  it('a restored `issued` token that a worker then claimed: a genuine replay is 202, not 422', async () => {
    const tok = await token();
    await snapshot();
    const m1 = await accepted(tok);
    await restore(true);
    // The reconciler finds M1's job gone and adds it back; the worker claims the restored
    // `issued` token for M1, which leaves it done without the request's fingerprint.
    expect((await worker!.reconciler!.runOnce()).reenqueued).to.equal(1);
    await waitApplied(m1);
    await sleep(200); // the `done` mark follows the commit
    const state = await producer!.tokens.inspect(tok);
    expect(state).to.include({ state: 'done', messageId: m1, fingerprint: undefined });
    const jobs = await jobsInRedis();
    expectReplayOf(await enqueue(tok), m1);
    // Redis now has the fingerprint back: later replays are answered from it.
    expect((await producer!.tokens.inspect(tok))?.fingerprint).to.be.a('string');
    expectReplayOf(await enqueue(tok), m1);
    expect(await jobsInRedis(), 'no job added back for an applied message').to.equal(jobs);
    // A genuinely different request with the token is still refused.
    expectReused(await enqueue(tok, OTHER_BODY));
    expectReplayOf(await enqueue(tok), m1);
    await expectAppliedOnce(m1);
  });

  it('the claim consults PostgreSQL when a producer died before rebinding Redis', async () => {
    const tok = await token();
    await snapshot();
    const m1 = await accepted(tok);
    await restore(false);
    // What a retry leaves behind when its producer dies between Redis's accept and the rebind:
    // the token bound to a fresh id M2 in Redis, M1 in PostgreSQL.
    const { fingerprint } = await t.db
      .selectFrom('accepted_messages')
      .select('fingerprint')
      .executeTakeFirstOrThrow();
    const m2 = ids.nextId();
    const taken = await producer!.tokens.accept(tok, {
      principal: 'alice',
      fingerprint,
      messageId: m2,
      ttlMs: 60_000,
    });
    expect(taken).to.deep.equal({ status: 'accepted', messageId: m2 });
    await startOwnWorker();
    expect((await worker!.reconciler!.runOnce()).reenqueued).to.equal(1);
    await waitApplied(m1);
    await expectAppliedOnce(m1);
    expect((await producer!.tokens.inspect(tok))?.messageId).to.equal(m1);
    expectReplayOf(await enqueue(tok), m1);
  });

  it('a job whose token PostgreSQL records for another message is still dead-lettered invalid', async () => {
    // No restore: the record backs Redis here, so the mismatch is the job's, not Redis's.
    const mine = await token();
    const m1 = await accepted(mine);
    const theirs = await token();
    const m2 = (await enqueue(theirs, OTHER_BODY).then((r) => r.json())) as { messageId: string };
    // A job carrying M2's id with M1's token (a hand-edited job, a bug), and one carrying a
    // message id PostgreSQL never recorded.
    const m3 = ids.nextId();
    await producer!.queue('ledger').addBulk([
      { name: BODY.name, data: { messageId: m2.messageId, token: mine, data: OTHER_BODY.data } },
      { name: BODY.name, data: { messageId: m3, token: mine, data: BODY.data }, opts: {} },
    ]);
    // Remove M2's own job, so only the forged one can apply M2.
    await producer!.queue('ledger').remove(jobIdFor(m2.messageId));
    await startOwnWorker();
    for (let i = 0; ; i++) {
      const dead = await t.db.selectFrom('dead_letters').select(['message_id', 'reason']).execute();
      if (dead.length === 2 && (await inboxHas(m1))) {
        expect(dead.map((d) => d.reason)).to.deep.equal(['invalid', 'invalid']);
        expect(dead.map((d) => d.message_id).sort()).to.deep.equal([m2.messageId, m3].sort());
        break;
      }
      if (i > 200) throw new Error(`dead letters: ${JSON.stringify(dead)}`);
      await sleep(50);
    }
    expect(await inboxHas(m2.messageId)).to.equal(false);
    expect(await inboxHas(m3)).to.equal(false);
    // Redis still binds the token to its own message.
    expect((await producer!.tokens.inspect(mine))?.messageId).to.equal(m1);
  });
});
