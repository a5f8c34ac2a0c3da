/**
 * `onceq/client` against a real API (Fastify over real Redis and PostgreSQL, own schema and
 * prefix) listening on loopback, so every call is real HTTP over `fetch`: an enqueue seen
 * through to `completed` by a worker; one token sent by many callers at once making one
 * message; refusals surfacing with their codes and field errors; a `Retry-After` past
 * `maxRetryAfterMs` thrown rather than waited; and a dead or silent API failing with
 * `network_error` once the retry budget is spent. Only what is by definition not the API (a
 * proxy's error page, a redirect) is played by a scripted server. An answer lost to a dropped
 * connection and a 429 waited out run against the compiled `onceq api` in real-api.test.ts.
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import {
  createClient,
  JobWaitTimeoutError,
  OnceqClientError,
  type RetryEvent,
} from '../../src/client/index.js';
import { startListeningApi, type ListeningApi } from '../support/listening-api.js';

const OPEN = { owner: 'ada', openingBalance: 100 };

/** Counts of what the API wrote for a stack: accepted rows and BullMQ jobs. */
async function written(api: ListeningApi, queue: string) {
  const row = await api.stack.db
    .selectFrom('accepted_messages')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  const jobs = await api.stack.producer
    .queue(queue)
    .getJobCountByTypes('waiting', 'delayed', 'prioritized', 'active', 'completed', 'failed');
  return { accepted: Number(row.n), jobs };
}

