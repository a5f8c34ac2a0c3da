/**
 * The one place Redis keys are spelled. BullMQ owns `<prefix>:<queue>:*`; onceq's own keys use
 * `<prefix>:~<kind>:…`, and `~` is not allowed in queue names, so the two can never collide.
 * Every onceq script touches a single key, so every script stays within one hash slot.
 */

/** Key of one idempotency/message token's state hash. */
export function tokenKey(prefix: string, token: string): string {
  return `${prefix}:~token:${token}`;
}

/**
 * Sorted set of one principal's outstanding tokens (issued, not yet used), scored by expiry (ms,
 * Redis clock): the bound of `lua/reserve-1.lua`. A key of its own, apart from the tokens'
 * keys: on a cluster it lives in its own slot, and each script touches it alone (a principal
 * with braces, which API keys cannot have, would only pick that one key's slot).
 */
export function outstandingTokensKey(prefix: string, principal: string): string {
  return `${prefix}:~outstanding:${principal}`;
}

/** Glob matching every key under a prefix, BullMQ's included. */
export function allKeysPattern(prefix: string): string {
  return `${prefix}:*`;
}
