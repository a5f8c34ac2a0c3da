/**
 * Authentication under a spray of unknown API keys, against real PostgreSQL: one client address
 * is cut off with 429 (and `Retry-After`) after the failure bound, before any further key lookup;
 * the lookups PostgreSQL actually ran are counted where every query leaves (a Kysely plugin on
 * the app's connection, counting the queries of `api_keys`). A valid key, cached before the
 * spray, keeps working from another address without a new lookup: unknown ids are cached apart,
 * in a bounded LRU, and can never evict it.
 */
import { expect } from 'chai';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import {
  SelectQueryNode,
  type KyselyPlugin,
  type PluginTransformQueryArgs,
  type PluginTransformResultArgs,
  type QueryResult,
  type RootOperationNode,
  type UnknownRow,
} from 'kysely';
import { randomBytes } from 'node:crypto';
import { buildApp } from '../../src/http/build-app.js';
import { createAuthenticator } from '../../src/http/auth.js';
import { mintApiKey } from '../../src/core/api-key.js';
import { insertApiKey } from '../../src/db/api-keys.repository.js';
import { createTestStack, type TestStack } from '../support/stack.js';
import { createMetrics, type Metrics } from '../../src/metrics/metrics.js';
import { sample } from '../support/metrics.js';

/** Counts the SELECTs of `api_keys` that reach PostgreSQL through this connection. */
class KeyLookupCounter implements KyselyPlugin {
  count = 0;
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    if (SelectQueryNode.is(args.node) && JSON.stringify(args.node.from).includes('"api_keys"')) {
      this.count++;
    }
    return args.node;
  }
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result;
  }
}

/** A well-formed key whose id no row has. */
const unknownKey = () =>
  `oqk_${randomBytes(8).toString('hex')}_${randomBytes(32).toString('base64url')}`;

const ATTACKER = '203.0.113.5';
const CLIENT = '198.51.100.7';
const LIMIT = 20;

