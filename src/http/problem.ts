/**
 * problem+json answers (RFC 9457) with a stable `code`, and the one catalogue that maps onceq's
 * error codes to HTTP statuses (after Fastify's `createError` catalogue). Every error the API
 * sends goes through {@link toProblem}, so a code always comes with the same status and title.
 *
 * Bodies are deterministic (no request ids, no timestamps): the same refusal is byte-identical
 * whoever gets it, which is what keeps "never issued" and "another principal's" tokens apart
 * from nothing.
 */
import type { FastifyError, FastifyReply } from 'fastify';
import {
  describeFieldErrors,
  ErrorCode,
  OnceqError,
  TokenLimitError,
  ValidationError,
  type FieldError,
} from '../core/errors.js';
import { MAX_REPORTED_ERRORS } from '../core/limits.js';

/** Media type of every error answer. */
export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** Seconds a client waits before retrying a token that is still in flight. */
export const IN_USE_RETRY_AFTER_S = 1;
/** Seconds a client waits before retrying while Redis or PostgreSQL is unreachable. */
export const UNAVAILABLE_RETRY_AFTER_S = 5;

/** A problem+json body. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  /** Failing fields, as JSON pointers into the request body; at most {@link MAX_REPORTED_ERRORS}. */
  errors?: FieldError[];
  /** How many failing fields `errors` leaves out. */
  errorsOmitted?: number;
}

/** Status and title of every code the API answers with. */
export const PROBLEM_CATALOGUE: Readonly<Record<string, { status: number; title: string }>> = {
  [ErrorCode.BadRequest]: { status: 400, title: 'Bad request' },
  [ErrorCode.TokenMissing]: { status: 400, title: 'Idempotency-Key header missing' },
  [ErrorCode.TokenMalformed]: { status: 400, title: 'Idempotency-Key header malformed' },
  [ErrorCode.Unauthorized]: { status: 401, title: 'Unauthorized' },
  [ErrorCode.Forbidden]: { status: 403, title: 'Forbidden' },
  [ErrorCode.NotFound]: { status: 404, title: 'Not found' },
  [ErrorCode.TokenInUse]: { status: 409, title: 'Idempotency-Key in use' },
  [ErrorCode.PayloadTooLarge]: { status: 413, title: 'Payload too large' },
  [ErrorCode.TokenUnknown]: { status: 422, title: 'Idempotency-Key unknown' },
  [ErrorCode.TokenReused]: { status: 422, title: 'Idempotency-Key reused' },
  [ErrorCode.ValidationFailed]: { status: 422, title: 'Validation failed' },
  [ErrorCode.UnknownJob]: { status: 422, title: 'Validation failed' },
  [ErrorCode.RateLimited]: { status: 429, title: 'Too many requests' },
  [ErrorCode.TokenLimitReached]: { status: 429, title: 'Too many outstanding tokens' },
  [ErrorCode.AuthFailuresExceeded]: { status: 429, title: 'Too many failed authentications' },
  [ErrorCode.Internal]: { status: 500, title: 'Internal server error' },
  [ErrorCode.Unavailable]: { status: 503, title: 'Service unavailable' },
};

/**
 * A problem for `code`, with the catalogue's status and title. At most
 * {@link MAX_REPORTED_ERRORS} field errors are listed; `omitted` (failing fields the caller
 * already left out) and the rest are counted in `errorsOmitted`, so the answer stays small
 * however many fields a request got wrong.
 */
export function problem(
  code: string,
  detail: string,
  errors?: readonly FieldError[],
  omitted = 0,
): Problem {
  const entry = PROBLEM_CATALOGUE[code] ?? PROBLEM_CATALOGUE[ErrorCode.Internal]!;
  const listed = errors?.slice(0, MAX_REPORTED_ERRORS) ?? [];
  const rest = omitted + (errors?.length ?? 0) - listed.length;
  return {
    type: `urn:onceq:problem:${code}`,
    title: entry.title,
    status: entry.status,
    detail,
    code,
    ...(listed.length > 0 ? { errors: listed } : {}),
    ...(rest > 0 ? { errorsOmitted: rest } : {}),
  };
}

/** An error that carries its problem; thrown by hooks and parsers, answered by the error handler. */
export class ProblemError extends Error {
  readonly problem: Problem;
  readonly headers: Readonly<Record<string, string>>;
  constructor(body: Problem, headers: Record<string, string> = {}) {
    super(body.detail);
    this.name = new.target.name;
    this.problem = body;
    this.headers = headers;
  }
  /** Fastify reads it, e.g. for logging. */
  get statusCode(): number {
    return this.problem.status;
  }
}

/** Sends a problem; the body is serialised as given, whatever response schema the route has. */
export function sendProblem(
  reply: FastifyReply,
  body: Problem,
  headers: Readonly<Record<string, string>> = {},
): FastifyReply {
  for (const [name, value] of Object.entries(headers)) reply.header(name, value);
  return reply
    .code(body.status)
    .type(PROBLEM_CONTENT_TYPE)
    .serializer((payload: unknown) => JSON.stringify(payload))
    .send(body);
}