/** Rejection of `promise`, which must reject. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** A loopback port nothing listens on. */
async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('client: onceq/client against a real API', function () {
  this.timeout(60_000);

  describe('with a worker', () => {
    let api: ListeningApi;
    let apiKey: string;
    before(async () => {
      api = await startListeningApi('client_api');
      apiKey = await api.key('shop');
    });
    after(async () => {
      await api?.close();
    });

    it('enqueues with a token of its own and waits for the job to complete', async () => {
      await api.stack.startWorker();
      const client = createClient({ url: api.url, apiKey });
      const accepted = await client.enqueue('account.open', OPEN);
      expect(accepted).to.include({ name: 'account.open', state: 'queued', replayed: false });
      expect(accepted.jobId).to.be.a('string');
      expect(accepted.messageId).to.match(/^\d+$/);
      expect(accepted.token).to.match(/^oqt_/);

      const done = await client.waitForJob(accepted.jobId, { timeoutMs: 20_000, intervalMs: 100 });
      expect(done).to.include({ jobId: accepted.jobId, messageId: accepted.messageId });
      expect(done).to.include({ state: 'completed', attempts: 1 });
      expect(done.result).to.deep.equal({ status: 'applied', accountId: accepted.messageId });
      expect(done.finishedAt).to.be.a('string');

      const status = await client.getJob<{ status: string; accountId: string }>(accepted.jobId);
      expect(status.state).to.equal('completed');
      expect(status.result).to.deep.equal({ status: 'applied', accountId: accepted.messageId });
      const account = await api.stack.db
        .selectFrom('accounts')
        .select(['owner', 'balance'])
        .where('id', '=', accepted.messageId)
        .executeTakeFirstOrThrow();
      expect(account).to.deep.equal({ owner: 'ada', balance: '100' });
    });

    it('never sees a job completed without its result, however closely it polls', async () => {
      // A look-up overlapping the completion once answered `completed` with the result, attempts
      // and timestamps of the still active job (the job was read before its state).
      await api.stack.startWorker();
      const client = createClient({ url: api.url, apiKey });
      for (let i = 0; i < 15; i++) {
        const { jobId, messageId } = await client.enqueue('account.open', OPEN);
        const done = await client.waitForJob(jobId, { timeoutMs: 20_000, intervalMs: 2 });
        expect(done, jobId).to.include({ state: 'completed', attempts: 1 });
        expect(done.result, jobId).to.deep.equal({ status: 'applied', accountId: messageId });
        expect(done.finishedAt, jobId).to.be.a('string');
      }
    });
  });

  describe('without a worker', () => {
    let api: ListeningApi;
    let apiKey: string;
    before(async () => {
      api = await startListeningApi('client_api');
      apiKey = await api.key('shop');
    });
    after(async () => {
      await api?.close();
    });

    it('issues tokens, and an enqueue with a used token replays its first answer', async () => {
      const client = createClient({ url: api.url, apiKey });
      const tokens = await client.issueTokens(3);
      expect(tokens).to.have.length(3);
      for (const t of tokens) {
        expect(t.token).to.match(/^oqt_/);
        expect(Date.parse(t.expiresAt)).to.be.greaterThan(Date.now());
      }
      const token = tokens[0]!.token;
      const first = await client.enqueue('account.open', OPEN, { token });
      const again = await client.enqueue('account.open', OPEN, { token });
      expect(first).to.include({ replayed: false, token });
      expect(again).to.deep.equal({ ...first, replayed: true });
    });

    it('sends one token from many callers at once and makes one message', async () => {
      const retries: RetryEvent[] = [];
      const client = createClient({ url: api.url, apiKey, onRetry: (e) => retries.push(e) });
      const { token } = (await client.issueTokens(1))[0]!;
      const before = await written(api, 'ledger');
      const data = { owner: 'cy', openingBalance: 3 };
      const answers = await Promise.all(
        Array.from({ length: 5 }, () => client.enqueue('account.open', data, { token })),
      );
      expect(new Set(answers.map((a) => a.messageId)).size).to.equal(1);
      expect(
        answers.filter((a) => !a.replayed),
        'one answer is the acceptance',
      ).to.have.length(1);
      const after = await written(api, 'ledger');
      expect(after.accepted - before.accepted).to.equal(1);
      expect(after.jobs - before.jobs).to.equal(1);
      // A caller that met another's request in flight was told to come back, and did as told.
      for (const retry of retries) {
        expect(retry).to.include({ status: 409, code: 'idempotency_key_in_use' });
        expect(retry.delayMs).to.equal(retry.retryAfterMs);
      }
    });

    it('surfaces a 422 with its code and field errors, without retrying it', async () => {
      const retries: RetryEvent[] = [];
      const client = createClient({ url: api.url, apiKey, onRetry: (e) => retries.push(e) });
      const before = await written(api, 'ledger');

      const err = await rejection(client.enqueue('account.open', { owner: 5 }));
      expect(err).to.be.instanceOf(OnceqClientError);
      const e = err as OnceqClientError;
      expect(e.name).to.equal('OnceqClientError');
      expect(e).to.include({ status: 422, code: 'validation_failed', attempts: 1 });
      expect(e.errors.map((f) => f.path)).to.include.members([
        '/data/owner',
        '/data/openingBalance',
      ]);
      expect(e.detail).to.contain('account.open');
      expect(e.token, 'the token it was sent with').to.match(/^oqt_/);
      expect(Object.keys(e), 'the token stays out of logged errors').not.to.include('token');

      const unknown = (await rejection(client.enqueue('no.such.job', {}))) as OnceqClientError;
      expect(unknown).to.include({ status: 422, code: 'validation_failed' });
      expect(unknown.errors.map((f) => f.path)).to.deep.equal(['/name']);

      const [token] = await client.issueTokens(1);
      await client.enqueue('account.open', OPEN, { token: token!.token });
      const reused = (await rejection(
        client.enqueue('account.open', { ...OPEN, openingBalance: 1 }, { token: token!.token }),
      )) as OnceqClientError;
      expect(reused).to.include({ status: 422, code: 'idempotency_key_reused' });

      const missing = (await rejection(client.getJob('999'))) as OnceqClientError;
      expect(missing).to.include({ status: 404, code: 'not_found' });

      const badKey = createClient({ url: api.url, apiKey: 'oqk_nope' });
      expect(await rejection(badKey.issueTokens(1))).to.include({ status: 401 });

      expect(retries, 'refusals are final').to.deep.equal([]);
      const after = await written(api, 'ledger');
      expect(after.accepted - before.accepted, 'only the one valid enqueue').to.equal(1);
    });

    it('gives up waiting for a job with JobWaitTimeoutError, and stops at once when aborted', async () => {
      const client = createClient({ url: api.url, apiKey });
      const { jobId } = await client.enqueue('account.open', OPEN);
      const err = await rejection(client.waitForJob(jobId, { timeoutMs: 300, intervalMs: 50 }));
      expect(err).to.be.instanceOf(JobWaitTimeoutError);
      expect(err).to.be.instanceOf(OnceqClientError);
      expect(err).to.include({ code: 'wait_timeout', jobId });
      expect((err as JobWaitTimeoutError).lastStatus?.state).to.equal('queued');

      const controller = new AbortController();
      const reason = new Error('shutting down');
      const waiting = client.waitForJob(jobId, { timeoutMs: 20_000, signal: controller.signal });
      setTimeout(() => controller.abort(reason), 100);
      expect(await rejection(waiting)).to.equal(reason);
    });
  });

  describe('Retry-After', () => {
    let api: ListeningApi;
    let apiKey: string;
    before(async () => {
      api = await startListeningApi('client_rl', { rateLimit: { max: 3, windowMs: 3_000 } });
      apiKey = await api.key('shop');
    });
    after(async () => {
      await api?.close();
    });

    it('does not wait past maxRetryAfterMs: it throws with retryAfterMs instead', async () => {
      const client = createClient({
        url: api.url,
        apiKey,
        retry: { maxRetryAfterMs: 0, maxAttempts: 5 },
      });
      let err: OnceqClientError | undefined;
      for (let i = 0; i < 10 && err?.status !== 429; i++) {
        err = (await rejection(client.getJob('1'))) as OnceqClientError;
      }
      expect(err).to.include({ status: 429, code: 'rate_limited', attempts: 1 });
      expect(err!.retryAfterMs).to.be.at.least(1_000);
    });
  });

  describe("an answer that is not the API's", () => {
    let server: HttpServer | undefined;
    after(async () => {
      server?.closeAllConnections();
      if (server) await new Promise((resolve) => server!.close(resolve));
    });

    it("retries a proxy's 502 page like any 5xx, and follows no redirect", async () => {
      const seen: string[] = [];
      server = createHttpServer((req, res) => {
        seen.push(`${req.method} ${req.url}`);
        req.resume();
        if (req.url === '/moved/v1/jobs/1') {
          res.writeHead(302, { location: '/v1/jobs/1' }).end();
          return;
        }
        res.writeHead(502, { 'content-type': 'text/html' }).end('<h1>502 Bad Gateway</h1>');
      });
      await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
      const { port } = server.address() as AddressInfo;
      const options = { apiKey: 'oqk_unused', retry: { maxAttempts: 2, baseDelayMs: 10 } };

      const client = createClient({ url: `http://127.0.0.1:${port}`, ...options });
      const bad = (await rejection(client.getJob('1'))) as OnceqClientError;
      expect(bad).to.include({ code: 'unexpected_response', status: 502, attempts: 2 });

      const moved = createClient({ url: `http://127.0.0.1:${port}/moved`, ...options });
      const redirected = (await rejection(moved.getJob('1'))) as OnceqClientError;
      expect(redirected).to.include({ code: 'unexpected_response', status: 302, attempts: 1 });
      expect(seen).to.deep.equal(['GET /v1/jobs/1', 'GET /v1/jobs/1', 'GET /moved/v1/jobs/1']);
    });
  });

  describe('no answer', () => {
    let silent: Server | undefined;
    const sockets = new Set<Socket>();
    after(async () => {
      for (const s of sockets) s.destroy();
      if (silent) await new Promise((resolve) => silent!.close(resolve));
    });

    it('fails with network_error after the retry budget when nothing listens', async () => {
      const retries: RetryEvent[] = [];
      const client = createClient({
        url: `http://127.0.0.1:${await deadPort()}`,
        apiKey: 'oqk_unused',
        retry: { maxAttempts: 3, baseDelayMs: 10 },
        onRetry: (e) => retries.push(e),
      });
      const err = (await rejection(client.enqueue('account.open', OPEN))) as OnceqClientError;
      expect(err).to.be.instanceOf(OnceqClientError);
      expect(err).to.include({ code: 'network_error', status: undefined, attempts: 3 });
      expect(err.message).to.contain('ECONNREFUSED');
      expect(retries.map((r) => [r.path, r.code])).to.deep.equal([
        ['/v1/tokens', 'network_error'],
        ['/v1/tokens', 'network_error'],
      ]);
    });

    it('counts an attempt over timeoutMs as unanswered', async () => {
      let connections = 0;
      silent = createServer((socket) => {
        connections++;
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
      });
      await new Promise<void>((resolve) => silent!.listen(0, '127.0.0.1', resolve));
      const { port } = silent.address() as AddressInfo;
      const client = createClient({
        url: `http://127.0.0.1:${port}`,
        apiKey: 'oqk_unused',
        timeoutMs: 200,
        retry: { maxAttempts: 2, baseDelayMs: 10 },
      });
      const err = (await rejection(
        client.enqueue('account.open', OPEN, { token: 'oqt_given' }),
      )) as OnceqClientError;
      expect(err).to.include({ code: 'network_error', attempts: 2, token: 'oqt_given' });
      expect((err.cause as Error).name).to.equal('TimeoutError');
      expect(connections).to.be.at.least(1);
    });
  });
});
