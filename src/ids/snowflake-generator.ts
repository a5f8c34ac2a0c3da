/**
 * The snowflake generator: the `snowflake-id` package (fixed by the stack) behind a guard that
 * makes each id unique and strictly increasing per worker, or refuses to mint.
 *
 * What the package gets wrong, and what the guard does about it:
 * - It stores `(mid || 1) % 1023` as the machine id, so mid 0 and 1 collide, 1023 becomes 0 and
 *   1024 collides with 1. We pass only worker ids from {@link WORKER_ID_MIN} to
 *   {@link WORKER_ID_MAX}, which it keeps unchanged, and check the machine bits of every id.
 * - On the 4,097th id within one millisecond it waits for the next millisecond but still stamps
 *   the old one with sequence 0: a duplicate. It trusts a clock that steps back: duplicates again.
 *   We remember the last id (as a BigInt) and discard any id not above it; then we wait for the
 *   clock to pass the last id's millisecond (a short step back) or throw
 *   {@link ClockMovedBackwardsError} (a long one).
 * - Its default epoch is 1970, which overflows PostgreSQL's `bigint` in 2039: we pass
 *   {@link ONCEQ_EPOCH_MS}.
 * - It reads the global `Date.now()` itself, so that is the clock the guard reads too: a clock
 *   the caller injected could disagree with the one stamped into the ids.
 */
import { createRequire } from 'node:module';
import { ClockMovedBackwardsError, IdGeneratorStoppedError } from '../core/errors.js';
import {
  decodeSnowflake,
  MAX_SNOWFLAKE_TIME_MS,
  ONCEQ_EPOCH_MS,
  type SnowflakeParts,
} from '../core/snowflake.js';

/**
 * Lowest usable worker id. The package maps 0 to 1 (`mid || 1`), so 0 would collide with 1.
 */
export const WORKER_ID_MIN = 1;
/**
 * Highest usable worker id. The package reduces the machine id modulo 1023, so 1023 would be
 * stamped as 0 and larger values wrap onto smaller ones; 1 to 1022 are stamped unchanged.
 */
export const WORKER_ID_MAX = 1022;

/** Default of {@link SnowflakeGeneratorOptions.maxClockSkewWaitMs}. */
export const DEFAULT_MAX_CLOCK_SKEW_WAIT_MS = 5;

/**
 * Extra time a single `nextId()` may spend waiting for the clock beyond the step back itself
 * (scheduler delays, a busy machine) before it gives up with {@link ClockMovedBackwardsError}.
 */
const CLOCK_WAIT_SLACK_MS = 100;

/** Options of {@link SnowflakeGenerator}. */
export interface SnowflakeGeneratorOptions {
  /** This process's worker id, leased from Redis; {@link WORKER_ID_MIN} to {@link WORKER_ID_MAX}. */
  workerId: number;
  /**
   * How far the clock may step back (in ms) and be waited out; a larger step back throws
   * {@link ClockMovedBackwardsError}. @defaultValue 5
   */
  maxClockSkewWaitMs?: number;
  /**
   * Whether this process still holds its worker id (the lease's `isValid`), asked on every id:
   * when it answers false, `nextId()` throws {@link IdGeneratorStoppedError}.
   * @defaultValue always true (for tests and tools that own their worker id outright)
   */
  isLeaseValid?: () => boolean;
  /**
   * Mint only ids above this one (a decimal snowflake of the same worker id): a generator that
   * takes over a worker id this process minted with before continues after its last id.
   */
  after?: string;
}

/** The shape of `snowflake-id`'s default export (the package ships no types). */
interface RawSnowflake {
  readonly mid: number;
  generate(): string;
}
type RawSnowflakeConstructor = new (options?: { mid?: number; offset?: number }) => RawSnowflake;

/**
 * Loads the package's class. It is CommonJS with `exports.default`; depending on the loader the
 * module arrives as `{ default: Class }` or as the class itself, so accept both.
 */
