/**
 * The one place Redis keys are spelled. BullMQ owns `<prefix>:<queue>:*`; onceq's own keys use
 * `<prefix>:~<kind>:…`, and `~` is not allowed in queue names, so the two can never collide.
 * Every onceq script touches a single key, so every script stays within one hash slot.
 */

/** Key of one idempotency/message token's state hash. */
export function tokenKey(prefix: string, token: string): string {
  return `${prefix}:~token:${token}`;
}

/** Glob matching every onceq-owned key under a prefix (for tests and cleanup). */
export function ownKeysPattern(prefix: string): string {
  return `${prefix}:~*`;
}

/** Glob matching every key under a prefix, BullMQ's included. */
export function allKeysPattern(prefix: string): string {
  return `${prefix}:*`;
}
