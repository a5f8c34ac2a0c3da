import { isSnowflake } from './snowflake.js';
import { isWellFormedToken } from './token.js';

/**
 * The message envelope carried by every BullMQ job, and the mapping between a `messageId` and
 * the BullMQ job id. BullMQ refuses custom ids that look like integers or contain `:`, so the job
 * id is the snowflake with a fixed prefix.
 */

/** Prefix of BullMQ job ids: `m-<messageId>`. */
export const JOB_ID_PREFIX = 'm-';

/** What onceq stores in `job.data`; the job name is BullMQ's `job.name`. */
export interface MessageEnvelope {
  /** Snowflake minted once at acceptance, as a decimal string. */
  messageId: string;
  /** The idempotency token the message was accepted with; its Redis state is the claim. */
  token: string;
  /** The job's own data, validated against its schema. */
  data: unknown;
  /**
   * Set on a job that a replay of the request added back because its original was gone. The
   * replay looked in PostgreSQL first, but a dead-letter move can cross that look-up (the dead
   * letter committed after it, the original removed before the add): the worker looks for a
   * dead letter before running such a job, and only such a job, so no first delivery pays for it.
   */
  readded?: true;
  /**
   * The trace context the message was created in (OpenTelemetry, src/telemetry/): absent when
   * the producer had no tracing SDK. Its delivery's span continues it, or links to it. Never a
   * reason to refuse a message: a malformed one is ignored ({@link messageTraceOf}).
   */
  trace?: MessageTrace;
}

/**
 * A message's trace context, as `propagation.inject` of the creating process wrote it: with the
 * default W3C propagators, `traceparent` and `tracestate` (and `baggage`).
 */
export interface MessageTrace {
  /** The propagator's fields, e.g. `{ traceparent: '00-…-…-01' }`. */
  context: Record<string, string>;
  /**
   * The delivery starts a trace of its own with a link to this context, instead of continuing
   * it: set on follow-ups (`ctx.enqueue`), which run after their parent's commit, at the relay's
   * pace, and would otherwise chain every descendant into one unbounded trace.
   */
  link?: true;
}

/** Most fields, and longest name and value, of a {@link MessageTrace} context. */
const TRACE_LIMITS = { fields: 8, name: 64, value: 8192 } as const;
const TRACE_FIELD_NAME = /^[A-Za-z0-9_.-]+$/;

/**
 * The envelope's trace context, or `undefined` when it has none or it is malformed: a wrong type,
 * too many fields, a name or value past its bound (W3C's own bound on `baggage` is 8192 bytes).
 * The propagator then checks the values themselves (a bad `traceparent` extracts to nothing).
 */
export function messageTraceOf(value: unknown): MessageTrace | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { context, link } = value as Record<string, unknown>;
  if (typeof context !== 'object' || context === null || Array.isArray(context)) return undefined;
  const entries = Object.entries(context);
  if (entries.length === 0 || entries.length > TRACE_LIMITS.fields) return undefined;
  for (const [name, v] of entries) {
    if (name.length > TRACE_LIMITS.name || !TRACE_FIELD_NAME.test(name)) return undefined;
    if (typeof v !== 'string' || v.length > TRACE_LIMITS.value) return undefined;
  }
  return {
    context: Object.fromEntries(entries) as Record<string, string>,
    ...(link === true ? { link: true } : {}),
  };
}

/** The BullMQ job id of a message. */
export function jobIdFor(messageId: string): string {
  return `${JOB_ID_PREFIX}${messageId}`;
}

/** The message id of a BullMQ job id, or `undefined` when it is not one of onceq's. */
export function messageIdOf(jobId: string): string | undefined {
  if (!jobId.startsWith(JOB_ID_PREFIX)) return undefined;
  const id = jobId.slice(JOB_ID_PREFIX.length);
  return isSnowflake(id) ? id : undefined;
}

/** Checks the envelope's shape; returns a reason when it is not a valid envelope. */
export function envelopeProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return 'job data is not an onceq envelope';
  const v = value as Record<string, unknown>;
  if (typeof v.messageId !== 'string' || !isSnowflake(v.messageId)) {
    // Also bounds it to PostgreSQL's bigint: a 19-digit id above 2^63-1 would fail every insert.
    return 'envelope.messageId must be a decimal snowflake string (at most 2^63-1)';
  }
  if (!isWellFormedToken(v.token)) return 'envelope.token is missing or not an onceq token';
  if (!('data' in v)) return 'envelope.data is missing';
  // `trace` is not checked here: a malformed one is ignored (messageTraceOf), never a reason to
  // dead-letter a message whose effect is fine.
  return undefined;
}
