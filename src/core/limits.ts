/**
 * Bounds that several layers enforce (the HTTP schema, the producer, `ctx.enqueue`, the
 * reconciler and the outbox relay): one constant each, so no layer accepts what another refuses.
 */

/**
 * BullMQ's largest job priority (2^21 - 1). A message accepted with more would be recorded in
 * PostgreSQL and then refused by `queue.add` on every attempt.
 */
export const MAX_PRIORITY = 2_097_151;

/**
 * Most field errors one refusal lists (a 422's `errors`, an error's message); the rest are
 * counted (`errorsOmitted`). A body of 100,000 unknown properties would otherwise be answered
 * with 100,000 errors, megabytes of JSON built from a request of one.
 */
export const MAX_REPORTED_ERRORS = 20;

/**
 * Default bound on a principal's outstanding tokens (issued, neither used nor expired). Each costs
 * Redis a few hundred bytes for the token's lifetime (24 h by default), and under `noeviction` a
 * full Redis stops the whole fleet; a client that takes tokens as it needs them holds about as
 * many as it has requests in flight, far below this.
 */
export const DEFAULT_MAX_OUTSTANDING_TOKENS = 10_000;

/** Most tokens one `POST /v1/tokens` (one `issue` call) creates. */
export const MAX_ISSUE_COUNT = 100;

/** Most messages one group commit may hold: its statements carry one row per message. */
export const MAX_GROUP_COMMIT_SIZE = 1_000;
/** Most group commits one worker may keep in flight. */
export const MAX_GROUP_COMMIT_GROUPS = 100;
/** Longest lock timeout of a group commit: past it, a group over a hot row waits too long. */
export const MAX_GROUP_COMMIT_LOCK_TIMEOUT_MS = 60_000;
