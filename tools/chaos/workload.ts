/**
 * The campaign's workload: Jepsen-style clients driving the ledger through the real HTTP API
 * (opens, renames with expected versions, transfers, poison messages), at a fixed overall rate.
 * Clients behave as careful producers do: a request without a definite answer is retried with
 * the same Idempotency-Key until one comes; a share of answered requests is sent again on
 * purpose (the replay must match), a share of accepted messages is enqueued a second time
 * straight into BullMQ under another job id (a duplicate enqueue), and a few jobs with data their
 * schema refuses are put on the queue directly (raw poison). Every request and answer, and every
 * direct enqueue, goes to the history.
 */
import { Agent, request as httpRequest } from 'node:http';
import type { Queue } from 'bullmq';
import { sql } from 'kysely';
import type { Db } from '../../src/db/create-db.js';
import { encodeSnowflake, MAX_WORKER_ID, MAX_SEQUENCE } from '../../src/core/snowflake.js';
import { generateToken } from '../../src/core/token.js';
import { isDefinite } from './checker.js';
import type {
  ClientOp,
  DuplicateEvent,
  HistoryWriter,
  RawPoisonEvent,
  RequestEvent,
} from './history.js';
import { POISON_JOB_NAME } from './poison-job.js';
import type { Random } from './schedule.js';
import { sleep } from '../support/child.js';
import { withTimeout } from '../../src/core/with-timeout.js';
import { retryAfterMs } from '../../src/core/retry.js';

/** Sends of one request without a definite answer before the client gives up on it. */
const MAX_REQUEST_ATTEMPTS = 12;

/** Shares of the workload's choices; each is a probability. */
export interface WorkloadShares {
  /** An answered request is sent again with the same token. @defaultValue 0.15 */
  replay: number;
  /** An accepted message gets a second BullMQ job. @defaultValue 0.1 */
  duplicate: number;
  /** An operation is a poison message through the API. @defaultValue 0.015 */
  poison: number;
  /** An operation is a raw poison job on the queue. @defaultValue 0.01 */
  rawPoison: number;
}

export const DEFAULT_SHARES: WorkloadShares = Object.freeze({
  replay: 0.15,
  duplicate: 0.1,
  poison: 0.015,
  rawPoison: 0.01,
});

/** Options of {@link Workload}. */
export interface WorkloadOptions {
  /** The API's port on 127.0.0.1. */
  port: number;
  apiKey: string;
  /** Operations per second, all clients together. */
  rate: number;
  /** Concurrent clients. @defaultValue 8 */
  clients?: number;
  random: Random;
  history: HistoryWriter;
  /** The campaign's own connection, for reading account versions (not the system under test). */
  db: Db;
  /** The ledger queue on the campaign's backend, for duplicate and raw poison jobs. */
  queue: Queue;
  /** Attempts of the jobs the workload adds directly. */
  maxAttempts: number;
  shares?: Partial<WorkloadShares>;
  /** Per-request timeout; past it the answer is "none". @defaultValue 5 s */
  requestTimeoutMs?: number;
}

/** Counters for the progress line and the report. */
export interface WorkloadStats {
  ops: number;
  requests: number;
  ok: number;
  fail: number;
  none: number;
  accepted: number;
  replays: number;
  duplicates: number;
  rawPoison: number;
  inFlight: number;
  /**
   * 503 answers waited out as their Retry-After said before the request was sent again (the
   * API could not take requests: Redis unreachable, no message ids to mint).
   */
  waited503: number;
}

interface Answer {
  status: number | null;
  body: unknown;
  replayed: boolean;
  /** The `Retry-After` header as sent. */
  retryAfter?: string;
  error?: string;
}

type JobRequest = { name: string; data: unknown };

