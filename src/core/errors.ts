/**
 * The few error classes of onceq, each with a stable `code`. Retryability is a property of the
 * class: a `NonRetryableError` goes straight to the failed/dead-letter path, everything else is
 * retried through BullMQ. HTTP status mapping lives beside the API, not here.
 */

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

/** Job data (or a request) failed its schema; `details` lists every failing field. */
export class ValidationError extends NonRetryableError {
  declare readonly details: FieldError[];
  constructor(message: string, fields: FieldError[]) {
    super(ErrorCode.ValidationFailed, message, { details: fields });
  }
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

/** Configuration from the environment was invalid; the message lists each bad variable. */
export class ConfigError extends OnceqError {
  declare readonly details: string[];
  constructor(problems: string[], options?: { cause?: unknown }) {
    super(ErrorCode.ConfigInvalid, `invalid configuration:\n  ${problems.join('\n  ')}`, {
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
  declare readonly details: { prefix: string; count: number };
  constructor(prefix: string, count: number) {
    super(
      ErrorCode.WorkerIdUnavailable,
      `all ${count} worker ids are leased under prefix ${prefix}; stop another onceq process ` +
        'or wait for the lease of a dead one to expire',
      { details: { prefix, count } },
    );
  }
}

/**
 * The wall clock reads earlier than the last id minted (or than the snowflake epoch) by more than
 * the generator is willing to wait: minting now could repeat an id, so it mints nothing.
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
