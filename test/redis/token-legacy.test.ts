/**
 * Token hashes written by the previous version (before the compact done token): every field it
 * kept, the fingerprint as `sha256:<hex>`, the result in one `result` field. They are in Redis
 * at an upgrade, for up to one token ttl, and every transition must read them as that version
 * did. The hashes are seeded field by field exactly as its scripts wrote them.
 */
import { expect } from 'chai';
import type { Redis } from 'ioredis';
import { requestFingerprint } from '../../src/core/fingerprint.js';
import { closeRedis } from '../../src/redis/connection.js';
import { tokenKey } from '../../src/redis/keys.js';
import { createTokenStore, type TokenStore } from '../../src/redis/token-store.js';
import { generateToken } from '../../src/core/token.js';
import { deletePrefix, testRedis, uniqueName } from '../support/env.js';

const ALICE = 'key_alice';
const MID = '7203691551471493121';
const OTHER_MID = '7203691551471493122';
const TTL = 60_000;
const LEASE = 10_000;
const FP = requestFingerprint({ name: 'ledger.transfer', data: { amount: 1 }, queue: 'ledger' });
const OTHER_FP = requestFingerprint({
  name: 'ledger.transfer',
  data: { amount: 2 },
  queue: 'ledger',
});
const RESULT = { status: 'applied', transferId: MID, nested: { ids: ['9223372036854775807'] } };

type Legacy = 'issued' | 'accepted' | 'accepted, in flight' | 'claimed by A' | 'done';

