/**
 * Retry policy for version conflicts inside one delivery: re-run the transaction a bounded number
 * of times with full jitter, then give up and let BullMQ retry the job later.
 */

/** Options of the in-delivery conflict retry. */
export interface ConflictRetryOptions {
  /** Transaction runs per delivery, the first included. @defaultValue 8 */
  maxRuns: number;
  /** Base of the exponential backoff in ms. @defaultValue 2 */
  baseDelayMs: number;
  /** Cap of one backoff in ms. @defaultValue 100 */
  maxDelayMs: number;
}

export const DEFAULT_CONFLICT_RETRY: ConflictRetryOptions = Object.freeze({
  maxRuns: 8,
  baseDelayMs: 2,
  maxDelayMs: 100,
});

/**
 * Delay before run `run + 1` (runs count from 1): "full jitter", a uniform pick in
 * [0, min(cap, base * 2^run)], which spreads colliding writers apart (AWS architecture blog).
 */
export function conflictDelayMs(
  run: number,
  options: ConflictRetryOptions = DEFAULT_CONFLICT_RETRY,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** run);
  return Math.floor(random() * (ceiling + 1));
}
