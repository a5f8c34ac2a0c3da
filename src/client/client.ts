/**
 * `createClient`: the typed client of the producer HTTP API (DESIGN.md section 3), over the
 * global `fetch` of Node 20 and browsers, with no dependencies.
 *
 * Every call is one request sent up to `retry.maxAttempts` times: again after no answer (the
 * connection refused or dropped, `timeoutMs` passed), a 5xx, a 409 `idempotency_key_in_use` or
 * a 429, waiting as `Retry-After` says or with jittered exponential backoff. An enqueue is sent
 * again with the same `Idempotency-Key` and the same bytes, so however its answers are lost,
 * the API makes one message: the retry is the client's, and the caller needs none of its own.
 */
import { JobWaitTimeoutError, OnceqClientError, type Problem } from './errors.js';
import { checkNumber, describeKind, describeValue, timerRule } from './options.js';
import {
  backoffDelayMs,
  isRetryableStatus,
  parseRetryAfter,
  retryPolicy,
  sleep,
  type RetryOptions,
} from './retry.js';
import {
  FINAL_JOB_STATES,
  type EnqueueOptions,
  type EnqueueResult,
  type IssuedToken,
  type JobStatus,
  type WaitForJobOptions,
} from './types.js';

/** Longest wait for one answer, per attempt. */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** Pause between two status look-ups of `waitForJob`. */
export const DEFAULT_WAIT_INTERVAL_MS = 500;

/** Options of {@link createClient}. */
export interface ClientOptions {
  /** Base URL of the API, e.g. `https://onceq.example.com` (a path prefix is kept). */
  url: string;
  /** An API key (`oqk_…`), sent as `Authorization: Bearer`. */
  apiKey: string;
  /** The `fetch` to send requests with. @defaultValue `globalThis.fetch` */
  fetch?: typeof fetch;
  /** When and how often a request is sent again. @defaultValue {@link DEFAULT_RETRY} */
  retry?: RetryOptions;
  /**
   * Longest wait for one answer, body included; past it the attempt counts as unanswered and
   * is retried. Above 0, at most 2^31 − 1 (what a timer holds).
   * @defaultValue {@link DEFAULT_TIMEOUT_MS} (30 s)
   */
  timeoutMs?: number;
  /** Called before each wait for a retry, e.g. to log or count them. @defaultValue none */
  onRetry?: (event: RetryEvent) => void;
}

/** What {@link ClientOptions.onRetry} is told. */
export interface RetryEvent {
  /** The HTTP method, e.g. `POST`. */
  method: string;
  /** The API path, e.g. `/v1/jobs`. */
  path: string;
  /** The attempt that failed, from 1. */
  attempt: number;
  /** The wait before the next attempt. */
  delayMs: number;
  /** The failed attempt's status; `undefined` when it got no answer. */
  status: number | undefined;
  /** The failed attempt's problem code, or `network_error`. */
  code: string;
  /** The wait its `Retry-After` asked for, when it had one. */
  retryAfterMs: number | undefined;
}

