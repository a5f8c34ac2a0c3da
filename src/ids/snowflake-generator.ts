/**
 * The snowflake generator: unique, strictly increasing ids for one worker id, as decimal strings,
 * stamped within the range of time its lease reserved, whatever the clock does.
 *
 * The time stamped into an id is a logical clock: the wall clock, but never below the last id's
 * millisecond nor below the floor (the high-water mark the worker id's previous holders left in
 * PostgreSQL). When the clock stands still or steps back, ids go on from the last one (the next
 * sequence number, then the next millisecond), so the generator never waits and never blocks
 * the event loop. It mints only below its ceiling (the high-water mark this holder reserved);
 * past it, or once the lease is no longer valid, it refuses with {@link IdGeneratorStoppedError}.
 * Floor and ceiling make ids unique across processes and restarts without trusting any clock:
 * the next holder of the worker id starts at or above the ceiling this one ever reached.
 *
 * The bits follow `snowflake-id`'s layout (test/ids/snowflake-generator.test.ts proves an id of
 * ours equals the package's for the same time, worker id and sequence), but the package does not
 * stamp them: it reads the global `Date.now()` (no clock can be injected, and it cannot stamp the
 * floor when the clock is behind it), and it gets the edges wrong: `(mid || 1) % 1023` makes
 * mid 0 and 1 collide and wraps 1023 onto 0; on the 4,097th id within a millisecond it reuses
 * sequence 0 of that millisecond; a clock that steps back makes it repeat ids; its default epoch
 * overflows `bigint` in 2039. {@link encodeSnowflake} packs the three fields with BigInt math.
 */
import { ClockMovedBackwardsError, IdGeneratorStoppedError } from '../core/errors.js';
import {
  encodeSnowflake,
  MAX_SEQUENCE,
  MAX_SNOWFLAKE_TIME_MS,
  ONCEQ_EPOCH_MS,
} from '../core/snowflake.js';

/**
 * Lowest usable worker id. 0 is left out: `snowflake-id` maps it onto 1, so ids of a process
 * using the package with mid 0 would collide with ours.
 */
export const WORKER_ID_MIN = 1;
/**
 * Highest usable worker id. 1023 is left out: `snowflake-id` stamps it as 0, and the chaos
 * workload uses it for ids no process can mint.
 */
export const WORKER_ID_MAX = 1022;

/** Options of {@link SnowflakeGenerator}. */
export interface SnowflakeGeneratorOptions {
  /** The worker id stamped into every id, {@link WORKER_ID_MIN} to {@link WORKER_ID_MAX}. */
  workerId: number;
  /** The wall clock, Unix ms. @defaultValue `Date.now()` */
  clock?: () => number;
  /**
   * Mint only ids stamped at or after this (Unix ms): the high-water mark the worker id's
   * previous holders left. @defaultValue no floor
   */
  floorMs?: number;
  /**
   * Mint only ids stamped before this (Unix ms): the high-water mark this holder reserved, asked
   * on every id (the lease raises it on each heartbeat). @defaultValue no ceiling
   */
  ceilingMs?: () => number;
  /**
   * Whether this process still holds its worker id, asked on every id: when it answers false,
   * `nextId()` throws {@link IdGeneratorStoppedError}.
   * @defaultValue always true (for tests and tools that own their worker id outright)
   */
  isLeaseValid?: () => boolean;
}

/**
 * Mints snowflake ids for one worker id. One instance per worker id per process.
 */
export class SnowflakeGenerator {
  /** The worker id stamped into every id. */
  readonly workerId: number;
  readonly #clock: () => number;
  readonly #floorMs: number;
  readonly #ceilingMs: (() => number) | undefined;
  readonly #isLeaseValid: (() => boolean) | undefined;
  /** Millisecond and sequence of the last id; -1 before the first. */
  #lastTimestampMs = -1;
  #lastSequence = MAX_SEQUENCE;
  #lastId: string | undefined;

