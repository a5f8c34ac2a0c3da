/**
 * The few error classes of onceq, each with a stable `code`. Retryability is a property of the
 * class: a `NonRetryableError` goes straight to the failed/dead-letter path, everything else is
 * retried through BullMQ. HTTP status mapping lives beside the API, not here.
 */
import { MAX_REPORTED_ERRORS } from './limits.js';

/** Stable machine-readable codes; never renamed once released. */
export const ErrorCode = {
  /** Options or environment were invalid ({@link ConfigError}). */
  ConfigInvalid: 'config_invalid',
  /** Redis or PostgreSQL could not be reached ({@link ServiceUnreachableError}). */
  ServiceUnreachable: 'service_unreachable',
  /** Job data, a request or enqueue options failed their schema ({@link ValidationError}). */
  ValidationFailed: 'validation_failed',
  /** No job of that name is registered. */
  UnknownJob: 'unknown_job',
  /** A version-checked update found another version ({@link VersionConflictError}). */
  VersionConflict: 'version_conflict',
  /** A handler kept hitting version conflicts until its re-runs ran out. */
  ConflictRetriesExhausted: 'conflict_retries_exhausted',
  /** The worker's claim lease on the message was lost before commit; another worker owns it. */
  LeaseLost: 'lease_lost',
  /** The message is at or below the pruning cutoff, so it is not applied (its inbox row may be gone). */
  MessageExpired: 'message_expired',
  /** The idempotency token was never issued, or has expired. */
  TokenUnknown: 'idempotency_key_unknown',
  /** The idempotency token was already used for a different request. */
  TokenReused: 'idempotency_key_reused',
  /** Another request with the same idempotency token is in flight. */
  TokenInUse: 'idempotency_key_in_use',
  /** The idempotency token is not a token onceq issues. */
  TokenMalformed: 'idempotency_key_malformed',
  /** Every snowflake worker id is leased ({@link WorkerIdUnavailableError}). */
  WorkerIdUnavailable: 'worker_id_unavailable',
  /** The clock reads before the snowflake epoch. */
  ClockMovedBackwards: 'clock_moved_backwards',
  /** The id generator lost its worker-id lease ({@link IdGeneratorStoppedError}). */
  IdGeneratorStopped: 'id_generator_stopped',
  /** Two different messages carry one message id. */
  IdClash: 'id_clash',
  /** A Redis script answered something it never answers. */
  ScriptFailed: 'script_failed',
  /** A migration failed. */
  MigrationFailed: 'migration_failed',
  /** A job's token is bound to another message ({@link TokenMismatchError}). */
  TokenMismatch: 'token_mismatch',
  /** A handler tried to open a transaction inside its message transaction. */
  NestedTransaction: 'nested_transaction',
  /** A handler's result cannot be stored (not JSON, or too large). */
  InvalidResult: 'invalid_result',
  /** COMMIT of a message's transaction did not commit (the server answered `ROLLBACK`). */
  CommitFailed: 'commit_failed',
  /** An operation bounded in time got no answer in time (`TimeoutError`). */
  Timeout: 'timeout',
  /**
   * A function of onceq was called wrongly: a bad job definition, a job registered twice, an
   * argument out of range ({@link InvalidArgumentError}).
   */
  InvalidArgument: 'invalid_argument',
  // Codes of the HTTP API's problem+json answers (statuses: src/http/problem.ts).
  /** The request carried no `Idempotency-Key`. */
  TokenMissing: 'idempotency_key_missing',
  /** The request was malformed. */
  BadRequest: 'bad_request',
  /** The request body was too large. */
  PayloadTooLarge: 'payload_too_large',
  /** No valid API key. */
  Unauthorized: 'unauthorized',
  /** The API key may not do this. */
  Forbidden: 'forbidden',
  /** No such resource. */
  NotFound: 'not_found',
  /** Too many requests; retry after `Retry-After`. */
  RateLimited: 'rate_limited',
  /** The principal holds as many outstanding tokens as it may ({@link TokenLimitError}). */
  TokenLimitReached: 'token_limit_reached',
  /** Too many failed authentications from this client. */
  AuthFailuresExceeded: 'too_many_failed_authentications',
  /** A service behind the API is down; retry later. */
  Unavailable: 'service_unavailable',
  /** An unexpected server error. */
  Internal: 'internal_error',
  /** onceq's tables do not exist yet: run the migrations first. */
  MigrationsPending: 'migrations_pending',
} as const;
/** One of the {@link ErrorCode} values. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Base class: a message for humans, a code for machines, the cause kept. */
export class OnceqError extends Error {
  /** Stable, machine-readable: match on this, not on the message or the class name. */
  readonly code: ErrorCode;
  /** Structured facts about the failure; its shape depends on the class. */
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
  /** JSON pointer into the data (`/amount`), or the option's name (`/delay`); `''` for the root. */
  path: string;
  /** What was wrong with it. */
  message: string;
}

/**
 * Job data (or a request) failed its schema; `details` lists the failing fields, at most
 * 20 of them (`MAX_REPORTED_ERRORS`), and `omitted` counts the rest.
 */
export class ValidationError extends NonRetryableError {
  /** The failing fields listed. */
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

/**
 * A function of onceq was called wrongly (a programming error of the caller, not bad data):
 * `defineJob` with a bad spec, the same job given twice, an argument out of range.
 */
export class InvalidArgumentError extends OnceqError {
  constructor(message: string) {
    super(ErrorCode.InvalidArgument, message);
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

/**
 * Configuration was invalid (the CLI's environment, or a library call's options); the message
 * lists each bad variable or option on its own line, and `details` holds the lines.
 */
export class ConfigError extends OnceqError {
  /** One line per bad variable or option. */
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
  declare readonly details: {
    /** How many worker ids there are, all of them leased. */
    count: number;
  };
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
  declare readonly details: {
    /** The job's message id. */
    messageId: string;
    /** The message id the job's token is bound to. */
    boundMessageId: string;
  };
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
  declare readonly details: {
    /** How many outstanding tokens the principal may hold. */
    limit: number;
    /** How many it holds. */
    outstanding: number;
    /** When enough of them will have expired, at the latest. */
    retryAfterMs: number;
  };
  constructor(details: { limit: number; outstanding: number; retryAfterMs: number }) {
    super(
      ErrorCode.TokenLimitReached,
      `${details.outstanding} tokens of this principal are outstanding (issued, neither used nor ` +
        `expired) and at most ${details.limit} may be: use them, or wait for some to expire`,
      { details },
    );
  }
}
