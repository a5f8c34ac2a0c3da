/**
 * The snowflake generator. First the defects of the raw `snowflake-id` package, each proven on
 * the package itself (why the generator packs the bits itself), then the generator: the same
 * layout as the package's, none of its defects, and ids that keep rising within the time the
 * lease reserved whatever the clock does.
 *
 * The package reads the global `Date.now()`, so its clock is set by replacing `Date.now` for the
 * duration of one synchronous block (restored in `finally`). The generator reads `Date.now()` by
 * default too, and takes an injected clock. A clock that is truly frozen would hang the package
 * itself (on sequence overflow it spins until `Date.now()` moves), so "stuck" clocks given to
 * the package stand still for a number of reads and then move on.
 */
import { createRequire } from 'node:module';
import { expect } from 'chai';
import { ClockMovedBackwardsError, IdGeneratorStoppedError } from '../../src/core/errors.js';
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

describe('snowflake-id 1.1.0, raw: the defects that keep it from stamping our ids', () => {
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

  it('goes on in the next millisecond past 4,096 ids in one, without waiting for the clock', () => {
    const generator = new SnowflakeGenerator({ workerId: 5 });
    // The clock stands still for the whole run: the package would spin here forever.
    const ids = withClock(
      () => T,
      () => Array.from({ length: 12_000 }, () => generator.nextId()),
    );
    expectStrictlyIncreasing(ids);
    const perMs = new Map<number, number>();
    for (const id of ids) {
      const { timestampMs } = decodeSnowflake(id);
      perMs.set(timestampMs, (perMs.get(timestampMs) ?? 0) + 1);
    }
    expect([...perMs]).to.deep.equal([
      [T, 4096],
      [T + 1, 4096],
      [T + 2, 12_000 - 2 * 4096],
    ]);
  });

  it('stamps the time of an injected clock, and keeps rising when it steps back an hour', () => {
    let now = T;
    const generator = new SnowflakeGenerator({ workerId: 9, clock: () => now });
    const before = [generator.nextId(), generator.nextId()];
    expect(decodeSnowflake(before[0]!)).to.deep.equal({ timestampMs: T, workerId: 9, sequence: 0 });
    now = T - 3_600_000;
    // Never below the last id, whatever the clock says: it continues from there.
    const during = Array.from({ length: 5000 }, () => generator.nextId());
    expect(snowflakeTimeMs(during[0]!)).to.equal(T);
    now = T + 10;
    const after = generator.nextId();
    expect(decodeSnowflake(after)).to.deep.equal({ timestampMs: T + 10, workerId: 9, sequence: 0 });
    expectStrictlyIncreasing([...before, ...during, after]);
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
  it('mints only within [floor, ceiling): from the mark previous holders left, up to its reservation', () => {
    const floorMs = T + 60_000; // the previous holder's clock ran a minute ahead
    let ceilingMs = floorMs + 2;
    const generator = new SnowflakeGenerator({
      workerId: 4,
      clock: () => T,
      floorMs,
      ceilingMs: () => ceilingMs,
    });
    expect(generator.nowMs()).to.equal(floorMs);
    expect(generator.mintedBeforeMs()).to.equal(floorMs);
    const ids = Array.from({ length: 2 * 4096 }, () => generator.nextId());
    expect(decodeSnowflake(ids[0]!)).to.deep.equal({
      timestampMs: floorMs,
      workerId: 4,
      sequence: 0,
    });
    expect(snowflakeTimeMs(ids[ids.length - 1]!)).to.equal(floorMs + 1);
    expect(generator.mintedBeforeMs()).to.equal(floorMs + 2);
    // The reserved time is used up: nothing more until the lease reserves more.
    expect(() => generator.nextId()).to.throw(IdGeneratorStoppedError, /reserved time/);
    expect(generator.lastId).to.equal(ids[ids.length - 1]);
    ceilingMs += 1_000;
    expectStrictlyIncreasing([...ids, generator.nextId()]);
  });

  it('packs the bits exactly as snowflake-id does: same time, worker id and sequence, same id', () => {
    for (const [timestampMs, workerId] of [
      [T, 1],
      [T + 12_345, 77],
      [Date.UTC(2090, 0, 1), WORKER_ID_MAX],
    ] as const) {
      const raw = new RawSnowflakeId({ mid: workerId, offset: ONCEQ_EPOCH_MS });
      const theirs = withClock(
        () => timestampMs,
        () => [raw.generate(), raw.generate()],
      );
      const generator = new SnowflakeGenerator({ workerId, clock: () => timestampMs });
      expect([generator.nextId(), generator.nextId()]).to.deep.equal(theirs);
    }
  });
});
