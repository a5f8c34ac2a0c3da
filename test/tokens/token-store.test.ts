/**
 * The token store's contract (src/core/token-store.ts), against every implementation: every
 * case runs on the Redis store (on one Redis, and on a Redis Cluster, where each script must keep
 * to one slot) and on the PostgreSQL store, each test in a namespace of its own
 * (test/support/token-stores.ts). Every transition from every reachable state, then each
 * operation's finer points: TTLs, in-flight windows, rebinds, results, expiry, concurrency and
 * the guards. What only one store has (Redis key layout, listpack memory, PostgreSQL rows and
 * functions) is tested beside it, in test/redis/ and test/db/.
 */
import { expect } from 'chai';
import {
  ErrorCode,
  InvalidArgumentError,
  OnceqError,
  TokenMismatchError,
} from '../../src/core/errors.js';
import { generateToken, isWellFormedToken } from '../../src/core/token.js';
import type { TokenStore } from '../../src/core/token-store.js';
import { TOKEN_BACKENDS, type TokenBackend } from '../support/token-stores.js';

const ALICE = 'alice';
const FP = 'fp-request-1';
const MID = '7203691551471493121';
const OTHER_MID = '7203691551471493122';
const TTL = 60_000;
const LEASE = 10_000;
const RESULT = { status: 'applied', transferId: MID, nested: { ids: ['9223372036854775807'] } };

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Replaces lease times (which depend on the clock) with 'T', so results compare with deep equal. */
function shape(result: unknown): unknown {
  if (typeof result !== 'object' || result === null) return result;
  const copy = { ...(result as Record<string, unknown>) };
  if (typeof copy.leaseUntil === 'number') copy.leaseUntil = 'T';
  return copy;
}

