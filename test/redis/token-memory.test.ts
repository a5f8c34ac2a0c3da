/**
 * What a done token costs Redis, and the paths that keep it small (token-store.ts, "Memory"):
 * `MEMORY USAGE … SAMPLES 0` is exact for a given encoding, so the bounds below hold whatever
 * else the shared Redis does. A regression to a hashtable (about 930 bytes) fails them.
 */
import { expect } from 'chai';
import type { Redis } from 'ioredis';
import { requestFingerprint } from '../../src/core/fingerprint.js';
import { InvalidArgumentError } from '../../src/core/errors.js';
import { closeRedis } from '../../src/redis/connection.js';
import { tokenKey } from '../../src/redis/keys.js';
import { fingerprintOf, storedFingerprint } from '../../src/redis/token-fingerprint.js';
import { createTokenStore, type TokenStore } from '../../src/redis/token-store.js';
import { deletePrefix, testRedis, uniqueName } from '../support/env.js';
import { LONG_OWNER, completeMessages, encodingOf, keyBytes } from '../support/redis-memory.js';

/** Bound of one done token: measured 312 bytes (listpack, a 61-byte key); 928 as a hashtable. */
const DONE_TOKEN_MAX_BYTES = 400;
const TTL = 60_000;

describe('redis/token memory', () => {
  let redis: Redis;
  let prefix: string;
  let store: TokenStore;

  before(() => {
    redis = testRedis();
  });
  after(async () => {
    await closeRedis(redis);
  });
  beforeEach(() => {
    prefix = uniqueName('token_memory');
    store = createTokenStore(redis, { prefix });
  });
  afterEach(async () => {
    await deletePrefix(redis, prefix);
  });

  const key = (token: string) => tokenKey(prefix, token);

  it(`keeps a done token of a typical message a listpack of at most ${DONE_TOKEN_MAX_BYTES} bytes`, async () => {
    const [done] = await completeMessages(store, 1, { ttlMs: TTL });
    const k = key(done!.token);
    expect(await encodingOf(redis, k)).to.equal('listpack');
    expect(await keyBytes(redis, k)).to.be.at.most(DONE_TOKEN_MAX_BYTES);
    expect(Object.keys(await redis.hgetall(k)).sort()).to.deep.equal([
      'doneAt',
      'fp',
      'mid',
      'principal',
      'result',
      'state',
    ]);
    expect(await redis.pttl(k)).to.be.within(TTL - 1_000, TTL);
  });

  it('turns a token a long claim owner made a hashtable back into a listpack at completion', async () => {
    const [token] = (await store.issue('key_8f3a2c', { ttlMs: TTL })).map((t) => t.token);
    const mid = '7203691551471493121';
    await store.claim(token!, {
      owner: LONG_OWNER(1),
      leaseMs: 30_000,
      messageId: mid,
      ttlMs: TTL,
    });
    expect(await encodingOf(redis, key(token!))).to.equal('hashtable');
    await store.complete(token!, { messageId: mid, result: { status: 'applied' }, ttlMs: TTL });
    expect(await encodingOf(redis, key(token!))).to.equal('listpack');
    expect(await keyBytes(redis, key(token!))).to.be.at.most(DONE_TOKEN_MAX_BYTES);
    expect(await store.inspect(token!)).to.deep.include({
      state: 'done',
      messageId: mid,
      principal: 'key_8f3a2c',
      owner: undefined,
      result: { status: 'applied' },
    });
  });

  it('keeps a result over 64 bytes in chunks: still a listpack, given back byte for byte', async () => {
    // Multi-byte characters on every side of the 64-byte cuts.
    const result = {
      status: 'applied',
      note: 'naïve ✓ 日本語 '.repeat(12),
      ids: ['9223372036854775807'],
    };
    const [done] = await completeMessages(store, 1, { ttlMs: TTL, result: () => result });
    const k = key(done!.token);
    expect(await encodingOf(redis, k)).to.equal('listpack');
    expect(await redis.hexists(k, 'result')).to.equal(0);
    expect(await redis.hexists(k, 'r2')).to.equal(1);
    const json = Buffer.byteLength(JSON.stringify(result));
    expect(await keyBytes(redis, k)).to.be.at.most(DONE_TOKEN_MAX_BYTES + json + 64);
    const claim = { owner: 'B', leaseMs: 1_000, messageId: done!.messageId, ttlMs: TTL };
    expect(await store.claim(done!.token, claim)).to.deep.equal({ status: 'done', result });
    expect(
      await store.complete(done!.token, { messageId: done!.messageId, result: 1, ttlMs: TTL }),
    ).to.deep.equal({ status: 'already_done', result });
    expect((await store.inspect(done!.token))?.result).to.deep.equal(result);
  });

  it('leaves a result over maxResultBytes to the inbox: claim answers done without it', async () => {
    store = createTokenStore(redis, { prefix, maxResultBytes: 100 });
    const result = { status: 'applied', blob: 'x'.repeat(100) };
    const [done] = await completeMessages(store, 1, { ttlMs: TTL, result: () => result });
    const k = key(done!.token);
    expect(Object.keys(await redis.hgetall(k)).sort()).to.deep.equal([
      'doneAt',
      'fp',
      'mid',
      'principal',
      'state',
    ]);
    expect(await encodingOf(redis, k)).to.equal('listpack');
    const claim = { owner: 'B', leaseMs: 1_000, messageId: done!.messageId, ttlMs: TTL };
    expect(await store.claim(done!.token, claim)).to.deep.equal({
      status: 'done',
      resultInInbox: true,
    });
    expect(
      await store.complete(done!.token, { messageId: done!.messageId, result, ttlMs: TTL }),
    ).to.deep.equal({ status: 'already_done', resultInInbox: true });
    const snapshot = await store.inspect(done!.token);
    expect(snapshot).to.include({ state: 'done', messageId: done!.messageId });
    expect(snapshot?.result).to.equal(undefined);
    // A result within the bound is kept as before.
    const [small] = await completeMessages(store, 1, { ttlMs: TTL });
    expect(
      (await store.claim(small!.token, { ...claim, messageId: small!.messageId })).status,
    ).to.equal('done');
    expect(await redis.hexists(key(small!.token), 'result')).to.equal(1);
  });

  it('drops the chunks of a result held for the wrong id at a rebind', async () => {
    const result = { blob: 'y'.repeat(200) };
    const [done] = await completeMessages(store, 1, { ttlMs: TTL, result: () => result });
    const other = '7203691551471493999';
    const fingerprint = requestFingerprint({ name: 'ledger.transfer', data: {}, queue: 'ledger' });
    expect(
      await store.rebind(done!.token, {
        from: done!.messageId,
        messageId: other,
        principal: 'key_8f3a2c',
        fingerprint,
        ttlMs: TTL,
      }),
    ).to.deep.equal({ status: 'rebound', state: 'accepted' });
    const fields = Object.keys(await redis.hgetall(key(done!.token)));
    expect(fields.filter((f) => /^r\d+$/.test(f) || f === 'result')).to.deep.equal([]);
    expect(await store.inspect(done!.token)).to.deep.include({
      state: 'accepted',
      messageId: other,
      fingerprint,
      result: undefined,
    });
  });

  it('refuses a maxResultBytes that is not a whole number of bytes', () => {
    for (const bad of [-1, 1.5, Number.NaN]) {
      expect(() => createTokenStore(redis, { prefix, maxResultBytes: bad })).to.throw(
        InvalidArgumentError,
      );
    }
    createTokenStore(redis, { prefix, maxResultBytes: 0 });
  });

  describe('the stored fingerprint', () => {
    const sha = requestFingerprint({ name: 'a', data: { b: 1 }, queue: 'q' });

    it('is 44 bytes for a sha256: fingerprint, and the inverse gives it back', () => {
      expect(storedFingerprint(sha)).to.have.length(44);
      expect(fingerprintOf(storedFingerprint(sha))).to.equal(sha);
    });

    it('is one-to-one over other strings, a leading ~ included', () => {
      const inputs = [
        sha,
        'fp-request-1',
        '~',
        '~~',
        storedFingerprint(sha),
        `~${storedFingerprint(sha)}`,
        sha.toUpperCase(),
        `${sha}0`,
      ];
      const stored = inputs.map(storedFingerprint);
      expect(new Set(stored).size).to.equal(inputs.length);
      expect(stored.map(fingerprintOf)).to.deep.equal(inputs);
    });
  });
});
