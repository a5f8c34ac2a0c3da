/**
 * What happened to one delivery. Counted by metrics and logged on every job line.
 */

/** The outcome of a delivery. */
export type DeliveryOutcome =
  /** The handler ran and its transaction committed. */
  | 'applied'
  /** The message had already been applied; its stored result was returned. */
  | 'duplicate'
  /**
   * Another worker holds the live claim, or the delivery was given up at a forced shutdown; the
   * job was put back without spending an attempt.
   */
  | 'busy'
  /** The transaction failed (conflicts exhausted, an error); BullMQ will retry it. */
  | 'retried'
  /** The job cannot succeed (invalid data, unknown job); it was dead-lettered without retries. */
  | 'invalid'
  /** Dead-lettered: its last attempt failed, or it was older than the dedupe window. */
  | 'dead';
