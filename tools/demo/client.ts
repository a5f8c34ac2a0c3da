/**
 * The demo's client of the producer HTTP API. It behaves as a careful producer does: an answer
 * that says "not now" (503 unavailable, 429 rate limited, 409 still in flight) is waited out as
 * its `Retry-After` says, within bounds, and the same request (same Idempotency-Key) is sent
 * again, for a bounded time. A request that got no answer at all (the connection refused or
 * dropped: the API restarting) is sent again the same way after a short backoff, since the same
 * Idempotency-Key can never make a second message. Any other unexpected answer is an error,
 * since the demo is not a load test.
 */
import { ErrorCode, OnceqError } from '../../src/core/errors.js';
import { isRetryableStatus, retryAfterMs } from '../../src/core/retry.js';

/** How long one request is sent again while the API keeps asking to wait. */
export const DEFAULT_RETRY_BUDGET_MS = 90_000;

/** Options of {@link createDemoClient}. */
export interface DemoClientOptions {
  /** Bound on the time one request spends waiting out answers. @defaultValue 90 s */
  retryBudgetMs?: number;
  /** Called before each wait. */
  onWait?: (status: number, waitMs: number, path: string) => void;
}

/** What {@link createDemoClient} returns. */
export interface DemoClient {
  /** An unused token (fetched a hundred at a time). */
  token(): Promise<string>;
  /** `POST /v1/jobs`: the answer's ids, and whether it was a replay. */
  enqueue(
    token: string,
    name: string,
    data: unknown,
  ): Promise<{ messageId: string; jobId: string; replayed: boolean }>;
  /** Answers waited out, by status. */
  readonly waited: Readonly<Record<number, number>>;
  /** Requests that got no answer (connection refused or dropped) and were sent again. */
  readonly unanswered: number;
}

/** Backoff after a request that got no answer: doubling from 100 ms, at most 2 s. */
function unansweredBackoffMs(attempt: number): number {
  return Math.min(100 * 2 ** attempt, 2_000);
}

/** A client of the API at `url` (no trailing slash) with an API key. */
export function createDemoClient(
  url: string,
  key: string,
  options: DemoClientOptions = {},
): DemoClient {
  const budgetMs = options.retryBudgetMs ?? DEFAULT_RETRY_BUDGET_MS;
  const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
  const waited: Record<number, number> = {};
  let tokens: string[] = [];
  let refill: Promise<void> | undefined;
  let unanswered = 0;

  async function call(path: string, init: RequestInit, expected: number) {
    const deadline = Date.now() + budgetMs;
    let dropped = 0;
    for (;;) {
      let res: Response;
      try {
        res = await fetch(`${url}${path}`, { ...init, headers: { ...headers, ...init.headers } });
      } catch (err) {
        const waitMs = unansweredBackoffMs(dropped++);
        if (Date.now() + waitMs > deadline) {
          const cause =
            (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
          throw new OnceqError(
            ErrorCode.Unavailable,
            `${init.method} ${url}${path} got no answer (${cause}) for ` +
              `${Math.round(budgetMs / 1_000)} s`,
            { cause: err },
          );
        }
        unanswered++;
        await new Promise((r) => setTimeout(r, waitMs));
        continue;
      }
      const body = (await res.json().catch(() => ({}))) as Record<string, unknown>;
      if (res.status !== expected && isRetryableStatus(res.status)) {
        const waitMs = retryAfterMs(res.headers.get('retry-after'));
        if (Date.now() + waitMs > deadline) {
          // The API kept refusing for the whole budget: one line for the operator, no stack.
          throw new OnceqError(
            ErrorCode.Unavailable,
            `${init.method} ${url}${path} still answered ${res.status} after ` +
              `${Math.round(budgetMs / 1_000)} s of waiting as its Retry-After said`,
          );
        }
        waited[res.status] = (waited[res.status] ?? 0) + 1;
        options.onWait?.(res.status, waitMs, path);
        await new Promise((r) => setTimeout(r, waitMs));
        continue;
      }
      if (res.status !== expected) {
        throw new Error(`${init.method} ${path}: ${res.status} ${JSON.stringify(body)}`);
      }
      return { body, replayed: res.headers.get('idempotent-replayed') === 'true' };
    }
  }

  return {
    waited,
    get unanswered() {
      return unanswered;
    },
    async token(): Promise<string> {
      while (tokens.length === 0) {
        refill ??= call('/v1/tokens', { method: 'POST', body: '{"count":100}' }, 201).then(
          ({ body }) => {
            tokens = (body.tokens as { token: string }[]).map((t) => t.token);
            refill = undefined;
          },
          (err) => {
            refill = undefined;
            throw err;
          },
        );
        await refill;
      }
      return tokens.pop()!;
    },
    async enqueue(token, name, data) {
      const { body, replayed } = await call(
        '/v1/jobs',
        {
          method: 'POST',
          headers: { 'idempotency-key': token },
          body: JSON.stringify({ name, data }),
        },
        202,
      );
      return { messageId: String(body.messageId), jobId: String(body.jobId), replayed };
    },
  };
}
