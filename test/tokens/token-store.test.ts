import { expect } from 'chai';
import type { Redis } from 'ioredis';
import {
  ErrorCode,
  InvalidArgumentError,
  OnceqError,
  TokenMismatchError,
} from '../../src/core/errors.js';
import { generateToken, isWellFormedToken } from '../../src/core/token.js';
import { closeRedis } from '../../src/redis/connection.js';
import { outstandingTokensKey, tokenKey } from '../../src/redis/keys.js';
import { runScript } from '../../src/redis/scripts.js';
import { toTokenResult, type TokenOp } from '../../src/core/token-codes.js';
import { createTokenStore, type TokenStore } from '../../src/redis/token-store.js';
import { deletePrefix, testRedis, uniqueName } from '../support/env.js';

const ALICE = 'alice';
const FP = 'fp-request-1';
const MID = '7203691551471493121';
const OTHER_MID = '7203691551471493122';
const TTL = 60_000;
const LEASE = 10_000;
const RESULT = { status: 'applied', transferId: MID, nested: { ids: ['9223372036854775807'] } };

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Closes a connection and waits for its socket to go: QUIT's reply comes before the close. */
async function closeFully(connection: Redis): Promise<void> {
  if (connection.status === 'end') return;
  const ended = new Promise<void>((resolve) => connection.once('end', () => resolve()));
  await closeRedis(connection);
  await ended;
}

/** Replaces lease times (which depend on the clock) with 'T', so results compare with deep equal. */
function shape(result: unknown): unknown {
  if (typeof result !== 'object' || result === null) return result;
  const copy = { ...(result as Record<string, unknown>) };
  if (typeof copy.leaseUntil === 'number') copy.leaseUntil = 'T';
  return copy;
}

