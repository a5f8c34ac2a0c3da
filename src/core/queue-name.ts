/** The one rule for queue names, shared by job definitions, options, the CLI and the pipeline. */

/** Queue names BullMQ accepts and onceq can put in a Redis key. */
export const QUEUE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
export const QUEUE_NAME_RULE = 'letters, digits, _ . - and at most 64 characters';
