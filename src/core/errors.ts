/**
 * The few error classes of onceq, each with a stable `code`. Retryability is a property of the
 * class: a `NonRetryableError` goes straight to the failed/dead-letter path, everything else is
 * retried through BullMQ. HTTP status mapping lives beside the API, not here.
 */
import { MAX_REPORTED_ERRORS } from './limits.js';

/** Stable machine-readable codes; never renamed once released. */
export const ErrorCode = {
  ConfigInvalid: 'config_invalid',
  ServiceUnreachable: 'service_unreachable',
  ValidationFailed: 'validation_failed',
  UnknownJob: 'unknown_job',
  VersionConflict: 'version_conflict',
  ConflictRetriesExhausted: 'conflict_retries_exhausted',
  LeaseLost: 'lease_lost',
  MessageExpired: 'message_expired',
  TokenUnknown: 'idempotency_key_unknown',
  TokenReused: 'idempotency_key_reused',
  TokenInUse: 'idempotency_key_in_use',
  TokenMalformed: 'idempotency_key_malformed',
  WorkerIdUnavailable: 'worker_id_unavailable',
  ClockMovedBackwards: 'clock_moved_backwards',
  IdGeneratorStopped: 'id_generator_stopped',
  IdClash: 'id_clash',
  ScriptFailed: 'script_failed',
  MigrationFailed: 'migration_failed',
  TokenMismatch: 'token_mismatch',
  NestedTransaction: 'nested_transaction',
  InvalidResult: 'invalid_result',
  // Codes of the HTTP API's problem+json answers (statuses: src/http/problem.ts).
  TokenMissing: 'idempotency_key_missing',
  BadRequest: 'bad_request',
  PayloadTooLarge: 'payload_too_large',
  Unauthorized: 'unauthorized',
  Forbidden: 'forbidden',
  NotFound: 'not_found',
  RateLimited: 'rate_limited',
  TokenLimitReached: 'token_limit_reached',
  AuthFailuresExceeded: 'too_many_failed_authentications',
  Unavailable: 'service_unavailable',
  Internal: 'internal_error',
  MigrationsPending: 'migrations_pending',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Base class: a message for humans, a code for machines, the cause kept. */
export class OnceqError extends Error {
  readonly code: ErrorCode;
  readonly details: unknown;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options?.details;
  }
}

/** A failure that no retry can fix (bad data, unknown job): fail the job at once. */
export class NonRetryableError extends OnceqError {}

/** One field that failed validation: a JSON pointer into the data and what was wrong. */
export interface FieldError {
  path: string;
  message: string;
}

/**
 * Job data (or a request) failed its schema; `details` lists the failing fields, at most
 * {@link MAX_REPORTED_ERRORS} of them, and `omitted` counts the rest.
 */
export class ValidationError extends NonRetryableError {
  declare readonly details: FieldError[];
  /** Failing fields beyond those listed in `details`. */
  readonly omitted: number;
  constructor(message: string, fields: FieldError[], omitted = 0) {
    const listed = fields.slice(0, MAX_REPORTED_ERRORS);
    super(ErrorCode.ValidationFailed, message, { details: listed });
    this.omitted = omitted + fields.length - listed.length;
  }
}

/**
 * Bad enqueue options (`queue`, `delay`, `priority`) of the producer or of `ctx.enqueue`; paths
 * name the option (`/delay`), where a plain {@link ValidationError} from the job's schema points
 * into its data. Non-retryable: in a handler it fails the handler's own delivery, so a bad
 * follow-up never reaches the outbox.
 */
export class EnqueueOptionsError extends ValidationError {}

/**
 * `path message` of each field, joined, at most {@link MAX_REPORTED_ERRORS} of them and a count
 * of the rest: the text of a refusal stays small however many fields failed.
 */
export function describeFieldErrors(fields: readonly FieldError[], omitted = 0): string {
  const listed = fields.slice(0, MAX_REPORTED_ERRORS);
  const rest = omitted + fields.length - listed.length;
  const text = listed.map((f) => `${f.path || '/'} ${f.message}`).join('; ');
  return rest > 0 ? `${text}; and ${rest} more` : text;
}

