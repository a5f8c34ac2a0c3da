/**
 * The snowflake generator. First the defects of the raw `snowflake-id` package, each proven on
 * the package itself, then the guard fixing each one.
 *
 * The package reads the global `Date.now()`, so clock steps are produced by replacing
 * `Date.now` for the duration of one synchronous block (restored in `finally`). That is a fake
 * clock, not a mock of Redis or PostgreSQL, and it exercises the real package code: the ids
 * below are stamped by the package from that clock. A clock that is truly frozen would hang the
 * package itself (on sequence overflow it spins until `Date.now()` moves), so "stuck" clocks here
 * stand still for a number of reads and then move on.
 */
import { createRequire } from 'node:module';
import { expect } from 'chai';
import {
  ClockMovedBackwardsError,
  ErrorCode,
  IdGeneratorStoppedError,
} from '../../src/core/errors.js';
import {
  decodeSnowflake,
  isSnowflake,
  MAX_SNOWFLAKE,
  MAX_SNOWFLAKE_TIME_MS,
  ONCEQ_EPOCH_MS,
  snowflakeTimeMs,
} from '../../src/core/snowflake.js';
import {
  SnowflakeGenerator,
  WORKER_ID_MAX,
  WORKER_ID_MIN,
} from '../../src/ids/snowflake-generator.js';

interface RawSnowflake {
  mid: number;
  generate(): string;
}
type RawCtor = new (options?: { mid?: number; offset?: number }) => RawSnowflake;
const rawModule = createRequire(import.meta.url)('snowflake-id') as RawCtor | { default: RawCtor };
const RawSnowflakeId: RawCtor = 'default' in rawModule ? rawModule.default : rawModule;

const realNow = Date.now;

/** Runs `body` with `Date.now` replaced by `clock`; always restores the real one. */
function withClock<T>(clock: () => number, body: () => T): T {
  Date.now = clock;
  try {
    return body();
  } finally {
    Date.now = realNow;
  }
}

/** A clock that reads `startMs` for `readsPerMs` reads, then the next millisecond, and so on. */
function slowClock(startMs: number, readsPerMs: number): () => number {
  let reads = 0;
  return () => startMs + Math.floor(reads++ / readsPerMs);
}

function expectStrictlyIncreasing(ids: string[]): void {
  for (let i = 1; i < ids.length; i++) {
    if (!(BigInt(ids[i]!) > BigInt(ids[i - 1]!))) {
      expect.fail(`id #${i} ${ids[i]} is not above #${i - 1} ${ids[i - 1]}`);
    }
  }
  expect(new Set(ids).size).to.equal(ids.length);
}

const T = Date.UTC(2026, 2, 3, 4, 5, 6, 7);

describe('snowflake-id 1.1.0, raw: the defects the guard exists for', () => {
  it('stamps mid 0 and mid 1 alike, 1023 as 0 and 1024 as 1 (`(mid || 1) % 1023`)', () => {
    const machineBits = (mid: number) =>
      withClock(
        () => T,
        () =>
          decodeSnowflake(new RawSnowflakeId({ mid, offset: ONCEQ_EPOCH_MS }).generate()).workerId,
      );
    expect(machineBits(0)).to.equal(1);
    expect(machineBits(1)).to.equal(1);
    expect(machineBits(1023)).to.equal(0);
    expect(machineBits(1024)).to.equal(1);
    // Two processes given worker ids 0 and 1 mint the very same id in the same millisecond.
    const [a, b] = withClock(
      () => T,
      () =>
        [
          new RawSnowflakeId({ mid: 0, offset: ONCEQ_EPOCH_MS }),
          new RawSnowflakeId({ mid: 1, offset: ONCEQ_EPOCH_MS }),
        ].map((s) => s.generate()),
    );
    expect(a).to.equal(b);
  });

  it('repeats an id on the 4,097th id within one millisecond', () => {
    const raw = new RawSnowflakeId({ mid: 7, offset: ONCEQ_EPOCH_MS });
    // One clock read per id; the 4,097th id's first read still sees T, then the clock moves on.
    const ids = withClock(slowClock(T, 4097), () =>
      Array.from({ length: 4097 }, () => raw.generate()),
    );
    expect(new Set(ids).size).to.equal(4096);
    expect(ids[4096]).to.equal(ids[0]);
    expect(decodeSnowflake(ids[4096]!)).to.deep.equal({ timestampMs: T, workerId: 7, sequence: 0 });
  });

  it('repeats an id when the clock steps back', () => {
    const raw = new RawSnowflakeId({ mid: 7, offset: ONCEQ_EPOCH_MS });
    const first = withClock(
      () => T,
      () => raw.generate(),
    );
    withClock(
      () => T + 1,
      () => raw.generate(),
    );
    const afterStepBack = withClock(
      () => T,
      () => raw.generate(),
    );
    expect(afterStepBack).to.equal(first);
  });

  it('overflows a signed 64-bit integer from September 2039 with its default epoch', () => {
    const limitMs = 2 ** 41; // 2039-09-07T15:47:35.552Z
    expect(new Date(limitMs).toISOString()).to.equal('2039-09-07T15:47:35.552Z');
    const before = withClock(
      () => limitMs - 1,
      () => new RawSnowflakeId({ mid: 7 }).generate(),
    );
    const at = withClock(
      () => limitMs,
      () => new RawSnowflakeId({ mid: 7 }).generate(),
    );
    expect(BigInt(before) <= MAX_SNOWFLAKE).to.equal(true);
    expect(BigInt(at) > MAX_SNOWFLAKE).to.equal(true);
    expect(isSnowflake(at)).to.equal(false); // PostgreSQL would reject it: bigint out of range
  });
});

