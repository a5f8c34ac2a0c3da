/**
 * The bound on a principal's outstanding tokens (issued, neither used nor expired), against every
 * token store (Redis, Redis Cluster, PostgreSQL): `issue` refuses past it with `TokenLimitError` and writes nothing; accepting a
 * token and letting one expire both make room; the count stays exact under concurrent issues,
 * replays and other principals' accepts; the refusal says when room comes back. How the Redis
 * store keeps the count (a sorted set per principal) is test/redis/outstanding-tokens.test.ts.
 */
import { expect } from 'chai';
import { ErrorCode, InvalidArgumentError, TokenLimitError } from '../../src/core/errors.js';
import type { TokenStore } from '../../src/core/token-store.js';
import { TOKEN_BACKENDS, type TokenBackend } from '../support/token-stores.js';

const ALICE = 'alice';
const BOB = 'bob';
const TTL = 60_000;
const LIMIT = 100;
const FP = 'fp-1';
let mid = 7203691551471493121n;
const nextMid = () => String(mid++);

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

for (const backend of TOKEN_BACKENDS) {
  describe(`token store contract: ${backend.name}: outstanding tokens per principal`, () => {
    let harness: TokenBackend;
    let store: TokenStore;

    beforeEach(async () => {
      harness = await backend.open('outstanding');
      store = harness.store({ maxOutstanding: LIMIT });
    });
    afterEach(async () => {
      await harness.close();
    });

    const tokenKeys = async () => (await harness.storedTokens()).length;

    async function refusal(
      principal: string,
      count: number,
      ttlMs = TTL,
    ): Promise<TokenLimitError> {
      const err = await store.issue(principal, { ttlMs, count }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, 'issue was not refused').to.be.instanceOf(TokenLimitError);
      return err as TokenLimitError;
    }

    const accept = (token: string, principal = ALICE) =>
      store.accept(token, { principal, fingerprint: FP, messageId: nextMid(), ttlMs: TTL });

    it('refuses past the bound with TokenLimitError, writing no token; another principal is not affected', async () => {
      const first = await store.issue(ALICE, { ttlMs: TTL, count: 60 });
      const second = await store.issue(ALICE, { ttlMs: TTL, count: 40 });
      expect(first.length + second.length).to.equal(LIMIT);
      expect(await tokenKeys()).to.equal(LIMIT);

      const err = await refusal(ALICE, 1);
      expect(err.code).to.equal(ErrorCode.TokenLimitReached);
      expect(err.details).to.include({ limit: LIMIT, outstanding: LIMIT });
      expect(err.details.retryAfterMs).to.be.within(1, TTL);
      expect(err.message).to.contain('100');
      expect(await tokenKeys()).to.equal(LIMIT);

      expect(await store.issue(BOB, { ttlMs: TTL, count: 100 })).to.have.length(100);
    });

    it('an accepted token leaves the count at once; a replay or a reuse of it frees nothing more', async () => {
      const tokens = await store.issue(ALICE, { ttlMs: TTL, count: 100 });
      const used = tokens[0]!.token;
      expect((await accept(used)).status).to.equal('accepted');
      // The same request again, and another request with the same token: no second room.
      const again = await store.accept(used, {
        principal: ALICE,
        fingerprint: FP,
        messageId: nextMid(),
        ttlMs: TTL,
      });
      expect(again.status).to.equal('replay');
      expect(
        (
          await store.accept(used, {
            principal: ALICE,
            fingerprint: 'fp-other',
            messageId: nextMid(),
            ttlMs: TTL,
          })
        ).status,
      ).to.equal('reused');

      expect(await store.issue(ALICE, { ttlMs: TTL })).to.have.length(1);
      await refusal(ALICE, 1);
    });

    it("another principal's accept of a token does not free its issuer's room", async () => {
      const tokens = await store.issue(ALICE, { ttlMs: TTL, count: 100 });
      expect((await accept(tokens[0]!.token, BOB)).status).to.equal('unknown');
      await refusal(ALICE, 1);
    });

    it('expired tokens leave the count, and Retry-After is when enough of them expire', async () => {
      // 60 short-lived tokens, then 40 long-lived ones: the bound is reached.
      await store.issue(ALICE, { ttlMs: 1_500, count: 60 });
      await store.issue(ALICE, { ttlMs: TTL, count: 40 });
      // Room for 60 comes when the short-lived ones expire, ...
      const soon = await refusal(ALICE, 60);
      expect(soon.details.retryAfterMs).to.be.within(1, 1_500);
      // ... for 61 only when a long-lived one expires too.
      const late = await refusal(ALICE, 61);
      expect(late.details.retryAfterMs).to.be.within(TTL - 5_000, TTL);

      await sleep(1_700);
      expect(await store.issue(ALICE, { ttlMs: TTL, count: 60 })).to.have.length(60);
      await refusal(ALICE, 1);
      expect(await tokenKeys()).to.equal(100);
    });

    it('concurrent issues never overshoot the bound: 20 × 10 against 100, exactly 10 granted', async () => {
      const others = harness.storesOnOwnConnections(10, { maxOutstanding: LIMIT });
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) =>
          others[i % others.length]!.issue(ALICE, { ttlMs: TTL, count: 10 }),
        ),
      );
      const granted = results.filter((r) => r.status === 'fulfilled');
      const refused = results.filter(
        (r) => r.status === 'rejected' && r.reason instanceof TokenLimitError,
      );
      expect(granted).to.have.length(10);
      expect(refused).to.have.length(10);
      expect(await tokenKeys()).to.equal(100);
      await refusal(ALICE, 1);
    });

    it('maxOutstanding 0 bounds nothing; a bound below one request is refused', async () => {
      const unbounded = harness.store({ maxOutstanding: 0 });
      await unbounded.issue(ALICE, { ttlMs: TTL, count: 100 });
      await unbounded.issue(ALICE, { ttlMs: TTL, count: 100 });
      expect(await tokenKeys()).to.equal(200);
      for (const bad of [99, 1, -1, 100.5, Number.NaN]) {
        expect(() => harness.store({ maxOutstanding: bad })).to.throw(InvalidArgumentError);
      }
    });
  });
}
