/**
 * Idempotency/message tokens: their format and their lifecycle states. Pure: no I/O beyond the
 * random source. A token is `oqt_` followed by the base64url form of 24 random bytes (192 bits,
 * above the 128 the design asks for), 36 characters in all, with no padding.
 *
 * The state machine itself runs in Redis (see `src/redis/token-store.ts` and `src/redis/lua/`);
 * this module only names the states so that every layer spells them the same way.
 */
import { randomBytes } from 'node:crypto';

/** Fixed prefix of every token: makes a token recognisable in a header or a leaked paste. */
export const TOKEN_PREFIX = 'oqt_';
/** Random bytes per token. */
export const TOKEN_RANDOM_BYTES = 24;
/** Length of a token: the prefix plus 32 base64url characters (24 bytes encode without padding). */
export const TOKEN_LENGTH = TOKEN_PREFIX.length + (TOKEN_RANDOM_BYTES / 3) * 4;

const TOKEN_PATTERN = new RegExp(
  `^${TOKEN_PREFIX}[A-Za-z0-9_-]{${TOKEN_LENGTH - TOKEN_PREFIX.length}}$`,
);

/**
 * The lifecycle of a token:
 * - `issued`: handed to a principal, not used yet;
 * - `accepted`: bound to one request (fingerprint) and one `messageId`;
 * - `claimed`: a worker holds a lease on the message;
 * - `done`: the message's effect committed; the result is stored.
 */
export const TOKEN_STATES = ['issued', 'accepted', 'claimed', 'done'] as const;
/** One of {@link TOKEN_STATES}. */
export type TokenState = (typeof TOKEN_STATES)[number];

/** True when `value` is one of the {@link TOKEN_STATES}. */
export function isTokenState(value: unknown): value is TokenState {
  return typeof value === 'string' && (TOKEN_STATES as readonly string[]).includes(value);
}

/** A fresh token from the operating system's CSPRNG. */
export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(TOKEN_RANDOM_BYTES).toString('base64url');
}

/** True when `value` has the exact token form: the prefix, the length, the base64url alphabet. */
export function isWellFormedToken(value: unknown): value is string {
  return typeof value === 'string' && TOKEN_PATTERN.test(value);
}

/**
 * Reads an `Idempotency-Key` header value. Accepts the bare token or the token as an RFC 8941
 * sf-string (`"oqt_…"`), as the IETF httpapi draft defines the header; optional whitespace
 * around the value is ignored, as HTTP does. Everything else is malformed: another prefix or
 * length, a character outside base64url, unbalanced quotes, escapes, parameters (`;a=1`),
 * several values (a repeated header arrives as an array or as `a, b`).
 *
 * @param headerValue - The raw header as Node delivers it (`undefined` when absent).
 * @returns The token, or `undefined` when the value is missing or malformed.
 */
export function parseIdempotencyKey(
  headerValue: string | readonly string[] | undefined,
): string | undefined {
  let value: string | undefined;
  if (typeof headerValue === 'string') value = headerValue;
  else if (Array.isArray(headerValue) && headerValue.length === 1) value = headerValue[0];
  if (value === undefined) return undefined;

  value = value.replace(/^[ \t]+|[ \t]+$/g, '');
  if (value.length === TOKEN_LENGTH + 2 && value.startsWith('"') && value.endsWith('"')) {
    // The token alphabet has neither `"` nor `\`, so an sf-string holding a token is the token
    // between two quotes, with no escapes to undo.
    value = value.slice(1, -1);
  }
  return isWellFormedToken(value) ? value : undefined;
}