describe('SnowflakeGenerator', () => {
  it('stamps each usable worker id unchanged, so all of them are distinct', () => {
    expect([WORKER_ID_MIN, WORKER_ID_MAX]).to.deep.equal([1, 1022]);
    const seen = new Set<number>();
    withClock(
      () => T,
      () => {
        for (let workerId = WORKER_ID_MIN; workerId <= WORKER_ID_MAX; workerId++) {
          const parts = decodeSnowflake(new SnowflakeGenerator({ workerId }).nextId());
          expect(parts.workerId).to.equal(workerId);
          seen.add(parts.workerId);
        }
      },
    );
    expect(seen.size).to.equal(WORKER_ID_MAX - WORKER_ID_MIN + 1);
    // The ids the package would stamp wrongly are refused up front.
    for (const workerId of [0, 1023, 1024, -1, 1.5, Number.NaN]) {
      expect(() => new SnowflakeGenerator({ workerId }), String(workerId)).to.throw(
        RangeError,
        /worker id/,
      );
    }
  });

  it('mints 100,000 strictly increasing, unique ids at full speed', function () {
    this.timeout(60_000);
    const generator = new SnowflakeGenerator({ workerId: 3 });
    const count = 100_000;
    const ids = new Array<string>(count);
    const started = performance.now();
    for (let i = 0; i < count; i++) ids[i] = generator.nextId();
    const wrapperUs = ((performance.now() - started) * 1000) / count;

    const raw = new RawSnowflakeId({ mid: 3, offset: ONCEQ_EPOCH_MS });
    const rawStarted = performance.now();
    for (let i = 0; i < count; i++) raw.generate();
    const rawUs = ((performance.now() - rawStarted) * 1000) / count;
    console.log(
      `      cost per id: guarded ${wrapperUs.toFixed(2)} µs, raw snowflake-id ${rawUs.toFixed(2)} µs`,
    );

    expectStrictlyIncreasing(ids);
    expect(generator.lastId).to.equal(ids[count - 1]);
    for (const id of [ids[0]!, ids[count - 1]!]) expect(decodeSnowflake(id).workerId).to.equal(3);
  });

  it('stays unique past 4,096 ids in one millisecond: it waits for the next one', () => {
    const generator = new SnowflakeGenerator({ workerId: 5 });
    // The clock stands still for 20,000 reads (about 10,000 ids' worth) per millisecond.
    const ids = withClock(slowClock(T, 20_000), () =>
      Array.from({ length: 12_000 }, () => generator.nextId()),
    );
    expectStrictlyIncreasing(ids);
    const perMs = new Map<number, number>();
    for (const id of ids) {
      const { timestampMs } = decodeSnowflake(id);
      perMs.set(timestampMs, (perMs.get(timestampMs) ?? 0) + 1);
    }
    // The first millisecond is filled to the last sequence number, then it moved on.
    expect(perMs.get(T)).to.equal(4096);
    expect(Math.max(...perMs.values())).to.equal(4096);
    expect(perMs.size).to.be.greaterThan(2);
  });

  it('throws ClockMovedBackwardsError on a long step back, mints nothing, and resumes above', () => {
    const generator = new SnowflakeGenerator({ workerId: 9 });
    const before = withClock(
      () => T,
      () => [generator.nextId(), generator.nextId()],
    );
    let error: unknown;
    withClock(
      () => T - 1_000,
      () => {
        try {
          generator.nextId();
        } catch (err) {
          error = err;
        }
      },
    );
    expect(error).to.be.instanceOf(ClockMovedBackwardsError);
    expect((error as ClockMovedBackwardsError).code).to.equal(ErrorCode.ClockMovedBackwards);
    expect((error as ClockMovedBackwardsError).details.behindMs).to.equal(1_000);
    expect(generator.lastId).to.equal(before[1]);
    // Back in the same millisecond as the last id: continues after it, no repeat.
    const after = withClock(
      () => T,
      () => generator.nextId(),
    );
    expectStrictlyIncreasing([...before, after]);
  });

  it('waits out a short step back and continues increasing', () => {
    const generator = new SnowflakeGenerator({ workerId: 11, maxClockSkewWaitMs: 5 });
    const first = generator.nextId(); // on the real clock
    const started = performance.now();
    // The clock now reads 4 ms behind the real one, and so behind the last id, but keeps moving.
    const next = withClock(
      () => realNow() - 4,
      () => [generator.nextId(), generator.nextId()],
    );
    const waitedMs = performance.now() - started;
    expectStrictlyIncreasing([first, ...next]);
    expect(snowflakeTimeMs(next[0]!)).to.be.at.least(snowflakeTimeMs(first));
    console.log(`      waited ${waitedMs.toFixed(1)} ms for a 4 ms step back`);
  });

  it('fits ids into a signed bigint until 2094 with the 2025 epoch, and refuses after', () => {
    const in2090 = Date.UTC(2090, 0, 1);
    const id = withClock(
      () => in2090,
      () => new SnowflakeGenerator({ workerId: WORKER_ID_MAX }).nextId(),
    );
    expect(isSnowflake(id)).to.equal(true);
    expect(BigInt(id) <= MAX_SNOWFLAKE).to.equal(true);
    expect(decodeSnowflake(id)).to.deep.equal({
      timestampMs: in2090,
      workerId: WORKER_ID_MAX,
      sequence: 0,
    });

    const last = withClock(
      () => MAX_SNOWFLAKE_TIME_MS,
      () => new SnowflakeGenerator({ workerId: 1 }).nextId(),
    );
    expect(isSnowflake(last)).to.equal(true);
    expect(() =>
      withClock(
        () => MAX_SNOWFLAKE_TIME_MS + 1,
        () => new SnowflakeGenerator({ workerId: 1 }).nextId(),
      ),
    ).to.throw(IdGeneratorStoppedError, /past the last time/);
    expect(() =>
      withClock(
        () => ONCEQ_EPOCH_MS - 1,
        () => new SnowflakeGenerator({ workerId: 1 }).nextId(),
      ),
    ).to.throw(ClockMovedBackwardsError, /before the snowflake epoch/);
  });

  it('throws IdGeneratorStoppedError once its lease is no longer valid', () => {
    let leaseValid = true;
    const generator = new SnowflakeGenerator({ workerId: 2, isLeaseValid: () => leaseValid });
    const id = generator.nextId();
    leaseValid = false;
    expect(() => generator.nextId()).to.throw(IdGeneratorStoppedError, /no longer leased/);
    expect(generator.lastId).to.equal(id);
  });
  it('continues above `after`: a generator taking over a worker id never repeats its ids', () => {
    const first = new SnowflakeGenerator({ workerId: 9 });
    // Many ids in this millisecond, so a fresh generator's first ids would land at or below.
    const minted = Array.from({ length: 3000 }, () => first.nextId());
    const last = minted[minted.length - 1]!;
    const next = new SnowflakeGenerator({ workerId: 9, after: last });
    const continued = Array.from({ length: 3000 }, () => next.nextId());
    expect(BigInt(continued[0]!) > BigInt(last)).to.equal(true);
    expect(new Set([...minted, ...continued]).size).to.equal(6000);
    expect(() => new SnowflakeGenerator({ workerId: 10, after: last })).to.throw(
      RangeError,
      /id of worker 10/,
    );
  });
});