describe('http: failed authentications per client address', function () {
  this.timeout(60_000);
  let stack: TestStack;
  let app: FastifyInstance;
  let lookups: KeyLookupCounter;
  let valid: string;
  let metrics: Metrics;

  beforeEach(async () => {
    stack = await createTestStack('auth_limit');
    lookups = new KeyLookupCounter();
    metrics = createMetrics({ defaultMetrics: false });
    app = await buildApp({
      metrics,
      db: stack.db.withPlugin(lookups),
      backend: stack.backend,
      producer: stack.producer,
      ids: stack.ids,
      keyCacheMs: 60_000,
      authFailureLimit: { max: LIMIT, windowMs: 60_000 },
      docs: false,
    });
    await app.ready();
    const minted = mintApiKey();
    await insertApiKey(stack.db, {
      id: minted.id,
      principal: 'shop',
      hash: minted.hash,
      admin: false,
    });
    valid = minted.key;
  });
  afterEach(async () => {
    await app.close();
    await stack.close();
  });

  const tokens = (key: string, remoteAddress: string): Promise<LightMyRequestResponse> =>
    app.inject({
      method: 'POST',
      url: '/v1/tokens',
      remoteAddress,
      headers: { authorization: `Bearer ${key}` },
    });

  it('cuts a spray of unknown keys off with 429 before PostgreSQL; a cached valid key still works', async () => {
    expect((await tokens(valid, CLIENT)).statusCode).to.equal(201);
    expect(lookups.count).to.equal(1);

    // 500 unknown keys from one address, 50 at a time: bursts must not slip past the bound.
    const statuses: number[] = [];
    let refusal: LightMyRequestResponse | undefined;
    for (let i = 0; i < 10; i++) {
      const batch = await Promise.all(
        Array.from({ length: 50 }, () => tokens(unknownKey(), ATTACKER)),
      );
      for (const res of batch) {
        statuses.push(res.statusCode);
        if (res.statusCode === 429) refusal ??= res;
      }
    }
    const unauthorized = statuses.filter((s) => s === 401).length;
    expect(unauthorized).to.be.within(1, LIMIT);
    expect(statuses.filter((s) => s === 429)).to.have.length(500 - unauthorized);
    expect(lookups.count - 1, 'key lookups PostgreSQL ran for the spray').to.be.at.most(LIMIT);

    expect(refusal!.headers['content-type']).to.match(/^application\/problem\+json/);
    expect(refusal!.json()).to.include({ status: 429, code: 'too_many_failed_authentications' });
    const retryAfter = Number(refusal!.headers['retry-after']);
    expect(Number.isInteger(retryAfter)).to.equal(true);
    expect(retryAfter).to.be.within(1, 60);

    const text = await metrics.text();
    expect(sample(text, 'onceq_auth_failures_total', { result: 'unauthorized' })).to.equal(
      unauthorized,
    );
    expect(sample(text, 'onceq_auth_failures_total', { result: 'refused' })).to.equal(
      500 - unauthorized,
    );

    // The valid key, from another address: served from the cache, no lookup.
    const before = lookups.count;
    expect((await tokens(valid, CLIENT)).statusCode).to.equal(201);
    expect(lookups.count).to.equal(before);
    // The sprayed address gets no further lookup or guess until its window ends, but a key
    // already known, with its secret, still goes through from it (behind a proxy every client
    // shares that address).
    expect((await tokens(unknownKey(), ATTACKER)).statusCode).to.equal(429);
    expect((await tokens(valid, ATTACKER)).statusCode).to.equal(201);
    expect(lookups.count).to.equal(before);
  });

  it('wrong secrets for a real key id count as failures too (no lookup needed to guess)', async () => {
    const id = valid.slice(4, 20);
    const guess = () => `oqk_${id}_${randomBytes(32).toString('base64url')}`;
    const statuses: number[] = [];
    for (let i = 0; i < LIMIT + 5; i++) statuses.push((await tokens(guess(), ATTACKER)).statusCode);
    expect(statuses.slice(0, LIMIT)).to.deep.equal(Array(LIMIT).fill(401));
    expect(statuses.slice(LIMIT)).to.deep.equal(Array(5).fill(429));
    expect((await tokens(valid, CLIENT)).statusCode).to.equal(201);
  });

  it('an IPv6 client is counted by its /64; missing and malformed credentials are not counted', async () => {
    for (let i = 0; i < LIMIT; i++) {
      expect(
        (await tokens(unknownKey(), `2001:db8:0:1::${(i + 1).toString(16)}`)).statusCode,
      ).to.equal(401);
    }
    expect((await tokens(unknownKey(), '2001:db8:0:1:ffff::1')).statusCode).to.equal(429);
    expect((await tokens(unknownKey(), '2001:db8:0:2::1')).statusCode).to.equal(401);

    for (let i = 0; i < LIMIT + 5; i++) {
      expect((await tokens('not-a-key', CLIENT)).statusCode).to.equal(401);
    }
    expect((await tokens(valid, CLIENT)).statusCode).to.equal(201);
  });

  it('10,001 unknown ids never evict a valid key from the cache', async function () {
    this.timeout(120_000);
    const counted = new KeyLookupCounter();
    const authenticate = createAuthenticator({
      db: stack.db.withPlugin(counted),
      cacheMs: 600_000,
      failureLimit: false,
    });
    const header = `Bearer ${valid}`;
    expect(await authenticate(header)).to.deep.equal({ principal: 'shop', admin: false });
    for (let i = 0; i < 10_001; i += 100) {
      await Promise.all(
        Array.from({ length: Math.min(100, 10_001 - i) }, () =>
          authenticate(`Bearer ${unknownKey()}`).then(
            () => expect.fail('an unknown key was accepted'),
            (err: unknown) => expect((err as { statusCode: number }).statusCode).to.equal(401),
          ),
        ),
      );
    }
    const before = counted.count;
    expect(before).to.equal(1 + 10_001);
    expect(await authenticate(header)).to.deep.equal({ principal: 'shop', admin: false });
    expect(counted.count, 'the valid key was looked up again').to.equal(before);
  });
});