function loadRawSnowflake(): RawSnowflakeConstructor {
  const mod = createRequire(import.meta.url)('snowflake-id') as
    RawSnowflakeConstructor | { default: RawSnowflakeConstructor };
  const ctor = 'default' in mod ? mod.default : mod;
  if (typeof ctor !== 'function') throw new Error('snowflake-id did not export a class');
  return ctor;
}

let RawSnowflakeClass: RawSnowflakeConstructor | undefined;

const SLEEP_CELL = new Int32Array(new SharedArrayBuffer(4));

/** Blocks the thread for `ms` without spinning (nextId is synchronous, so it cannot await). */
function sleepSync(ms: number): void {
  Atomics.wait(SLEEP_CELL, 0, 0, ms);
}

/**
 * Mints snowflake ids for one worker id: unique and strictly increasing for the life of the
 * object, as decimal strings. One instance per worker id per process.
 */
export class SnowflakeGenerator {
  /** The worker id stamped into every id. */
  readonly workerId: number;
  readonly #maxClockSkewWaitMs: number;
  readonly #isLeaseValid: (() => boolean) | undefined;
  readonly #raw: RawSnowflake;
  #last = -1n;
  #lastTimestampMs = 0;

  constructor(options: SnowflakeGeneratorOptions) {
    const { workerId } = options;
    if (!Number.isInteger(workerId) || workerId < WORKER_ID_MIN || workerId > WORKER_ID_MAX) {
      throw new RangeError(
        `worker id must be an integer from ${WORKER_ID_MIN} to ${WORKER_ID_MAX}, got ${workerId}`,
      );
    }
    const maxWait = options.maxClockSkewWaitMs ?? DEFAULT_MAX_CLOCK_SKEW_WAIT_MS;
    if (!Number.isInteger(maxWait) || maxWait < 0 || maxWait > 10_000) {
      throw new RangeError(`maxClockSkewWaitMs must be an integer from 0 to 10000, got ${maxWait}`);
    }
    this.workerId = workerId;
    this.#maxClockSkewWaitMs = maxWait;
    this.#isLeaseValid = options.isLeaseValid;
    RawSnowflakeClass ??= loadRawSnowflake();
    this.#raw = new RawSnowflakeClass({ mid: workerId, offset: ONCEQ_EPOCH_MS });
    if (this.#raw.mid !== workerId) {
      throw new Error(`snowflake-id stored machine id ${this.#raw.mid} for worker id ${workerId}`);
    }
    if (options.after !== undefined) {
      const parts = decodeSnowflake(options.after);
      if (parts.workerId !== workerId) {
        throw new RangeError(
          `after must be an id of worker ${workerId}, got ${options.after} of worker ${parts.workerId}`,
        );
      }
      this.#last = BigInt(options.after);
      this.#lastTimestampMs = parts.timestampMs;
    }
  }

  /** The last id this generator returned, or `undefined` before the first. */
  get lastId(): string | undefined {
    return this.#last < 0n ? undefined : this.#last.toString();
  }