/** What {@link toProblem} makes of an error: the body, extra headers, and whether it is a fault. */
export interface MappedError {
  body: Problem;
  headers: Record<string, string>;
  /** True for 5xx: the server's fault, worth logging with the error. */
  fault: boolean;
}

/** Maps any error the app meets to a problem. Unknown errors become a 500 that reveals nothing. */
export function toProblem(err: unknown): MappedError {
  const plain = (body: Problem, headers: Record<string, string> = {}): MappedError => ({
    body,
    headers,
    fault: body.status >= 500,
  });
  if (err instanceof ProblemError) return plain(err.problem, { ...err.headers });
  if (err instanceof TokenLimitError) {
    // Room comes back as tokens are used or expire; the header is the latest of the two.
    return plain(problem(err.code, err.message), {
      'retry-after': `${retryAfterSeconds(err.details.retryAfterMs)}`,
    });
  }
  if (err instanceof ValidationError) {
    return plain(problem(ErrorCode.ValidationFailed, err.message, err.details, err.omitted));
  }
  if (err instanceof OnceqError) {
    switch (err.code) {
      case ErrorCode.UnknownJob:
        return plain(
          problem(ErrorCode.ValidationFailed, err.message, [
            { path: '/name', message: err.message },
          ]),
        );
      case ErrorCode.TokenInUse:
        return plain(problem(err.code, err.message), { 'retry-after': `${IN_USE_RETRY_AFTER_S}` });
      case ErrorCode.ServiceUnreachable:
        return plain(problem(ErrorCode.Unavailable, 'a backing service is unreachable'), {
          'retry-after': `${UNAVAILABLE_RETRY_AFTER_S}`,
        });
      case ErrorCode.IdGeneratorStopped:
        // No valid worker-id lease right now (PostgreSQL unreachable past the ttl, or the id taken).
        return plain(problem(ErrorCode.Unavailable, 'no message ids can be minted right now'), {
          'retry-after': `${UNAVAILABLE_RETRY_AFTER_S}`,
        });
      default:
        if (PROBLEM_CATALOGUE[err.code]) return plain(problem(err.code, err.message));
    }
  }
  const fe = err as Partial<FastifyError> & { code?: string };
  if (fe.validation) {
    const context = fe.validationContext ?? 'body';
    const errors = fe.validation.slice(0, MAX_REPORTED_ERRORS).map((v) => ({
      path: fieldPath(context, v.instancePath, v.params as Record<string, unknown>),
      message: v.message ?? 'is invalid',
    }));
    const omitted = fe.validation.length - errors.length;
    return plain(
      problem(
        ErrorCode.ValidationFailed,
        `invalid request ${context}: ${describeFieldErrors(errors, omitted)}`,
        errors,
        omitted,
      ),
    );
  }
  if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return plain(problem(ErrorCode.PayloadTooLarge, 'the request body is over the size limit'));
  }
  if (fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    return plain(problem(ErrorCode.BadRequest, 'the request body must be application/json'));
  }
  if (fe.statusCode === 429) {
    return plain(problem(ErrorCode.RateLimited, fe.message ?? 'rate limit exceeded'));
  }
  if (isUnreachable(err)) {
    return plain(problem(ErrorCode.Unavailable, 'a backing service is unreachable'), {
      'retry-after': `${UNAVAILABLE_RETRY_AFTER_S}`,
    });
  }
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    // Fastify's own refusals (bad JSON, bad Content-Length, empty body, prototype poisoning).
    return plain(problem(ErrorCode.BadRequest, fe.message ?? 'bad request'));
  }
  return plain(problem(ErrorCode.Internal, 'an internal error occurred'));
}

/** Whole seconds for `Retry-After` (RFC 9110: a non-negative integer), never 0. */
export function retryAfterSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/** A JSON pointer into the request (body fields keep the body's pointer). */
function fieldPath(context: string, instancePath: string, params: Record<string, unknown>): string {
  let path = instancePath;
  const missing = params?.missingProperty ?? params?.additionalProperty;
  if (typeof missing === 'string')
    path = `${path}/${missing.replace(/~/g, '~0').replace(/\//g, '~1')}`;
  return context === 'body' ? path : `/${context}${path}`;
}

/** Connection failures of Redis (ioredis, a cluster's too) or PostgreSQL (pg, node sockets). */
function isUnreachable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: string }).code;
  if (
    code &&
    ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', '57P01'].includes(code)
  ) {
    return true;
  }
  // A Redis Cluster with slots not served (a shard down, a failover under way) answers
  // CLUSTERDOWN or TRYAGAIN; ioredis gives up after its redirections with that last error.
  return (
    err.name === 'MaxRetriesPerRequestError' ||
    err.name === 'ClusterAllFailedError' ||
    /Connection is closed|Connection terminated|connect ECONNREFUSED|CLUSTERDOWN|TRYAGAIN|Too many Cluster redirections|Failed to refresh slots cache/.test(
      err.message,
    )
  );
}
