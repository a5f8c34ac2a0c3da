/**
 * `onceq/client` against a real `onceq api`: the compiled executable (`node bin/onceq.js api`,
 * what users run) in a child process of its own, on the test services with its own schema and
 * prefix, the key made by `onceq keys create`. What the API wrote is read directly: its
 * `accepted_messages` rows and the BullMQ jobs under the test's prefix. The cases are those of
 * issue 13: an answer lost to a dropped connection, retried with the same token, makes one
 * message; a 422 surfaces with its code and field errors and writes nothing; a 429's
 * `Retry-After` is waited out. The in-process suite (client.test.ts) covers the rest.
 */
import { expect } from 'chai';
import {
  createClient,
  OnceqClientError,
  type EnqueueResult,
  type RetryEvent,
} from '../../src/client/index.js';
import { createQueueCache, type QueueCache } from '../../src/queues/queue-cache.js';
import { closeRedis } from '../../src/redis/connection.js';
import { ensureBuilt } from '../support/build.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import {
  createTestSchema,
  deletePrefix,
  testRedis,
  uniqueName,
  type TestSchema,
  redisBackend,
} from '../support/env.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';
import type { Redis } from 'ioredis';

const QUEUE = 'ledger';
const JOB_STATES = ['waiting', 'delayed', 'prioritized', 'active', 'completed', 'failed'] as const;

/** An `onceq api` child, up and listening. */
interface ApiChild {
  child: WorkerChild;
  url: string;
  port: number;
}

