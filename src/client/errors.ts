/**
 * The client's errors: one class, {@link OnceqClientError}, for every failure a call can end
 * with, and {@link JobWaitTimeoutError} for a job that did not finish in time. A refusal of the
 * API carries its problem+json answer (`status`, `code`, `detail`, field `errors`); a request
 * that got no answer carries `network_error`. The codes are the API's own, so a caller branches
 * on `err.code`, never on a message.
 */
import type { JobStatus } from './types.js';

/**
 * Every `code` the producer HTTP API answers with, in problem+json bodies. Kept equal to the
 * server's catalogue by a test (test/client/codes.test.ts).
 */
export const PROBLEM_CODES = [
  'bad_request',
  'idempotency_key_missing',
  'idempotency_key_malformed',
  'unauthorized',
  'forbidden',
  'not_found',
  'idempotency_key_in_use',
  'payload_too_large',
  'idempotency_key_unknown',
  'idempotency_key_reused',
  'validation_failed',
  'unknown_job',
  'rate_limited',
  'token_limit_reached',
  'too_many_failed_authentications',
  'internal_error',
  'service_unavailable',
] as const;

/** A `code` of the producer HTTP API's problem+json answers (see {@link PROBLEM_CODES}). */
export type ProblemCode = (typeof PROBLEM_CODES)[number];

/**
 * Codes the client sets itself, for failures that have no problem+json answer:
 * - `network_error`: no answer within the retry budget (connection refused or dropped, a
 *   request over `timeoutMs`);
 * - `unexpected_response`: an answer that is not the API's (not JSON, not a problem, a 2xx of
 *   the wrong shape), e.g. a proxy's HTML error page;
 * - `wait_timeout`: {@link JobWaitTimeoutError}, the job did not reach a final state in time.
 */
export type LocalErrorCode = 'network_error' | 'unexpected_response' | 'wait_timeout';

/**
 * The `code` of an {@link OnceqClientError}. An API newer than this client may answer with a
 * code not listed yet: it is passed on as sent, hence the open `string` (which keeps the
 * listed codes for autocompletion).
 */
export type OnceqErrorCode = ProblemCode | LocalErrorCode | (string & {});

/** One field that failed validation: a JSON pointer into the request body and what was wrong. */
export interface FieldError {
  /** JSON pointer into the request body, e.g. `/data/owner`. */
  path: string;
  /** What was wrong with it. */
  message: string;
}

/** A problem+json body (RFC 9457) as the API sends it. */
export interface Problem {
  /** A URI naming the kind of problem. */
  type: string;
  /** A short summary of the kind of problem, the same for every occurrence. */
  title: string;
  /** The HTTP status of the answer. */
  status: number;
  /** What went wrong this time, for humans; never branch on it. */
  detail: string;
  /** The stable code to branch on (see {@link ProblemCode}). */
  code: string;
  /** Failing fields, at most a bounded number of them. */
  errors?: FieldError[];
  /** How many failing fields `errors` leaves out. */
  errorsOmitted?: number;
}

/** What an {@link OnceqClientError} is made of. */
export interface OnceqClientErrorInit {
  /** Becomes {@link OnceqClientError.code}. */
  code: OnceqErrorCode;
  /** The error's message. */
  message: string;
  /** Becomes {@link OnceqClientError.status}. */
  status?: number;
  /** The problem+json body; its `detail`, `errors` and `errorsOmitted` fill the error's. */
  problem?: Problem;
  /** Becomes {@link OnceqClientError.retryAfterMs}. */
  retryAfterMs?: number;
  /** Becomes {@link OnceqClientError.attempts}. @defaultValue 1 */
  attempts?: number;
  /** Becomes {@link OnceqClientError.token}. */
  token?: string;
  /** The underlying error, kept as the error's `cause`. */
  cause?: unknown;
}

/**
 * A call of the client failed: the API refused it (`status`, `code` and `detail` from its
 * problem+json answer), or it got no usable answer within the retry budget (`network_error`,
 * `unexpected_response`). `name` is the class's name; `cause` keeps the underlying error.
 */
export class OnceqClientError extends Error {
  /** The API's problem code, or one of {@link LocalErrorCode}. */
  readonly code: OnceqErrorCode;
  /** The HTTP status of the last answer; `undefined` when there was none. */
  readonly status: number | undefined;
  /** The problem's `detail` (for humans; never branch on it); the message otherwise. */
  readonly detail: string;
  /** Field errors of a `validation_failed` answer, as JSON pointers into the request body. */
  readonly errors: readonly FieldError[];
  /** How many failing fields the API left out of `errors`. */
  readonly errorsOmitted: number;
  /** The wait the last answer's `Retry-After` asked for, when it had one. */
  readonly retryAfterMs: number | undefined;
  /** Requests sent, the first included. */
  readonly attempts: number;
  /** The problem+json body as sent, when the answer was one. */
  readonly problem: Problem | undefined;
  /**
   * The `Idempotency-Key` of a failed `enqueue`. When the outcome is unknown (`network_error`,
   * a 5xx), sending the same enqueue again with `{ token }` either replays the first acceptance
   * or makes the one message: never two. Not enumerable, so it stays out of logged errors.
   */
  declare readonly token: string | undefined;

  constructor(init: OnceqClientErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.code = init.code;
    this.status = init.status;
    this.problem = init.problem;
    this.detail = init.problem?.detail ?? init.message;
    this.errors = init.problem?.errors ?? [];
    this.errorsOmitted = init.problem?.errorsOmitted ?? 0;
    this.retryAfterMs = init.retryAfterMs;
    this.attempts = init.attempts ?? 1;
    Object.defineProperty(this, 'token', { value: init.token, enumerable: false });
  }
}

/**
 * `waitForJob` gave up: the job was not in a final state (`completed`, `failed`, `dead`) when
 * `timeoutMs` ran out. The job goes on; `lastStatus` is what the API said last.
 */
export class JobWaitTimeoutError extends OnceqClientError {
  declare readonly code: 'wait_timeout';
  /** The job's id. */
  readonly jobId: string;
  /** The last status read, or `undefined` if no look-up finished in time. */
  readonly lastStatus: JobStatus | undefined;

  constructor(
    jobId: string,
    timeoutMs: number,
    lastStatus: JobStatus | undefined,
    cause?: unknown,
  ) {
    super({
      code: 'wait_timeout',
      message: `job ${jobId} did not reach a final state within ${timeoutMs} ms`,
      cause,
    });
    this.jobId = jobId;
    this.lastStatus = lastStatus;
  }
}
