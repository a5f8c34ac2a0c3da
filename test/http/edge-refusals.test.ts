/**
 * Refusals at the edge of `POST /v1/jobs` (DESIGN.md section 3), each with nothing written: no
 * token state changed, no accepted_messages row, no BullMQ key (a Queue object writes its meta
 * key when created). Priorities beyond BullMQ's range; queues no job is declared on, and
 * dead-letter queues; the size of a 422 for a body with a hundred thousand bad fields; numbers
 * JSON.parse would round or turn into Infinity. Real Redis and PostgreSQL through `app.inject()`.
 */
import { expect } from 'chai';
import { Type } from '@sinclair/typebox';
import fc from 'fast-check';
import { createApiTest, type ApiTest } from '../support/api.js';
import { defineJob } from '../../src/jobs/define-job.js';
import { EnqueueOptionsError } from '../../src/core/errors.js';
import { MAX_PRIORITY, MAX_REPORTED_ERRORS } from '../../src/core/limits.js';
import { allKeysPattern } from '../../src/redis/keys.js';

const OPEN = { name: 'account.open', data: { owner: 'alice', openingBalance: 100 } };

/** A job on its own queue that may also be sent to a bulk queue. */
const multi = defineJob({
  name: 'edge.multi',
  queue: 'edge-main',
  queues: ['edge-bulk'],
  schema: Type.Object({ n: Type.Integer() }, { additionalProperties: false }),
  async handle() {
    return { status: 'applied' };
  },
});

/**
 * Every key under the test's prefix with its value (DUMP), and the rows of accepted_messages and
 * outbox: what "nothing written" compares.
 */