/** The clients; `start()` then `stop()`. */
export class Workload {
  readonly stats: WorkloadStats = {
    ops: 0,
    requests: 0,
    ok: 0,
    fail: 0,
    none: 0,
    accepted: 0,
    replays: 0,
    duplicates: 0,
    rawPoison: 0,
    inFlight: 0,
    waited503: 0,
  };
  /** Message ids answered 2xx (the drain waits for these). */
  readonly acceptedIds = new Set<string>();
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 64 });
  private readonly shares: WorkloadShares;
  private readonly accounts: string[] = [];
  private tokens: string[] = [];
  private refill: Promise<Answer> | undefined;
  private stopping = false;
  private loops: Promise<void>[] = [];
  private nextSlot = 0;
  private rawSequence = 0;
  private names = 0;

  constructor(private readonly options: WorkloadOptions) {
    this.shares = { ...DEFAULT_SHARES, ...options.shares };
  }

  start(): void {
    this.nextSlot = Date.now();
    for (let c = 0; c < (this.options.clients ?? 8); c++) this.loops.push(this.client(c));
  }

  /** Stops issuing operations; resolves once every client finished its current one. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
    this.agent.destroy();
  }

  private async client(id: number): Promise<void> {
    const { random } = this.options;
    while (!this.stopping) {
      // One global pace: the slot of each operation is 1/rate after the previous one.
      const now = Date.now();
      const slot = Math.max(now, this.nextSlot);
      this.nextSlot = slot + 1_000 / this.options.rate;
      if (slot > now) await sleep(slot - now);
      if (this.stopping) break;
      this.stats.ops++;
      try {
        const roll = random.next();
        if (roll < this.shares.rawPoison) await this.rawPoison();
        else if (roll < this.shares.rawPoison + this.shares.poison)
          await this.enqueue(id, 'poison', {
            name: POISON_JOB_NAME,
            data: { note: `poison from client ${id}` },
          });
        else await this.ledgerOp(id);
      } catch (err) {
        // A client bug must not end the campaign silently: note it and go on.
        this.stats.fail++;
        process.stderr.write(`chaos client ${id}: ${(err as Error).stack ?? String(err)}\n`);
      }
    }
  }

  private async ledgerOp(client: number): Promise<void> {
    const { random } = this.options;
    const roll = random.next();
    if (this.accounts.length < 4 || roll < 0.15) {
      await this.enqueue(client, 'open', {
        name: 'account.open',
        data: { owner: `owner-${++this.names}`, openingBalance: random.int(100, 1_000) },
      });
    } else if (roll < 0.75) {
      const fromId = this.pickAccount();
      let toId = this.pickAccount();
      if (toId === fromId) toId = this.pickAccount();
      await this.enqueue(client, 'transfer', {
        name: 'ledger.transfer',
        data: { fromId, toId, amount: random.int(1, 60) },
      });
    } else {
      const accountId = this.pickAccount();
      // What a client would do: read the version, then rename expecting it. Reads race the
      // workers; a stale or wrong guess is a recorded conflict, which is fine.
      const row = await sql<{ version: number }>`
        select version from accounts where id = ${accountId}`.execute(this.options.db);
      const version = row.rows[0]?.version ?? 0;
      const expectedVersion = random.chance(0.2) ? version + 1 : version;
      await this.enqueue(client, 'rename', {
        name: 'account.rename',
        data: { accountId, owner: `owner-${++this.names}`, expectedVersion },
      });
    }
  }

  /** Recent accounts more often: they see the most concurrent updates. */
  private pickAccount(): string {
    const { random } = this.options;
    const n = this.accounts.length;
    const index = random.chance(0.5)
      ? n - 1 - random.int(0, Math.min(n, 10) - 1)
      : random.int(0, n - 1);
    return this.accounts[index]!;
  }

  /** One message: send until a definite answer, maybe replay it, maybe duplicate the job. */
  private async enqueue(client: number, op: ClientOp, req: JobRequest): Promise<void> {
    const token = await this.takeToken(client);
    if (!token) return;
    let answer: Answer | undefined;
    for (let attempt = 0; attempt < MAX_REQUEST_ATTEMPTS; attempt++) {
      answer = await this.send(client, op, token, req, attempt > 0);
      if (isDefinite(answer.status)) break;
      if (attempt < MAX_REQUEST_ATTEMPTS - 1) await this.backOff(answer, attempt);
    }
    if (!answer || answer.status === null || answer.status < 200 || answer.status >= 300) return;
    const body = answer.body as { messageId?: string };
    const messageId = body.messageId;
    if (typeof messageId !== 'string') return;
    if (!this.acceptedIds.has(messageId)) this.stats.accepted++;
    this.acceptedIds.add(messageId);
    if (op === 'open') this.accounts.push(messageId);
    if (this.options.random.chance(this.shares.replay)) {
      this.stats.replays++;
      await this.send(client, op, token, req, true);
    }
    if (this.options.random.chance(this.shares.duplicate)) {
      await this.duplicate(messageId, token, req);
    }
  }

  /**
   * Waits before a request is sent again: as Retry-After says when the answer has one (clamped,
   * so a campaign never stalls on one answer), else with a capped exponential backoff; jittered
   * so the clients do not come back in step.
   */
  private async backOff(answer: Answer, attempt: number, counted = true): Promise<void> {
    const waitMs =
      answer.retryAfter !== undefined
        ? retryAfterMs(answer.retryAfter)
        : Math.min(100 * 2 ** attempt, 2_000);
    if (answer.status === 503 && counted) this.stats.waited503++;
    await sleep(waitMs + this.options.random.int(0, 100));
  }

  private async takeToken(client: number): Promise<string | undefined> {
    for (let attempt = 0; attempt < 20 && !this.stopping; attempt++) {
      const token = this.tokens.pop();
      if (token) return token;
      // One refill at a time; every client waiting on it backs off by its answer, and the one
      // that sent it counts it.
      const sent = this.refill === undefined;
      this.refill ??= this.fetchTokens(client).finally(() => (this.refill = undefined));
      const answer = await this.refill;
      if (this.tokens.length === 0) await this.backOff(answer, attempt, sent);
    }
    return undefined;
  }

  private async fetchTokens(client: number): Promise<Answer> {
    const invokedAt = this.options.history.now();
    const answer = await this.http('/v1/tokens', {}, { count: 50 });
    this.record({
      invokedAt,
      client,
      op: 'tokens',
      request: { count: 50 },
      retry: false,
      answer,
    });
    const list = (answer.body as { tokens?: { token: string }[] } | null)?.tokens;
    if (answer.status === 201 && Array.isArray(list)) this.tokens.push(...list.map((t) => t.token));
    return answer;
  }

  private async send(
    client: number,
    op: ClientOp,
    token: string,
    req: JobRequest,
    retry: boolean,
  ): Promise<Answer> {
    const invokedAt = this.options.history.now();
    const answer = await this.http('/v1/jobs', { 'idempotency-key': token }, req);
    this.record({ invokedAt, client, op, token, request: req, retry, answer });
    // A token Redis forgot before its first use is gone for good: the client takes another.
    return answer;
  }

  private record(r: {
    invokedAt: number;
    client: number;
    op: ClientOp;
    token?: string;
    request: RequestEvent['request'];
    retry: boolean;
    answer: Answer;
  }): void {
    const { answer } = r;
    this.stats.requests++;
    if (answer.status === null) this.stats.none++;
    else if (answer.status >= 200 && answer.status < 300) this.stats.ok++;
    else this.stats.fail++;
    this.options.history.write<RequestEvent>({
      type: 'request',
      invokedAt: r.invokedAt,
      client: r.client,
      op: r.op,
      token: r.token,
      request: r.request,
      retry: r.retry,
      status: answer.status,
      body: answer.body,
      replayed: answer.replayed || undefined,
      error: answer.error,
    });
  }

  /** Same envelope, another job id: what a duplicate enqueue or a replay looks like to a worker. */
  private async duplicate(messageId: string, token: string, req: JobRequest): Promise<void> {
    const jobId = `dup-${messageId}-${this.options.random.int(0, 1e9)}`;
    let error: string | undefined;
    try {
      await withTimeout(
        this.options.queue.add(
          req.name,
          { messageId, token, data: req.data },
          {
            jobId,
            attempts: this.options.maxAttempts,
            backoff: { type: 'exponential', delay: 1_000, jitter: 0.5 },
            delay: this.options.random.int(0, 3_000),
            removeOnComplete: { age: 86_400, count: 100_000 },
            removeOnFail: false,
          },
        ),
        3_000,
      );
      this.stats.duplicates++;
    } catch (err) {
      error = (err as Error).message;
    }
    this.options.history.write<DuplicateEvent>({
      type: 'duplicate',
      messageId,
      jobId,
      name: req.name,
      ok: error === undefined,
      error,
    });
  }

  /**
   * A job no API would accept: a transfer whose data breaks its schema, under a message id no
   * process can mint (worker id 1023 is outside the leased range). It must fail or be
   * dead-lettered as invalid, never applied.
   */
  private async rawPoison(): Promise<void> {
    const messageId = encodeSnowflake({
      timestampMs: Date.now(),
      workerId: MAX_WORKER_ID,
      sequence: this.rawSequence++ % (MAX_SEQUENCE + 1),
    });
    const jobId = `poison-${messageId}`;
    const data = { fromId: '1', toId: '2', amount: -5 };
    let error: string | undefined;
    try {
      await withTimeout(
        this.options.queue.add(
          'ledger.transfer',
          { messageId, token: generateToken(), data },
          { jobId, attempts: this.options.maxAttempts, removeOnFail: false },
        ),
        3_000,
      );
      this.stats.rawPoison++;
    } catch (err) {
      error = (err as Error).message;
    }
    this.options.history.write<RawPoisonEvent>({
      type: 'poison-raw',
      messageId,
      jobId,
      name: 'ledger.transfer',
      data,
      ok: error === undefined,
      error,
    });
  }

  /** One POST; never throws: no answer is an answer (`status: null`). */
  private http(path: string, headers: Record<string, string>, body: unknown): Promise<Answer> {
    const payload = JSON.stringify(body);
    const timeoutMs = this.options.requestTimeoutMs ?? 5_000;
    this.stats.inFlight++;
    return new Promise<Answer>((resolve) => {
      let settled = false;
      const done = (a: Answer) => {
        if (settled) return;
        settled = true;
        this.stats.inFlight--;
        resolve(a);
      };
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port: this.options.port,
          path,
          method: 'POST',
          agent: this.agent,
          headers: {
            ...headers,
            authorization: `Bearer ${this.options.apiKey}`,
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(payload),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) =>
            done({ status: null, body: null, replayed: false, error: err.message }),
          );
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            try {
              parsed = text ? JSON.parse(text) : null;
            } catch {
              // Not JSON: keep the text.
            }
            const retryAfter = res.headers['retry-after'];
            done({
              status: res.statusCode ?? null,
              body: parsed,
              replayed: res.headers['idempotent-replayed'] === 'true',
              retryAfter,
            });
          });
        },
      );
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
      req.on('error', (err) =>
        done({
          status: null,
          body: null,
          replayed: false,
          error: (err as NodeJS.ErrnoException).code ?? err.message,
        }),
      );
      req.end(payload);
    });
  }
}