for (const backend of TOKEN_BACKENDS) {
  describe(`token store contract: ${backend.name}`, () => {
    let harness: TokenBackend;
    let store: TokenStore;

    beforeEach(async () => {
      harness = await backend.open('token');
      store = harness.store();
    });
    afterEach(async () => {
      await harness.close();
    });

    const ttlOf = async (token: string) => (await store.inspect(token))?.ttlMs;

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
        [
          'missing',
          'renew by A',
          { status: 'lost', state: 'missing', owner: undefined },
          'missing',
        ],
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
        [
          'accepted',
          'accept, other request',
          { status: 'reused', storedMessageId: MID },
          'accepted',
        ],
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
          // The store runs on this machine, so its clock and ours agree within a second.
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
        expect(await harness.storedTokens()).to.deep.equal(tokens.map((t) => t.token).sort());
        for (const count of [0, 101, 1.5]) {
          await expectRejection(store.issue(ALICE, { ttlMs: TTL, count }), InvalidArgumentError);
        }
        await expectRejection(store.issue(ALICE, { ttlMs: 0 }), InvalidArgumentError);
        await expectRejection(store.issue('', { ttlMs: TTL }), InvalidArgumentError);
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

        expect(await store.inspect(others!.token)).to.include({
          state: 'issued',
          principal: 'bob',
        });
        expect(await store.inspect(shortLived)).to.equal(undefined);
        // Only what bob's issue wrote.
        expect(await harness.storedTokens()).to.deep.equal([others!.token]);
      });

      it('stores fingerprint and messageId, and a replay returns the first messageId', async () => {
        const token = await issued();
        await store.accept(token, {
          principal: ALICE,
          fingerprint: FP,
          messageId: MID,
          ttlMs: TTL,
        });
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
        // Forgotten, the token is unknown to the store (the acceptance record answers replays).
        const again = await store.accept(token, {
          principal: ALICE,
          fingerprint: FP,
          messageId: OTHER_MID,
          ttlMs: TTL,
        });
        expect(again.status).to.equal('unknown');
      });

      describe('rebind (the store went back in time; PostgreSQL recorded MID for the token)', () => {
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
          // A replay now answers the recorded id from the store.
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
          await store.claim(token, {
            owner: 'A',
            leaseMs: LEASE,
            messageId: OTHER_MID,
            ttlMs: TTL,
          });
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

        it('writes nothing when the store holds another id than the caller saw, or nothing', async () => {
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
        await store.accept(short, {
          principal: ALICE,
          fingerprint: FP,
          messageId: MID,
          ttlMs: TTL,
        });
        expect(await ttlOf(short)).to.be.within(TTL - 1_000, TTL);

        const long = await issued(TTL);
        await store.accept(long, {
          principal: ALICE,
          fingerprint: FP,
          messageId: MID,
          ttlMs: 5_000,
        });
        expect(await ttlOf(long)).to.be.within(TTL - 1_000, TTL);
      });

      it('50 concurrent accepts of one request: one accepted, 49 replays of the same messageId', async () => {
        const token = await issued();
        const others = harness.storesOnOwnConnections(5);
        const results = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            others[i % others.length]!.accept(token, {
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
        expect(first.leaseUntil).to.be.within(
          Date.now() + LEASE - 1_000,
          Date.now() + LEASE + 1_000,
        );

        const busy = await store.claim(token, {
          owner: 'B',
          leaseMs: LEASE,
          messageId: MID,
          ttlMs: TTL,
        });
        expect(busy).to.deep.equal({ status: 'busy', leaseUntil: first.leaseUntil, owner: 'A' });

        await sleep(5);
        const renewed = await store.renew(token, { owner: 'A', leaseMs: 2 * LEASE });
        if (renewed.status !== 'renewed')
          throw new Error(`expected renewed, got ${renewed.status}`);
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
        expect(await ttlOf(token)).to.be.within(29_000, 30_000);

        const other = await accepted(1_000);
        await store.claim(other, { owner: 'A', leaseMs: 1_000, messageId: MID, ttlMs: TTL });
        expect(await ttlOf(other)).to.be.within(TTL - 1_000, TTL);
        await store.renew(other, { owner: 'A', leaseMs: 2 * TTL });
        expect(await ttlOf(other)).to.be.within(2 * TTL - 1_000, 2 * TTL);
      });

      it('claims a token whose state the store lost, and binds it to the message', async () => {
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
        const others = harness.storesOnOwnConnections(5);
        const results = await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            others[i % others.length]!.claim(token, {
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
      });
    });

    describe('complete', () => {
      it('recreates a done token when the store lost its state, and a later claim gets the result', async () => {
        const token = await claimedBy('A');
        await harness.lose(token);
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
        expect(await ttlOf(token)).to.be.within(2 * TTL - 1_000, 2 * TTL);
      });

      it('round-trips results exactly: nested JSON, big integers as strings, unicode, undefined as null', async () => {
        const result = {
          zeta: 'keys out of order',
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
        // Key order and number forms too: the JSON text is kept, not a parsed copy of it.
        expect(JSON.stringify((claim as { result: unknown }).result)).to.equal(
          JSON.stringify(result),
        );
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

      it('a token the store lost, raced for: one claim wins, and one completion, over connections', async () => {
        const others = harness.storesOnOwnConnections(5);
        const claimed = generateToken();
        const claims = await Promise.all(
          Array.from({ length: 30 }, (_, i) =>
            others[i % others.length]!.claim(claimed, {
              owner: `worker-${i}`,
              leaseMs: LEASE,
              messageId: MID,
              ttlMs: TTL,
            }),
          ),
        );
        expect(claims.filter((r) => r.status === 'claimed')).to.have.length(1);
        expect(claims.filter((r) => r.status === 'busy')).to.have.length(29);
        expect(await store.inspect(claimed)).to.include({ state: 'claimed', claims: 1 });

        const completed = generateToken();
        const completions = await Promise.all(
          Array.from({ length: 30 }, (_, i) =>
            others[i % others.length]!.complete(completed, {
              messageId: MID,
              result: { i },
              ttlMs: TTL,
            }),
          ),
        );
        const first = completions.flatMap((r, i) => (r.status === 'completed' ? [i] : []));
        expect(first).to.have.length(1);
        expect(completions.filter((r) => r.status === 'already_done')).to.deep.equal(
          Array.from({ length: 29 }, () => ({ status: 'already_done', result: { i: first[0] } })),
        );
      });
    });

    describe('inspect', () => {
      /** The snapshot with every time replaced by 'T' (or kept undefined): the clock differs. */
      const snapshotShape = async (token: string) => {
        const s = await store.inspect(token);
        if (!s) return s;
        const t = (v: number | undefined) => (v === undefined ? undefined : 'T');
        return {
          ...s,
          leaseUntil: t(s.leaseUntil),
          issuedAt: t(s.issuedAt),
          acceptedAt: t(s.acceptedAt),
          claimedAt: t(s.claimedAt),
          doneAt: t(s.doneAt),
          ttlMs: t(s.ttlMs),
        };
      };
      const none = {
        principal: undefined,
        fingerprint: undefined,
        messageId: undefined,
        owner: undefined,
        leaseUntil: undefined,
        result: undefined,
        issuedAt: undefined,
        acceptedAt: undefined,
        claimedAt: undefined,
        doneAt: undefined,
        claims: 0,
        ttlMs: 'T',
      };

      it('fills every field of the snapshot the same way through a token lifecycle', async () => {
        const token = await issued();
        expect(await snapshotShape(token)).to.deep.equal({
          ...none,
          state: 'issued',
          principal: ALICE,
          issuedAt: 'T',
        });
        await store.accept(token, {
          principal: ALICE,
          fingerprint: FP,
          messageId: MID,
          ttlMs: TTL,
        });
        const acceptedShape = {
          ...none,
          state: 'accepted',
          principal: ALICE,
          fingerprint: FP,
          messageId: MID,
          issuedAt: 'T',
          acceptedAt: 'T',
        };
        expect(await snapshotShape(token)).to.deep.equal(acceptedShape);
        const claim = await store.claim(token, {
          owner: 'A',
          leaseMs: LEASE,
          messageId: MID,
          ttlMs: TTL,
        });
        expect(await snapshotShape(token)).to.deep.equal({
          ...acceptedShape,
          state: 'claimed',
          owner: 'A',
          leaseUntil: 'T',
          claimedAt: 'T',
          claims: 1,
        });
        expect((await store.inspect(token))?.leaseUntil).to.equal(
          (claim as { leaseUntil: number }).leaseUntil,
        );
        await store.release(token, { owner: 'A' });
        // A release keeps the claim's time and count: only owner and lease go.
        expect(await snapshotShape(token)).to.deep.equal({
          ...acceptedShape,
          claimedAt: 'T',
          claims: 1,
        });
        await store.claim(token, { owner: 'B', leaseMs: LEASE, messageId: MID, ttlMs: TTL });
        expect(await snapshotShape(token)).to.include({ state: 'claimed', owner: 'B', claims: 2 });
        await store.complete(token, { messageId: MID, result: RESULT, ttlMs: TTL });
        // A done token keeps only what later transitions read, and its completion time.
        expect(await snapshotShape(token)).to.deep.equal({
          ...none,
          state: 'done',
          principal: ALICE,
          fingerprint: FP,
          messageId: MID,
          result: RESULT,
          doneAt: 'T',
        });
        const done = await store.inspect(token);
        expect(done?.doneAt).to.be.within(Date.now() - 1_000, Date.now() + 1_000);
      });

      it('a token made by a claim or a completion has no principal, fingerprint or issue time', async () => {
        const claimed = generateToken();
        await store.claim(claimed, { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL });
        expect(await snapshotShape(claimed)).to.deep.equal({
          ...none,
          state: 'claimed',
          messageId: MID,
          owner: 'A',
          leaseUntil: 'T',
          claimedAt: 'T',
          claims: 1,
        });
        const done = generateToken();
        await store.complete(done, { messageId: MID, result: undefined, ttlMs: TTL });
        expect(await snapshotShape(done)).to.deep.equal({
          ...none,
          state: 'done',
          messageId: MID,
          result: null,
          doneAt: 'T',
        });
      });
    });

    describe('in-flight window', () => {
      const first = { principal: ALICE, fingerprint: FP, messageId: MID, ttlMs: TTL };
      const again = { ...first, messageId: OTHER_MID };

      it('the same request while the first is in flight is in_use until settle, then a replay', async () => {
        const token = await issued();
        const before = Date.now();
        expect(await store.accept(token, { ...first, inFlightMs: 30_000 })).to.deep.equal({
          status: 'accepted',
          messageId: MID,
        });
        const inUse = await store.accept(token, again);
        if (inUse.status !== 'in_use') throw new Error(`expected in_use, got ${inUse.status}`);
        expect(inUse.pendingUntil).to.be.within(
          before + 30_000 - 1_000,
          Date.now() + 30_000 + 1_000,
        );
        // Another request is still reused, another principal still unknown.
        expect(await store.accept(token, { ...again, fingerprint: 'fp-other' })).to.deep.equal({
          status: 'reused',
          storedMessageId: MID,
        });
        expect(await store.accept(token, { ...again, principal: 'mallory' })).to.deep.equal({
          status: 'unknown',
        });
        // Settling another message's window leaves this one open.
        expect(await store.settle(token, { messageId: OTHER_MID })).to.deep.equal({
          status: 'settled',
        });
        expect(await store.accept(token, again)).to.deep.equal(inUse);
        expect(await store.settle(token, { messageId: MID })).to.deep.equal({ status: 'settled' });
        expect(await store.accept(token, again)).to.deep.equal({
          status: 'replay',
          messageId: MID,
          state: 'accepted',
        });
      });

      it('a window ends on its own; a claimed message is never in flight', async () => {
        const short = await issued();
        await store.accept(short, { ...first, inFlightMs: 100 });
        expect((await store.accept(short, again)).status).to.equal('in_use');
        await sleep(150);
        expect((await store.accept(short, again)).status).to.equal('replay');

        const claimed = await issued();
        await store.accept(claimed, { ...first, inFlightMs: 30_000 });
        await store.claim(claimed, { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL });
        expect(await store.accept(claimed, again)).to.deep.equal({
          status: 'replay',
          messageId: MID,
          state: 'claimed',
        });
      });

      it('a window is opened only by a first use', async () => {
        const token = await accepted();
        expect(await store.accept(token, { ...again, inFlightMs: 30_000 })).to.deep.equal({
          status: 'replay',
          messageId: MID,
          state: 'accepted',
        });
        expect((await store.accept(token, again)).status).to.equal('replay');
      });
    });

    describe('results kept, and those left to the inbox', () => {
      /** A result whose JSON is exactly `bytes` long: a string of `fill` characters. */
      const resultOf = (bytes: number, fill = 'x') => {
        const width = Buffer.byteLength(fill);
        return fill.repeat((bytes - 2) / width);
      };
      const claimAs = (token: string, owner: string) =>
        store.claim(token, { owner, leaseMs: LEASE, messageId: MID, ttlMs: TTL });

      it('keeps a result up to the default 1024 bytes of JSON; past it, done with resultInInbox', async () => {
        const fits = resultOf(1_024);
        expect(Buffer.byteLength(JSON.stringify(fits))).to.equal(1_024);
        const kept = await claimedBy('A');
        await store.complete(kept, { messageId: MID, result: fits, ttlMs: TTL });
        expect(await claimAs(kept, 'B')).to.deep.equal({ status: 'done', result: fits });
        expect((await store.inspect(kept))?.result).to.equal(fits);

        const over = await claimedBy('A');
        expect(
          await store.complete(over, { messageId: MID, result: `${fits}x`, ttlMs: TTL }),
        ).to.deep.equal({ status: 'completed' });
        expect(await claimAs(over, 'B')).to.deep.equal({ status: 'done', resultInInbox: true });
        expect(
          await store.complete(over, { messageId: MID, result: 'small', ttlMs: TTL }),
        ).to.deep.equal({ status: 'already_done', resultInInbox: true });
        const snapshot = await store.inspect(over);
        expect(snapshot).to.include({ state: 'done', messageId: MID, result: undefined });
      });

      it('counts bytes, not characters, against maxResultBytes; 0 keeps no result at all', async () => {
        store = harness.store({ maxResultBytes: 100 });
        const fits = resultOf(100, 'é');
        const kept = await claimedBy('A');
        await store.complete(kept, { messageId: MID, result: fits, ttlMs: TTL });
        expect(await claimAs(kept, 'B')).to.deep.equal({ status: 'done', result: fits });
        const over = await claimedBy('A');
        await store.complete(over, { messageId: MID, result: `${fits}é`, ttlMs: TTL });
        expect(await claimAs(over, 'B')).to.deep.equal({ status: 'done', resultInInbox: true });

        store = harness.store({ maxResultBytes: 0 });
        const nothing = await claimedBy('A');
        await store.complete(nothing, { messageId: MID, result: null, ttlMs: TTL });
        expect(await claimAs(nothing, 'B')).to.deep.equal({ status: 'done', resultInInbox: true });
      });

      it('refuses a maxResultBytes that is not a whole number of bytes', () => {
        for (const bad of [-1, 1.5, Number.NaN]) {
          expect(() => harness.store({ maxResultBytes: bad })).to.throw(InvalidArgumentError);
        }
        harness.store({ maxResultBytes: 0 });
      });
    });

    describe('expiry: a token past its ttl is a token never stored', () => {
      const SHORT = 300;
      const PAST = SHORT + 150;

      it('an issued token: gone from inspect, unknown to accept, claimable afresh', async () => {
        const token = await issued(SHORT);
        await sleep(PAST);
        expect(await store.inspect(token)).to.equal(undefined);
        expect(await harness.storedTokens()).to.deep.equal([]);
        expect(
          await store.accept(token, {
            principal: ALICE,
            fingerprint: FP,
            messageId: MID,
            ttlMs: TTL,
          }),
        ).to.deep.equal({ status: 'unknown' });
        expect(
          shape(
            await store.claim(token, { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL }),
          ),
        ).to.deep.equal({
          status: 'claimed',
          leaseUntil: 'T',
        });
        expect(await store.inspect(token)).to.include({
          state: 'claimed',
          principal: undefined,
          issuedAt: undefined,
          claims: 1,
        });
      });

      it('an accepted token: every transition answers as for a missing one', async () => {
        const token = await accepted(SHORT);
        await sleep(PAST);
        const replay = { principal: ALICE, fingerprint: FP, messageId: OTHER_MID, ttlMs: TTL };
        expect(await store.accept(token, replay)).to.deep.equal({ status: 'unknown' });
        expect(await store.renew(token, { owner: 'A', leaseMs: LEASE })).to.deep.equal({
          status: 'lost',
          state: 'missing',
          owner: undefined,
        });
        expect(await store.release(token, { owner: 'A' })).to.deep.equal({
          status: 'not_owner',
          state: 'missing',
          owner: undefined,
        });
        expect(
          await store.rebind(token, {
            from: MID,
            messageId: MID,
            principal: ALICE,
            fingerprint: FP,
            ttlMs: TTL,
          }),
        ).to.deep.equal({ status: 'moved', storedMessageId: undefined });
        expect(await store.settle(token, { messageId: MID, forget: true })).to.deep.equal({
          status: 'settled',
        });
        expect(await store.inspect(token)).to.equal(undefined);
        // Its binding expired with it: another message claims it without a mismatch.
        expect(
          (
            await store.claim(token, {
              owner: 'B',
              leaseMs: LEASE,
              messageId: OTHER_MID,
              ttlMs: TTL,
            })
          ).status,
        ).to.equal('claimed');
        expect(await store.inspect(token)).to.include({
          state: 'claimed',
          messageId: OTHER_MID,
          fingerprint: undefined,
          acceptedAt: undefined,
          claims: 1,
        });
      });

      it('a done token: claimable again, and a completion writes its result afresh', async () => {
        const token = await claimedBy('A');
        await store.complete(token, { messageId: MID, result: RESULT, ttlMs: SHORT });
        // The claim kept the key for TTL: completion extends, never shortens.
        expect(await ttlOf(token)).to.be.above(SHORT);
        const short = generateToken();
        await store.complete(short, { messageId: MID, result: RESULT, ttlMs: SHORT });
        await sleep(PAST);
        expect(await store.inspect(short)).to.equal(undefined);
        expect(
          shape(
            await store.claim(short, { owner: 'B', leaseMs: LEASE, messageId: MID, ttlMs: TTL }),
          ),
        ).to.deep.equal({ status: 'claimed', leaseUntil: 'T' });
        expect(
          await store.complete(short, { messageId: MID, result: 'second', ttlMs: TTL }),
        ).to.deep.equal({
          status: 'completed',
        });
        expect(
          await store.claim(short, { owner: 'C', leaseMs: LEASE, messageId: MID, ttlMs: TTL }),
        ).to.deep.equal({
          status: 'done',
          result: 'second',
        });
      });

      it('a claim keeps the token max(ttl, lease); past both, the claim is lost and complete recreates it', async () => {
        const token = await issued(SHORT);
        await store.claim(token, { owner: 'A', leaseMs: 2 * SHORT, messageId: MID, ttlMs: SHORT });
        await sleep(PAST);
        // Past the ttl, within the lease: still held.
        expect(
          shape(
            await store.claim(token, { owner: 'B', leaseMs: LEASE, messageId: MID, ttlMs: SHORT }),
          ),
        ).to.deep.include({ status: 'busy', owner: 'A' });
        await sleep(2 * SHORT - PAST + 150);
        expect(await store.inspect(token)).to.equal(undefined);
        expect(await store.renew(token, { owner: 'A', leaseMs: LEASE })).to.deep.equal({
          status: 'lost',
          state: 'missing',
          owner: undefined,
        });
        expect(
          await store.complete(token, { messageId: MID, result: RESULT, ttlMs: TTL }),
        ).to.deep.equal({
          status: 'completed',
        });
        expect(await store.inspect(token)).to.deep.include({
          state: 'done',
          result: RESULT,
          principal: undefined,
        });
      });

      it('a first use extends a short-lived token to the accepted ttl', async () => {
        const token = await issued(SHORT);
        await store.accept(token, {
          principal: ALICE,
          fingerprint: FP,
          messageId: MID,
          ttlMs: TTL,
        });
        await sleep(PAST);
        expect(await store.inspect(token)).to.include({ state: 'accepted', messageId: MID });
      });
    });

    describe('guards', () => {
      it('refuses a malformed token before touching the store', async () => {
        for (const bad of [
          '',
          'oqt_short',
          `oqt_${'A'.repeat(31)}:`,
          `x${generateToken().slice(1)}`,
        ]) {
          const calls = [
            () =>
              store.accept(bad, { principal: ALICE, fingerprint: FP, messageId: MID, ttlMs: TTL }),
            () => store.settle(bad, { messageId: MID }),
            () =>
              store.rebind(bad, {
                from: MID,
                messageId: MID,
                principal: ALICE,
                fingerprint: FP,
                ttlMs: TTL,
              }),
            () => store.claim(bad, { owner: 'A', leaseMs: LEASE, messageId: MID, ttlMs: TTL }),
            () => store.renew(bad, { owner: 'A', leaseMs: LEASE }),
            () => store.release(bad, { owner: 'A' }),
            () => store.complete(bad, { messageId: MID, result: RESULT, ttlMs: TTL }),
            () => store.inspect(bad),
          ];
          for (const call of calls) {
            const err = await expectRejection(call(), OnceqError);
            expect(err.code).to.equal(ErrorCode.TokenMalformed);
            expect(err.message).not.to.include(bad || 'oqt_');
          }
        }
        expect(await harness.storedTokens()).to.deep.equal([]);
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
    });
  });
}

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
