/**
 * The demo's API client against a real HTTP server on loopback that answers as the API does when
 * it cannot take a request now: 503 (after Redis lost the worker-id leases) or 429, each with
 * `Retry-After`. The client waits as told, sends the same request again (same Idempotency-Key),
 * and goes on; an API that never recovers ends the demo with one line, not a stack trace.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { createDemoClient } from '../../tools/demo/client.js';
import { OnceqError } from '../../src/core/errors.js';
import { generateToken } from '../../src/core/token.js';

interface Seen {
  at: number;
  path: string;
  key: string | undefined;
}

/** A server that answers each route from a script of statuses, then the success. */
async function scriptedApi(
  script: Record<string, { status: number; retryAfter?: string }[]>,
  success: Record<string, { status: number; body: unknown }>,
): Promise<{ server: Server; url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    req.on('end', () => {
      const path = req.url ?? '';
      seen.push({ at: Date.now(), path, key: req.headers['idempotency-key'] as string });
      const next = script[path]?.shift();
      if (next) {
        res.writeHead(next.status, {
          'content-type': 'application/problem+json',
          ...(next.retryAfter === undefined ? {} : { 'retry-after': next.retryAfter }),
        });
        res.end(JSON.stringify({ status: next.status, code: 'service_unavailable' }));
        return;
      }
      const ok = success[path]!;
      res.writeHead(ok.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(ok.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { server, url: `http://127.0.0.1:${port}`, seen };
}

describe('demo client: honours Retry-After on 503 and 429', function () {
  this.timeout(20_000);
  let server: Server | undefined;

  afterEach(async () => {
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve) ?? resolve(undefined));
    server = undefined;
  });

  it('waits out 503 and 429 as Retry-After says, resends the same request, and goes on', async () => {
    const token = generateToken();
    const api = await scriptedApi(
      {
        '/v1/tokens': [{ status: 503, retryAfter: '1' }],
        '/v1/jobs': [
          { status: 503, retryAfter: '1' },
          { status: 429, retryAfter: '0' },
        ],
      },
      {
        '/v1/tokens': { status: 201, body: { tokens: [{ token }] } },
        '/v1/jobs': { status: 202, body: { jobId: 'm-1', messageId: '1' } },
      },
    );
    server = api.server;
    const client = createDemoClient(api.url, 'oqk_test');

    const issued = await client.token();
    expect(issued).to.equal(token);
    const answer = await client.enqueue(issued, 'account.open', { owner: 'a', openingBalance: 1 });
    expect(answer).to.deep.equal({ messageId: '1', jobId: 'm-1', replayed: false });

    expect(api.seen.map((s) => s.path)).to.deep.equal([
      '/v1/tokens',
      '/v1/tokens',
      '/v1/jobs',
      '/v1/jobs',
      '/v1/jobs',
    ]);
    // Every resend carries the same Idempotency-Key, so it can never make a second message.
    expect(api.seen.slice(2).map((s) => s.key)).to.deep.equal([token, token, token]);
    // Retry-After: 1 was waited (a second), Retry-After: 0 briefly (not a busy loop).
    expect(api.seen[1]!.at - api.seen[0]!.at).to.be.at.least(950);
    expect(api.seen[3]!.at - api.seen[2]!.at).to.be.at.least(950);
    expect(api.seen[4]!.at - api.seen[3]!.at).to.be.within(90, 5_000);
    expect(client.waited).to.deep.equal({ 503: 2, 429: 1 });
  });

  it('gives up after its budget with one line naming the status, not a stack trace', async () => {
    const api = await scriptedApi(
      { '/v1/tokens': Array.from({ length: 50 }, () => ({ status: 503, retryAfter: '1' })) },
      { '/v1/tokens': { status: 201, body: { tokens: [] } } },
    );
    server = api.server;
    const client = createDemoClient(api.url, 'oqk_test', { retryBudgetMs: 2_500 });
    const started = Date.now();
    const err = await client.token().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(OnceqError);
    expect((err as OnceqError).code).to.equal('service_unavailable');
    expect((err as Error).message).to.match(/^POST http:.*\/v1\/tokens still answered 503 after/);
    expect((err as Error).message).not.to.contain('\n');
    expect(Date.now() - started).to.be.within(1_900, 10_000);
    expect(api.seen.length).to.be.within(2, 4);
  });

  it('sends a request that got no answer (connection dropped) again with the same key', async () => {
    const token = generateToken();
    const api = await scriptedApi(
      {},
      { '/v1/jobs': { status: 202, body: { jobId: 'm-2', messageId: '2' } } },
    );
    server = api.server;
    // The first two requests reach the server and lose their connection before any answer, as
    // when the API is killed mid-request.
    let drops = 2;
    const keys: (string | undefined)[] = [];
    api.server.prependListener('request', (req: IncomingMessage) => {
      keys.push(req.headers['idempotency-key'] as string);
      if (drops > 0) {
        drops--;
        req.socket.destroy();
      }
    });
    const client = createDemoClient(api.url, 'oqk_test');
    const answer = await client.enqueue(token, 'account.open', { owner: 'b', openingBalance: 1 });
    expect(answer).to.deep.equal({ messageId: '2', jobId: 'm-2', replayed: false });
    expect(keys).to.deep.equal([token, token, token]);
    expect(client.unanswered).to.equal(2);
  });

  it('gives up on an API that never answers with one line naming the cause', async () => {
    // A port nothing listens on: every request is refused.
    const closed = await scriptedApi({}, {});
    const url = closed.url;
    await new Promise((resolve) => closed.server.close(resolve));
    const client = createDemoClient(url, 'oqk_test', { retryBudgetMs: 1_000 });
    const err = await client.enqueue(generateToken(), 'account.open', {}).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(OnceqError);
    expect((err as Error).message).to.match(
      /^POST http:.*\/v1\/jobs got no answer \(ECONNREFUSED\)/,
    );
    expect(client.unanswered).to.be.greaterThan(1);
  });
});
