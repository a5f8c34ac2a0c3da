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
