/**
 * How a request fingerprint is stored in a token's hash. The API's fingerprints are
 * `sha256:<64 hex>` (core/fingerprint.ts), 71 bytes: longer than Redis's `hash-max-listpack-value`
 * (64 by default), so a hash holding one is converted to a hashtable, about three times the
 * bytes of the same fields in a listpack. Stored as `~` and the digest in base64url (44 bytes),
 * the hash stays a listpack. Nothing is lost: the digest is the fingerprint, and two requests
 * are the same request exactly when their stored forms are equal.
 *
 * The mapping is one-to-one over all strings, so the token store's contract (any non-empty
 * fingerprint) holds: a `sha256:` fingerprint becomes `~` + 43 base64url characters (never a
 * second `~`), any other string stays as it is unless it starts with `~`, which gets a second
 * `~` in front. Hashes written before this encoding hold the fingerprint as it was given; the
 * accept script compares with both forms (see lua/accept-1.lua).
 */

const SHA256 = /^sha256:([0-9a-f]{64})$/;
const MARK = '~';

/** The form of `fingerprint` stored in a token's hash. */
export function storedFingerprint(fingerprint: string): string {
  const sha = SHA256.exec(fingerprint);
  if (sha) return MARK + Buffer.from(sha[1]!, 'hex').toString('base64url');
  return fingerprint.startsWith(MARK) ? MARK + fingerprint : fingerprint;
}

/** The fingerprint a stored form stands for (the inverse of {@link storedFingerprint}). */
export function fingerprintOf(stored: string): string {
  if (stored.startsWith(MARK + MARK)) return stored.slice(1);
  if (stored.startsWith(MARK) && stored.length === 44) {
    return `sha256:${Buffer.from(stored.slice(1), 'base64url').toString('hex')}`;
  }
  // Written by a version before this encoding, as given.
  return stored;
}
