/**
 * Property-based tests of the HTTP API (DESIGN.md section 3) with fast-check, through
 * `app.inject()` against a real app over real Redis and PostgreSQL (own prefix, own schema).
 * Random bodies (every JSON type, nesting around the limit, unicode with lone surrogates raw and
 * escaped, numbers in every notation, repeated and prototype keys), content types, API keys
 * (well-formed unknown, revoked, malformed, another principal's) and Idempotency-Keys (every
 * form, unknown, expired, another principal's, used). For every request:
 *
 * - never a 5xx;
 * - every error is application/problem+json with a `code` from the catalogue and its status,
 *   never echoing the key or the token;
 * - the answer is one the contract allows for those bytes (test/support/http-model.ts);
 * - a 4xx writes nothing: rows of accepted_messages, inbox, outbox and dead_letters, the number
 *   of Redis keys under the prefix and the token's own state are the same before and after;
 * - a 202 is answered again, byte for byte, to the same request, with `Idempotent-Replayed: true`
 *   and nothing written.
 *
 * `npm test` runs a few thousand cases. `npm run test:property -- --runs 100000 [--seed S]
 * [--path P]` runs more (test/support/property-run.ts): it prints the seed, and fast-check
 * prints seed and path of any counterexample so that the run can be repeated.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { buildApp } from '../../src/http/build-app.js';
import { PROBLEM_CATALOGUE } from '../../src/http/problem.js';
import { mintApiKey } from '../../src/core/api-key.js';
import { generateToken } from '../../src/core/token.js';
import { insertApiKey, revokeApiKey } from '../../src/db/api-keys.repository.js';
import { defineJob } from '../../src/jobs/define-job.js';
import { ledgerJobs } from '../../src/jobs/examples/ledger/index.js';
import { allKeysPattern, outstandingTokensKey, tokenKey } from '../../src/redis/keys.js';
import { createTestStack, type TestStack } from '../support/stack.js';
import {
  bodyFacts,
  bodyLayer,
  decodeBody,
  enqueueProblems,
  type JobCatalogue,
} from '../support/http-model.js';
import {
  auth,
  bodyText,
  contentType,
  idem,
  malformedKey,
  numberLiteral,
  anyNode,
  emit,
  keyName,
  text,
  type AuthCase,
  type IdemCase,
  validEnqueueBody,
} from '../support/http-arbitraries.js';

/** A job whose schema takes anything: the 202 path with the wildest data. */
const anyJob = defineJob({
  name: 'prop.any',
  queue: 'prop',
  schema: Type.Any(),
  async handle() {
    return { status: 'applied' };
  },
});

/** Small, so that bodies over the limit are cheap to send. */
const BODY_LIMIT = 16_384;

/** Runs: `ONCEQ_PROPERTY_RUNS` in all, shared by the properties; a few thousand by default. */
const TOTAL_RUNS = Number(process.env.ONCEQ_PROPERTY_RUNS ?? 0) || 0;
const SEED = process.env.ONCEQ_PROPERTY_SEED ? Number(process.env.ONCEQ_PROPERTY_SEED) : undefined;
const PATH = process.env.ONCEQ_PROPERTY_PATH || undefined;

function parameters(name: string, share: number, defaultRuns: number): fc.Parameters<unknown> {
  const numRuns = TOTAL_RUNS ? Math.max(1, Math.round(TOTAL_RUNS * share)) : defaultRuns;
  const seed = SEED ?? (Date.now() ^ (Math.random() * 0x100000000)) | 0;
  if (TOTAL_RUNS || SEED !== undefined) {
    console.log(`  property ${name}: --seed ${seed} (${numRuns} runs)`);
  }
  return { numRuns, seed, ...(PATH ? { path: PATH } : {}) };
}

/** Request headers as inject takes them (a repeated header is an array). */
type Headers = Record<string, string | string[]>;

/** What a write check compares: row counts, Redis key count, one token's state. */
interface Writes {
  rows: Record<string, number>;
  keys: number;
  token?: Record<string, string>;
}

