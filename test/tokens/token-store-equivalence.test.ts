/**
 * The token stores agree step by step: a random sequence of operations over a few tokens,
 * principals, owners, message ids, fingerprints and results, applied to the Redis store (on one
 * Redis and on a Redis Cluster) and to the PostgreSQL store alike, gets the same answer from
 * each at every step (errors included), with the times (which come from different clocks)
 * replaced by 'T'. Ttls, leases and in-flight windows are long, so that no step crosses a time
 * boundary and the clock does not matter; expiry has its examples in token-store.test.ts.
 *
 * `ONCEQ_TOKEN_PROPERTY_RUNS` sets the number of runs, `ONCEQ_PROPERTY_SEED` the seed (fast-check
 * prints both seed and path of a counterexample), `ONCEQ_PROPERTY_STATS=1` prints how often each
 * operation got each answer (that the runs reach done, in_use, busy, rebound, mismatches…).
 * Each run uses fresh tokens, so runs do not see each other's state and a seed replays a
 * failure exactly.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { requestFingerprint } from '../../src/core/fingerprint.js';
import { OnceqError } from '../../src/core/errors.js';
import { generateToken } from '../../src/core/token.js';
import type { TokenStore } from '../../src/core/token-store.js';
import { TOKEN_BACKENDS, type TokenBackend } from '../support/token-stores.js';

const RUNS = Number(process.env.ONCEQ_TOKEN_PROPERTY_RUNS ?? 0) || 200;
const SEED = process.env.ONCEQ_PROPERTY_SEED ? Number(process.env.ONCEQ_PROPERTY_SEED) : undefined;

const HOUR = 3_600_000;
const TTL = HOUR;
const LEASE = 10 * 60_000;
const IN_FLIGHT = 10 * 60_000;
/** Small, so that results on both sides of the bound come up: kept, and left to the inbox. */
const MAX_RESULT_BYTES = 48;
const SLOTS = 2;

/** Weighted towards the first value, so that most steps act on one story and build on it. */
const mostly = <T>(first: T, ...others: T[]) =>
  fc.oneof({ weight: 4, arbitrary: fc.constant(first) }, fc.constantFrom(...others));

const principal = mostly('alice', 'bob');
const owner = fc.constantFrom('A', 'B');
const mid = mostly('7203691551471493121', '7203691551471493122', '42');
const fingerprint = mostly(
  'fp-1',
  'fp-2',
  requestFingerprint({ name: 'ledger.transfer', data: { amount: 1 }, queue: 'ledger' }),
);
const slot = fc.nat({ max: SLOTS - 1 });
const result = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constant(undefined),
  fc.string({ minLength: 40, maxLength: 80 }),
);

const command = fc.oneof(
  { weight: 1, arbitrary: fc.record({ op: fc.constant('issue' as const), slot, principal }) },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant('accept' as const),
      slot,
      principal,
      fingerprint,
      mid,
      inFlight: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant('settle' as const), slot, mid, forget: fc.boolean() }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('rebind' as const),
      slot,
      from: fc.option(mid, { nil: undefined }),
      mid,
      principal,
      fingerprint,
    }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('claim' as const), slot, owner, mid }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('renew' as const), slot, owner }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('release' as const), slot, owner }) },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant('complete' as const), slot, mid, result }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('inspect' as const), slot }) },
  // The store loses the token's state (Redis restarted; a row deleted): both stores alike.
  { weight: 1, arbitrary: fc.record({ op: fc.constant('lose' as const), slot }) },
);
/** A run: which slots alice holds an issued token in at the start, then the steps. */
const scenario = fc.record({
  preIssued: fc.array(fc.boolean(), { minLength: SLOTS, maxLength: SLOTS }),
  commands: fc.array(command, { minLength: 1, maxLength: 30 }),
});
type Command = typeof command extends fc.Arbitrary<infer C> ? C : never;

/** Times (two clocks) become 'T'; an error becomes its class, code and details. */
function normalised(answer: unknown): unknown {
  if (Array.isArray(answer)) return answer.map(normalised);
  if (typeof answer !== 'object' || answer === null) return answer;
  const copy = { ...(answer as Record<string, unknown>) };
  for (const field of [
    'leaseUntil',
    'pendingUntil',
    'expiresAt',
    'issuedAt',
    'acceptedAt',
    'claimedAt',
    'doneAt',
    'ttlMs',
  ]) {
    if (copy[field] !== undefined) copy[field] = 'T';
  }
  // The stores mint their own tokens.
  if (typeof copy.token === 'string') copy.token = '<issued>';
  return copy;
}

/** An answer's kind, for the statistics: its status (and how a result was given), or its error. */
function kindOf(answer: unknown): string {
  if (typeof answer !== 'object' || answer === null) return String(answer);
  if (Array.isArray(answer)) return 'issued';
  const a = answer as Record<string, unknown>;
  if (typeof a.error === 'string') return a.error;
  if (typeof a.status !== 'string') return `snapshot ${String(a.state)}`;
  if ('resultInInbox' in a) return `${a.status} (in inbox)`;
  return a.status;
}

