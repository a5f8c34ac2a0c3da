/**
 * The rest of the API: tokens, job status, health, OpenAPI, authentication and keys, the body
 * scan for unsafe integers, secrets kept out of the logs, and a 10,000-request run with retries.
 */
import { Writable } from 'node:stream';
import { expect } from 'chai';
import { sql } from 'kysely';
import { createApiTest, type ApiTest } from '../support/api.js';
import { createLogger } from '../../src/logger.js';
import { scanJson } from '../../src/http/json-body.js';
import { revokeApiKey } from '../../src/db/api-keys.repository.js';
import { parseApiKey } from '../../src/core/api-key.js';
import { generateToken, isWellFormedToken } from '../../src/core/token.js';

const OPEN = { name: 'account.open', data: { owner: 'alice', openingBalance: 100 } };

function raw(t: ApiTest, key: string, token: string, payload: string) {
  return t.inject({
    method: 'POST',
    url: '/v1/jobs',
    headers: {
      authorization: `Bearer ${key}`,
      'idempotency-key': token,
      'content-type': 'application/json',
    },
    payload,
  });
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('http: the producer API', function () {
  this.timeout(120_000);

  describe('tokens, status, health, docs', () => {
    let t: ApiTest;
    let alice: string;
    before(async () => {
      t = await createApiTest('api');
      alice = await t.key('alice');
    });
    after(async () => t.close());

    it('POST /v1/tokens: 201 {token, expiresAt}, or {tokens} when count is sent (1 to 100)', async () => {
      const auth = { authorization: `Bearer ${alice}` };
      const one = await t.inject({ method: 'POST', url: '/v1/tokens', headers: auth });
      expect(one.statusCode).to.equal(201);
      expect(one.headers['cache-control']).to.equal('no-store');
      expect(isWellFormedToken(one.json().token)).to.equal(true);
      expect(Date.parse(one.json().expiresAt)).to.be.greaterThan(Date.now() + 23 * 3_600_000);

      const many = await t.inject({
        method: 'POST',
        url: '/v1/tokens',
        headers: auth,
        payload: { count: 100 },
      });
      expect(many.statusCode).to.equal(201);
      const tokens = many.json().tokens as { token: string }[];
      expect(new Set(tokens.map((x) => x.token)).size).to.equal(100);

      const single = await t.inject({
        method: 'POST',
        url: '/v1/tokens',
        headers: auth,
        payload: { count: 1 },
      });
      expect(single.json().tokens).to.have.length(1);

      for (const count of [0, 101, 1.5, '3']) {
        const bad = await t.inject({
          method: 'POST',
          url: '/v1/tokens',
          headers: auth,
          payload: { count },
        });
        expect(bad.statusCode, String(count)).to.equal(422);
        expect(bad.json().errors[0].path).to.equal('/count');
      }
    });

    it('GET /v1/jobs/:jobId: queued, then completed with the result; 404 for others and unknown ids', async () => {
      const token = await t.token(alice);
      const accepted = (await t.enqueue(alice, token, OPEN)).json();
      const auth = { authorization: `Bearer ${alice}` };
      const queued = await t.inject({
        method: 'GET',
        url: `/v1/jobs/${accepted.jobId}`,
        headers: auth,
      });
      expect(queued.statusCode).to.equal(200);
      expect(queued.json()).to.include({ state: 'queued', jobId: accepted.jobId, attempts: 0 });

      const worker = await t.stack.startWorker();
      let status: Record<string, unknown> = {};
      for (let i = 0; i < 200 && status.state !== 'completed'; i++) {
        await new Promise((r) => setTimeout(r, 50));
        status = (
          await t.inject({ method: 'GET', url: `/v1/jobs/${accepted.jobId}`, headers: auth })
        ).json();
      }
      await worker.close(5_000);
      expect(status).to.include({ state: 'completed', attempts: 1 });
      expect(status.result).to.deep.equal({ status: 'applied', accountId: accepted.messageId });
      expect(status.startedAt).to.be.a('string');
      expect(status.finishedAt).to.be.a('string');

      // BullMQ forgot the job: the inbox still knows.
      await (await t.stack.producer.queue('ledger').getJob(accepted.jobId))!.remove();
      const fromInbox = (
        await t.inject({ method: 'GET', url: `/v1/jobs/${accepted.jobId}`, headers: auth })
      ).json();
      expect(fromInbox).to.include({ state: 'completed', attempts: null });
      expect(fromInbox.result).to.deep.equal(status.result);

      const mallory = await t.key('mallory');
      const theirs = await t.inject({
        method: 'GET',
        url: `/v1/jobs/${accepted.jobId}`,
        headers: { authorization: `Bearer ${mallory}` },
      });
      const unknown = await t.inject({ method: 'GET', url: '/v1/jobs/m-1', headers: auth });
      const garbage = await t.inject({ method: 'GET', url: '/v1/jobs/nope', headers: auth });
      for (const res of [theirs, unknown, garbage]) {
        expect(res.statusCode).to.equal(404);
        expect(res.json().code).to.equal('not_found');
      }
      expect(theirs.body).to.equal(unknown.body);
      // An admin key sees every principal's jobs.
      const admin = await t.key('ops', true);
      const asAdmin = await t.inject({
        method: 'GET',
        url: `/v1/jobs/${accepted.jobId}`,
        headers: { authorization: `Bearer ${admin}` },
      });
      expect(asAdmin.statusCode).to.equal(200);
    });

    it('/healthz and /readyz answer without a key; /readyz checks Redis, PostgreSQL and ids', async () => {
      expect((await t.inject({ method: 'GET', url: '/healthz' })).json()).to.deep.equal({
        status: 'ok',
      });
      const ready = await t.inject({ method: 'GET', url: '/readyz' });
      expect(ready.statusCode).to.equal(200);
      expect(ready.json()).to.deep.equal({
        status: 'ready',
        checks: { redis: 'ok', postgres: 'ok', ids: 'ok' },
      });
    });

    it('/docs serves the OpenAPI document built from the request schemas', async () => {
      const doc = (await t.inject({ method: 'GET', url: '/docs/json' })).json();
      expect(doc.openapi).to.match(/^3\./);
      const enqueue = doc.paths['/v1/jobs'].post;
      const schema = enqueue.requestBody.content['application/json'].schema;
      expect(Object.keys(schema.properties)).to.include.members([
        'name',
        'data',
        'queue',
        'delay',
        'priority',
      ]);
      expect(enqueue.parameters.map((p: { name: string }) => p.name)).to.include('idempotency-key');
      expect(Object.keys(enqueue.responses)).to.include.members(['202', '400', '409', '422']);
      expect(doc.paths['/v1/tokens'].post).to.be.an('object');
      expect(doc.paths['/v1/jobs/{jobId}'].get).to.be.an('object');
      expect((await t.inject({ method: 'GET', url: '/docs' })).statusCode).to.be.oneOf([200, 302]);
    });

    it('unknown routes: 401 without a key, 404 problem with one', async () => {
      expect((await t.inject({ method: 'GET', url: '/v1/nothing' })).statusCode).to.equal(401);
      const res = await t.inject({
        method: 'GET',
        url: '/v1/nothing',
        headers: { authorization: `Bearer ${alice}` },
      });
      expect(res.statusCode).to.equal(404);
      expect(res.json().code).to.equal('not_found');
    });

    it('refuses \\u0000 in strings (jsonb cannot store it) with 400 naming the field, before any write', async () => {
      const token = await t.token(alice);
      const res = await raw(
        t,
        alice,
        token,
        '{"name":"account.open","data":{"owner":"al\\u0000ice","openingBalance":1}}',
      );
      expect(res.statusCode).to.equal(400);
      expect(res.json()).to.include({ code: 'bad_request' });
      expect(res.json().errors[0].path).to.equal('/data/owner');
      expect(res.json().detail).to.contain('U+0000');
      // An escaped backslash followed by "u0000" is ordinary text.
      expect(scanJson('{"a":"\\\\u0000"}', 32)).to.equal(undefined);
      expect(scanJson('{"a":["x","\\u0000"]}', 32)?.path).to.equal('/a/1');
      // The token was never touched: the corrected request is accepted with it.
      expect((await t.enqueue(alice, token, OPEN)).statusCode).to.equal(202);
    });

    it('refuses an escaped lone surrogate (jsonb cannot store it) with 400 naming the field, before any write', async () => {
      const token = await t.token(alice);
      for (const [payload, path] of [
        [
          '{"name":"account.open","data":{"owner":"al\\ud800ice","openingBalance":1}}',
          '/data/owner',
        ],
        ['{"name":"account.open","data":{"owner":"\\uDFFF","openingBalance":1}}', '/data/owner'],
        ['{"name":"account.open","data":{"owner":"x\\ud83d","openingBalance":1}}', '/data/owner'],
      ] as const) {
        const res = await raw(t, alice, token, payload);
        expect(res.statusCode, payload).to.equal(400);
        expect(res.json()).to.include({ code: 'bad_request' });
        expect(res.json().errors[0].path).to.equal(path);
        expect(res.json().detail).to.contain('surrogate');
      }
      // A pair is a character (U+1F600), and an escaped backslash before "ud800" is plain text.
      expect(scanJson('{"a":"\\ud83d\\ude00"}', 32)).to.equal(undefined);
      expect(scanJson('{"a":"\\\\ud800"}', 32)).to.equal(undefined);
      expect(scanJson('{"a":["x","\\udc00\\ud800"]}', 32)?.path).to.equal('/a/1');
      // A property name is reported by its own path, not its previous sibling's.
      expect(scanJson('{"a":1,"b\\ud800":2}', 32)?.path).to.equal('/b\ud800');
      expect(scanJson('{"a":{"k\\u0000":1}}', 32)?.path).to.equal('/a/k\u0000');
      // A malformed escape is left to JSON.parse, and the scan does not run past the string.
      expect(scanJson('{"a":"\\uZZ","b":"\\ud800"}', 32)?.path).to.equal('/b');
      // The token was never touched, and the pair is accepted and stored.
      const res = await raw(
        t,
        alice,
        token,
        '{"name":"account.open","data":{"owner":"\\ud83d\\ude00","openingBalance":1}}',
      );
      expect(res.statusCode).to.equal(202);
      const row = await t.stack.db
        .selectFrom('accepted_messages')
        .select('data')
        .where('message_id', '=', res.json().messageId)
        .executeTakeFirstOrThrow();
      expect(row.data).to.deep.equal({ owner: '\u{1F600}', openingBalance: 1 });
    });

    it('refuses ids sent as JSON numbers beyond 2^53-1, naming the field, never rounding them', async () => {
      const token = await t.token(alice);
      for (const [payload, path] of [
        [
          '{"name":"account.rename","data":{"accountId":9007199254740993,"owner":"x","expectedVersion":0}}',
          '/data/accountId',
        ],
        [
          '{"name":"ledger.transfer","data":{"fromId":"1","toId":-12345678901234567890,"amount":1}}',
          '/data/toId',
        ],
        ['{"name":"x","data":{"ids":[1,2,18446744073709551615]}}', '/data/ids/2'],
      ] as const) {
        const res = await raw(t, alice, token, payload);
        expect(res.statusCode, payload).to.equal(400);
        expect(res.json().code).to.equal('bad_request');
        expect(res.json().errors[0].path).to.equal(path);
        expect(res.json().detail).to.contain('decimal strings');
      }
      // 2^53-1 itself, small floats and digits inside strings are fine (1.5e300 is not: every
      // double that large is an integer beyond 2^53, see json-body.test.ts).
      expect(
        scanJson(
          '{"a":9007199254740991,"b":-9007199254740991,"c":1.5e-300,"d":"12345678901234567890"}',
          32,
        ),
      ).to.equal(undefined);
      expect(scanJson('{"a\\"b":{"c/d":[0,9007199254740992]}}', 32)?.path).to.equal('/a"b/c~1d/1');
      // The token was never touched.
      expect((await t.enqueue(alice, token, OPEN)).statusCode).to.equal(202);
    });
  });

  describe('the worker-id lease is lost', () => {
    // A short heartbeat, so the loss is noticed at once.
    const TTL_MS = 1_500;
    let t: ApiTest;
    let alice: string;
    before(async () => {
      t = await createApiTest('idloss', { stack: { ids: { ttlMs: TTL_MS, heartbeatMs: 100 } } });
      alice = await t.key('alice');
    });
    after(async () => t.close());

    it('answers 503 with Retry-After (not 500) and /readyz 503, then accepts again under a new lease', async () => {
      const firstToken = await t.token(alice);
      const before = await t.enqueue(alice, firstToken, OPEN);
      expect(before.statusCode).to.equal(202);

      // Another process took this one's worker id (as after a pause past the ttl), and every
      // other id is held too: no replacement can be leased until one is free again.
      await sql`update worker_id_leases
        set owner = 'intruder', expires_at = now() + interval '1 hour'`.execute(t.stack.db);
      await waitFor(async () => !t.stack.ids.isReady(), 2_000);

      const token = await t.token(alice);
      const during = await t.enqueue(alice, token, OPEN);
      expect(during.statusCode).to.equal(503);
      expect(during.headers['retry-after']).to.match(/^\d+$/);
      expect(during.json()).to.include({ status: 503, code: 'service_unavailable' });
      const ready = await t.inject({ method: 'GET', url: '/readyz' });
      expect(ready.statusCode).to.equal(503);
      expect(ready.json().checks).to.include({ ids: 'unavailable' });
      // A replay needs no new id: it is answered from PostgreSQL meanwhile.
      const replay = await t.enqueue(alice, firstToken, OPEN);
      expect(replay.statusCode).to.equal(202);
      expect(replay.headers['idempotent-replayed']).to.equal('true');
      expect(replay.json().messageId).to.equal(before.json().messageId);
      // Nothing was written for the refused request: the same token is still unused.
      expect(
        await t.stack.db.selectFrom('accepted_messages').select('token').execute(),
      ).to.have.length(1);

      await sql`update worker_id_leases set owner = null, expires_at = null
        where owner = 'intruder'`.execute(t.stack.db);
      await waitFor(async () => t.stack.ids.isReady(), 4 * TTL_MS);
      const after = await t.enqueue(alice, token, OPEN);
      expect(after.statusCode).to.equal(202);
      expect((await t.inject({ method: 'GET', url: '/readyz' })).statusCode).to.equal(200);
      const ids = [before.json().messageId, after.json().messageId];
      expect(new Set(ids).size).to.equal(2);
      // A lease is held again, recorded in PostgreSQL under the new worker id.
      const row = await t.stack.db
        .selectFrom('worker_id_leases')
        .select('owner')
        .where('worker_id', '=', t.stack.ids.workerId)
        .executeTakeFirstOrThrow();
      expect(row.owner).to.equal(t.stack.ids.lease.owner);
    });
  });

  describe('API keys', () => {
    let t: ApiTest;
    before(async () => {
      t = await createApiTest('keys');
    });
    after(async () => t.close());

    it('stores only a hash; a revoked key gets 401 like an unknown one', async () => {
      const key = await t.key('frank');
      const { id, secret } = parseApiKey(key)!;
      const row = await t.stack.db
        .selectFrom('api_keys')
        .selectAll()
        .where('key_id', '=', id)
        .executeTakeFirstOrThrow();
      expect(row.key_hash).to.match(/^sha256:[0-9a-f]{64}$/);
      expect(JSON.stringify(row)).not.to.contain(secret);
      const auth = { authorization: `Bearer ${key}` };
      expect(
        (await t.inject({ method: 'POST', url: '/v1/tokens', headers: auth })).statusCode,
      ).to.equal(201);
      // The scheme is case-insensitive (RFC 6750).
      expect(
        (
          await t.inject({
            method: 'POST',
            url: '/v1/tokens',
            headers: { authorization: `bearer ${key}` },
          })
        ).statusCode,
      ).to.equal(201);
      await revokeApiKey(t.stack.db, id);
      const revoked = await t.inject({ method: 'POST', url: '/v1/tokens', headers: auth });
      const unknown = await t.inject({
        method: 'POST',
        url: '/v1/tokens',
        headers: { authorization: `Bearer oqk_${'0'.repeat(16)}_${'B'.repeat(43)}` },
      });
      expect(revoked.statusCode).to.equal(401);
      expect(revoked.body).to.equal(unknown.body);
    });
  });

  describe('logs', () => {
    it('never contain tokens, API keys or Authorization headers', async () => {
      let captured = '';
      const sink = new Writable({
        write(chunk, _enc, done) {
          captured += String(chunk);
          done();
        },
      });
      const logger = createLogger({ level: 'trace', destination: sink });
      const t = await createApiTest('logs', { logger });
      const secrets: string[] = [];
      try {
        const key = await t.key('grace');
        secrets.push(key, parseApiKey(key)!.secret);
        const token = await t.token(key);
        const many = await t.inject({
          method: 'POST',
          url: '/v1/tokens',
          headers: { authorization: `Bearer ${key}` },
          payload: { count: 3 },
        });
        secrets.push(token, ...many.json().tokens.map((x: { token: string }) => x.token));
        await t.enqueue(key, token, OPEN);
        await t.enqueue(key, token, OPEN);
        await t.enqueue(key, token, { ...OPEN, data: { owner: 'x', openingBalance: 1 } });
        await t.enqueue(key, `${token}x`, OPEN);
        const stranger = generateToken();
        secrets.push(stranger);
        await t.enqueue(key, stranger, OPEN);
        await t.inject({
          method: 'GET',
          url: `/v1/jobs/${token}`,
          headers: { authorization: `Bearer ${key}` },
        });
        await t.inject({ method: 'GET', url: `/healthz?token=${token}&key=${key}` });
        await t.inject({
          method: 'POST',
          url: '/v1/tokens',
          headers: { authorization: `Bearer ${key}x` },
        });
        // Even a handler that logs the whole request's headers.
        t.app.log.info(
          { headers: { authorization: `Bearer ${key}`, 'idempotency-key': token } },
          'headers',
        );
        t.app.log.info(`a message that mentions ${token} and ${key}`);
        logger.flush();
      } finally {
        await t.close();
      }
      expect(captured).to.contain('request completed');
      expect(captured).to.contain('[redacted]');
      for (const secret of secrets) expect(captured).not.to.contain(secret);
      expect(captured.toLowerCase()).not.to.match(/bearer oqk/);
    });
  });

  describe('10,000 requests, 30% of them retries', () => {
    let t: ApiTest;
    before(async () => {
      t = await createApiTest('load', { stack: { poolSize: 10 } });
    });
    after(async () => t.close());

    it('makes exactly one job and one accepted message per distinct token', async function () {
      this.timeout(600_000);
      const key = await t.key('load');
      const total = 10_000;
      const pool: string[] = [];
      const sent: { token: string; body: unknown }[] = [];
      let retries = 0;
      const statuses = new Map<number, number>();
      const next = async (): Promise<string> => {
        if (pool.length === 0) {
          const res = await t.inject({
            method: 'POST',
            url: '/v1/tokens',
            headers: { authorization: `Bearer ${key}` },
            payload: { count: 100 },
          });
          pool.push(...res.json().tokens.map((x: { token: string }) => x.token));
        }
        return pool.pop()!;
      };
      let n = 0;
      const lane = async () => {
        while (n < total) {
          const i = n++;
          let request: { token: string; body: unknown };
          if (sent.length > 0 && i % 10 < 3) {
            request = sent[Math.floor(Math.random() * sent.length)]!;
            retries++;
          } else {
            request = {
              token: await next(),
              body: { name: 'account.open', data: { owner: `o${i}`, openingBalance: i } },
            };
            sent.push(request);
          }
          const res = await t.enqueue(key, request.token, request.body);
          statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
        }
      };
      await Promise.all(Array.from({ length: 16 }, lane));
      const distinct = new Set(sent.map((s) => s.token)).size;
      expect(retries).to.be.within(2_900, 3_100);
      expect(distinct).to.equal(total - retries);
      // Every answer is an acceptance, a replay, or (a retry racing its first use) a 409.
      expect(
        [...statuses.keys()].every((s) => s === 202 || s === 409),
        JSON.stringify([...statuses]),
      ).to.equal(true);
      const counts = await t.stack.producer.queue('ledger').getJobCounts();
      const jobs = Object.values(counts).reduce((a, b) => a + b, 0);
      const accepted = await t.stack.db
        .selectFrom('accepted_messages')
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .executeTakeFirstOrThrow();
      expect(jobs).to.equal(distinct);
      expect(Number(accepted.n)).to.equal(distinct);
    });
  });
});
