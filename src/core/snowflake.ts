/**
 * Snowflake id arithmetic: the bit layout, encode/decode and validation. Pure BigInt math with no
 * I/O; minting lives in `ids/snowflake-generator.ts`.
 *
 * Layout, most significant bit first: 1 sign bit (always 0, so every id fits PostgreSQL's signed
 * `bigint`) | 41-bit milliseconds since {@link ONCEQ_EPOCH_MS} | 10-bit worker id | 12-bit
 * sequence. Ids are decimal strings everywhere; they never pass through a JS `number`, which
 * loses precision above 2^53.
 */

/**
 * The custom epoch, 2025-01-01T00:00:00Z. `snowflake-id`'s default epoch is 1970, which makes ids
 * overflow a signed 64-bit integer in September 2039; from 2025 the 41 bits last until 2094.
 */
export const ONCEQ_EPOCH_MS = Date.UTC(2025, 0, 1);

/** Width of the millisecond timestamp field. */
export const TIMESTAMP_BITS = 41;
/** Width of the worker (machine) id field. */
export const WORKER_ID_BITS = 10;
/** Width of the per-millisecond sequence field. */
export const SEQUENCE_BITS = 12;

/** Largest value the worker-id field can hold (the generator uses a narrower range, see there). */
export const MAX_WORKER_ID = 2 ** WORKER_ID_BITS - 1;
/** Largest sequence number within one millisecond: 4,096 ids per millisecond and worker. */
export const MAX_SEQUENCE = 2 ** SEQUENCE_BITS - 1;
/** Largest timestamp offset from the epoch, in ms (about 69.7 years). */
export const MAX_TIMESTAMP_OFFSET_MS = 2 ** TIMESTAMP_BITS - 1;
/** The last Unix millisecond a snowflake can carry with the onceq epoch (2094-09-07). */
export const MAX_SNOWFLAKE_TIME_MS = ONCEQ_EPOCH_MS + MAX_TIMESTAMP_OFFSET_MS;
/** The largest id: PostgreSQL's `bigint` maximum, 2^63 - 1. */
export const MAX_SNOWFLAKE = (1n << 63n) - 1n;

const SEQUENCE_SHIFT = 0n;
const WORKER_ID_SHIFT = BigInt(SEQUENCE_BITS);
const TIMESTAMP_SHIFT = BigInt(SEQUENCE_BITS + WORKER_ID_BITS);
const WORKER_ID_MASK = BigInt(MAX_WORKER_ID);
const SEQUENCE_MASK = BigInt(MAX_SEQUENCE);
const DECIMAL = /^(?:0|[1-9][0-9]{0,18})$/;

/** The three fields of a snowflake; `timestampMs` is Unix time in ms, not the offset. */
export interface SnowflakeParts {
  timestampMs: number;
  workerId: number;
  sequence: number;
}

/**
 * Whether `id` is a canonical snowflake: decimal digits only, no sign, no leading zeros, at most
 * 2^63 - 1. Use it on untrusted input before {@link decodeSnowflake}.
 */
export function isSnowflake(id: string): boolean {
  return typeof id === 'string' && DECIMAL.test(id) && BigInt(id) <= MAX_SNOWFLAKE;
}

/**
 * Splits an id into its fields.
 * @param epochMs - the epoch the id was minted with; only tests of foreign ids pass another one.
 * @throws RangeError when `id` is not a canonical snowflake (see {@link isSnowflake}).
 */
export function decodeSnowflake(id: string, epochMs: number = ONCEQ_EPOCH_MS): SnowflakeParts {
  if (!isSnowflake(id)) throw new RangeError(`not a snowflake id: ${JSON.stringify(id)}`);
  const value = BigInt(id);
  return {
    // The 41-bit offset is below 2^53, so the conversion to number is exact.
    timestampMs: epochMs + Number(value >> TIMESTAMP_SHIFT),
    workerId: Number((value >> WORKER_ID_SHIFT) & WORKER_ID_MASK),
    sequence: Number((value >> SEQUENCE_SHIFT) & SEQUENCE_MASK),
  };
}

/**
 * Builds the id of the given fields, as a decimal string.
 * @throws RangeError when a field is not an integer within its width, or the time is before the
 * epoch or after {@link MAX_SNOWFLAKE_TIME_MS}.
 */
export function encodeSnowflake(parts: SnowflakeParts, epochMs: number = ONCEQ_EPOCH_MS): string {
  const offset = parts.timestampMs - epochMs;
  checkField('timestamp offset', offset, MAX_TIMESTAMP_OFFSET_MS);
  checkField('worker id', parts.workerId, MAX_WORKER_ID);
  checkField('sequence', parts.sequence, MAX_SEQUENCE);
  return (
    (BigInt(offset) << TIMESTAMP_SHIFT) |
    (BigInt(parts.workerId) << WORKER_ID_SHIFT) |
    BigInt(parts.sequence)
  ).toString();
}

/** The Unix time in ms at which `id` was minted. @throws RangeError when `id` is not a snowflake. */
export function snowflakeTimeMs(id: string, epochMs: number = ONCEQ_EPOCH_MS): number {
  return decodeSnowflake(id, epochMs).timestampMs;
}

/**
 * The smallest id that can be minted at `timestampMs`: every id minted earlier is smaller. Lets
 * a query select rows by age through their primary key (`id < firstSnowflakeAt(cutoff)`).
 */
export function firstSnowflakeAt(timestampMs: number): string {
  return encodeSnowflake({ timestampMs, workerId: 0, sequence: 0 });
}

/**
 * Compares two ids numerically (-1, 0, 1) without converting them to `number`.
 * @throws RangeError when either is not a snowflake.
 */
export function compareSnowflakes(a: string, b: string): -1 | 0 | 1 {
  if (!isSnowflake(a)) throw new RangeError(`not a snowflake id: ${JSON.stringify(a)}`);
  if (!isSnowflake(b)) throw new RangeError(`not a snowflake id: ${JSON.stringify(b)}`);
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

function checkField(name: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`snowflake ${name} must be an integer from 0 to ${max}, got ${value}`);
  }
}