/** A version-checked update found another version: the transaction is re-run. */
export class VersionConflictError extends OnceqError {
  constructor(table: string, id: string, expectedVersion: number) {
    super(
      ErrorCode.VersionConflict,
      `version conflict on ${table} ${id}: expected version ${expectedVersion}`,
      { details: { table, id, expectedVersion } },
    );
  }
}

/**
 * Configuration was invalid (the CLI's environment, or a library call's options); the message
 * lists each bad variable or option on its own line, and `details` holds the lines.
 */
export class ConfigError extends OnceqError {
  declare readonly details: string[];
  /** `subject` names what was invalid. @defaultValue `configuration` */
  constructor(problems: string[], options?: { cause?: unknown; subject?: string }) {
    const subject = options?.subject ?? 'configuration';
    super(ErrorCode.ConfigInvalid, `invalid ${subject}:\n  ${problems.join('\n  ')}`, {
      details: problems,
      cause: options?.cause,
    });
  }
}

/** Redis or PostgreSQL could not be reached; the message says which, where and how to start it. */
export class ServiceUnreachableError extends OnceqError {
  constructor(message: string, cause?: unknown) {
    super(ErrorCode.ServiceUnreachable, message, { cause });
  }
}

/** Every snowflake worker id is leased by a live process, so this process must not start. */
export class WorkerIdUnavailableError extends OnceqError {
  declare readonly details: { count: number };
  constructor(count: number) {
    super(
      ErrorCode.WorkerIdUnavailable,
      `all ${count} worker ids are leased (PostgreSQL table worker_id_leases); stop another ` +
        'onceq process or wait for the lease of a dead one to expire',
      { details: { count } },
    );
  }
}

/**
 * The clock reads before the snowflake epoch: no id can carry that time, so the generator mints
 * nothing.
 */
export class ClockMovedBackwardsError extends OnceqError {
  declare readonly details: { behindMs: number; clockMs: number; lastTimestampMs: number };
  constructor(
    message: string,
    details: { behindMs: number; clockMs: number; lastTimestampMs: number },
  ) {
    super(ErrorCode.ClockMovedBackwards, message, { details });
  }
}

/** The id generator refuses to mint: its worker-id lease is lost, lapsed or closed. */
export class IdGeneratorStoppedError extends OnceqError {
  constructor(message: string, cause?: unknown) {
    super(ErrorCode.IdGeneratorStopped, message, { cause });
  }
}

/**
 * A job's token is bound to another message (the token's stored `messageId` differs from the
 * job's): running it could pass another message's result off as this one's. No retry fixes it.
 */
export class TokenMismatchError extends NonRetryableError {
  declare readonly details: { messageId: string; boundMessageId: string };
  constructor(messageId: string, boundMessageId: string) {
    super(
      ErrorCode.TokenMismatch,
      `message ${messageId} carries a token bound to message ${boundMessageId}`,
      { details: { messageId, boundMessageId } },
    );
  }
}

/**
 * Two different messages carry one message id: an id was minted twice, which the worker-id
 * leases exist to prevent. Never swallowed: the message that found its id taken is not sent,
 * and no retry can change that.
 */
export class IdClashError extends NonRetryableError {
  declare readonly details: { messageIds: string[] };
  constructor(message: string, messageIds: string[]) {
    super(ErrorCode.IdClash, message, { details: { messageIds } });
  }
}

/**
 * A principal asked for tokens while it holds as many outstanding (issued, unused, unexpired)
 * tokens as it may: using or letting some expire makes room. `retryAfterMs` is when enough of
 * them will have expired at the latest.
 */
export class TokenLimitError extends OnceqError {
  declare readonly details: { limit: number; outstanding: number; retryAfterMs: number };
  constructor(details: { limit: number; outstanding: number; retryAfterMs: number }) {
    super(
      ErrorCode.TokenLimitReached,
      `${details.outstanding} tokens of this principal are outstanding (issued, neither used nor ` +
        `expired) and at most ${details.limit} may be: use them, or wait for some to expire`,
      { details },
    );
  }
}