describe('redis/token-store on hashes of the previous version', () => {
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
    prefix = uniqueName('token_legacy');
    store = createTokenStore(redis, { prefix });
  });
  afterEach(async () => {
    await deletePrefix(redis, prefix);
  });

  /** A hash as the previous version's scripts left it in state `from`. */
  async function seed(from: Legacy): Promise<string> {
    const token = generateToken();
    const now = Date.now();
    const fields: Record<string, string | number> = {
      state: 'issued',
      principal: ALICE,
      issuedAt: now - 5_000,
    };
    if (from !== 'issued') {
      Object.assign(fields, { state: 'accepted', fp: FP, mid: MID, acceptedAt: now - 4_000 });
      // The previous version left a closed window's end in place only when settle was lost.
      if (from === 'accepted, in flight') fields.pending = now + 10_000;
    }
    if (from === 'claimed by A') {
      Object.assign(fields, {
        state: 'claimed',
        owner: 'A',
        lease: now + LEASE,
        claimedAt: now - 3_000,
        claims: 1,
      });
    }
    if (from === 'done') {
      Object.assign(fields, {
        state: 'done',
        result: JSON.stringify(RESULT),
        claimedAt: now - 3_000,
        claims: 1,
        doneAt: now - 2_000,
      });
    }
    const key = tokenKey(prefix, token);
    await redis.hset(key, fields);
    await redis.pexpire(key, TTL);
    return token;
  }

  type Op = (s: TokenStore, token: string) => Promise<unknown>;
  const ops = {
    'accept, same request': (s, t) =>
      s.accept(t, { principal: ALICE, fingerprint: FP, messageId: OTHER_MID, ttlMs: TTL }),
    'accept, other request': (s, t) =>
      s.accept(t, { principal: ALICE, fingerprint: OTHER_FP, messageId: OTHER_MID, ttlMs: TTL }),
    'accept, other principal': (s, t) =>
      s.accept(t, { principal: 'mallory', fingerprint: FP, messageId: OTHER_MID, ttlMs: TTL }),
    'claim by A': (s, t) => s.claim(t, { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL }),
    'claim by B': (s, t) => s.claim(t, { owner: 'B', leaseMs: LEASE, messageId: MID, ttlMs: TTL }),
    'claim for another message': (s, t) =>
      s.claim(t, { owner: 'B', leaseMs: LEASE, messageId: OTHER_MID, ttlMs: TTL }),
    'renew by A': (s, t) => s.renew(t, { owner: 'A', leaseMs: LEASE }),
    'release by A': (s, t) => s.release(t, { owner: 'A' }),
    complete: (s, t) => s.complete(t, { messageId: MID, result: { other: true }, ttlMs: TTL }),
    settle: (s, t) => s.settle(t, { messageId: MID }),
    'rebind, same id': (s, t) =>
      s.rebind(t, { from: MID, messageId: MID, principal: ALICE, fingerprint: FP, ttlMs: TTL }),
    'rebind, other id': (s, t) =>
      s.rebind(t, {
        from: MID,
        messageId: OTHER_MID,
        principal: ALICE,
        fingerprint: FP,
        ttlMs: TTL,
      }),
  } satisfies Record<string, Op>;

  const T = 'T';
  const MISMATCH = 'TokenMismatchError';
  // from, operation, expected result (or error class), state after
  const rows: [Legacy, keyof typeof ops, unknown, string][] = [
    ['issued', 'accept, same request', { status: 'accepted', messageId: OTHER_MID }, 'accepted'],
    ['issued', 'accept, other principal', { status: 'unknown' }, 'issued'],
    ['issued', 'claim by B', { status: 'claimed', leaseUntil: T }, 'claimed'],
    ['issued', 'complete', { status: 'completed' }, 'done'],

    [
      'accepted',
      'accept, same request',
      { status: 'replay', messageId: MID, state: 'accepted' },
      'accepted',
    ],
    ['accepted', 'accept, other request', { status: 'reused', storedMessageId: MID }, 'accepted'],
    ['accepted', 'accept, other principal', { status: 'unknown' }, 'accepted'],
    ['accepted', 'claim by B', { status: 'claimed', leaseUntil: T }, 'claimed'],
    ['accepted', 'claim for another message', MISMATCH, 'accepted'],
    ['accepted', 'complete', { status: 'completed' }, 'done'],
    ['accepted', 'settle', { status: 'settled' }, 'accepted'],
    ['accepted', 'rebind, same id', { status: 'rebound', state: 'accepted' }, 'accepted'],
    ['accepted', 'rebind, other id', { status: 'rebound', state: 'accepted' }, 'accepted'],

    [
      'accepted, in flight',
      'accept, same request',
      { status: 'in_use', pendingUntil: T },
      'accepted',
    ],
    [
      'accepted, in flight',
      'accept, other request',
      { status: 'reused', storedMessageId: MID },
      'accepted',
    ],

    [
      'claimed by A',
      'accept, same request',
      { status: 'replay', messageId: MID, state: 'claimed' },
      'claimed',
    ],
    [
      'claimed by A',
      'accept, other request',
      { status: 'reused', storedMessageId: MID },
      'claimed',
    ],
    ['claimed by A', 'claim by A', { status: 'claimed', leaseUntil: T }, 'claimed'],
    ['claimed by A', 'claim by B', { status: 'busy', leaseUntil: T, owner: 'A' }, 'claimed'],
    ['claimed by A', 'renew by A', { status: 'renewed', leaseUntil: T }, 'claimed'],
    ['claimed by A', 'release by A', { status: 'released' }, 'accepted'],
    ['claimed by A', 'complete', { status: 'completed' }, 'done'],

    ['done', 'accept, same request', { status: 'replay', messageId: MID, state: 'done' }, 'done'],
    ['done', 'accept, other request', { status: 'reused', storedMessageId: MID }, 'done'],
    ['done', 'accept, other principal', { status: 'unknown' }, 'done'],
    ['done', 'claim by B', { status: 'done', result: RESULT }, 'done'],
    ['done', 'claim for another message', MISMATCH, 'done'],
    ['done', 'renew by A', { status: 'lost', state: 'done', owner: undefined }, 'done'],
    ['done', 'release by A', { status: 'not_owner', state: 'done', owner: undefined }, 'done'],
    ['done', 'complete', { status: 'already_done', result: RESULT }, 'done'],
    ['done', 'settle', { status: 'settled' }, 'done'],
    ['done', 'rebind, same id', { status: 'rebound', state: 'done' }, 'done'],
    ['done', 'rebind, other id', { status: 'rebound', state: 'accepted' }, 'accepted'],
  ];

  const shape = (value: unknown): unknown => {
    if (typeof value !== 'object' || value === null) return value;
    const copy = { ...(value as Record<string, unknown>) };
    for (const f of ['leaseUntil', 'pendingUntil']) if (typeof copy[f] === 'number') copy[f] = T;
    return copy;
  };

  for (const [from, op, expected, after] of rows) {
    const name = typeof expected === 'string' ? expected : (expected as { status: string }).status;
    it(`${from}: ${op} → ${name}, then ${after}`, async () => {
      const token = await seed(from);
      let actual: unknown;
      try {
        actual = shape(await ops[op](store, token));
      } catch (err) {
        if (typeof expected !== 'string') throw err;
        actual = (err as Error).name;
      }
      expect(actual).to.deep.equal(expected);
      const snapshot = await store.inspect(token);
      expect(snapshot?.state).to.equal(after);
      expect(snapshot?.ttlMs, 'every key expires').to.be.a('number');

      // What the token answers next agrees with the transition, in the new format or the old.
      if (after === 'done') {
        const again = await ops['claim by B'](store, token);
        expect(again).to.deep.equal({
          status: 'done',
          result: from === 'done' ? RESULT : { other: true },
        });
      }
      // A rewritten hash keeps the fingerprint it held: replays still match the old form.
      if (from !== 'issued' && (op === 'complete' || op.startsWith('rebind'))) {
        expect(await ops['accept, same request'](store, token)).to.deep.include({
          status: 'replay',
          messageId: op === 'rebind, other id' ? OTHER_MID : MID,
        });
      }
    });
  }

  it('reads the fingerprint of a hash of the previous version as it was written', async () => {
    const token = await seed('done');
    expect(await store.inspect(token)).to.deep.include({
      state: 'done',
      fingerprint: FP,
      messageId: MID,
      result: RESULT,
      claims: 1,
    });
  });
});
