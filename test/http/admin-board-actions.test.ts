/**
 * Bull Board's actions on onceq's queues, through `app.inject()` with an admin key: the ones that
 * write a job's data or mint a job (edit data, add, duplicate, run a scheduler) are refused and
 * change nothing in Redis; the ones that only move or remove jobs (retry, promote, clean) work.
 * Real Redis and PostgreSQL; the board runs over the stack's own prefix, so the jobs it acts on
 * are the ones the API enqueued.
 */
import { expect } from 'chai';
import { UnrecoverableError, Worker } from 'bullmq';
import type { FastifyInstance } from 'fastify';
import { createTestStack, type TestStack } from '../support/stack.js';
import { buildApp } from '../../src/http/build-app.js';
import { mintApiKey } from '../../src/core/api-key.js';
import { insertApiKey } from '../../src/db/api-keys.repository.js';
import { allKeysPattern } from '../../src/redis/keys.js';
import { appRoutes } from '@bull-board/api/dist/routes.js';
import { ADMIN_QUEUES_PATH, BOARD_ACTIONS_ALLOWED } from '../../src/http/routes/admin-queues.js';

const API = `${ADMIN_QUEUES_PATH}/api/queues`;

/** Every key under the prefix with its serialised value: any write shows as a difference. */
async function redisSnapshot(stack: TestStack): Promise<Map<string, string>> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await stack.redis.scan(
      cursor,
      'MATCH',
      allKeysPattern(stack.prefix),
      'COUNT',
      1000,
    );
    cursor = next;
    keys.push(...found);
  } while (cursor !== '0');
  const snapshot = new Map<string, string>();
  for (const key of keys.sort()) {
    const dumped = await stack.redis.dumpBuffer(key);
    if (dumped) snapshot.set(key, dumped.toString('base64'));
  }
  return snapshot;
}