async function snapshot(t: ApiTest) {
  const { redis, prefix, db } = t.stack;
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', allKeysPattern(prefix), 'COUNT', 1000);
    cursor = next;
    keys.push(...found);
  } while (cursor !== '0');
  keys.sort();
  const values = await Promise.all(
    keys.map(async (k) => `${k}=${(await redis.dumpBuffer(k))?.toString('hex') ?? ''}`),
  );
  const count = async (table: 'accepted_messages' | 'outbox') =>
    Number(
      (
        await db
          .selectFrom(table)
          .select((eb) => eb.fn.countAll<string>().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );
  return {
    redis: values,
    accepted: await count('accepted_messages'),
    outbox: await count('outbox'),
  };
}

/** Lets a Queue object created by the request write its meta key before the snapshot is taken. */
const settle = () => new Promise((r) => setTimeout(r, 50));

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

describe('http: refusals at the edge, with nothing written', function () {
  this.timeout(120_000);
  let t: ApiTest;
  let alice: string;
  before(async () => {
    // A body limit above the 1.3 MB body of the error-list test.
    t = await createApiTest('edge', { bodyLimit: 4 * 1024 * 1024, stack: { jobs: [multi] } });
    alice = await t.key('alice');
  });
  after(async () => t.close());

  /** Sends each body with one token: each must be refused, nothing written, the token unused. */
  async function expectRefused(
    bodies: readonly (readonly [unknown, string])[],
    status: number,
    code: string,
  ): Promise<void> {
    const token = await t.token(alice);
    const before = await snapshot(t);
    for (const [body, path] of bodies) {
      const res =
        typeof body === 'string'
          ? await raw(t, alice, token, body)
          : await t.enqueue(alice, token, body);
      expect(res.statusCode, `${JSON.stringify(body)}: ${res.body}`).to.equal(status);
      expect(res.headers['content-type']).to.match(/^application\/problem\+json/);
      expect(res.json().code).to.equal(code);
      expect(res.json().errors.map((e: { path: string }) => e.path)).to.include(path);
    }
    await settle();
    expect(await snapshot(t)).to.deep.equal(before);
    // The token is still unused: its first use is a first use.
    const ok = await t.enqueue(alice, token, OPEN);
    expect(ok.statusCode).to.equal(202);
    expect(ok.headers['idempotent-replayed']).to.equal(undefined);
  }

  describe('priority and delay', () => {
    it('priority beyond 2,097,151 (BullMQ’s limit), or a delay not below the dedupe window: 422 naming the field', async () => {
      await expectRefused(
        [
          [{ ...OPEN, priority: MAX_PRIORITY + 1 }, '/priority'],
          [{ ...OPEN, priority: 2 ** 31 }, '/priority'],
          [{ ...OPEN, delay: 7 * 86_400_000 }, '/delay'],
        ],
        422,
        'validation_failed',
      );
    });

    it('priority 2,097,151 is accepted, and BullMQ holds the job with it', async () => {
      const res = await t.enqueue(alice, await t.token(alice), { ...OPEN, priority: MAX_PRIORITY });
      expect(res.statusCode, res.body).to.equal(202);
      const job = await t.stack.producer.queue('ledger').getJob(res.json().jobId);
      expect(job?.opts.priority).to.equal(MAX_PRIORITY);
    });

    it('the producer library refuses the same priority with an EnqueueOptionsError, before any write', async () => {
      const before = await snapshot(t);
      const err = await t.stack.producer
        .enqueue(OPEN.name, OPEN.data, { priority: MAX_PRIORITY + 1 })
        .then(
          () => expect.fail('accepted'),
          (e: unknown) => e,
        );
      expect(err).to.be.instanceOf(EnqueueOptionsError);
      expect((err as EnqueueOptionsError).details).to.deep.equal([
        { path: '/priority', message: `must be an integer from 0 to ${MAX_PRIORITY}` },
      ]);
      await settle();
      expect(await snapshot(t)).to.deep.equal(before);
    });
  });

  describe('queues', () => {
    it('a dead-letter queue, a queue no job is declared on, another job’s queue: 422 naming /queue', async () => {
      await expectRefused(
        [
          [{ ...OPEN, queue: 'ledger.dlq' }, '/queue'],
          [{ ...OPEN, queue: 'nowhere' }, '/queue'],
          [{ ...OPEN, queue: 'edge-bulk' }, '/queue'],
          [{ name: 'edge.multi', data: { n: 1 }, queue: 'edge-main.dlq' }, '/queue'],
          [{ name: 'edge.multi', data: { n: 1 }, queue: 'ledger' }, '/queue'],
        ],
        422,
        'validation_failed',
      );
    });

    it('the queues a job is declared on are accepted: its default and its extra queues', async () => {
      const explicit = await t.enqueue(alice, await t.token(alice), { ...OPEN, queue: 'ledger' });
      expect(explicit.statusCode, explicit.body).to.equal(202);
      expect(explicit.json().queue).to.equal('ledger');
      const main = await t.enqueue(alice, await t.token(alice), {
        name: 'edge.multi',
        data: { n: 1 },
      });
      expect(main.json().queue).to.equal('edge-main');
      const bulk = await t.enqueue(alice, await t.token(alice), {
        name: 'edge.multi',
        data: { n: 2 },
        queue: 'edge-bulk',
      });
      expect(bulk.statusCode, bulk.body).to.equal(202);
      expect(bulk.json().queue).to.equal('edge-bulk');
      expect(await t.stack.producer.queue('edge-bulk').getJob(bulk.json().jobId)).to.not.equal(
        undefined,
      );
      // Workers consume every queue a job is declared on.
      expect(t.stack.registry.queues()).to.include.members(['edge-main', 'edge-bulk']);
    });

    it('the same token and request on another declared queue: 422 idempotency_key_reused', async () => {
      const token = await t.token(alice);
      const body = { name: 'edge.multi', data: { n: 3 } };
      expect((await t.enqueue(alice, token, body)).statusCode).to.equal(202);
      const other = await t.enqueue(alice, token, { ...body, queue: 'edge-bulk' });
      expect(other.statusCode).to.equal(422);
      expect(other.json().code).to.equal('idempotency_key_reused');
      // Naming the default queue is the same request as naming none.
      const same = await t.enqueue(alice, token, { ...body, queue: 'edge-main' });
      expect(same.statusCode).to.equal(202);
      expect(same.headers['idempotent-replayed']).to.equal('true');
    });

    it('the producer library refuses the same queues, before any write', async () => {
      const before = await snapshot(t);
      for (const queue of ['ledger.dlq', 'nowhere']) {
        const err = await t.stack.producer.enqueue(OPEN.name, OPEN.data, { queue }).then(
          () => expect.fail(`accepted ${queue}`),
          (e: unknown) => e,
        );
        expect(err).to.be.instanceOf(EnqueueOptionsError);
        expect((err as EnqueueOptionsError).details.map((f) => f.path)).to.deep.equal(['/queue']);
      }
      await settle();
      expect(await snapshot(t)).to.deep.equal(before);
    });

    it('defineJob refuses extra queues that are not queue names or are dead-letter queues', () => {
      const spec = { name: 'edge.bad', schema: Type.Object({}), handle: async () => null };
      expect(() => defineJob({ ...spec, queues: ['x.dlq'] })).to.throw(/dead-letter/);
      expect(() => defineJob({ ...spec, queues: ['a:b'] })).to.throw(/must be letters/);
    });
  });

  describe('the size of a validation error', () => {
    /** A body with `n` unknown properties at the top level, or inside `data`. */
    function unknownProperties(n: number, where: 'body' | 'data'): string {
      const extra: Record<string, number> = {};
      for (let i = 0; i < n; i++) extra[`unknown${i}`] = i;
      return JSON.stringify(
        where === 'body' ? { ...OPEN, ...extra } : { name: 'edge.multi', data: { n: 1, ...extra } },
      );
    }

    for (const where of ['body', 'data'] as const) {
      it(`a 1.3 MB body of unknown properties (${where === 'body' ? 'in the request' : 'in the data'}): a small 422, fast`, async () => {
        const payload = unknownProperties(90_000, where);
        expect(payload.length).to.be.greaterThan(1_300_000);
        const token = await t.token(alice);
        const before = await snapshot(t);
        const started = process.hrtime.bigint();
        const res = await raw(t, alice, token, payload);
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        expect(res.statusCode).to.equal(422);
        const body = res.json();
        expect(body.code).to.equal('validation_failed');
        // Data this large is not searched for every error: the validator stopped at the first.
        expect(body.errors).to.have.length(1);
        expect(body).to.not.have.property('errorsOmitted');
        const prefix = where === 'body' ? '' : '/data';
        expect(body.errors[0].path).to.match(new RegExp(`^${prefix}/unknown\\d+$`));
        // Kilobytes, not the megabytes of one error per property; and no time for 90,000 errors.
        expect(res.body.length).to.be.below(4_096);
        expect(ms).to.be.below(10_000); // loose: a loaded machine; the sizes above carry the test
        await settle();
        expect(await snapshot(t)).to.deep.equal(before);
      });
    }

    it('data with many failing fields: 20 errors listed and the rest counted in errorsOmitted', async () => {
      const res = await raw(t, alice, await t.token(alice), unknownProperties(500, 'data'));
      expect(res.statusCode).to.equal(422);
      const body = res.json();
      expect(body.errors).to.have.length(MAX_REPORTED_ERRORS);
      expect(body.errorsOmitted).to.equal(500 - MAX_REPORTED_ERRORS);
      expect(body.detail).to.contain(`and ${500 - MAX_REPORTED_ERRORS} more`);
      expect(res.body.length).to.be.below(4_096);
    });
  });

  describe('numbers', () => {
    it('an integer beyond 2^53 in any notation, or a number that overflows: 400 naming the field', async () => {
      const open = (n: string) =>
        `{"name":"account.open","data":{"owner":"a","openingBalance":${n}}}`;
      await expectRefused(
        [
          [open('9007199254740993.0'), '/data/openingBalance'],
          [open('9.007199254740993e15'), '/data/openingBalance'],
          [open('9007199254740993E0'), '/data/openingBalance'],
          [open('90071992547409930e-1'), '/data/openingBalance'],
          [open('-9.007199254740993e+15'), '/data/openingBalance'],
          [open('1e400'), '/data/openingBalance'],
          [open('-1E400'), '/data/openingBalance'],
          [open('1.5e300'), '/data/openingBalance'],
          [
            '{"name":"account.open","data":{"owner":"a","openingBalance":1},"priority":1e400}',
            '/priority',
          ],
          ['{"name":"x","data":{"a":[1,{"b":[2,9.1e15]}]}}', '/data/a/1/b/1'],
        ],
        400,
        'bad_request',
      );
    });

    it('safe integers in other notations, and small fractions, are accepted as their value', async () => {
      for (const [literal, value] of [
        ['1.5e3', 1500],
        ['9007199254740991.0', 9007199254740991],
        ['9.007199254740991e15', 9007199254740991],
        ['1000e-3', 1],
      ] as const) {
        const res = await raw(
          t,
          alice,
          await t.token(alice),
          `{"name":"account.open","data":{"owner":"a","openingBalance":${literal}}}`,
        );
        expect(res.statusCode, `${literal}: ${res.body}`).to.equal(202);
        const row = await t.stack.db
          .selectFrom('accepted_messages')
          .select('data')
          .where('message_id', '=', res.json().messageId)
          .executeTakeFirstOrThrow();
        expect((row.data as { openingBalance: number }).openingBalance).to.equal(value);
      }
    });

    it('property: an integer beyond 2^53 written in any notation anywhere in the data is a 400 naming it', async () => {
      const token = await t.token(alice);
      const before = await snapshot(t);
      await fc.assert(
        fc.asyncProperty(
          fc.bigInt({ min: 2n ** 53n, max: 2n ** 70n }),
          fc.boolean(),
          fc.integer({ min: 0, max: 20 }),
          fc.constantFrom('', '.0', '.000'),
          fc.array(fc.stringMatching(/^[a-z]{1,6}$/), { minLength: 1, maxLength: 4 }),
          async (magnitude, negative, shift, fraction, keys) => {
            const digits = magnitude.toString();
            const point = Math.max(1, digits.length - shift);
            // `digits` with the point moved left by `shift`, and the exponent moving it back.
            const literal =
              (negative ? '-' : '') +
              (shift === 0
                ? `${digits}${fraction}`
                : `${digits.slice(0, point)}.${digits.slice(point)}e${digits.length - point}`);
            let json = literal;
            for (const key of [...keys].reverse()) json = `{${JSON.stringify(key)}:${json}}`;
            const res = await raw(t, alice, token, `{"name":"account.open","data":${json}}`);
            expect(res.statusCode, literal).to.equal(400);
            expect(res.json().errors[0].path).to.equal(`/data/${keys.join('/')}`);
          },
        ),
        { numRuns: 40 },
      );
      await settle();
      expect(await snapshot(t)).to.deep.equal(before);
    });
  });
});
