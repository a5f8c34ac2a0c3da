/**
 * When the client sends a request again, and how long it waits first. Pure functions and one
 * abortable sleep; no I/O of their own.
 *
 * Sending again is safe for every request the client retries: `POST /v1/jobs` carries the same
 * `Idempotency-Key` and the same bytes (the API replays or makes the one message), `GET`s change
 * nothing, and a lost `POST /v1/tokens` answer only leaves unused tokens to expire.
 */

import { checkNumber, describeValue, MAX_TIMER_MS } from './options.js';

/** Retry policy of a client. */
export interface RetryOptions {
  /** Requests sent per call, the first included; `1` turns retries off. @defaultValue 5 */
  maxAttempts?: number;
  /**
   * Base of the exponential backoff: the wait before retry `n` (from 1) is a uniform pick in
   * [0, min(`maxDelayMs`, `baseDelayMs` × 2^(n−1))] ("full jitter"), used when the answer
   * carries no `Retry-After`. @defaultValue 250
   */
  baseDelayMs?: number;
  /** Cap of one backoff wait. @defaultValue 5000 */
  maxDelayMs?: number;
  /**
   * Longest `Retry-After` waited out. An answer asking for longer is not retried: the call
   * throws at once, with `retryAfterMs` on the error, rather than holding the caller that long
   * or coming back before the API asked. @defaultValue 30000
   */
  maxRetryAfterMs?: number;
}

/** {@link RetryOptions} with every default filled in. */
export type RetryPolicy = Required<RetryOptions>;

/** Defaults of {@link RetryOptions}. */
export const DEFAULT_RETRY: RetryPolicy = Object.freeze({
  maxAttempts: 5,
  baseDelayMs: 250,
  maxDelayMs: 5_000,
  maxRetryAfterMs: 30_000,
});

/**
 * Merges `options` over the defaults.
 * @throws TypeError when `options` is not an object or a value is not a number
 * @throws RangeError for an unknown option, or a number out of range: `maxAttempts` an integer
 *   from 1, the others integers of ms from 0 to {@link MAX_TIMER_MS}
 */
export function retryPolicy(options: RetryOptions = {}, where = 'createClient'): RetryPolicy {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new TypeError(`${where}: retry must be an object, got ${describeValue(options)}`);
  }
  const policy = { ...DEFAULT_RETRY };
  for (const [key, value] of Object.entries(options) as [keyof RetryPolicy, unknown][]) {
    if (value === undefined) continue;
    if (!(key in DEFAULT_RETRY)) {
      throw new RangeError(
        `${where}: retry.${key} is an unknown retry option (known: ` +
          `${Object.keys(DEFAULT_RETRY).join(', ')}), got ${describeValue(value)}`,
      );
    }
    policy[key] = checkNumber(
      where,
      `retry.${key}`,
      value,
      key === 'maxAttempts'
        ? { min: 1, integer: true, says: 'an integer of at least 1' }
        : {
            min: 0,
            max: MAX_TIMER_MS,
            integer: true,
            says: `a non-negative integer of ms up to ${MAX_TIMER_MS}`,
          },
    );
  }
  return policy;
}

/**
 * Statuses worth sending the same request again for: the request was not applied or its
 * outcome is unknown (5xx), it is still being answered (409 `idempotency_key_in_use`), or the
 * API asks to slow down (429).
 */
export function isRetryableStatus(status: number): boolean {
  return status === 409 || status === 429 || status >= 500;
}

/** The "full jitter" wait before retry `retry` (from 1). */
export function backoffDelayMs(
  retry: number,
  policy: Pick<RetryPolicy, 'baseDelayMs' | 'maxDelayMs'>,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (retry - 1));
  return Math.floor(random() * (ceiling + 1));
}

/**
 * The wait a `Retry-After` header asks for (RFC 9110, section 10.2.3): delay-seconds, or an
 * HTTP-date (a date in the past is no wait). `undefined` when the header is absent or
 * unreadable.
 */
export function parseRetryAfter(
  header: string | null | undefined,
  nowMs: number = Date.now(),
): number | undefined {
  const value = header?.trim();
  if (!value) return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1_000;
  // An HTTP-date always names its weekday and ends in GMT (IMF-fixdate, or the obsolete RFC 850
  // and asctime forms, which Date.parse also reads); a bare "5.5" or "soon" is no date.
  if (!/^[A-Za-z]{3}/.test(value)) return undefined;
  const at = Date.parse(value);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - nowMs);
}

/** Resolves after `ms`, or rejects with `signal`'s reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
