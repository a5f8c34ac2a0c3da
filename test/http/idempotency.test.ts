/**
 * POST /v1/jobs and the Idempotency-Key table of DESIGN.md section 3, one test per row, plus the
 * races and losses the issue names: two identical requests at once, another principal's token,
 * a replay after Redis lost the token. Real Redis and PostgreSQL through `app.inject()`.
 */
import { expect } from 'chai';
import { createApiTest, type ApiTest } from '../support/api.js';
import { generateToken } from '../../src/core/token.js';
import { tokenKey } from '../../src/redis/keys.js';
import { jobIdFor } from '../../src/core/message.js';

const OPEN = { name: 'account.open', data: { owner: 'alice', openingBalance: 100 } };

/** Jobs BullMQ holds in the ledger queue, and accepted rows in PostgreSQL. */
async function counts(t: ApiTest): Promise<{ jobs: number; accepted: number }> {
  const c = await t.stack.producer.queue('ledger').getJobCounts();
  const jobs = Object.values(c).reduce((a, b) => a + b, 0);
  const row = await t.stack.db
    .selectFrom('accepted_messages')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  return { jobs, accepted: Number(row.n) };
}

describe('http: POST /v1/jobs and Idempotency-Key', function () {
  this.timeout(60_000);
  let t: ApiTest;
  let alice: string;
  let bob: string;

  before(async () => {
    t = await createApiTest('idem');
    alice = await t.key('alice');
    bob = await t.key('bob');
  });
  after(async () => t.close());

  describe('the table, row by row', () => {
    it('header missing: 400 idempotency_key_missing, nothing written', async () => {
      const before = await counts(t);
      const res = await t.enqueue(alice, undefined, OPEN);
      expect(res.statusCode).to.equal(400);
      expect(res.headers['content-type']).to.match(/^application\/problem\+json/);
      expect(res.json()).to.include({ code: 'idempotency_key_missing', status: 400 });
      expect(await counts(t)).to.deep.equal(before);
    });

    for (const [label, header] of [
      ['a bad prefix', `oqx_${'a'.repeat(32)}`],
      ['a bad length', generateToken().slice(0, -1)],
      ['a bad character', `${generateToken().slice(0, -1)}!`],
      ['an empty value', ''],
      ['parameters', `"${generateToken()}";a=1`],
      ['two values in one header', `${generateToken()}, ${generateToken()}`],
    ] as const) {
      it(`malformed key (${label}): 400 idempotency_key_malformed, nothing looked up`, async () => {
        const res = await t.enqueue(alice, header, OPEN);
        expect(res.statusCode).to.equal(400);
        expect(res.json()).to.include({ code: 'idempotency_key_malformed' });
        // The value is not echoed back.
        if (header) expect(res.body).not.to.contain(header);
      });
    }

    it('malformed key (header sent twice): 400 idempotency_key_malformed', async () => {
      const token = await t.token(alice);
      const res = await t.inject({
        method: 'POST',
        url: '/v1/jobs',
        headers: { authorization: `Bearer ${alice}`, 'idempotency-key': [token, token] },
        payload: OPEN,
      });
      expect(res.statusCode).to.equal(400);
      expect(res.json()).to.include({ code: 'idempotency_key_malformed' });
      // Nothing looked up, so the token is still unused and works afterwards.
      expect((await t.enqueue(alice, token, OPEN)).statusCode).to.equal(202);
    });

    it('accepts the token as an RFC 8941 string ("oqt_…")', async () => {
      const token = await t.token(alice);
      const res = await t.enqueue(alice, `"${token}"`, OPEN);
      expect(res.statusCode).to.equal(202);
      const again = await t.enqueue(alice, token, OPEN);
      expect(again.statusCode).to.equal(202);
      expect(again.headers['idempotent-replayed']).to.equal('true');
    });

    it('token never issued, expired, or another principal’s: the same 422 idempotency_key_unknown, byte for byte', async () => {
      const neverIssued = await t.enqueue(alice, generateToken(), OPEN);

      const expiring = (await t.stack.producer.tokens.issue('alice', { ttlMs: 1 }))[0]!.token;
      await new Promise((r) => setTimeout(r, 20));
      const expired = await t.enqueue(alice, expiring, OPEN);

      const bobsToken = await t.token(bob);
      const othersUnused = await t.enqueue(alice, bobsToken, OPEN);

      const bobsUsed = await t.token(bob);
      expect((await t.enqueue(bob, bobsUsed, OPEN)).statusCode).to.equal(202);
      const othersUsed = await t.enqueue(alice, bobsUsed, OPEN);

      for (const res of [neverIssued, expired, othersUnused, othersUsed]) {
        expect(res.statusCode).to.equal(422);
        expect(res.json()).to.include({ code: 'idempotency_key_unknown' });
        expect(res.body).to.equal(neverIssued.body);
        expect(res.headers['content-type']).to.equal(neverIssued.headers['content-type']);
        expect(res.headers['content-length']).to.equal(neverIssued.headers['content-length']);
      }
      // Bob's unused token is still his to use.
      expect((await t.enqueue(bob, bobsToken, OPEN)).statusCode).to.equal(202);
    });

    it('first use: 202 {jobId, messageId, queue, name, state}, one job', async () => {
      const before = await counts(t);
      const token = await t.token(alice);
      const res = await t.enqueue(alice, token, OPEN);
      expect(res.statusCode).to.equal(202);
      const body = res.json();
      expect(Object.keys(body).sort()).to.deep.equal([
        'jobId',
        'messageId',
        'name',
        'queue',
        'state',
      ]);
      expect(body).to.include({ queue: 'ledger', name: 'account.open', state: 'queued' });
      expect(body.messageId).to.match(/^\d+$/);
      expect(body.jobId).to.equal(jobIdFor(body.messageId));
      expect(res.headers['idempotent-replayed']).to.equal(undefined);
      expect(res.body).not.to.contain(token);
      const after = await counts(t);
      expect(after.jobs - before.jobs).to.equal(1);
      expect(after.accepted - before.accepted).to.equal(1);
    });

    it('same token, same request again: the first answer, Idempotent-Replayed: true, no new job', async () => {
      const token = await t.token(alice);
      const first = await t.enqueue(alice, token, OPEN);
      const before = await counts(t);
      // Key order and whitespace do not make another request.
      const again = await t.inject({
        method: 'POST',
        url: '/v1/jobs',
        headers: {
          authorization: `Bearer ${alice}`,
          'idempotency-key': token,
          'content-type': 'application/json',
        },
        payload: '{ "data": {"openingBalance": 100, "owner": "alice"},\n "name": "account.open" }',
      });
      expect(again.statusCode).to.equal(first.statusCode);
      expect(again.body).to.equal(first.body);
      expect(again.headers['idempotent-replayed']).to.equal('true');
      expect(await counts(t)).to.deep.equal(before);
    });

    it('same token, different request: 422 idempotency_key_reused, the original untouched', async () => {
      const token = await t.token(alice);
      const first = await t.enqueue(alice, token, OPEN);
      const before = await counts(t);
      for (const other of [
        { ...OPEN, data: { owner: 'mallory', openingBalance: 100 } },
        { ...OPEN, delay: 1000 },
        { ...OPEN, priority: 3 },
        // (Another queue: account.open is declared on one only, so that is refused before the
        // token is looked at; edge-refusals.test.ts sends a job to another declared queue.)
      ]) {
        const res = await t.enqueue(alice, token, other);
        expect(res.statusCode, JSON.stringify(other)).to.equal(422);
        expect(res.json()).to.include({ code: 'idempotency_key_reused' });
      }
      expect(await counts(t)).to.deep.equal(before);
      const row = await t.stack.db
        .selectFrom('accepted_messages')
        .selectAll()
        .where('message_id', '=', first.json().messageId)
        .executeTakeFirstOrThrow();
      expect(row.data).to.deep.equal(OPEN.data);
      // And the original still replays.
      const replay = await t.enqueue(alice, token, OPEN);
      expect(replay.body).to.equal(first.body);
    });

    it('same token while the first request is in flight: 409 idempotency_key_in_use with Retry-After', async () => {
      const token = await t.token(alice);
      // The first request accepted the token and has not been answered yet: exactly the state
      // the producer leaves between the Redis acceptance and the PostgreSQL record.
      const accepted = await t.stack.producer.tokens.accept(token, {
        principal: 'alice',
        fingerprint: (await import('../../src/core/fingerprint.js')).requestFingerprint({
          name: OPEN.name,
          data: OPEN.data,
          queue: 'ledger',
        }),
        messageId: '123456789',
        ttlMs: 60_000,
        inFlightMs: 60_000,
      });
      expect(accepted.status).to.equal('accepted');
      const before = await counts(t);
      const res = await t.enqueue(alice, token, OPEN);
      expect(res.statusCode).to.equal(409);
      expect(res.json()).to.include({ code: 'idempotency_key_in_use' });
      expect(Number(res.headers['retry-after'])).to.be.greaterThan(0);
      expect(await counts(t)).to.deep.equal(before);
      // Once the first request ends, the same request gets the answer.
      await t.stack.producer.tokens.settle(token, { messageId: '123456789' });
      const later = await t.enqueue(alice, token, OPEN);
      expect(later.statusCode).to.equal(202);
      expect(later.json().messageId).to.equal('123456789');
    });

    it('unknown job name: 422 validation_failed naming /name; the token stays unused', async () => {
      const token = await t.token(alice);
      const res = await t.enqueue(alice, token, { name: 'no.such.job', data: {} });
      expect(res.statusCode).to.equal(422);
      expect(res.json()).to.include({ code: 'validation_failed' });
      expect(res.json().errors).to.deep.include({
        path: '/name',
        message: 'unknown job "no.such.job"',
      });
      expect((await t.enqueue(alice, token, OPEN)).statusCode).to.equal(202);
    });

    it('data failing its schema: 422 validation_failed listing every field; the token stays unused', async () => {
      const token = await t.token(alice);
      const before = await counts(t);
      const res = await t.enqueue(alice, token, {
        name: 'ledger.transfer',
        data: { fromId: 12, toId: 'x', amount: 0, memo: 'hi' },
      });
      expect(res.statusCode).to.equal(422);
      const body = res.json();
      expect(body.code).to.equal('validation_failed');
      const paths = body.errors.map((e: { path: string }) => e.path);
      expect(paths).to.include.members([
        '/data/fromId',
        '/data/toId',
        '/data/amount',
        '/data/memo',
      ]);
      expect(await counts(t)).to.deep.equal(before);
      const ok = await t.enqueue(alice, token, OPEN);
      expect(ok.statusCode).to.equal(202);
      expect(ok.headers['idempotent-replayed']).to.equal(undefined);
    });

    it('request body failing its schema: 422 validation_failed naming the field', async () => {
      const token = await t.token(alice);
      for (const [body, path] of [
        [{ data: {} }, '/name'],
        [{ name: 'account.open' }, '/data'],
        [{ ...OPEN, delay: -1 }, '/delay'],
        [{ ...OPEN, delay: '5' }, '/delay'],
        // Delivered only after the dedupe window (7 d by default): it would expire unrun.
        [{ ...OPEN, delay: 7 * 86_400_000 }, '/delay'],
        [{ ...OPEN, priority: 1.5 }, '/priority'],
        [{ ...OPEN, queue: 'bad:queue' }, '/queue'],
        [{ ...OPEN, extra: true }, '/extra'],
      ] as const) {
        const res = await t.enqueue(alice, token, body);
        expect(res.statusCode, JSON.stringify(body)).to.equal(422);
        expect(res.json().code).to.equal('validation_failed');
        expect(res.json().errors.map((e: { path: string }) => e.path)).to.include(path);
      }
      expect((await t.enqueue(alice, token, OPEN)).statusCode).to.equal(202);
    });

    for (const [label, payload, contentType] of [
      ['not JSON', '{"name": "account.open", "data": ', 'application/json'],
      ['an empty body', '', 'application/json'],
      ['another media type', 'name=account.open', 'text/plain'],
      [
        'a prototype-poisoning key',
        '{"name":"account.open","data":{},"__proto__":{"x":1}}',
        'application/json',
      ],
      [
        'nested too deep',
        `{"name":"account.open","data":${'['.repeat(40)}${']'.repeat(40)}}`,
        'application/json',
      ],
    ] as const) {
      it(`body ${label}: 400 bad_request`, async () => {
        const res = await t.inject({
          method: 'POST',
          url: '/v1/jobs',
          headers: {
            authorization: `Bearer ${alice}`,
            'idempotency-key': generateToken(),
            'content-type': contentType,
          },
          payload,
        });
        expect(res.statusCode).to.equal(400);
        expect(res.json()).to.include({ code: 'bad_request', status: 400 });
      });
    }

    it('body over the limit: 413 payload_too_large', async () => {
      const big = JSON.stringify({ name: 'account.open', data: { owner: 'x'.repeat(1_100_000) } });
      const res = await t.enqueue(alice, generateToken(), JSON.parse(big));
      expect(res.statusCode).to.equal(413);
      expect(res.json()).to.include({ code: 'payload_too_large', status: 413 });
    });

    it('no or bad API key: 401 before any token lookup', async () => {
      const token = await t.token(alice);
      for (const headers of [
        {},
        { authorization: 'Basic YWxpY2U6c2VjcmV0' },
        { authorization: 'Bearer' },
        { authorization: `Bearer ${alice.slice(0, -1)}x` },
        { authorization: `Bearer ${alice}x` },
        { authorization: `Bearer oqk_0000000000000000_${'A'.repeat(43)}` },
      ]) {
        const res = await t.inject({
          method: 'POST',
          url: '/v1/jobs',
          headers: { ...headers, 'idempotency-key': token },
          payload: OPEN,
        });
        expect(res.statusCode, JSON.stringify(headers)).to.equal(401);
        expect(res.json()).to.include({ code: 'unauthorized' });
        expect(res.headers['www-authenticate']).to.match(/^Bearer/);
      }
      // The token was not looked up (not even accepted): it is still usable.
      const res = await t.enqueue(alice, token, OPEN);
      expect(res.statusCode).to.equal(202);
      expect(res.headers['idempotent-replayed']).to.equal(undefined);
    });

    it('over the per-principal rate limit: 429 with Retry-After (other principals unaffected)', async () => {
      const limited = await createApiTest('idem_rate', { rateLimit: { max: 3, windowMs: 60_000 } });
      try {
        const carol = await limited.key('carol');
        const dave = await limited.key('dave');
        const statuses: number[] = [];
        let last;
        for (let i = 0; i < 5; i++) {
          last = await limited.inject({
            method: 'POST',
            url: '/v1/tokens',
            headers: { authorization: `Bearer ${carol}` },
          });
          statuses.push(last.statusCode);
        }
        expect(statuses).to.deep.equal([201, 201, 201, 429, 429]);
        expect(last!.json()).to.include({ code: 'rate_limited', status: 429 });
        expect(Number(last!.headers['retry-after'])).to.be.greaterThan(0);
        const other = await limited.inject({
          method: 'POST',
          url: '/v1/tokens',
          headers: { authorization: `Bearer ${dave}` },
        });
        expect(other.statusCode).to.equal(201);
        // Health checks are never limited.
        expect((await limited.inject({ method: 'GET', url: '/healthz' })).statusCode).to.equal(200);
      } finally {
        await limited.close();
      }
    });
  });

  describe('races and losses', () => {
    it('two identical requests at once with one token: exactly one job, the other 409 or a replay', async () => {
      for (let round = 0; round < 10; round++) {
        const token = await t.token(alice);
        const before = await counts(t);
        const [a, b] = await Promise.all([
          t.enqueue(alice, token, OPEN),
          t.enqueue(alice, token, OPEN),
        ]);
        // The first use first; the other may finish earlier, as a 409 or as its replay.
        const rank = (r: typeof a) => r.statusCode * 2 + (r.headers['idempotent-replayed'] ? 1 : 0);
        const answers = [a, b].sort((x, y) => rank(x) - rank(y));
        expect(answers[0]!.statusCode).to.equal(202);
        expect(answers[0]!.headers['idempotent-replayed']).to.equal(undefined);
        const second = answers[1]!;
        if (second.statusCode === 409) {
          expect(second.json().code).to.equal('idempotency_key_in_use');
          expect(second.headers['retry-after']).to.be.a('string');
        } else {
          expect(second.statusCode).to.equal(202);
          expect(second.headers['idempotent-replayed']).to.equal('true');
          expect(second.body).to.equal(answers[0]!.body);
        }
        const after = await counts(t);
        expect(after.jobs - before.jobs).to.equal(1);
        expect(after.accepted - before.accepted).to.equal(1);
        // Retrying after a 409 gets the first answer.
        const retry = await t.enqueue(alice, token, OPEN);
        expect(retry.body).to.equal(answers[0]!.body);
      }
    });

    it('replay after Redis lost the token: the original answer from PostgreSQL, no new job', async () => {
      const token = await t.token(alice);
      const first = await t.enqueue(alice, token, OPEN);
      expect(first.statusCode).to.equal(202);
      const before = await counts(t);
      // What a FLUSHDB does to this test's token: gone from Redis (the shared Redis keeps the rest).
      expect(await t.stack.redis.del(tokenKey(t.stack.prefix, token))).to.equal(1);
      const again = await t.enqueue(alice, token, OPEN);
      expect(again.statusCode).to.equal(202);
      expect(again.body).to.equal(first.body);
      expect(again.headers['idempotent-replayed']).to.equal('true');
      expect(await counts(t)).to.deep.equal(before);
      // A different request with the lost token is still refused as a reuse.
      const other = await t.enqueue(alice, token, {
        ...OPEN,
        data: { owner: 'x', openingBalance: 1 },
      });
      expect(other.json().code).to.equal('idempotency_key_reused');
      // And another principal still learns nothing.
      const bobs = await t.enqueue(bob, token, OPEN);
      expect(bobs.json().code).to.equal('idempotency_key_unknown');
    });

    it('another request after Redis went back to before the first use: 422 reused, no job for it', async () => {
      const token = await t.token(alice);
      const key = tokenKey(t.stack.prefix, token);
      // A snapshot of the token as issued, restored after its first use: Redis went back in time.
      const issued = await t.stack.redis.dumpBuffer(key);
      const first = await t.enqueue(alice, token, OPEN);
      expect(first.statusCode).to.equal(202);
      const before = await counts(t);
      await t.stack.redis.restore(key, 60_000, issued!, 'REPLACE');
      const other = await t.enqueue(alice, token, {
        ...OPEN,
        data: { owner: 'mallory', openingBalance: 5 },
      });
      expect(other.statusCode).to.equal(422);
      expect(other.json().code).to.equal('idempotency_key_reused');
      expect(await counts(t)).to.deep.equal(before);
      const job = await t.stack.producer.queue('ledger').getJob(first.json().jobId);
      expect(job?.data.data).to.deep.equal(OPEN.data);
      // The first request's own replay is still its original answer.
      const replay = await t.enqueue(alice, token, OPEN);
      expect(replay.statusCode).to.equal(202);
      expect(replay.body).to.equal(first.body);
      expect(replay.headers['idempotent-replayed']).to.equal('true');
      // And the other request stays refused.
      const again = await t.enqueue(alice, token, {
        ...OPEN,
        data: { owner: 'mallory', openingBalance: 5 },
      });
      expect(again.json().code).to.equal('idempotency_key_reused');
      expect(await counts(t)).to.deep.equal(before);
    });

    it('replay after Redis lost everything of the test (tokens and BullMQ keys): the original answer, one job', async () => {
      const isolated = await createApiTest('idem_flush');
      try {
        const key = await isolated.key('erin');
        const token = await isolated.token(key);
        const first = await isolated.enqueue(key, token, OPEN);
        // Every key of this test's prefix (a FLUSHDB, scoped to this test).
        const { prefix, redis } = isolated.stack;
        let cursor = '0';
        do {
          const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
          cursor = next;
          if (keys.length) await redis.del(...keys);
        } while (cursor !== '0');
        expect(await counts(isolated)).to.deep.equal({ jobs: 0, accepted: 1 });
        const again = await isolated.enqueue(key, token, OPEN);
        expect(again.statusCode).to.equal(202);
        expect(again.body).to.equal(first.body);
        expect(again.headers['idempotent-replayed']).to.equal('true');
        // The replay put the lost job back under the same id: still one job, one message.
        expect(await counts(isolated)).to.deep.equal({ jobs: 1, accepted: 1 });
        const job = await isolated.stack.producer.queue('ledger').getJob(first.json().jobId);
        expect(job?.data.messageId).to.equal(first.json().messageId);
      } finally {
        await isolated.close();
      }
    });
  });
});
