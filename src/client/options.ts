/**
 * Checks of the client's options. A bad option is a programmer error, thrown at once the way
 * the platform throws them (`fetch`, `new URL`, `setTimeout`'s callers): a `TypeError` for a
 * value of the wrong type, a `RangeError` for a number out of range (`NaN` included). Each
 * message names the call, the option and the value received, e.g.
 * `createClient: timeoutMs must be a positive number of ms up to 2147483647, got -1`.
 */

/**
 * Longest wait a timer can hold (2^31 − 1 ms, about 24.8 days): `setTimeout` fires a longer
 * one, `Infinity` included, after 1 ms.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/** A value as an error message shows it: numbers and strings as written, others by kind. */
export function describeValue(value: unknown): string {
  if (typeof value === 'number') return Object.is(value, -0) ? '-0' : String(value);
  if (typeof value === 'string') {
    return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  }
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object' && value !== null) return 'an object';
  return String(value);
}

/** A value's kind only, for an option that must not reach a log (the API key). */
export function describeKind(value: unknown): string {
  if (typeof value === 'string') return value === '' ? 'an empty string' : 'a string';
  if (typeof value === 'number' || typeof value === 'bigint') return `a ${typeof value}`;
  return describeValue(value);
}

/** What a number option must be. */
export interface NumberRule {
  /** Smallest value allowed. */
  min: number;
  /** `min` itself is out of range. @defaultValue false */
  exclusive?: boolean;
  /** Whole numbers only. @defaultValue false */
  integer?: boolean;
  /** Largest value allowed. @defaultValue no bound but finiteness */
  max?: number;
  /** The rule in words, for the message: "a positive number of ms up to 2147483647". */
  says: string;
}

/** `value`, if `rule` holds for it; a `TypeError` or `RangeError` naming `where` and `name` if not. */
export function checkNumber(where: string, name: string, value: unknown, rule: NumberRule): number {
  const message = `${where}: ${name} must be ${rule.says}, got ${describeValue(value)}`;
  if (typeof value !== 'number') throw new TypeError(message);
  const ok =
    Number.isFinite(value) &&
    (rule.exclusive ? value > rule.min : value >= rule.min) &&
    (rule.max === undefined || value <= rule.max) &&
    (!rule.integer || Number.isInteger(value));
  if (!ok) throw new RangeError(message);
  return value;
}

/** A wait in ms a timer can hold, above 0 (`positive`) or from 0. */
export function timerRule(positive: boolean): NumberRule {
  return {
    min: 0,
    exclusive: positive,
    max: MAX_TIMER_MS,
    says: `a ${positive ? 'positive' : 'non-negative'} number of ms up to ${MAX_TIMER_MS}`,
  };
}