async function answer(run: () => Promise<unknown>): Promise<unknown> {
  try {
    return normalised(await run());
  } catch (err) {
    if (!(err instanceof OnceqError)) throw err;
    const details = err.code === 'token_limit_reached' ? undefined : err.details;
    return { error: err.name, code: err.code, details };
  }
}

/** One side of the comparison: a store and the token each slot holds on it. */
interface Side {
  harness: TokenBackend;
  store: TokenStore;
  tokens: string[];
}

async function apply(side: Side, cmd: Command): Promise<unknown> {
  const { store } = side;
  const token = side.tokens[cmd.slot]!;
  switch (cmd.op) {
    case 'issue':
      return answer(async () => {
        const issued = await store.issue(cmd.principal, { ttlMs: TTL });
        side.tokens[cmd.slot] = issued[0]!.token;
        return issued;
      });
    case 'accept':
      return answer(() =>
        store.accept(token, {
          principal: cmd.principal,
          fingerprint: cmd.fingerprint,
          messageId: cmd.mid,
          ttlMs: TTL,
          inFlightMs: cmd.inFlight ? IN_FLIGHT : 0,
        }),
      );
    case 'settle':
      return answer(() => store.settle(token, { messageId: cmd.mid, forget: cmd.forget }));
    case 'rebind':
      return answer(() =>
        store.rebind(token, {
          from: cmd.from,
          messageId: cmd.mid,
          principal: cmd.principal,
          fingerprint: cmd.fingerprint,
          ttlMs: TTL,
        }),
      );
    case 'claim':
      return answer(() =>
        store.claim(token, { owner: cmd.owner, leaseMs: LEASE, messageId: cmd.mid, ttlMs: TTL }),
      );
    case 'renew':
      return answer(() => store.renew(token, { owner: cmd.owner, leaseMs: LEASE }));
    case 'release':
      return answer(() => store.release(token, { owner: cmd.owner }));
    case 'complete':
      return answer(() =>
        store.complete(token, { messageId: cmd.mid, result: cmd.result, ttlMs: TTL }),
      );
    case 'inspect':
      return answer(() => store.inspect(token));
    case 'lose':
      return answer(async () => {
        await side.harness.lose(token);
        return 'lost';
      });
  }
}

describe('token store contract: Redis, Redis Cluster and PostgreSQL agree step by step', function () {
  this.timeout(300_000);
  const sides: Side[] = [];

  before(async () => {
    for (const backend of TOKEN_BACKENDS) {
      const harness = await backend.open('token_equiv');
      sides.push({
        harness,
        store: harness.store({ maxResultBytes: MAX_RESULT_BYTES }),
        tokens: [],
      });
    }
  });
  after(async () => {
    await Promise.all(sides.splice(0).map((s) => s.harness.close()));
  });

  it(`gives the same answers to the same operations (${RUNS} runs)`, async () => {
    let steps = 0;
    const stats = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(scenario, async ({ preIssued, commands }) => {
        // Fresh tokens for every run, the same on both sides until an issue replaces them.
        const fresh = Array.from({ length: SLOTS }, () => generateToken());
        for (const side of sides) side.tokens = [...fresh];
        const history: unknown[] = [];
        const issues = preIssued.flatMap((pre, i) =>
          pre ? [{ op: 'issue' as const, slot: i, principal: 'alice' }] : [],
        );
        for (const cmd of [...issues, ...commands]) {
          const answers: unknown[] = [];
          for (const side of sides) answers.push(await apply(side, cmd));
          history.push({ cmd, answer: answers[0] });
          const kind = `${cmd.op} → ${kindOf(answers[0])}`;
          stats.set(kind, (stats.get(kind) ?? 0) + 1);
          answers
            .slice(1)
            .forEach((other, i) =>
              expect(
                other,
                `${sides[i + 1]!.harness.name}, step ${history.length}: ${JSON.stringify(history)}`,
              ).to.deep.equal(answers[0]),
            );
          steps++;
        }
        // And where they ended: every slot's state.
        for (let i = 0; i < SLOTS; i++) {
          const cmd = { op: 'inspect' as const, slot: i };
          const [first, ...others] = await Promise.all(sides.map((side) => apply(side, cmd)));
          others.forEach((other, j) =>
            expect(other, `${sides[j + 1]!.harness.name}: final state of slot ${i}`).to.deep.equal(
              first,
            ),
          );
        }
      }),
      { numRuns: RUNS, ...(SEED === undefined ? {} : { seed: SEED }) },
    );
    expect(steps).to.be.above(RUNS);
    if (process.env.ONCEQ_PROPERTY_STATS) {
      for (const [kind, n] of [...stats].sort()) console.log(`    ${kind}: ${n}`);
    }
  });
});