describe('client: onceq/client against a real `onceq api` child process', function () {
  this.timeout(60_000);
  const prefix = uniqueName('client_real');
  const children: WorkerChild[] = [];
  let db: TestSchema;
  let redis: Redis;
  let queues: QueueCache;
  let proxy: TcpProxy | undefined;

  function spawn(args: string[], env: Record<string, string> = {}): WorkerChild {
    const child = spawnWorker({ schema: db.schema, prefix, args, env, compiled: true });
    children.push(child);
    return child;
  }

  /** `onceq keys create --principal <principal>`: the key it prints. */
  async function createKey(principal: string): Promise<string> {
    const child = spawn(['keys', 'create', '--principal', principal]);
    const { code } = await child.exited;
    expect(code, child.stderr()).to.equal(0);
    return child.stdout().trim();
  }

  /** `onceq api` on a free loopback port, once its log says it listens. */
  async function startApi(env: Record<string, string> = {}): Promise<ApiChild> {
    const child = spawn(['api'], { PORT: '0', ONCEQ_HOST: '127.0.0.1', ...env });
    await child.waitForOutput('api listening', 45_000);
    const url = /"address":"(http:[^"]+)"/.exec(child.output())?.[1];
    expect(url, child.output()).to.be.a('string');
    return { child, url: url!, port: Number(new URL(url!).port) };
  }

  /** Accepted rows of `principal` and BullMQ jobs of the ledger queue, read directly. */
  async function written(principal: string) {
    const rows = await db.db
      .selectFrom('accepted_messages')
      .select(['message_id', 'token'])
      .where('principal', '=', principal)
      .execute();
    const jobs = await queues.get(QUEUE).getJobCountByTypes(...JOB_STATES);
    return { rows, jobs };
  }

  /** The accepted rows of one token, and whether its job is in the queue. */
  async function recorded(principal: string, result: Pick<EnqueueResult, 'token' | 'jobId'>) {
    const { rows } = await written(principal);
    const job = await queues.get(QUEUE).getJob(result.jobId);
    return { rows: rows.filter((r) => r.token === result.token), job };
  }

  before(async function () {
    this.timeout(150_000);
    await ensureBuilt();
    db = await createTestSchema('client_real', 2);
    redis = testRedis();
    queues = createQueueCache(redisBackend(redis, prefix));
  });

  afterEach(async () => {
    await proxy?.close();
    proxy = undefined;
  });

  after(async () => {
    await Promise.all(children.map((c) => c.destroy()));
    await queues?.close();
    if (redis) {
      await deletePrefix(redis, prefix);
      await closeRedis(redis);
    }
    await db?.drop();
  });

  describe('with the default rate limit', () => {
    let api: ApiChild;
    let apiKey: string;
    before(async function () {
      this.timeout(90_000);
      apiKey = await createKey('shop');
      api = await startApi();
    });

    it('retries an enqueue whose answer a dropped connection lost, and makes one message', async () => {
      const before = await written('shop');
      proxy = await startTcpProxy(api.port);
      proxy.dropAnswerTo('POST /v1/jobs');
      const retries: RetryEvent[] = [];
      const client = createClient({
        url: proxy.url,
        apiKey,
        retry: { baseDelayMs: 10 },
        onRetry: (e) => retries.push(e),
      });
      const data = { owner: 'dora', openingBalance: 7 };

      const result = await client.enqueue('account.open', data);

      expect(proxy.seen['POST /v1/jobs'], 'the request reached the API').to.equal(1);
      expect(proxy.dropped, 'its answer was lost').to.equal(1);
      expect(retries.map((r) => [r.path, r.attempt, r.code])).to.deep.equal([
        ['/v1/jobs', 1, 'network_error'],
      ]);
      // The API had accepted the first request: the retry got its stored answer.
      expect(result).to.include({ name: 'account.open', queue: QUEUE, replayed: true });
      const mine = await recorded('shop', result);
      expect(mine.rows, 'one accepted row, with the messageId the client got').to.deep.equal([
        { message_id: result.messageId, token: result.token },
      ]);
      expect(mine.job, 'its job').not.to.equal(undefined);
      expect(mine.job!.data).to.deep.include({ messageId: result.messageId, data });
      const after = await written('shop');
      expect(after.rows.length - before.rows.length, 'accepted rows').to.equal(1);
      expect(after.jobs - before.jobs, 'BullMQ jobs').to.equal(1);

      // The caller sending it again with the token it got makes no second message either.
      const again = await client.enqueue('account.open', data, { token: result.token });
      expect(again).to.deep.equal({ ...result, replayed: true });
      // And the client's answer is the API's, as a replay gives it to anyone with the key.
      const replay = await fetch(`${api.url}/v1/jobs`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${apiKey}`,
          'content-type': 'application/json',
          'idempotency-key': result.token,
        },
        body: JSON.stringify({ name: 'account.open', data }),
      });
      expect(replay.status).to.equal(202);
      expect(replay.headers.get('idempotent-replayed')).to.equal('true');
      const { replayed: _r, token: _t, ...answer } = result;
      expect(await replay.json()).to.deep.equal(answer);
      const final = await written('shop');
      expect(final.rows.length - before.rows.length, 'accepted rows').to.equal(1);
      expect(final.jobs - before.jobs, 'BullMQ jobs').to.equal(1);
    });

    it('surfaces a 422 as OnceqClientError validation_failed with its field errors, writing nothing', async () => {
      const before = await written('shop');
      const retries: RetryEvent[] = [];
      const client = createClient({ url: api.url, apiKey, onRetry: (e) => retries.push(e) });

      let err: unknown;
      await client.enqueue('account.open', { owner: 5 }).catch((e: unknown) => (err = e));

      expect(err).to.be.instanceOf(OnceqClientError);
      const e = err as OnceqClientError;
      expect(e).to.include({ status: 422, code: 'validation_failed', attempts: 1 });
      expect(e.errors.map((f) => f.path)).to.include.members([
        '/data/owner',
        '/data/openingBalance',
      ]);
      expect(e.token, 'the token it was sent with').to.match(/^oqt_/);
      expect(retries, 'a refusal is final').to.deep.equal([]);
      const after = await written('shop');
      expect(after.rows.map((r) => r.token)).not.to.include(e.token);
      expect(after.rows.length, 'accepted rows').to.equal(before.rows.length);
      expect(after.jobs, 'BullMQ jobs').to.equal(before.jobs);
    });
  });

  describe('with ONCEQ_RATE_LIMIT=3/6s', () => {
    let api: ApiChild;
    let apiKey: string;
    before(async function () {
      this.timeout(90_000);
      apiKey = await createKey('limited');
      api = await startApi({ ONCEQ_RATE_LIMIT: '3/6s' });
    });

    it('waits out a real 429 as its Retry-After says, then makes the one message', async () => {
      const client = createClient({ url: api.url, apiKey, retry: { maxAttempts: 1 } });
      const [issued] = await client.issueTokens(1);
      // Spend the principal's window, early enough in it that the enqueue below meets the 429
      // too (seconds of slack on a slow day): a window about to end is waited out and the next
      // one spent.
      let advertisedMs = 0;
      for (;;) {
        const res = await fetch(`${api.url}/v1/jobs/1`, {
          headers: { authorization: `Bearer ${apiKey}` },
        });
        await res.arrayBuffer();
        if (res.status !== 429) continue;
        const advertised = res.headers.get('retry-after');
        expect(advertised).to.match(/^\d+$/);
        advertisedMs = Number(advertised) * 1_000;
        if (advertisedMs >= 4_000) break;
        await new Promise((resolve) => setTimeout(resolve, advertisedMs));
      }

      const before = await written('limited');
      const retries: RetryEvent[] = [];
      const patient = createClient({ url: api.url, apiKey, onRetry: (e) => retries.push(e) });
      const started = Date.now();
      const result = await patient.enqueue(
        'account.open',
        { owner: 'eve', openingBalance: 2 },
        { token: issued!.token },
      );
      const elapsed = Date.now() - started;

      expect(retries).to.have.length.of.at.least(1);
      const first = retries[0]!;
      expect(first).to.include({ path: '/v1/jobs', status: 429, code: 'rate_limited' });
      // The header in whole seconds, at most what it said a moment ago, and not clamped: well
      // under maxRetryAfterMs (30 s by default), so waited out exactly as asked.
      expect(first.retryAfterMs! % 1_000).to.equal(0);
      expect(first.retryAfterMs).to.be.within(1_000, advertisedMs);
      expect(first.delayMs).to.equal(first.retryAfterMs);
      // Loosely: the machine is shared, so no upper bound.
      expect(elapsed).to.be.at.least(first.retryAfterMs! - 20);

      expect(result).to.include({ replayed: false, token: issued!.token });
      const mine = await recorded('limited', result);
      expect(mine.rows).to.deep.equal([{ message_id: result.messageId, token: result.token }]);
      expect(mine.job?.data).to.deep.include({ messageId: result.messageId });
      const after = await written('limited');
      expect(after.rows.length - before.rows.length, 'accepted rows').to.equal(1);
      expect(after.jobs - before.jobs, 'BullMQ jobs').to.equal(1);
    });
  });
});