describe('http: Bull Board actions on onceq queues', function () {
  this.timeout(60_000);
  let stack: TestStack;
  let app: FastifyInstance;
  let admin: string;
  let shop: string;

  before(async () => {
    stack = await createTestStack('board_actions');
    // The board over the stack's own prefix: it acts on the jobs the API enqueued.
    app = await buildApp({
      db: stack.db,
      backend: stack.backend,
      producer: stack.producer,
      ids: stack.ids,
      keyCacheMs: 0,
      rateLimit: false,
      docs: false,
      adminQueues: { queues: ['ledger'] },
    });
    await app.ready();
    admin = await mintKey('ops', true);
    shop = await mintKey('shop', false);
  });
  after(async () => {
    await app?.close();
    await stack?.close();
  });

  async function mintKey(principal: string, isAdmin: boolean): Promise<string> {
    const minted = mintApiKey();
    await insertApiKey(stack.db, { id: minted.id, principal, hash: minted.hash, admin: isAdmin });
    return minted.key;
  }

  const board = (method: 'GET' | 'POST' | 'PUT' | 'PATCH', path: string, payload?: object) =>
    app.inject({
      method,
      url: `${API}${path}`,
      headers: { authorization: `Bearer ${admin}` },
      ...(payload ? { payload } : {}),
    });

  /** Enqueues one message through the API; returns its BullMQ job id. */
  async function enqueue(extra: object = {}): Promise<string> {
    const issued = await app.inject({
      method: 'POST',
      url: '/v1/tokens',
      headers: { authorization: `Bearer ${shop}` },
    });
    const res = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: {
        authorization: `Bearer ${shop}`,
        'idempotency-key': (issued.json() as { token: string }).token,
      },
      payload: { name: 'account.open', data: { owner: 'alice', openingBalance: 5 }, ...extra },
    });
    expect(res.statusCode, res.body).to.equal(202);
    return (res.json() as { jobId: string }).jobId;
  }

  describe('refused: they would write a job’s data or mint a job', () => {
    let jobId: string;
    before(async () => {
      jobId = await enqueue();
    });

    const cases: [string, () => [string, string, object?]][] = [
      [
        'edit data (a new messageId)',
        () => [
          'PATCH',
          `/ledger/${jobId}/update-data`,
          { jobData: { messageId: '1', token: 'oqt_x', data: {} } },
        ],
      ],
      [
        'add a job',
        () => [
          'POST',
          '/ledger/add',
          {
            name: 'account.open',
            data: { messageId: '2', data: { owner: 'x', openingBalance: 1 } },
            options: {},
          },
        ],
      ],
      [
        // The board's "duplicate" is its add form, filled in with the job's data and options.
        'duplicate a job (add with its data)',
        () => ['POST', '/ledger/add', { name: 'account.open', data: {}, options: { jobId } }],
      ],
      ['run a job scheduler now', () => ['PUT', '/ledger/job-schedulers/any/run']],
      ['edit data on a dead-letter queue', () => ['PATCH', `/ledger.dlq/${jobId}/update-data`, {}]],
    ];
    for (const [label, request] of cases) {
      it(`${label}: 403 forbidden, nothing written`, async () => {
        const [method, path, payload] = request();
        const before = await redisSnapshot(stack);
        const res = await board(method as 'PUT', path, payload);
        expect(res.statusCode, res.body).to.equal(403);
        expect(res.headers['content-type']).to.contain('application/problem+json');
        expect(res.json()).to.include({ code: 'forbidden', status: 403 });
        expect(await redisSnapshot(stack)).to.deep.equal(before);
      });
    }

    it('the job the refused edit aimed at still carries its own message', async () => {
      const res = await board('GET', `/ledger/${jobId}`);
      expect(res.statusCode).to.equal(200);
      const job = (res.json() as { job: { id: string; data: { messageId: string } } }).job;
      expect(`m-${job.data.messageId}`).to.equal(jobId);
    });

    it('every other writing route of the board that is not on the allowed list: 403, nothing written', async () => {
      // A Bull Board upgrade that adds an action gets it refused until someone has put it on
      // the list: this walks the board's own route table.
      const refused = appRoutes.api.flatMap((r) =>
        [r.method]
          .flat()
          .map((m) => m.toUpperCase())
          .filter((m) => m !== 'GET')
          .flatMap((m) => [r.route].flat().map((path) => ({ method: m, path })))
          .filter(({ method, path }) => !BOARD_ACTIONS_ALLOWED.has(`${method} ${path}`)),
      );
      expect(refused.map((r) => `${r.method} ${r.path}`)).to.include.members([
        'POST /api/queues/:queueName/add',
        'PATCH /api/queues/:queueName/:jobId/update-data',
      ]);
      for (const { method, path } of refused) {
        const url = path
          .replace(/^\/api\/queues/, '')
          .replace(':queueName', 'ledger')
          .replace(':jobId', jobId)
          .replace(/:[A-Za-z]+/g, 'x');
        const before = await redisSnapshot(stack);
        const res = await board(method as 'PUT', url, {});
        expect(res.statusCode, `${method} ${path}`).to.equal(403);
        expect(await redisSnapshot(stack), `${method} ${path}`).to.deep.equal(before);
      }
    });
  });

  describe('still allowed: they only move or remove jobs', () => {
    it('promote: a delayed job becomes waiting', async () => {
      const jobId = await enqueue({ delay: 3_600_000 });
      const queue = stack.producer.queue('ledger');
      expect(await queue.getJobState(jobId)).to.equal('delayed');
      const res = await board('PUT', `/ledger/${jobId}/promote`);
      expect(res.statusCode, res.body).to.be.within(200, 204);
      expect(await queue.getJobState(jobId)).to.equal('waiting');
    });

    it('retry: a failed job goes back to waiting, with its data unchanged', async () => {
      const jobId = await enqueue();
      const queue = stack.producer.queue('ledger');
      const before = (await queue.getJob(jobId))!.data;
      // Fail it by hand, as a worker would (no processor: nothing runs).
      const worker = new Worker('ledger', null, {
        connection: stack.redis,
        prefix: stack.prefix,
        autorun: false,
      });
      try {
        let job;
        while ((job = await worker.getNextJob('test-lock')) && job.id !== jobId) {
          await job.moveToFailed(new UnrecoverableError('not this one'), 'test-lock', false);
        }
        expect(job?.id).to.equal(jobId);
        // Failed for good, not back to delayed for another attempt.
        await job!.moveToFailed(new UnrecoverableError('boom'), 'test-lock', false);
      } finally {
        await worker.close();
      }
      expect(await queue.getJobState(jobId)).to.equal('failed');
      const res = await board('PUT', `/ledger/${jobId}/retry`);
      expect(res.statusCode, res.body).to.be.within(200, 204);
      expect(await queue.getJobState(jobId)).to.equal('waiting');
      expect((await queue.getJob(jobId))!.data).to.deep.equal(before);
    });

    it('clean: a job is removed (the reconciler brings back what was accepted)', async () => {
      const jobId = await enqueue();
      const queue = stack.producer.queue('ledger');
      const res = await board('PUT', `/ledger/${jobId}/clean`);
      expect(res.statusCode, res.body).to.be.within(200, 204);
      expect(await queue.getJob(jobId)).to.equal(undefined);
    });

    it('the queue-wide forms: promote all, retry all failed, clean all failed', async function () {
      this.timeout(30_000);
      const queue = stack.producer.queue('ledger');
      const delayed = await enqueue({ delay: 3_600_000 });
      expect((await board('PUT', '/ledger/promote')).statusCode).to.be.within(200, 204);
      expect(await queue.getJobState(delayed)).to.equal('waiting');

      const failAll = async () => {
        const worker = new Worker('ledger', null, {
          connection: stack.redis,
          prefix: stack.prefix,
          autorun: false,
        });
        try {
          let job;
          while ((job = await worker.getNextJob('test-lock'))) {
            await job.moveToFailed(new UnrecoverableError('boom'), 'test-lock', false);
          }
        } finally {
          await worker.close();
        }
      };
      await failAll();
      const failed = await queue.getJobCountByTypes('failed');
      expect(failed).to.be.above(0);
      expect((await board('PUT', '/ledger/retry/failed')).statusCode).to.be.within(200, 204);
      expect(await queue.getJobCountByTypes('failed')).to.equal(0);
      expect(await queue.getJobState(delayed)).to.equal('waiting');

      await failAll();
      // The board's clean-all spares jobs that finished in the last 5 seconds.
      await new Promise((r) => setTimeout(r, 5_100));
      expect((await board('PUT', '/ledger/clean/failed')).statusCode).to.be.within(200, 204);
      expect(await queue.getJobCountByTypes('failed')).to.equal(0);
      expect(await queue.getJob(delayed)).to.equal(undefined);
    });
  });
});
