/**
 * API keys: their format, how they are minted and how a presented key is checked against the
 * stored hash. Pure: no I/O beyond the random source.
 *
 * A key is `oqk_<id>_<secret>`: `id` is 16 hex characters, stored in clear and used to find the
 * key's row; `secret` is 32 random bytes in base64url (43 characters), of which only a SHA-256
 * is stored. A fast hash is enough: the secret has 256 bits of entropy, so there is nothing for
 * a slow hash to protect against, and every request pays for it. The comparison of hashes is
 * constant-time, so response timing says nothing about how much of a guessed secret was right.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Fixed prefix of every API key: recognisable in a header, a config file or a leaked paste. */
export const API_KEY_PREFIX = 'oqk_';

const API_KEY_PATTERN = /^oqk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

/** A key's parts. */
export interface ParsedApiKey {
  /** Public lookup id (the row's primary key). */
  id: string;
  /** The secret part; never stored, never logged. */
  secret: string;
}

/** A freshly minted key and what is stored of it. */
export interface MintedApiKey {
  /** The full key, shown to the operator once. */
  key: string;
  id: string;
  /** `sha256:<hex>` of the secret: the only form of it that is stored. */
  hash: string;
}

/** Mints a key from the operating system's CSPRNG. */
export function mintApiKey(): MintedApiKey {
  const id = randomBytes(8).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  return { key: `${API_KEY_PREFIX}${id}_${secret}`, id, hash: hashSecret(secret) };
}

/** Splits a presented key; `undefined` when it is not of the `oqk_` form. */
export function parseApiKey(value: string): ParsedApiKey | undefined {
  const match = API_KEY_PATTERN.exec(value);
  return match ? { id: match[1]!, secret: match[2]! } : undefined;
}

/** True when `value` has the exact key form (used by log scrubbing and the CLI). */
export function isWellFormedApiKey(value: unknown): value is string {
  return typeof value === 'string' && API_KEY_PATTERN.test(value);
}

/** The stored form of a secret. */
export function hashSecret(secret: string): string {
  return `sha256:${createHash('sha256').update(secret).digest('hex')}`;
}

/** Compares a presented secret with a stored hash in constant time. */
export function secretMatches(secret: string, storedHash: string): boolean {
  const presented = Buffer.from(hashSecret(secret));
  const stored = Buffer.from(storedHash);
  // Lengths are public (every hash has the same one); only equal-length buffers can be compared.
  return presented.length === stored.length && timingSafeEqual(presented, stored);
}

/**
 * Reads `Authorization: Bearer <key>` (RFC 6750: the scheme is case-insensitive). Returns the
 * credential, or `undefined` when the header is missing, repeated, or not a Bearer credential.
 */
export function bearerCredential(
  header: string | readonly string[] | undefined,
): string | undefined {
  if (typeof header !== 'string') return undefined;
  const match = /^Bearer[ ]+([^\s,]+)[ ]*$/i.exec(header);
  return match?.[1];
}

/** Principal names: what a key maps to, and what tokens and messages are bound to. */
export { PRINCIPAL_NAME } from './principals.js';