describe('redis/token-store', () => {
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

  async function issued(ttlMs = TTL): Promise<string> {
    const [first] = await store.issue(ALICE, { ttlMs });
    return first!.token;
  }
  async function accepted(ttlMs = TTL): Promise<string> {
    const token = await issued(ttlMs);
    expect(
      await store.accept(token, { principal: ALICE, fingerprint: FP, messageId: MID, ttlMs }),
    ).to.deep.equal({
      status: 'accepted',
      messageId: MID,
    });
    return token;
  }
  async function claimedBy(owner: string, leaseMs = LEASE): Promise<string> {
    const token = await accepted();
    const claim = await store.claim(token, { owner, leaseMs, messageId: MID, ttlMs: TTL });
    expect(claim.status).to.equal('claimed');
    return token;
  }

  describe('every transition from every reachable state', () => {
    type From =
      'missing' | 'issued' | 'accepted' | 'claimed by A' | 'claimed by A, lease expired' | 'done';
    const arrange: Record<From, () => Promise<string>> = {
      missing: async () => generateToken(),
      issued: () => issued(),
      accepted: () => accepted(),
      'claimed by A': () => claimedBy('A'),
      'claimed by A, lease expired': async () => {
        const token = await claimedBy('A', 20);
        await sleep(40);
        return token;
      },
      done: async () => {
        const token = await claimedBy('A');
        expect(
          await store.complete(token, { messageId: MID, result: RESULT, ttlMs: TTL }),
        ).to.deep.equal({
          status: 'completed',
        });
        return token;
      },
    };

    type Op = (s: TokenStore, token: string) => Promise<unknown>;
    const ops = {
      accept: (s, t) =>
        s.accept(t, { principal: ALICE, fingerprint: FP, messageId: OTHER_MID, ttlMs: TTL }),
      'accept, other request': (s, t) =>
        s.accept(t, {
          principal: ALICE,
          fingerprint: 'fp-other',
          messageId: OTHER_MID,
          ttlMs: TTL,
        }),
      'accept, other principal': (s, t) =>
        s.accept(t, { principal: 'mallory', fingerprint: FP, messageId: OTHER_MID, ttlMs: TTL }),
      'claim by A': (s, t) =>
        s.claim(t, { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL }),
      'claim by B': (s, t) =>
        s.claim(t, { owner: 'B', leaseMs: LEASE, messageId: MID, ttlMs: TTL }),
      'claim for another message': (s, t) =>
        s.claim(t, { owner: 'B', leaseMs: LEASE, messageId: OTHER_MID, ttlMs: TTL }),
      'renew by A': (s, t) => s.renew(t, { owner: 'A', leaseMs: LEASE }),
      'renew by B': (s, t) => s.renew(t, { owner: 'B', leaseMs: LEASE }),
      'release by A': (s, t) => s.release(t, { owner: 'A' }),
      'release by B': (s, t) => s.release(t, { owner: 'B' }),
      complete: (s, t) => s.complete(t, { messageId: MID, result: { other: true }, ttlMs: TTL }),
      'complete another message': (s, t) =>
        s.complete(t, { messageId: OTHER_MID, result: { other: true }, ttlMs: TTL }),
    } satisfies Record<string, Op>;

    const MISMATCH = 'TokenMismatchError';
    type Row = [From, keyof typeof ops, unknown, string, string?];
    // from, operation, expected result (or error class), state after, owner after
    const rows: Row[] = [
      ['missing', 'accept', { status: 'unknown' }, 'missing'],
      ['missing', 'claim by B', { status: 'claimed', leaseUntil: 'T' }, 'claimed', 'B'],
      ['missing', 'renew by A', { status: 'lost', state: 'missing', owner: undefined }, 'missing'],
      [
        'missing',
        'release by A',
        { status: 'not_owner', state: 'missing', owner: undefined },
        'missing',
      ],
      ['missing', 'complete', { status: 'completed' }, 'done'],

      ['issued', 'accept', { status: 'accepted', messageId: OTHER_MID }, 'accepted'],
      ['issued', 'accept, other principal', { status: 'unknown' }, 'issued'],
      ['issued', 'claim by B', { status: 'claimed', leaseUntil: 'T' }, 'claimed', 'B'],
      ['issued', 'renew by A', { status: 'lost', state: 'issued', owner: undefined }, 'issued'],
      [
        'issued',
        'release by A',
        { status: 'not_owner', state: 'issued', owner: undefined },
        'issued',
      ],
      ['issued', 'complete', { status: 'completed' }, 'done'],

      ['accepted', 'accept', { status: 'replay', messageId: MID, state: 'accepted' }, 'accepted'],
      ['accepted', 'accept, other request', { status: 'reused', storedMessageId: MID }, 'accepted'],
      ['accepted', 'accept, other principal', { status: 'unknown' }, 'accepted'],
      ['accepted', 'claim by B', { status: 'claimed', leaseUntil: 'T' }, 'claimed', 'B'],
      ['accepted', 'claim for another message', MISMATCH, 'accepted'],
      [
        'accepted',
        'renew by A',
        { status: 'lost', state: 'accepted', owner: undefined },
        'accepted',
      ],
      [
        'accepted',
        'release by A',
        { status: 'not_owner', state: 'accepted', owner: undefined },
        'accepted',
      ],
      ['accepted', 'complete', { status: 'completed' }, 'done'],
      ['accepted', 'complete another message', MISMATCH, 'accepted'],

      [
        'claimed by A',
        'accept',
        { status: 'replay', messageId: MID, state: 'claimed' },
        'claimed',
        'A',
      ],
      [
        'claimed by A',
        'accept, other request',
        { status: 'reused', storedMessageId: MID },
        'claimed',
        'A',
      ],
      ['claimed by A', 'claim by A', { status: 'claimed', leaseUntil: 'T' }, 'claimed', 'A'],
      [
        'claimed by A',
        'claim by B',
        { status: 'busy', leaseUntil: 'T', owner: 'A' },
        'claimed',
        'A',
      ],
      ['claimed by A', 'claim for another message', MISMATCH, 'claimed', 'A'],
      ['claimed by A', 'renew by A', { status: 'renewed', leaseUntil: 'T' }, 'claimed', 'A'],
      [
        'claimed by A',
        'renew by B',
        { status: 'lost', state: 'claimed', owner: 'A' },
        'claimed',
        'A',
      ],
      ['claimed by A', 'release by A', { status: 'released' }, 'accepted'],
      [
        'claimed by A',
        'release by B',
        { status: 'not_owner', state: 'claimed', owner: 'A' },
        'claimed',
        'A',
      ],
      ['claimed by A', 'complete', { status: 'completed' }, 'done'],

      [
        'claimed by A, lease expired',
        'claim by B',
        { status: 'claimed', leaseUntil: 'T' },
        'claimed',
        'B',
      ],
      [
        'claimed by A, lease expired',
        'claim by A',
        { status: 'claimed', leaseUntil: 'T' },
        'claimed',
        'A',
      ],
      [
        'claimed by A, lease expired',
        'renew by A',
        { status: 'renewed', leaseUntil: 'T' },
        'claimed',
        'A',
      ],
      [
        'claimed by A, lease expired',
        'renew by B',
        { status: 'lost', state: 'claimed', owner: 'A' },
        'claimed',
        'A',
      ],
      ['claimed by A, lease expired', 'release by A', { status: 'released' }, 'accepted'],
      ['claimed by A, lease expired', 'complete', { status: 'completed' }, 'done'],

      ['done', 'accept', { status: 'replay', messageId: MID, state: 'done' }, 'done'],
      ['done', 'accept, other request', { status: 'reused', storedMessageId: MID }, 'done'],
      ['done', 'accept, other principal', { status: 'unknown' }, 'done'],
      ['done', 'claim by B', { status: 'done', result: RESULT }, 'done'],
      ['done', 'claim for another message', MISMATCH, 'done'],
      ['done', 'renew by A', { status: 'lost', state: 'done', owner: undefined }, 'done'],
      ['done', 'release by A', { status: 'not_owner', state: 'done', owner: undefined }, 'done'],
      ['done', 'complete', { status: 'already_done', result: RESULT }, 'done'],
      ['done', 'complete another message', MISMATCH, 'done'],
    ];

    for (const [from, op, expected, after, ownerAfter] of rows) {
      it(`${from}: ${op} → ${typeof expected === 'string' ? expected : (expected as { status: string }).status}, then ${after}`, async () => {
        const token = await arrange[from]();
        let actual: unknown;
        try {
          actual = shape(await ops[op](store, token));
        } catch (err) {
          if (typeof expected !== 'string') throw err;
          actual = (err as Error).name;
        }
        expect(actual).to.deep.equal(expected);

        const snapshot = await store.inspect(token);
        expect(snapshot?.state ?? 'missing').to.equal(after);
        expect(snapshot?.owner).to.equal(ownerAfter);
        if (after === 'claimed') {
          expect(snapshot?.leaseUntil).to.be.a('number');
        } else {
          expect(snapshot?.leaseUntil).to.equal(undefined);
        }
        // A done token keeps its first result; nothing but `complete` writes one.
        if (from === 'done') expect(snapshot?.result).to.deep.equal(RESULT);
        if (after === 'done' && from !== 'done')
          expect(snapshot?.result).to.deep.equal({ other: true });
        if (snapshot) expect(snapshot.ttlMs, 'every key expires').to.be.a('number');
      });
    }
  });

  describe('issue', () => {
    it('creates issued tokens bound to the principal, with the TTL and its end', async () => {
      const before = Date.now();
      const tokens = await store.issue(ALICE, { ttlMs: TTL, count: 3 });
      expect(tokens).to.have.length(3);
      expect(new Set(tokens.map((t) => t.token)).size).to.equal(3);
      for (const { token, expiresAt } of tokens) {
        expect(isWellFormedToken(token)).to.equal(true);
        expect(expiresAt).to.be.instanceOf(Date);
        // Redis runs on this machine, so its clock and ours agree within a second.
        expect(expiresAt.getTime()).to.be.within(before + TTL - 1_000, Date.now() + TTL + 1_000);
        const snapshot = await store.inspect(token);
        expect(snapshot).to.include({ state: 'issued', principal: ALICE, claims: 0 });
        expect(snapshot?.messageId).to.equal(undefined);
        expect(snapshot?.issuedAt).to.be.within(before - 1_000, Date.now() + 1_000);
        expect(snapshot?.ttlMs).to.be.within(TTL - 1_000, TTL);
      }
    });

    it('issues up to 100 at once and refuses more, fewer, or a bad TTL', async () => {
      const tokens = await store.issue(ALICE, { ttlMs: TTL, count: 100 });
      expect(new Set(tokens.map((t) => t.token)).size).to.equal(100);
      expect(await redis.exists(...tokens.map((t) => key(t.token)))).to.equal(100);
      for (const count of [0, 101, 1.5]) {
        await expectRejection(store.issue(ALICE, { ttlMs: TTL, count }), InvalidArgumentError);
      }
      await expectRejection(store.issue(ALICE, { ttlMs: 0 }), InvalidArgumentError);
      await expectRejection(store.issue('', { ttlMs: TTL }), InvalidArgumentError);
    });

    it('the script refuses an existing key (a collision), leaving it untouched', async () => {
      const token = await accepted();
      const reply = await runScript(redis, 'issue', [key(token)], ['mallory', TTL]);
      expect(toTokenResult('issue', reply)).to.deep.equal({ status: 'collision' });
      expect(await store.inspect(token)).to.include({ state: 'accepted', principal: ALICE });
    });
  });

  describe('accept', () => {
    it('answers never issued, another principal and expired identically, and writes nothing', async () => {
      const accept = (token: string) =>
        store.accept(token, { principal: ALICE, fingerprint: FP, messageId: MID, ttlMs: TTL });

      const neverIssued = await accept(generateToken());

      const [others] = await store.issue('bob', { ttlMs: TTL });
      const otherPrincipal = await accept(others!.token);

      const shortLived = await issued(30);
      await sleep(80);
      const expired = await accept(shortLived);

      expect(neverIssued).to.deep.equal({ status: 'unknown' });
      expect(otherPrincipal).to.deep.equal(neverIssued);
      expect(expired).to.deep.equal(neverIssued);
      expect(JSON.stringify(otherPrincipal)).to.equal(JSON.stringify(neverIssued));
      expect(JSON.stringify(expired)).to.equal(JSON.stringify(neverIssued));

      expect(await store.inspect(others!.token)).to.include({ state: 'issued', principal: 'bob' });
      expect(await store.inspect(shortLived)).to.equal(undefined);
      // Only what bob's issue wrote: his token and his count of outstanding tokens.
      expect(await redis.keys(`${prefix}:*`)).to.have.members([
        key(others!.token),
        outstandingTokensKey(prefix, 'bob'),
      ]);
    });

    it('stores fingerprint and messageId, and a replay returns the first messageId', async () => {
      const token = await issued();
      await store.accept(token, { principal: ALICE, fingerprint: FP, messageId: MID, ttlMs: TTL });
      const replay = await store.accept(token, {
        principal: ALICE,
        fingerprint: FP,
        messageId: OTHER_MID,
        ttlMs: TTL,
      });
      expect(replay).to.deep.equal({ status: 'replay', messageId: MID, state: 'accepted' });
      const snapshot = await store.inspect(token);
      expect(snapshot).to.include({ fingerprint: FP, messageId: MID, principal: ALICE });
      expect(snapshot?.acceptedAt).to.be.a('number');
    });

    it('settle with forget deletes the state of that messageId only', async () => {
      const token = await accepted();
      expect(await store.settle(token, { messageId: OTHER_MID, forget: true })).to.deep.equal({
        status: 'settled',
      });
      expect(await store.inspect(token)).to.include({ messageId: MID, state: 'accepted' });
      await store.settle(token, { messageId: MID, forget: true });
      expect(await store.inspect(token)).to.equal(undefined);
      // Forgotten, the token is unknown to Redis (PostgreSQL answers its replays).
      const again = await store.accept(token, {
        principal: ALICE,
        fingerprint: FP,
        messageId: OTHER_MID,
        ttlMs: TTL,
      });
      expect(again.status).to.equal('unknown');
    });

    describe('rebind (Redis went back in time; PostgreSQL recorded MID for the token)', () => {
      const record = { messageId: MID, principal: ALICE, fingerprint: FP, ttlMs: TTL };

      it('rebinds a retry accepted under a fresh id to the recorded one, claimable for it', async () => {
        const token = await issued();
        // The restored `issued` token took the retry for a first use under OTHER_MID.
        await store.accept(token, {
          principal: ALICE,
          fingerprint: FP,
          messageId: OTHER_MID,
          ttlMs: TTL,
        });
        expect(await store.rebind(token, { ...record, from: OTHER_MID })).to.deep.equal({
          status: 'rebound',
          state: 'accepted',
        });
        expect(await store.inspect(token)).to.include({ messageId: MID, fingerprint: FP });
        const claim = await store.claim(token, {
          owner: 'A',
          leaseMs: LEASE,
          messageId: MID,
          ttlMs: TTL,
        });
        expect(claim.status).to.equal('claimed');
        // A replay now answers the recorded id from Redis.
        const replay = await store.accept(token, {
          principal: ALICE,
          fingerprint: FP,
          messageId: '7203691551471493999',
          ttlMs: TTL,
        });
        expect(replay).to.deep.equal({ status: 'replay', messageId: MID, state: 'claimed' });
      });

      it('drops a claim and a result held for the wrong id', async () => {
        const token = await issued();
        await store.claim(token, { owner: 'A', leaseMs: LEASE, messageId: OTHER_MID, ttlMs: TTL });
        await store.complete(token, { messageId: OTHER_MID, result: RESULT, ttlMs: TTL });
        await store.rebind(token, { ...record, from: OTHER_MID });
        const snapshot = await store.inspect(token);
        expect(snapshot).to.include({ state: 'accepted', messageId: MID, owner: undefined });
        expect(snapshot?.result).to.equal(undefined);
        expect(snapshot?.doneAt).to.equal(undefined);
      });

      it('fills in the fingerprint of a restored token a worker claimed, keeping its state', async () => {
        const token = await issued();
        await store.claim(token, { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL });
        await store.complete(token, { messageId: MID, result: RESULT, ttlMs: TTL });
        const reused = await store.accept(token, {
          principal: ALICE,
          fingerprint: FP,
          messageId: OTHER_MID,
          ttlMs: TTL,
        });
        expect(reused).to.deep.equal({ status: 'reused', storedMessageId: MID });
        expect(await store.rebind(token, { ...record, from: MID })).to.deep.equal({
          status: 'rebound',
          state: 'done',
        });
        expect((await store.inspect(token))?.result).to.deep.equal(RESULT);
        const replay = await store.accept(token, {
          principal: ALICE,
          fingerprint: FP,
          messageId: OTHER_MID,
          ttlMs: TTL,
        });
        expect(replay).to.deep.equal({ status: 'replay', messageId: MID, state: 'done' });
      });

      it('writes nothing when Redis holds another id than the caller saw, or nothing', async () => {
        const token = await accepted();
        expect(
          await store.rebind(token, { ...record, messageId: OTHER_MID, from: OTHER_MID }),
        ).to.deep.equal({ status: 'moved', storedMessageId: MID });
        expect(await store.inspect(token)).to.include({ messageId: MID, state: 'accepted' });
        const gone = generateToken();
        expect(await store.rebind(gone, { ...record, from: undefined })).to.deep.equal({
          status: 'moved',
          storedMessageId: undefined,
        });
        expect(await store.inspect(gone)).to.equal(undefined);
      });
    });

    it('extends a shorter TTL to ttlMs and never shortens a longer one', async () => {
      const short = await issued(5_000);
      await store.accept(short, { principal: ALICE, fingerprint: FP, messageId: MID, ttlMs: TTL });
      expect(await redis.pttl(key(short))).to.be.within(TTL - 1_000, TTL);

      const long = await issued(TTL);
      await store.accept(long, { principal: ALICE, fingerprint: FP, messageId: MID, ttlMs: 5_000 });
      expect(await redis.pttl(key(long))).to.be.within(TTL - 1_000, TTL);
    });

    it('50 concurrent accepts of one request: one accepted, 49 replays of the same messageId', async () => {
      const token = await issued();
      const connections = Array.from({ length: 5 }, () => testRedis());
      try {
        const stores = connections.map((c) => createTokenStore(c, { prefix }));
        const results = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            stores[i % stores.length]!.accept(token, {
              principal: ALICE,
              fingerprint: FP,
              messageId: String(7203691551471493000n + BigInt(i)),
              ttlMs: TTL,
            }),
          ),
        );
        const winners = results.filter((r) => r.status === 'accepted');
        expect(winners).to.have.length(1);
        const messageId = (winners[0] as { messageId: string }).messageId;
        const replays = results.filter((r) => r.status === 'replay');
        expect(replays).to.have.length(49);
        for (const r of replays)
          expect(r).to.deep.equal({ status: 'replay', messageId, state: 'accepted' });
        expect((await store.inspect(token))?.messageId).to.equal(messageId);
      } finally {
        await Promise.all(connections.map((c) => closeFully(c)));
      }
    });
  });

  describe('claim, renew, release', () => {
    it('BUSY tells the other owner when the lease ends; renewing moves that end', async () => {
      const token = await accepted();
      const first = await store.claim(token, {
        owner: 'A',
        leaseMs: LEASE,
        messageId: MID,
        ttlMs: TTL,
      });
      if (first.status !== 'claimed') throw new Error(`expected claimed, got ${first.status}`);
      expect(first.leaseUntil).to.be.within(Date.now() + LEASE - 1_000, Date.now() + LEASE + 1_000);

      const busy = await store.claim(token, {
        owner: 'B',
        leaseMs: LEASE,
        messageId: MID,
        ttlMs: TTL,
      });
      expect(busy).to.deep.equal({ status: 'busy', leaseUntil: first.leaseUntil, owner: 'A' });

      await sleep(5);
      const renewed = await store.renew(token, { owner: 'A', leaseMs: 2 * LEASE });
      if (renewed.status !== 'renewed') throw new Error(`expected renewed, got ${renewed.status}`);
      expect(renewed.leaseUntil).to.be.above(first.leaseUntil);
      const busyAgain = await store.claim(token, {
        owner: 'B',
        leaseMs: LEASE,
        messageId: MID,
        ttlMs: TTL,
      });
      expect(busyAgain).to.deep.equal({
        status: 'busy',
        leaseUntil: renewed.leaseUntil,
        owner: 'A',
      });
      expect((await store.inspect(token))?.leaseUntil).to.equal(renewed.leaseUntil);
    });

    it('an expired lease is taken over; the old owner then loses renew and release', async () => {
      const token = await accepted();
      await store.claim(token, { owner: 'A', leaseMs: 60, messageId: MID, ttlMs: TTL });
      expect(
        (await store.claim(token, { owner: 'B', leaseMs: LEASE, messageId: MID, ttlMs: TTL }))
          .status,
      ).to.equal('busy');
      await sleep(100);
      const takeover = await store.claim(token, {
        owner: 'B',
        leaseMs: LEASE,
        messageId: MID,
        ttlMs: TTL,
      });
      expect(takeover.status).to.equal('claimed');

      expect(await store.renew(token, { owner: 'A', leaseMs: LEASE })).to.deep.equal({
        status: 'lost',
        state: 'claimed',
        owner: 'B',
      });
      expect(await store.release(token, { owner: 'A' })).to.deep.equal({
        status: 'not_owner',
        state: 'claimed',
        owner: 'B',
      });
      const snapshot = await store.inspect(token);
      expect(snapshot).to.include({ state: 'claimed', owner: 'B', claims: 2 });
      expect(snapshot?.claimedAt).to.be.a('number');
    });

    it('keeps the key alive at least ttlMs and at least the lease', async () => {
      const token = await accepted(1_000);
      await store.claim(token, { owner: 'A', leaseMs: 30_000, messageId: MID, ttlMs: 2_000 });
      expect(await redis.pttl(key(token))).to.be.within(29_000, 30_000);

      const other = await accepted(1_000);
      await store.claim(other, { owner: 'A', leaseMs: 1_000, messageId: MID, ttlMs: TTL });
      expect(await redis.pttl(key(other))).to.be.within(TTL - 1_000, TTL);
      await store.renew(other, { owner: 'A', leaseMs: 2 * TTL });
      expect(await redis.pttl(key(other))).to.be.within(2 * TTL - 1_000, 2 * TTL);
    });

    it('claims a token whose key Redis lost, and binds it to the message', async () => {
      const token = generateToken();
      const claim = await store.claim(token, {
        owner: 'A',
        leaseMs: LEASE,
        messageId: MID,
        ttlMs: TTL,
      });
      expect(claim.status).to.equal('claimed');
      const snapshot = await store.inspect(token);
      expect(snapshot).to.include({
        state: 'claimed',
        owner: 'A',
        messageId: MID,
        principal: undefined,
      });
      expect(snapshot?.ttlMs).to.be.within(TTL - 1_000, TTL);
      await expectRejection(
        store.claim(token, { owner: 'B', leaseMs: LEASE, messageId: OTHER_MID, ttlMs: TTL }),
        TokenMismatchError,
      );
    });

    it('a mismatch names both messages and is non-retryable', async () => {
      const token = await accepted();
      const err = await expectRejection(
        store.claim(token, { owner: 'A', leaseMs: LEASE, messageId: OTHER_MID, ttlMs: TTL }),
        TokenMismatchError,
      );
      expect(err.code).to.equal(ErrorCode.TokenMismatch);
      expect(err.details).to.deep.equal({ messageId: OTHER_MID, boundMessageId: MID });
    });

    it('50 concurrent claims by distinct owners: exactly one claimed, 49 busy on its lease', async () => {
      const token = await accepted();
      const connections = Array.from({ length: 5 }, () => testRedis());
      try {
        const stores = connections.map((c) => createTokenStore(c, { prefix }));
        const results = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            stores[i % stores.length]!.claim(token, {
              owner: `worker-${i}`,
              leaseMs: LEASE,
              messageId: MID,
              ttlMs: TTL,
            }),
          ),
        );
        const winners = results.flatMap((r, i) =>
          r.status === 'claimed' ? [{ ...r, owner: `worker-${i}` }] : [],
        );
        expect(winners).to.have.length(1);
        const winner = winners[0]!;
        const busy = results.filter((r) => r.status === 'busy');
        expect(busy).to.have.length(49);
        for (const r of busy) {
          expect(r).to.deep.equal({
            status: 'busy',
            leaseUntil: winner.leaseUntil,
            owner: winner.owner,
          });
        }
        expect(await store.inspect(token)).to.include({ owner: winner.owner, claims: 1 });
      } finally {
        await Promise.all(connections.map((c) => closeFully(c)));
      }
    });
  });

  describe('complete', () => {
    it('recreates a done token when Redis lost the key, and a later claim gets the result', async () => {
      const token = await claimedBy('A');
      await redis.del(key(token));
      expect(
        await store.complete(token, { messageId: MID, result: RESULT, ttlMs: TTL }),
      ).to.deep.equal({
        status: 'completed',
      });
      const snapshot = await store.inspect(token);
      expect(snapshot).to.deep.include({
        state: 'done',
        messageId: MID,
        result: RESULT,
        owner: undefined,
      });
      expect(snapshot?.ttlMs).to.be.within(TTL - 1_000, TTL);
      expect(snapshot?.doneAt).to.be.a('number');
      expect(
        await store.claim(token, { owner: 'B', leaseMs: LEASE, messageId: MID, ttlMs: TTL }),
      ).to.deep.equal({
        status: 'done',
        result: RESULT,
      });
    });

    it('does not need the lease: the PostgreSQL commit is the truth', async () => {
      const token = await claimedBy('A');
      expect(
        await store.complete(token, { messageId: MID, result: RESULT, ttlMs: TTL }),
      ).to.deep.equal({
        status: 'completed',
      });
      expect(await store.renew(token, { owner: 'A', leaseMs: LEASE })).to.deep.equal({
        status: 'lost',
        state: 'done',
        owner: undefined,
      });
    });

    it('extends the TTL of the done marker to ttlMs', async () => {
      const token = await accepted(1_000);
      await store.complete(token, { messageId: MID, result: null, ttlMs: 2 * TTL });
      expect(await redis.pttl(key(token))).to.be.within(2 * TTL - 1_000, 2 * TTL);
    });

    it('round-trips results exactly: nested JSON, big integers as strings, unicode, undefined as null', async () => {
      const result = {
        status: 'applied',
        ids: ['18446744073709551615', '9223372036854775807', '0'],
        nested: { deeper: [{ a: null, b: true, c: 1.5, d: -12 }, [], {}] },
        text: 'naïve ✓ "quoted" \\ back\nslash',
        empty: '',
      };
      const token = await claimedBy('A');
      await store.complete(token, { messageId: MID, result, ttlMs: TTL });
      const claim = await store.claim(token, {
        owner: 'B',
        leaseMs: LEASE,
        messageId: MID,
        ttlMs: TTL,
      });
      expect(claim).to.deep.equal({ status: 'done', result });
      expect(
        await store.complete(token, { messageId: MID, result: 'second', ttlMs: TTL }),
      ).to.deep.equal({
        status: 'already_done',
        result,
      });
      expect((await store.inspect(token))?.result).to.deep.equal(result);

      const nothing = await claimedBy('A');
      await store.complete(nothing, { messageId: MID, result: undefined, ttlMs: TTL });
      expect(
        await store.claim(nothing, { owner: 'B', leaseMs: LEASE, messageId: MID, ttlMs: TTL }),
      ).to.deep.equal({
        status: 'done',
        result: null,
      });
    });

    it('50 concurrent completions: one completed, the rest see the first result', async () => {
      const token = await claimedBy('A');
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          store.complete(token, { messageId: MID, result: { i }, ttlMs: TTL }),
        ),
      );
      const completed = results.flatMap((r, i) => (r.status === 'completed' ? [i] : []));
      expect(completed).to.have.length(1);
      for (const r of results) {
        if (r.status === 'already_done') {
          expect(r).to.deep.equal({ status: 'already_done', result: { i: completed[0] } });
        }
      }
      expect((await store.inspect(token))?.result).to.deep.equal({ i: completed[0] });
    });
  });

  describe('guards', () => {
    it('refuses a malformed token before touching Redis', async () => {
      for (const bad of [
        '',
        'oqt_short',
        `oqt_${'A'.repeat(31)}:`,
        `x${generateToken().slice(1)}`,
      ]) {
        const err = await expectRejection(
          store.claim(bad, { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL }),
          OnceqError,
        );
        expect(err.code).to.equal(ErrorCode.TokenMalformed);
        expect(err.message).not.to.include(bad || 'oqt_');
      }
      expect(await redis.keys(`${prefix}:*`)).to.deep.equal([]);
    });

    it('refuses bad arguments', async () => {
      const token = generateToken();
      await expectRejection(
        store.claim(token, { owner: 'A', leaseMs: 0, messageId: MID, ttlMs: TTL }),
        InvalidArgumentError,
      );
      await expectRejection(
        store.claim(token, { owner: '', leaseMs: LEASE, messageId: MID, ttlMs: TTL }),
        InvalidArgumentError,
      );
      await expectRejection(
        store.claim(token, { owner: 'A', leaseMs: LEASE, messageId: '12e3', ttlMs: TTL }),
        InvalidArgumentError,
      );
      await expectRejection(
        store.accept(token, { principal: ALICE, fingerprint: '', messageId: MID, ttlMs: TTL }),
        InvalidArgumentError,
      );
      await expectRejection(
        store.complete(token, { messageId: MID, result: 1, ttlMs: 1.5 }),
        InvalidArgumentError,
      );
    });

    it('a Redis error becomes ScriptFailed and never carries the token', async () => {
      const token = generateToken();
      await redis.set(key(token), 'not a hash', 'PX', TTL);
      const err = await expectRejection(
        store.claim(token, { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL }),
        OnceqError,
      );
      expect(err.code).to.equal(ErrorCode.ScriptFailed);
      expect(err.message).to.match(/WRONGTYPE/);
      const cause = err.cause as Error & { command?: { args?: unknown[] } };
      const everything = JSON.stringify([
        err.message,
        err.stack,
        cause.message,
        cause.stack,
        cause.command,
      ]);
      expect(everything).not.to.include(token.slice(4));
      expect(JSON.stringify(cause.command?.args)).to.include('oqt_<redacted>');
    });
  });

  describe('toTokenResult', () => {
    const garbled: [TokenOp, unknown][] = [
      ['claim', null],
      ['claim', 'OK'],
      ['claim', []],
      ['claim', ['4', 1]],
      ['claim', [99]],
      ['claim', [6, 1]], // a renew code from the claim script
      ['claim', [4]],
      ['claim', [4, 1.5]],
      ['claim', [4, '1700000000000']],
      ['claim', [5, '{not json']],
      ['claim', [-4, 1]],
      ['accept', [2, '12a']],
      ['accept', [2, 123]],
      ['accept', [3, MID, 'limbo']],
      ['renew', [-6, 'limbo', '']],
      ['issue', [1]],
      ['complete', [9]],
    ];
    for (const [op, reply] of garbled) {
      it(`${op}: ${JSON.stringify(reply)} → ScriptFailed`, () => {
        let thrown: unknown;
        try {
          toTokenResult(op, reply);
        } catch (err) {
          thrown = err;
        }
        expect(thrown).to.be.instanceOf(OnceqError);
        expect((thrown as OnceqError).code).to.equal(ErrorCode.ScriptFailed);
      });
    }

    it('maps well-formed replies', () => {
      expect(toTokenResult('claim', [4, 1_700_000_000_000])).to.deep.equal({
        status: 'claimed',
        leaseUntil: 1_700_000_000_000,
      });
      expect(toTokenResult('renew', [-6, 'missing', ''])).to.deep.equal({
        status: 'lost',
        state: 'missing',
        owner: undefined,
      });
      expect(() => toTokenResult('complete', [-5, MID], OTHER_MID)).to.throw(TokenMismatchError);
    });
  });
});

async function expectRejection<E extends Error>(
  promise: Promise<unknown>,
  type: abstract new (...args: never[]) => E,
): Promise<E> {
  try {
    await promise;
  } catch (err) {
    expect(err).to.be.instanceOf(type);
    return err as E;
  }
  throw new Error(`expected a ${type.name}, but the promise resolved`);
}
