/**
 * How the Redis token store counts a principal's outstanding tokens: a sorted set per principal,
 * apart from the token keys, scored by expiry, trimmed as entries expire and living as long as
 * its last entry; none at all with the bound off. The bound itself, as both stores keep it, is
 * test/tokens/outstanding-tokens.test.ts.
 */
import { expect } from 'chai';
import type { Redis } from 'ioredis';
import { outstandingTokensKey, tokenKey } from '../../src/redis/keys.js';
import { createTokenStore, type TokenStore } from '../../src/redis/token-store.js';
import { deletePrefix, testRedis, uniqueName } from '../support/env.js';
import { closeFully } from '../support/token-stores.js';

const ALICE = 'alice';
const TTL = 60_000;
const LIMIT = 100;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe('redis/token-store: the outstanding-token sets', () => {
  let redis: Redis;
  let prefix: string;
  let store: TokenStore;

  before(() => {
    redis = testRedis();
  });
  after(async () => {
    await closeFully(redis);
  });
  beforeEach(() => {
    prefix = uniqueName('outstanding');
    store = createTokenStore(redis, { prefix, maxOutstanding: LIMIT });
  });
  afterEach(async () => {
    await deletePrefix(redis, prefix);
  });

  it('every token issued is counted under its own principal key, apart from the token keys', async () => {
    const [issued] = await store.issue(ALICE, { ttlMs: TTL });
    const key = outstandingTokensKey(prefix, ALICE);
    expect(key).not.to.equal(tokenKey(prefix, issued!.token));
    expect(await redis.zscore(key, issued!.token)).to.be.a('string');
    await store.accept(issued!.token, {
      principal: ALICE,
      fingerprint: 'fp-1',
      messageId: '7203691551471493121',
      ttlMs: TTL,
    });
    expect(await redis.zscore(key, issued!.token)).to.equal(null);
  });

  it('the set holds the tokens outstanding and no more, and lives as long as the last of them', async () => {
    await store.issue(ALICE, { ttlMs: 300, count: 60 });
    await store.issue(ALICE, { ttlMs: TTL, count: 40 });
    await sleep(450);
    await store.issue(ALICE, { ttlMs: TTL, count: 60 });
    const key = outstandingTokensKey(prefix, ALICE);
    expect(await redis.zcard(key)).to.equal(100);
    expect(await redis.pttl(key)).to.be.within(TTL - 5_000, TTL);
  });

  it('concurrent issues leave exactly the granted tokens in the set', async () => {
    await Promise.allSettled(
      Array.from({ length: 20 }, () => store.issue(ALICE, { ttlMs: TTL, count: 10 })),
    );
    expect(await redis.zcard(outstandingTokensKey(prefix, ALICE))).to.equal(100);
  });

  it('maxOutstanding 0 keeps no set at all', async () => {
    const unbounded = createTokenStore(redis, { prefix, maxOutstanding: 0 });
    await unbounded.issue(ALICE, { ttlMs: TTL, count: 100 });
    expect(await redis.exists(outstandingTokensKey(prefix, ALICE))).to.equal(0);
  });
});