describe('http: properties of the API (fast-check)', function () {
  this.timeout(TOTAL_RUNS ? 0 : 120_000);
  let stack: TestStack;
  let app: FastifyInstance;
  const keys: Record<string, string> = {};
  let revoked = '';
  let expired = '';
  const spare: Partial<Record<'alice' | 'bob', string>> = {};
  const used: {
    owner: string;
    token: string;
    request: string;
    payload: string | Buffer;
    body: string;
  }[] = [];
  let jobs: JobCatalogue;
  /** Jobs enqueued before the properties start, by principal (GET looks them up). */
  const warmJobs = { alice: [] as string[], bob: [] as string[] };
  let addressCounter = 0;
  /** Answers seen, by route and code: printed on long runs, so a run shows what it covered. */
  const tally = new Map<string, number>();
  const seen = (what: string) => tally.set(what, (tally.get(what) ?? 0) + 1);

  before(async () => {
    stack = await createTestStack('props', { jobs: [anyJob] });
    app = await buildApp({
      db: stack.db,
      backend: stack.backend,
      producer: stack.producer,
      ids: stack.ids,
      bodyLimit: BODY_LIMIT,
      rateLimit: false,
      docs: false,
      keyCacheMs: 60_000,
    });
    await app.ready();
    for (const principal of ['alice', 'bob', 'minter', 'gone']) {
      const minted = mintApiKey();
      await insertApiKey(stack.db, { id: minted.id, principal, hash: minted.hash, admin: false });
      keys[principal] = minted.key;
      if (principal === 'gone') {
        await revokeApiKey(stack.db, minted.id);
        revoked = minted.key;
      }
    }
    const catalogue = new Map<string, { queue: string; valid(data: unknown): boolean }>();
    for (const job of [...ledgerJobs, anyJob]) {
      catalogue.set(job.name, {
        queue: job.queue,
        valid(data) {
          try {
            stack.registry.validate(job.name, data);
            return true;
          } catch {
            return false;
          }
        },
      });
    }
    jobs = catalogue;
    // Warm up: the queues' own keys exist before any write is counted.
    for (const [who, name, data] of [
      ['alice', 'account.open', { owner: 'warm', openingBalance: 1 }],
      ['alice', 'prop.any', {}],
      ['bob', 'account.open', { owner: 'warm', openingBalance: 1 }],
    ] as const) {
      const token = await issue(keys[who]!);
      const res = await send({
        method: 'POST',
        url: '/v1/jobs',
        headers: { ...bearer(who), 'idempotency-key': token, 'content-type': 'application/json' },
        payload: JSON.stringify({ name, data }),
      });
      expect(res.statusCode, res.body).to.equal(202);
      if (who === 'alice') warmJobs.alice.push((res.json() as { jobId: string }).jobId);
      else warmJobs.bob.push((res.json() as { jobId: string }).jobId);
    }
    await issue(keys.minter!);
    expired = (await stack.producer.tokens.issue('alice', { ttlMs: 1 }))[0]!.token;
    await new Promise((r) => setTimeout(r, 50));
    // Reading an expired key deletes it: it cannot vanish in the middle of a write check.
    expect(await stack.redis.exists(tokenKey(stack.prefix, expired))).to.equal(0);
  });
  after(async () => {
    if (TOTAL_RUNS || process.env.ONCEQ_PROPERTY_STATS) {
      console.log([...tally].map(([k, n]) => `    ${k}: ${n}`).join('\n'));
    }
    await app?.close();
    await stack?.close();
  });

  function bearer(who: string): Record<string, string> {
    return { authorization: `Bearer ${keys[who]}` };
  }

  /** Each request from its own address, so no per-address limit ties the cases together. */
  function send(options: InjectOptions): Promise<LightMyRequestResponse> {
    addressCounter++;
    const a = addressCounter;
    return app.inject({
      remoteAddress: `10.${(a >> 16) & 255}.${(a >> 8) & 255}.${a & 255}`,
      ...options,
    });
  }

  async function issue(key: string): Promise<string> {
    const res = await send({
      method: 'POST',
      url: '/v1/tokens',
      headers: { authorization: `Bearer ${key}` },
    });
    expect(res.statusCode, res.body).to.equal(201);
    return (res.json() as { token: string }).token;
  }

  async function redisKeys(): Promise<string[]> {
    const found: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await stack.redis.scan(
        cursor,
        'MATCH',
        allKeysPattern(stack.prefix),
        'COUNT',
        10_000,
      );
      cursor = next;
      found.push(...batch);
    } while (cursor !== '0');
    return found;
  }

  async function writes(token?: string): Promise<Writes> {
    const row = await stack.db
      .selectNoFrom((eb) => [
        eb.selectFrom('accepted_messages').select(eb.fn.countAll().as('n')).as('accepted'),
        eb.selectFrom('inbox').select(eb.fn.countAll().as('n')).as('inbox'),
        eb.selectFrom('outbox').select(eb.fn.countAll().as('n')).as('outbox'),
        eb.selectFrom('dead_letters').select(eb.fn.countAll().as('n')).as('dead'),
      ])
      .executeTakeFirstOrThrow();
    const rows = Object.fromEntries(Object.entries(row).map(([k, v]) => [k, Number(v)]));
    const result: Writes = { rows, keys: (await redisKeys()).length };
    if (token) result.token = await stack.redis.hgetall(tokenKey(stack.prefix, token));
    return result;
  }

  /** The checks every answer gets; returns its code ('202', '201', '200' for successes). */
  function checkAnswer(res: LightMyRequestResponse, secrets: string[], head = false): string {
    expect(res.statusCode, `a 5xx: ${res.body}`).to.be.below(500);
    if (res.statusCode < 400) return String(res.statusCode);
    expect(res.headers['content-type']).to.match(/^application\/problem\+json/);
    if (head) return String(res.statusCode);
    const body = res.json() as Record<string, unknown>;
    expect(body).to.include.keys('type', 'title', 'status', 'detail', 'code');
    const code = body.code as string;
    expect(PROBLEM_CATALOGUE, `code ${code}`).to.have.property(code);
    expect(PROBLEM_CATALOGUE[code]!.status).to.equal(res.statusCode);
    expect(body.status).to.equal(res.statusCode);
    expect(body.type).to.equal(`urn:onceq:problem:${code}`);
    expect(body.title).to.equal(PROBLEM_CATALOGUE[code]!.title);
    for (const s of secrets) expect(res.body, 'a secret echoed').not.to.contain(s);
    // A refusal is small, whatever was sent.
    expect(res.body.length, 'problem size').to.be.at.most(16_384);
    if (body.errors !== undefined) expect(body.errors).to.be.an('array').with.length.at.most(50);
    if (res.statusCode === 401) expect(res.headers['www-authenticate']).to.be.a('string');
    if (res.statusCode === 409 || res.statusCode === 429) {
      expect(res.headers['retry-after']).to.match(/^\d+$/);
    }
    return code;
  }

  /** The Authorization header of a case, and the principal it proves (undefined: none). */
  function authorization(a: AuthCase, at = 0): { header?: string | string[]; who?: string } {
    if (a.valid) return { header: `${a.form} ${keys[a.who]}`, who: a.who };
    const alice = keys.alice!;
    switch (a.form) {
      case 'none':
        return {};
      case 'unknown':
        return { header: `Bearer ${mintApiKey().key}` };
      case 'revoked':
        return { header: `Bearer ${revoked}` };
      case 'wrong-secret': {
        const i = alice.length - 1 - (at % 40);
        const c = alice[i] === 'A' ? 'B' : 'A';
        return { header: `Bearer ${alice.slice(0, i)}${c}${alice.slice(i + 1)}` };
      }
      case 'basic':
        return { header: `Basic ${Buffer.from(`alice:${alice}`).toString('base64')}` };
      case 'scheme-only':
        return { header: 'Bearer' };
      case 'no-scheme':
        return { header: alice };
      case 'twice':
        return { header: [`Bearer ${alice}`, `Bearer ${alice}`] };
      case 'two-credentials':
        return { header: `Bearer ${alice} ${alice}` };
      case 'trailing-comma':
        return { header: `Bearer ${alice},` };
      default:
        return { header: `Bearer oqk_${'0'.repeat(16)}_${'A'.repeat(43)}` };
    }
  }

  describe('POST /v1/jobs', () => {
    /** Resolves a token case against the current state (tokens get used as the run goes). */
    async function idempotencyKey(
      c: IdemCase,
    ): Promise<{ header?: string | string[]; token?: string; owner?: string; state?: string }> {
      if (c.kind === 'missing') return {};
      if (c.kind === 'malformed') {
        const token = (spare.alice ??= await issue(keys.alice!));
        return { header: malformedKey(token, c.how, c.at), token, state: 'malformed' };
      }
      let token: string;
      let state: string = c.state;
      if (c.state === 'unknown') token = generateToken();
      else if (c.state === 'expired') token = expired;
      else if (c.state === 'used' && used.some((u) => u.owner === c.owner)) {
        token = used.findLast((u) => u.owner === c.owner)!.token;
      } else {
        token = spare[c.owner] ??= await issue(keys[c.owner]!);
        state = 'unused';
      }
      const header = c.form === 'bare' ? token : c.form === 'quoted' ? `"${token}"` : ` ${token}\t`;
      return { header, token, owner: c.owner, state };
    }

    it('never a 5xx; refusals are problem+json, allowed by the contract, and write nothing; a 202 replays byte for byte', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.oneof(
            // Anything at all.
            fc.tuple(auth, idem, contentType, bodyText),
            // A request the contract accepts, in its odd forms, so that 202s and replays (and
            // the tokens they use) are common too.
            fc.tuple(
              auth.filter((x) => x.valid),
              idem.filter((x) => x.kind === 'token'),
              contentType.filter((x) => x.kind === 'json'),
              validEnqueueBody,
            ),
          ),
          fc.nat(),
          async ([a, i, ct, payload], at) => {
            const { header: authHeader, who } = authorization(a, at);
            const key = await idempotencyKey(i);
            const headers: Record<string, string | string[]> = {};
            if (authHeader !== undefined) headers.authorization = authHeader;
            if (key.header !== undefined) headers['idempotency-key'] = key.header;
            if (ct.value !== undefined) headers['content-type'] = ct.value;
            const request: InjectOptions = {
              method: 'POST',
              url: '/v1/jobs',
              headers,
              ...(payload === undefined ? {} : { payload }),
            };

            // What the contract allows for these bytes.
            const sent =
              payload === undefined
                ? undefined
                : decodeBody(Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'utf8'));
            const allowed = new Set<string>(['rate_limited']);
            let firstUse = false;
            let replayOf: (typeof used)[number] | undefined;
            let asked: string | undefined;
            if (!who) allowed.add('unauthorized');
            else {
              const body = bodyLayer(
                {
                  text: sent?.text,
                  bytes: payload === undefined ? 0 : Buffer.byteLength(payload),
                  utf8: sent?.utf8,
                  contentType: ct.kind,
                },
                BODY_LIMIT,
              );
              if (body.maybeRefused) allowed.add('bad_request');
              for (const code of body.codes ?? []) allowed.add(code);
              if (!body.codes) {
                if (!key.header && key.header !== '') allowed.add('idempotency_key_missing');
                else if (key.state === 'malformed') allowed.add('idempotency_key_malformed');
                else {
                  const { problems, request: r } = enqueueProblems(body.value, jobs);
                  asked = r;
                  if (problems.length) allowed.add('validation_failed');
                  if (key.owner !== who || key.state === 'unknown' || key.state === 'expired') {
                    allowed.add('idempotency_key_unknown');
                  } else if (key.state === 'used') {
                    const first = used.find((u) => u.token === key.token)!;
                    if (problems.length === 0 && first.request === r) {
                      replayOf = first;
                      allowed.add('202 replayed');
                      // The same meaning in other bytes: the contract says "same request".
                      if (!Buffer.from(first.payload).equals(Buffer.from(payload!))) {
                        allowed.add('idempotency_key_reused');
                      }
                    } else allowed.add('idempotency_key_reused');
                  } else if (problems.length === 0) {
                    allowed.add('202');
                    firstUse = true;
                  }
                }
              }
            }

            const before = await writes(key.token);
            const res = await send(request);
            // Unless refused (4xx, checked to write nothing), the token may be spent, expected
            // or not (a 5xx may have recorded it): later cases, and shrinking, must not reuse it.
            if (key.token && (res.statusCode < 400 || res.statusCode >= 500)) {
              for (const owner of ['alice', 'bob'] as const) {
                if (spare[owner] === key.token) delete spare[owner];
              }
            }
            const secrets = [keys.alice!, keys.bob!, ...(key.token ? [key.token] : [])];
            let outcome = checkAnswer(res, secrets);
            if (outcome === '202' && res.headers['idempotent-replayed'] === 'true') {
              outcome = '202 replayed';
            }
            seen(`POST /v1/jobs ${outcome}`);
            if (outcome === '202' && key.token) {
              if (firstUse) {
                used.push({
                  owner: who!,
                  token: key.token,
                  request: asked!,
                  payload: payload!,
                  body: res.body,
                });
              }
            }
            expect([...allowed], `${res.statusCode} ${res.body}`).to.include(outcome);
            const after = await writes(key.token);
            if (res.statusCode >= 400) {
              expect(after, `a ${res.statusCode} wrote`).to.deep.equal(before);
              return;
            }

            // 202: the accepted answer, then the same request again, answered the same.
            const accepted = res.json() as Record<string, string>;
            expect(Object.keys(accepted).sort()).to.deep.equal([
              'jobId',
              'messageId',
              'name',
              'queue',
              'state',
            ]);
            expect(accepted.state).to.equal('queued');
            expect(accepted.messageId).to.match(/^[1-9]\d{0,19}$/);
            expect(accepted.jobId).to.equal(`m-${accepted.messageId}`);
            expect(res.headers['content-type']).to.match(/^application\/json/);
            expect(res.headers.location).to.equal(`/v1/jobs/${accepted.jobId}`);
            const expected = JSON.parse(asked!) as { name: string; queue: string };
            expect(accepted.name).to.equal(expected.name);
            expect(accepted.queue).to.equal(expected.queue);
            if (firstUse) {
              expect(after.rows.accepted).to.equal(before.rows.accepted! + 1);
            } else {
              expect(res.body, 'a replay answers the first answer').to.equal(replayOf!.body);
              expect(after).to.deep.equal(before);
            }
            const again = await send(request);
            expect(again.statusCode, again.body).to.equal(202);
            expect(again.body).to.equal(res.body);
            expect(again.headers['idempotent-replayed']).to.equal('true');
            expect(again.headers['content-type']).to.equal(res.headers['content-type']);
            expect(again.headers.location).to.equal(res.headers.location);
            expect(await writes(key.token), 'a replay wrote').to.deep.equal(after);
          },
        ),
        parameters('POST /v1/jobs', 0.55, 2000),
      );
    });
  });

  describe('POST /v1/jobs, the same request at once', () => {
    it('one message however many copies race: one first answer, the others replays or 409', async () => {
      await fc.assert(
        fc.asyncProperty(
          validEnqueueBody,
          fc.integer({ min: 2, max: 5 }),
          fc.constantFrom('bare', 'quoted'),
          async (payload, copies, form) => {
            const body = bodyFacts(payload);
            const { problems } = enqueueProblems(body.value, jobs);
            // Only requests the contract accepts race for the token.
            if (body.refusals.length || body.hidden.length || problems.length) return;
            const token = await issue(keys.alice!);
            const request: InjectOptions = {
              method: 'POST',
              url: '/v1/jobs',
              headers: {
                ...bearer('alice'),
                'idempotency-key': form === 'bare' ? token : `"${token}"`,
                'content-type': 'application/json',
              },
              payload,
            };
            const before = await writes();
            const answers = await Promise.all(Array.from({ length: copies }, () => send(request)));
            const after = await writes();
            const first = answers.filter(
              (r) => r.statusCode === 202 && r.headers['idempotent-replayed'] !== 'true',
            );
            expect(
              first,
              answers.map((r) => `${r.statusCode} ${r.body}`).join('\n'),
            ).to.have.length(1);
            for (const res of answers) {
              const outcome = checkAnswer(res, [keys.alice!, token]);
              expect(['202', 'idempotency_key_in_use'], res.body).to.include(outcome);
              if (outcome === '202') expect(res.body).to.equal(first[0]!.body);
            }
            expect(after.rows.accepted, 'one message').to.equal(before.rows.accepted! + 1);
            // And once the race is over, every copy is a replay.
            const again = await send(request);
            expect(again.statusCode).to.equal(202);
            expect(again.body).to.equal(first[0]!.body);
            expect(again.headers['idempotent-replayed']).to.equal('true');
          },
        ),
        parameters('POST /v1/jobs, at once', 0.05, 150),
      );
    });
  });

  describe('POST /v1/tokens', () => {
    const countBody = fc.oneof(
      { weight: 3, arbitrary: numberLiteral.map((n) => `{"count":${n}}`) },
      {
        weight: 3,
        arbitrary: fc.integer({ min: -2, max: 102 }).map((n) => `{"count":${n}}`),
      },
      { weight: 1, arbitrary: anyNode.map((j) => `{"count":${emit(j)}}`) },
      {
        weight: 1,
        arbitrary: fc
          .tuple(keyName, anyNode)
          .map(([k, v]) => `{"count":1,${JSON.stringify(k)}:${emit(v)}}`),
      },
      { weight: 1, arbitrary: anyNode.map((j) => emit(j)) },
      { weight: 1, arbitrary: fc.constantFrom('', '{}', 'null', '{"count":1,"count":2}', '[1]') },
      { weight: 1, arbitrary: fc.constant(undefined) },
    );

    it('never a 5xx; refusals write nothing; a 201 issues exactly what was asked', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.oneof({ weight: 6, arbitrary: fc.constant('minter') }, { weight: 1, arbitrary: auth }),
          contentType,
          countBody,
          fc.nat(),
          async (a, ct, payload, at) => {
            const { header, who } =
              a === 'minter'
                ? { header: `Bearer ${keys.minter}`, who: 'minter' }
                : authorization(a, at);
            // Only `minter` may issue here, so the other principals' outstanding tokens stay few.
            if (who && who !== 'minter') return;
            const headers: Record<string, string | string[]> = {};
            if (header !== undefined) headers.authorization = header;
            if (ct.value !== undefined) headers['content-type'] = ct.value;
            const allowed = new Set<string>(['rate_limited']);
            let count: number | undefined | 'unsure';
            if (!who) allowed.add('unauthorized');
            else {
              const sent =
                payload === undefined
                  ? undefined
                  : decodeBody(Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'utf8'));
              const body = bodyLayer(
                {
                  text: sent?.text,
                  bytes: payload === undefined ? 0 : Buffer.byteLength(payload),
                  utf8: sent?.utf8,
                  contentType: ct.kind,
                },
                BODY_LIMIT,
              );
              if (body.maybeRefused) allowed.add('bad_request');
              for (const code of body.codes ?? []) allowed.add(code);
              if (!body.codes) {
                const v = body.value as Record<string, unknown> | null | undefined;
                if (v === undefined) {
                  allowed.add('201');
                  count = undefined;
                } else if (v === null) {
                  // No body and a null body: the contract does not tell them apart, or not.
                  allowed.add('201').add('validation_failed');
                  count = 'unsure';
                } else if (
                  typeof v === 'object' &&
                  !Array.isArray(v) &&
                  Object.keys(v).every((k) => k === 'count') &&
                  (v.count === undefined ||
                    (Number.isInteger(v.count) &&
                      (v.count as number) >= 1 &&
                      (v.count as number) <= 100))
                ) {
                  allowed.add('201');
                  count = v.count as number | undefined;
                } else allowed.add('validation_failed');
              }
            }
            const before = await writes();
            const keysBefore = new Set(await redisKeys());
            const res = await send({
              method: 'POST',
              url: '/v1/tokens',
              headers,
              ...(payload === undefined ? {} : { payload }),
            });
            const outcome = checkAnswer(res, [keys.alice!, keys.minter!]);
            seen(`POST /v1/tokens ${outcome}`);
            expect([...allowed], `${res.statusCode} ${res.body}`).to.include(outcome);
            if (res.statusCode >= 400) {
              expect(await writes(), `a ${res.statusCode} wrote`).to.deep.equal(before);
              return;
            }
            const body = res.json() as { token?: string; tokens?: { token: string }[] };
            const issued = body.tokens ? body.tokens.map((t) => t.token) : [body.token!];
            if (count !== 'unsure') {
              if (count === undefined) expect(body.token).to.be.a('string');
              else expect(body.tokens).to.have.length(count);
            }
            const added = (await redisKeys()).filter((k) => !keysBefore.has(k));
            for (const t of issued) expect(added).to.include(tokenKey(stack.prefix, t));
            expect(added.length).to.be.within(issued.length, issued.length + 1);
            expect((await writes()).rows).to.deep.equal(before.rows);
            // Keep the shared Redis small on long runs, and take the tokens out of minter's
            // count of outstanding ones as their expiry would, or a long run meets its bound.
            await stack.redis.unlink(...issued.map((t) => tokenKey(stack.prefix, t)));
            await stack.redis.zrem(outstandingTokensKey(stack.prefix, 'minter'), ...issued);
          },
        ),
        parameters('POST /v1/tokens', 0.15, 400),
      );
    });
  });

  describe('GET /v1/jobs/:jobId and other routes', () => {
    const jobId = fc.oneof(
      { weight: 2, arbitrary: fc.constantFrom('own', 'others') },
      { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n }).map((n) => `m-${n}`) },
      { weight: 2, arbitrary: fc.string({ unit: 'grapheme', maxLength: 80 }) },
      {
        weight: 1,
        arbitrary: fc.constantFrom('', '..', '%', 'm-', 'm-1:2', '__proto__', 'x'.repeat(65)),
      },
    );

    it('GET /v1/jobs/:jobId: never a 5xx, only its own principal’s job, nothing written', async () => {
      await fc.assert(
        fc.asyncProperty(auth, jobId, fc.nat(), async (a, j, at) => {
          const { header, who } = authorization(a, at);
          const id =
            j === 'own'
              ? warmJobs[who === 'bob' ? 'bob' : 'alice'][0]!
              : j === 'others'
                ? warmJobs[who === 'bob' ? 'alice' : 'bob'][0]!
                : j;
          const ownId =
            who === 'bob' ? warmJobs.bob[0] : who === 'alice' ? warmJobs.alice[0] : undefined;
          const before = await writes();
          const res = await send({
            method: 'GET',
            url: `/v1/jobs/${encodeURIComponent(id)}`,
            headers: (header === undefined ? {} : { authorization: header }) as Headers,
          });
          const outcome = checkAnswer(res, [keys.alice!, keys.bob!]);
          seen(`GET /v1/jobs/:jobId ${outcome}`);
          const allowed = !who
            ? ['unauthorized']
            : id === ownId
              ? ['200']
              : ['not_found', 'validation_failed'];
          expect(allowed, `${res.statusCode} ${res.body}`).to.include(outcome);
          if (outcome === '200') expect((res.json() as { jobId: string }).jobId).to.equal(id);
          expect(await writes()).to.deep.equal(before);
        }),
        parameters('GET /v1/jobs/:jobId', 0.1, 300),
      );
    });

    it('any method on any path: never a 5xx, problem+json refusals, nothing written', async () => {
      const method = fc.constantFrom(
        'GET',
        'POST',
        'PUT',
        'PATCH',
        'DELETE',
        'OPTIONS',
        'HEAD',
      ) as fc.Arbitrary<InjectOptions['method']>;
      const path = fc.oneof(
        fc.constantFrom(
          '/v1/jobs',
          '/v1/tokens',
          '/v1/jobs/m-1',
          '/v1',
          '/',
          '/healthz',
          '/readyz',
          '/metrics',
          '/admin/queues',
          '/docs',
          '/v1/jobs?x=1',
          '/v1//jobs',
          '/V1/JOBS',
        ),
        text.filter((s) => !/[\ud800-\udfff]/.test(s)).map((s) => `/${encodeURIComponent(s)}`),
      );
      await fc.assert(
        fc.asyncProperty(
          method,
          path,
          auth,
          fc.option(text.map((s) => JSON.stringify({ s }))),
          fc.nat(),
          async (m, p, a, payload, at) => {
            const { header, who } = authorization(a, at);
            // Issuing is the tokens property's: here it would only pile up unused tokens.
            if (who && m === 'POST' && p.startsWith('/v1/tokens')) return;
            const before = await writes();
            const res = await send({
              method: m,
              url: p,
              headers: {
                ...(header === undefined ? {} : { authorization: header }),
                ...(payload === null ? {} : { 'content-type': 'application/json' }),
              } as Headers,
              ...(payload === null ? {} : { payload }),
            });
            seen(`any route ${checkAnswer(res, [keys.alice!, keys.bob!], m === 'HEAD')}`);
            if (res.statusCode >= 400) expect(await writes()).to.deep.equal(before);
          },
        ),
        parameters('any route', 0.15, 400),
      );
    });
  });
});