/** Options of a call that takes only a signal. */
export interface CallOptions {
  /** Aborts the call, its retries and waits; the call then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** A client of the producer HTTP API; see {@link createClient}. */
export interface OnceqClient {
  /**
   * Enqueues job `name` with `data` (`POST /v1/jobs`), exactly once: with a token of its own
   * unless `options.token` is given, sent again with that token until answered.
   * @throws OnceqClientError `validation_failed` (with `errors`), `idempotency_key_reused`,
   *   `idempotency_key_unknown`, ..., or `network_error` once the retry budget is spent (its
   *   `token` lets a later enqueue finish the same message).
   */
  enqueue(name: string, data: unknown, options?: EnqueueOptions): Promise<EnqueueResult>;
  /**
   * Issues `count` (1 to 100) tokens bound to the API key's principal (`POST /v1/tokens`), for
   * `enqueue`'s `token`. Unused tokens count towards the principal's bound until they expire.
   * @throws OnceqClientError `token_limit_reached` (with `retryAfterMs`), `validation_failed`
   */
  issueTokens(count?: number, options?: CallOptions): Promise<IssuedToken[]>;
  /**
   * The status of a job (`GET /v1/jobs/:jobId`).
   * @throws OnceqClientError `not_found` for no such job, or another principal's
   */
  getJob<TResult = unknown>(jobId: string, options?: CallOptions): Promise<JobStatus<TResult>>;
  /**
   * Polls the job's status until it is final (`completed`, `failed` or `dead`) and returns it.
   * @throws JobWaitTimeoutError when `timeoutMs` passes first
   * @throws TypeError or RangeError (a rejection, before any request) when `timeoutMs` or
   *   `intervalMs` is not a number of ms from 0 to 2^31 − 1
   */
  waitForJob<TResult = unknown>(
    jobId: string,
    options: WaitForJobOptions,
  ): Promise<JobStatus<TResult>>;
}

/** One request of a call. */
interface ApiRequest {
  method: 'GET' | 'POST';
  path: string;
  /** The body, serialised once: every attempt sends the same bytes. */
  body?: string;
  headers?: Record<string, string>;
  /** The status of success. */
  expected: number;
  signal: AbortSignal | undefined;
  /** The Idempotency-Key, for the errors of an enqueue. */
  token?: string;
}

/** A successful answer. */
interface Answer {
  headers: Headers;
  body: unknown;
}

/** What one attempt came to: an answer, a refusal, or nothing (no answer, or too late). */
type Outcome =
  | { kind: 'answer'; answer: Answer }
  | { kind: 'refused'; error: OnceqClientError }
  | { kind: 'unanswered'; error: OnceqClientError };

/**
 * A client of the API at `options.url` with `options.apiKey`. Holds no connection and no
 * timer of its own between calls: there is nothing to close.
 *
 * The options are checked here, once, and a bad one is thrown at once (a programmer error, as
 * `fetch` and `new URL` throw theirs), with a message that names the option and the value
 * received, e.g. `createClient: timeoutMs must be a positive number of ms up to 2147483647,
 * got -1` (the API key's value is never shown, only its kind).
 * @throws TypeError when `options` is not an object; `url` is not a string, not an absolute
 *   URL, or not `http:`/`https:`; `apiKey` is not a non-empty string; `fetch` (or, without it,
 *   the global `fetch`) or `onRetry` is not a function; `retry` is not an object; or a number
 *   option is not a number
 * @throws RangeError when `timeoutMs` is not above 0 and at most 2^31 − 1 ms, or a `retry`
 *   option is unknown or out of range (see `RetryOptions`; `NaN` and `Infinity` are out of range)
 */
export function createClient(options: ClientOptions): OnceqClient {
  const where = 'createClient';
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`${where}: options must be an object, got ${describeValue(options)}`);
  }
  const base = checkUrl(options.url).href.replace(/\/+$/, '');
  if (typeof options.apiKey !== 'string' || options.apiKey === '') {
    throw new TypeError(
      `${where}: apiKey must be a non-empty string, got ${describeKind(options.apiKey)}`,
    );
  }
  const fetchImpl = options.fetch === undefined ? globalThis.fetch : options.fetch;
  if (typeof fetchImpl !== 'function') {
    throw new TypeError(
      options.fetch === undefined
        ? `${where}: fetch is required where globalThis.fetch is missing, got undefined`
        : `${where}: fetch must be a function, got ${describeValue(options.fetch)}`,
    );
  }
  if (options.onRetry !== undefined && typeof options.onRetry !== 'function') {
    throw new TypeError(
      `${where}: onRetry must be a function, got ${describeValue(options.onRetry)}`,
    );
  }
  const policy = retryPolicy(options.retry, where);
  const timeoutMs = checkNumber(
    where,
    'timeoutMs',
    options.timeoutMs === undefined ? DEFAULT_TIMEOUT_MS : options.timeoutMs,
    timerRule(true),
  );
  const authorization = `Bearer ${options.apiKey}`;

  async function send(request: ApiRequest): Promise<Answer> {
    const { method, path, signal } = request;
    for (let attempt = 1; ; attempt++) {
      if (signal?.aborted) throw signal.reason;
      const outcome = await attemptOnce(request, attempt);
      if (outcome.kind === 'answer') return outcome.answer;

      const { error } = outcome;
      const retryable = outcome.kind === 'unanswered' || isRetryableStatus(error.status ?? 0);
      const retryAfterMs = error.retryAfterMs;
      if (
        !retryable ||
        attempt >= policy.maxAttempts ||
        (retryAfterMs !== undefined && retryAfterMs > policy.maxRetryAfterMs)
      ) {
        throw outcome.kind === 'unanswered' ? unanswered(request, attempt, error) : error;
      }
      const delayMs = retryAfterMs ?? backoffDelayMs(attempt, policy);
      options.onRetry?.({
        method,
        path,
        attempt,
        delayMs,
        status: error.status,
        code: error.code,
        retryAfterMs,
      });
      await sleep(delayMs, signal);
    }
  }

  /** The final error of a request that got no answer. */
  function unanswered(request: ApiRequest, attempts: number, last: OnceqClientError) {
    return new OnceqClientError({
      code: 'network_error',
      message:
        `${request.method} ${base}${request.path} got no answer in ${attempts} ` +
        `attempt${attempts === 1 ? '' : 's'}: ${last.message}`,
      attempts,
      token: request.token,
      cause: last.cause,
    });
  }

  /** Sends the request once; never throws but for the caller's abort. */
  async function attemptOnce(request: ApiRequest, attempt: number): Promise<Outcome> {
    const controller = new AbortController();
    const unlink = linkAbort(controller, request.signal);
    const timer = setTimeout(
      () => controller.abort(timeoutReason(`no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    let status: number;
    let headers: Headers;
    let text: string;
    try {
      const res = await fetchImpl(`${base}${request.path}`, {
        method: request.method,
        headers: {
          accept: 'application/json, application/problem+json',
          authorization,
          ...(request.body === undefined ? {} : { 'content-type': 'application/json' }),
          ...request.headers,
        },
        body: request.body,
        signal: controller.signal,
        // The API never redirects: a redirect means a wrong `url`, and following one would turn
        // a POST into a GET (301, 302). It surfaces as `unexpected_response` instead.
        redirect: 'manual',
      });
      status = res.status;
      headers = res.headers;
      // Read whole while the timeout runs: a connection dropped mid-body is no answer either.
      text = await res.text();
    } catch (err) {
      if (request.signal?.aborted) throw request.signal.reason;
      const cause = controller.signal.aborted ? controller.signal.reason : err;
      return {
        kind: 'unanswered',
        error: new OnceqClientError({
          code: 'network_error',
          message: describeNetworkError(cause),
          attempts: attempt,
          token: request.token,
          cause,
        }),
      };
    } finally {
      clearTimeout(timer);
      unlink();
    }

    const body = parseJson(text);
    if (status === request.expected) {
      if (body === undefined) {
        return { kind: 'refused', error: unexpected(request, status, 'not JSON', attempt) };
      }
      return { kind: 'answer', answer: { headers, body } };
    }
    const retryAfterMs = parseRetryAfter(headers.get('retry-after'));
    if (!isProblem(body)) {
      // E.g. a proxy's 502 page (retried like any 5xx), or a 2xx the API never sends.
      const error = unexpected(request, status, 'no problem+json body', attempt, retryAfterMs);
      return { kind: 'refused', error };
    }
    return {
      kind: 'refused',
      error: new OnceqClientError({
        code: body.code,
        message: `${body.detail} (${status} ${body.code})`,
        status,
        problem: body,
        retryAfterMs,
        attempts: attempt,
        token: request.token,
      }),
    };
  }

  function unexpected(
    request: Pick<ApiRequest, 'method' | 'path' | 'token'>,
    status: number,
    what: string,
    attempts?: number,
    retryAfterMs?: number,
  ) {
    return new OnceqClientError({
      code: 'unexpected_response',
      message: `${request.method} ${base}${request.path} answered ${status} with ${what}`,
      status,
      retryAfterMs,
      attempts,
      token: request.token,
    });
  }

  async function issueTokens(count = 1, callOptions: CallOptions = {}): Promise<IssuedToken[]> {
    const { body } = await send({
      method: 'POST',
      path: '/v1/tokens',
      body: JSON.stringify({ count }),
      expected: 201,
      signal: callOptions.signal,
    });
    const tokens = (body as { tokens?: unknown }).tokens;
    if (!Array.isArray(tokens) || !tokens.every(isIssuedToken)) {
      throw unexpected({ method: 'POST', path: '/v1/tokens' }, 201, 'no token list');
    }
    return tokens.map((t) => ({ token: t.token, expiresAt: t.expiresAt }));
  }

  async function getJob<TResult>(
    jobId: string,
    callOptions: CallOptions = {},
  ): Promise<JobStatus<TResult>> {
    const path = `/v1/jobs/${encodeURIComponent(jobId)}`;
    const { body } = await send({ method: 'GET', path, expected: 200, signal: callOptions.signal });
    if (!isJobStatus(body)) {
      throw unexpected({ method: 'GET', path }, 200, 'no job status');
    }
    return body as JobStatus<TResult>;
  }

  return {
    issueTokens,
    getJob,

    async enqueue(name, data, enqueueOptions = {}) {
      const { queue, delay, priority, signal } = enqueueOptions;
      // Serialised first (data that JSON cannot carry costs no token), and once: a retry sends
      // the very bytes the API fingerprinted, so it can only be answered as the same request.
      const request = JSON.stringify({
        name,
        data,
        ...(queue === undefined ? {} : { queue }),
        ...(delay === undefined ? {} : { delay }),
        ...(priority === undefined ? {} : { priority }),
      });
      const token = enqueueOptions.token ?? (await issueTokens(1, { signal }))[0]!.token;
      const path = '/v1/jobs';
      const { headers, body } = await send({
        method: 'POST',
        path,
        body: request,
        headers: { 'idempotency-key': token },
        expected: 202,
        signal,
        token,
      });
      if (!isAccepted(body)) {
        throw unexpected({ method: 'POST', path, token }, 202, 'no accepted job');
      }
      return {
        jobId: body.jobId,
        messageId: body.messageId,
        queue: body.queue,
        name: body.name,
        state: body.state,
        replayed: headers.get('idempotent-replayed') === 'true',
        token,
      };
    },

    async waitForJob<TResult>(jobId: string, waitOptions: WaitForJobOptions) {
      const { timeoutMs: waitMs, signal } = waitOptions;
      const intervalMs =
        waitOptions.intervalMs === undefined ? DEFAULT_WAIT_INTERVAL_MS : waitOptions.intervalMs;
      checkNumber('waitForJob', 'timeoutMs', waitMs, timerRule(false));
      checkNumber('waitForJob', 'intervalMs', intervalMs, timerRule(false));
      // One signal ends everything in flight at the deadline: a look-up, its retries, a pause.
      const deadline = new AbortController();
      const unlink = linkAbort(deadline, signal);
      const timer = setTimeout(
        () => deadline.abort(timeoutReason(`job ${jobId} not final within ${waitMs} ms`)),
        waitMs,
      );
      let last: JobStatus<TResult> | undefined;
      try {
        for (;;) {
          last = await getJob<TResult>(jobId, { signal: deadline.signal });
          if (FINAL_JOB_STATES.includes(last.state)) return last;
          await sleep(intervalMs, deadline.signal);
        }
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (deadline.signal.aborted) {
          throw new JobWaitTimeoutError(jobId, waitMs, last as JobStatus | undefined, err);
        }
        throw err;
      } finally {
        clearTimeout(timer);
        unlink();
      }
    },
  };
}

/** Aborts `target` when `source` aborts, with its reason; returns the unlinking function. */
function linkAbort(target: AbortController, source: AbortSignal | undefined): () => void {
  if (!source) return () => {};
  if (source.aborted) {
    target.abort(source.reason);
    return () => {};
  }
  const onAbort = () => target.abort(source.reason);
  source.addEventListener('abort', onAbort, { once: true });
  return () => source.removeEventListener('abort', onAbort);
}

/** The reason of an abort by a timer: a `TimeoutError`, as `AbortSignal.timeout` gives. */
function timeoutReason(message: string): Error {
  return new DOMException(message, 'TimeoutError');
}

/** `url` as a URL the client can send to; a `TypeError` naming it if it is none. */
function checkUrl(url: unknown): URL {
  const fail = (why: string) =>
    new TypeError(`createClient: url must be ${why}, got ${describeValue(url)}`);
  // A URL object is taken too, as `fetch` takes one.
  if (typeof url !== 'string' && !(url instanceof URL)) throw fail('a string');
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw fail('an absolute URL');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw fail('an http: or https: URL');
  }
  return parsed;
}

/** A short line for a failed fetch: Node puts the socket's error code in `cause`. */
function describeNetworkError(err: unknown): string {
  const cause = (err as { cause?: { code?: unknown; message?: unknown } } | null)?.cause;
  if (typeof cause?.code === 'string') return `${(err as Error).message} (${cause.code})`;
  if (typeof cause?.message === 'string') return `${(err as Error).message} (${cause.message})`;
  return err instanceof Error ? err.message : String(err);
}

function parseJson(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isProblem(value: unknown): value is Problem {
  return isObject(value) && typeof value.code === 'string' && typeof value.status === 'number';
}

function isIssuedToken(value: unknown): value is IssuedToken {
  return isObject(value) && typeof value.token === 'string' && typeof value.expiresAt === 'string';
}

function isAccepted(value: unknown): value is Omit<EnqueueResult, 'replayed' | 'token'> {
  return (
    isObject(value) &&
    typeof value.jobId === 'string' &&
    typeof value.messageId === 'string' &&
    typeof value.queue === 'string' &&
    typeof value.name === 'string' &&
    value.state === 'queued'
  );
}

function isJobStatus(value: unknown): value is JobStatus {
  return (
    isObject(value) &&
    typeof value.jobId === 'string' &&
    typeof value.state === 'string' &&
    typeof value.messageId === 'string'
  );
}