  /**
   * Mints the next id: greater than every id this generator returned before.
   * @throws IdGeneratorStoppedError when the worker-id lease is no longer valid, or the clock is
   * past the last time a snowflake can hold.
   * @throws ClockMovedBackwardsError when the clock is behind the last id by more than
   * `maxClockSkewWaitMs`, or does not catch up in time; no id is returned then.
   */
  nextId(): string {
    this.#checkLease();
    const deadline = performance.now() + this.#maxClockSkewWaitMs + CLOCK_WAIT_SLACK_MS;
    for (;;) {
      const clockMs = Date.now();
      this.#checkClockRange(clockMs);
      if (clockMs < this.#lastTimestampMs) {
        // Never hand the package a clock behind our last id: it would stamp that older time.
        const behindMs = this.#lastTimestampMs - clockMs;
        if (behindMs > this.#maxClockSkewWaitMs) throw this.#clockError(clockMs, 'by');
        this.#waitForClock(this.#lastTimestampMs, deadline);
        continue;
      }

      const id = this.#raw.generate();
      const parts = this.#verify(id);
      if (parts.timestampMs < clockMs) {
        // The clock stepped back between our read and the package's: judge it afresh.
        if (performance.now() > deadline) throw this.#clockError(Date.now(), 'did not recover');
        continue;
      }
      const value = BigInt(id);
      if (value > this.#last) {
        // The lease may have lapsed while we waited: check at the last moment, before emitting.
        this.#checkLease();
        this.#last = value;
        this.#lastTimestampMs = parts.timestampMs;
        return id;
      }
      // Not above the last id although stamped no earlier than the clock: the package wrapped
      // its sequence within the last id's millisecond (it then reuses that millisecond with
      // sequence 0). Discard the id; the next round starts in a later millisecond.
      this.#waitForClock(this.#lastTimestampMs + 1, deadline);
    }
  }

  #checkLease(): void {
    if (this.#isLeaseValid && !this.#isLeaseValid()) {
      throw new IdGeneratorStoppedError(
        `worker id ${this.workerId} is no longer leased (lost, lapsed or closed); ` +
          'refusing to mint ids that another process may also mint',
      );
    }
  }

  #checkClockRange(clockMs: number): void {
    if (clockMs < ONCEQ_EPOCH_MS) {
      throw new ClockMovedBackwardsError(
        `clock reads ${iso(clockMs)}, before the snowflake epoch ${iso(ONCEQ_EPOCH_MS)}; ` +
          'fix the system clock',
        { behindMs: ONCEQ_EPOCH_MS - clockMs, clockMs, lastTimestampMs: this.#lastTimestampMs },
      );
    }
    if (clockMs > MAX_SNOWFLAKE_TIME_MS) {
      throw new IdGeneratorStoppedError(
        `clock reads ${iso(clockMs)}, past the last time a snowflake can hold ` +
          `(${iso(MAX_SNOWFLAKE_TIME_MS)})`,
      );
    }
  }

  /** Checks that the package produced a well-formed id with our worker id. */
  #verify(id: string): SnowflakeParts {
    let parts: SnowflakeParts;
    try {
      parts = decodeSnowflake(id);
    } catch (err) {
      throw new Error(`snowflake-id produced an invalid id ${JSON.stringify(id)}`, { cause: err });
    }
    if (parts.workerId !== this.workerId) {
      throw new Error(
        `snowflake-id stamped worker id ${parts.workerId} instead of ${this.workerId} in ${id}`,
      );
    }
    return parts;
  }

  /** Waits until `Date.now() >= targetMs`; gives up at the monotonic `deadline`. */
  #waitForClock(targetMs: number, deadline: number): void {
    for (;;) {
      const clockMs = Date.now();
      if (clockMs >= targetMs) return;
      if (performance.now() > deadline) throw this.#clockError(clockMs, 'did not recover');
      const remaining = targetMs - clockMs;
      // Sleep through most of a multi-millisecond gap; spin through the last millisecond.
      if (remaining >= 2)
        sleepSync(Math.min(remaining - 1, Math.max(1, deadline - performance.now())));
    }
  }

  #clockError(clockMs: number, kind: 'by' | 'did not recover'): ClockMovedBackwardsError {
    const behindMs = this.#lastTimestampMs - clockMs;
    const detail = { behindMs, clockMs, lastTimestampMs: this.#lastTimestampMs };
    return new ClockMovedBackwardsError(
      kind === 'by'
        ? `clock moved backwards by ${behindMs} ms (reads ${iso(clockMs)}, last id minted at ` +
            `${iso(this.#lastTimestampMs)}), more than the ${this.#maxClockSkewWaitMs} ms ` +
            `worth waiting for; worker ${this.workerId} mints no id until the clock catches up`
        : `clock stayed behind the last id of worker ${this.workerId} (reads ${iso(clockMs)}, ` +
            `last id minted at ${iso(this.#lastTimestampMs)}); no id minted`,
      detail,
    );
  }
}

function iso(ms: number): string {
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? String(ms) : date.toISOString();
}