  constructor(options: SnowflakeGeneratorOptions) {
    const { workerId } = options;
    if (!Number.isInteger(workerId) || workerId < WORKER_ID_MIN || workerId > WORKER_ID_MAX) {
      throw new RangeError(
        `worker id must be an integer from ${WORKER_ID_MIN} to ${WORKER_ID_MAX}, got ${workerId}`,
      );
    }
    const floorMs = options.floorMs ?? 0;
    if (!Number.isSafeInteger(floorMs) || floorMs < 0) {
      throw new RangeError(`floorMs must be a non-negative integer, got ${floorMs}`);
    }
    this.workerId = workerId;
    this.#clock = options.clock ?? (() => Date.now());
    this.#floorMs = floorMs;
    this.#ceilingMs = options.ceilingMs;
    this.#isLeaseValid = options.isLeaseValid;
  }

  /** The last id this generator returned, or `undefined` before the first. */
  get lastId(): string | undefined {
    return this.#lastId;
  }

  /**
   * The earliest millisecond the next id can carry: the clock, but not below the floor or the
   * last id. The lease reserves time ahead of this.
   */
  nowMs(): number {
    return Math.max(this.#clock(), this.#floorMs, this.#lastTimestampMs);
  }

  /**
   * A time no id of this generator is stamped at or after (Unix ms): the last id's millisecond
   * plus one, or the floor before the first id. What the lease hands on to the next holder.
   */
  mintedBeforeMs(): number {
    return Math.max(this.#floorMs, this.#lastTimestampMs + 1);
  }

  /**
   * Mints the next id: greater than every id this generator returned before, and stamped within
   * `[floorMs, ceilingMs())`.
   * @throws IdGeneratorStoppedError when the lease is no longer valid, the reserved time is used
   * up (renewals are failing), or the time is past the last one a snowflake can hold.
   * @throws ClockMovedBackwardsError when the clock reads before the snowflake epoch (and no
   * floor lifts it past that).
   */
  nextId(): string {
    this.#checkLease();
    let timestampMs = this.nowMs();
    let sequence = 0;
    if (timestampMs === this.#lastTimestampMs) {
      sequence = this.#lastSequence + 1;
      if (sequence > MAX_SEQUENCE) {
        // The millisecond is full: go on in the next one instead of waiting for the clock.
        timestampMs += 1;
        sequence = 0;
      }
    }
    if (timestampMs < ONCEQ_EPOCH_MS) {
      throw new ClockMovedBackwardsError(
        `clock reads ${iso(timestampMs)}, before the snowflake epoch ${iso(ONCEQ_EPOCH_MS)}; ` +
          'fix the system clock',
        {
          behindMs: ONCEQ_EPOCH_MS - timestampMs,
          clockMs: timestampMs,
          lastTimestampMs: this.#lastTimestampMs,
        },
      );
    }
    if (timestampMs > MAX_SNOWFLAKE_TIME_MS) {
      throw new IdGeneratorStoppedError(
        `clock reads ${iso(timestampMs)}, past the last time a snowflake can hold ` +
          `(${iso(MAX_SNOWFLAKE_TIME_MS)})`,
      );
    }
    const ceilingMs = this.#ceilingMs?.() ?? Number.POSITIVE_INFINITY;
    if (timestampMs >= ceilingMs) {
      throw new IdGeneratorStoppedError(
        `worker id ${this.workerId} has minted up to its reserved time ${iso(ceilingMs)} ` +
          '(the lease could not be renewed in time); minting resumes after the next renewal',
      );
    }
    const id = encodeSnowflake({ timestampMs, workerId: this.workerId, sequence });
    this.#lastTimestampMs = timestampMs;
    this.#lastSequence = sequence;
    this.#lastId = id;
    return id;
  }

  #checkLease(): void {
    if (this.#isLeaseValid && !this.#isLeaseValid()) {
      throw new IdGeneratorStoppedError(
        `worker id ${this.workerId} is no longer leased (lost, lapsed or closed); ` +
          'refusing to mint ids that another process may also mint',
      );
    }
  }
}

function iso(ms: number): string {
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? String(ms) : date.toISOString();
}
