/**
 * What only the Redis token store has: its keys and its scripts. The contract it shares with the
 * PostgreSQL store (every transition and its answers) is test/tokens/token-store.test.ts; the
 * memory of a done token is token-memory.test.ts, hashes of the previous version
 * token-legacy.test.ts.
 */
import { expect } from 'chai';
import type { Redis } from 'ioredis';
import { ErrorCode, OnceqError } from '../../src/core/errors.js';
import { generateToken } from '../../src/core/token.js';
import { toTokenResult } from '../../src/core/token-codes.js';
import { outstandingTokensKey, tokenKey } from '../../src/redis/keys.js';
import { runScript } from '../../src/redis/scripts.js';
import { createTokenStore, type TokenStore } from '../../src/redis/token-store.js';
import { deletePrefix, testRedis, uniqueName } from '../support/env.js';
import { closeFully } from '../support/token-stores.js';

const ALICE = 'alice';
const FP = 'fp-request-1';
const MID = '7203691551471493121';
const TTL = 60_000;
const LEASE = 10_000;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe('redis/token-store: keys and scripts', () => {
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
    prefix = uniqueName('token');
    store = createTokenStore(redis, { prefix });
  });
  afterEach(async () => {
    await deletePrefix(redis, prefix);
  });

  const key = (token: string) => tokenKey(prefix, token);

  it('the issue script refuses an existing key (a collision), leaving it untouched', async () => {
    const [issued] = await store.issue(ALICE, { ttlMs: TTL });
    const token = issued!.token;
    await store.accept(token, { principal: ALICE, fingerprint: FP, messageId: MID, ttlMs: TTL });
    const reply = await runScript(redis, 'issue', [key(token)], ['mallory', TTL]);
    expect(toTokenResult('issue', reply)).to.deep.equal({ status: 'collision' });
    expect(await store.inspect(token)).to.include({ state: 'accepted', principal: ALICE });
  });

  it("an unknown token's accept writes no key; an issue writes the token's and the principal's count", async () => {
    const accept = (token: string) =>
      store.accept(token, { principal: ALICE, fingerprint: FP, messageId: MID, ttlMs: TTL });
    await accept(generateToken());
    const [bobs] = await store.issue('bob', { ttlMs: TTL });
    await accept(bobs!.token);
    const [short] = await store.issue(ALICE, { ttlMs: 30 });
    await sleep(80);
    await accept(short!.token);
    expect(await redis.keys(`${prefix}:*`)).to.have.members([
      key(bobs!.token),
      outstandingTokensKey(prefix, 'bob'),
    ]);
  });

  it("a snapshot's ttlMs is the key's PTTL", async () => {
    const [issued] = await store.issue(ALICE, { ttlMs: TTL });
    const pttl = await redis.pttl(key(issued!.token));
    const { ttlMs } = (await store.inspect(issued!.token))!;
    expect(ttlMs).to.be.within(pttl - 1_000, pttl);
  });

  it('a malformed token writes no key at all', async () => {
    await store
      .claim('oqt_short', { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL })
      .catch(() => undefined);
    expect(await redis.keys(`${prefix}:*`)).to.deep.equal([]);
  });

  it('a Redis error becomes ScriptFailed and never carries the token', async () => {
    const token = generateToken();
    await redis.set(key(token), 'not a hash', 'PX', TTL);
    const err = await store
      .claim(token, { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).to.be.instanceOf(OnceqError);
    const failure = err as OnceqError;
    expect(failure.code).to.equal(ErrorCode.ScriptFailed);
    expect(failure.message).to.match(/WRONGTYPE/);
    const cause = failure.cause as Error & { command?: { args?: unknown[] } };
    const everything = JSON.stringify([
      failure.message,
      failure.stack,
      cause.message,
      cause.stack,
      cause.command,
    ]);
    expect(everything).not.to.include(token.slice(4));
    expect(JSON.stringify(cause.command?.args)).to.include('oqt_<redacted>');
  });
});
