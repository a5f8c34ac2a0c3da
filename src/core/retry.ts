/**
 * Retry policies. Version conflicts inside one delivery: re-run the transaction a bounded number
 * of times with full jitter, then give up and let BullMQ retry the job later. Clients of the HTTP
 * API (the demo, the chaos workload): wait as `Retry-After` says, within bounds, and go on.
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

/** Bounds of {@link retryAfterMs}. */
export interface RetryAfterBounds {
  /** Wait when the header is absent or unreadable. */
  defaultMs: number;
  /** Shortest wait (a `Retry-After: 0` must not turn into a busy loop). */
  minMs: number;
  /** Longest wait: a client of ours waits as told, but never unboundedly long per answer. */
  maxMs: number;
}

/** Default of {@link retryAfterMs}'s bounds. */
export const DEFAULT_RETRY_AFTER_BOUNDS: RetryAfterBounds = Object.freeze({
  defaultMs: 1_000,
  minMs: 100,
  maxMs: 10_000,
});

/** The HTTP-date format senders must produce, `Sun, 06 Nov 1994 08:49:37 GMT`. */
const IMF_FIXDATE = /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/;

/**
 * How long to wait before sending a request again, from a `Retry-After` header: delay-seconds
 * or an HTTP-date (RFC 9110, section 10.2.3), clamped to the bounds.
 */
export function retryAfterMs(
  header: string | null | undefined,
  nowMs: number = Date.now(),
  bounds: RetryAfterBounds = DEFAULT_RETRY_AFTER_BOUNDS,
): number {
  const value = header?.trim() ?? '';
  let ms: number;
  if (/^\d+$/.test(value)) ms = Number(value) * 1_000;
  else if (IMF_FIXDATE.test(value)) ms = Date.parse(value) - nowMs;
  else ms = bounds.defaultMs;
  return Math.min(bounds.maxMs, Math.max(bounds.minMs, ms));
}

/**
 * Answers a client of the API sends again after waiting: the request was not applied (503
 * unavailable, 429 rate limited) or is still being answered (409 in use), and its
 * `Retry-After` says when to come back.
 */
export function isRetryableStatus(status: number): boolean {
  return status === 409 || status === 429 || status === 503;
}
