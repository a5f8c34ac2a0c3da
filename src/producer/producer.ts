/**
 * The producer library: validate, mint the messageId, bind the token to the request, record the
 * accepted message in PostgreSQL, then add the BullMQ job. Every step is idempotent, so a caller
 * that retries `enqueue` with the same token after any failure gets the same message and one job.
 *
 * PostgreSQL's acceptance record is the truth, Redis the fast path (DESIGN.md sections 2 and 3).
 * Redis can go back in time (a restored snapshot, a promoted async replica) and then disagree
 * with the record: it binds a retry to a fresh id, or has lost the request's fingerprint. The
 * record then decides the answer, and Redis is rebound to it (`rebind-1.lua`). A replay answers
 * from the record and brings the job back only for a message that is neither applied nor
 * dead-lettered, so a replay never runs a message again behind the dead-letter queue's back.
 */
import type { Queue } from 'bullmq';
import type { Db } from '../db/create-db.js';
import {
  createAcceptanceWriter,
  findAcceptedByToken,
  findMessageFate,
} from '../db/accepted-messages.repository.js';
import {
  EnqueueOptionsError,
  ErrorCode,
  IdGeneratorStoppedError,
  OnceqError,
} from '../core/errors.js';
import { assertEnqueueOptions } from '../core/enqueue-options.js';
import { requestFingerprint } from '../core/fingerprint.js';
import { assertJsonbStorable } from '../core/jsonb.js';
import { jobIdFor, type MessageEnvelope } from '../core/message.js';
import { DEFAULT_DEDUPE_WINDOW_MS, DEFAULT_TOKEN_TTL_MS } from '../core/defaults.js';
import { messageJobOptions } from '../queues/message-job-options.js';
import { createQueueCache } from '../queues/queue-cache.js';
import type { IssuedToken, TokenStore } from '../redis/token-store.js';
import type { Backend } from '../queues/backend.js';
import type { JobRegistry } from '../jobs/registry.js';
import type { JobDefinition } from '../jobs/define-job.js';
import { LOCAL_PRINCIPAL } from '../core/principals.js';
import { SpanKind } from '@opentelemetry/api';
import {
  ATTR,
  inSpan,
  messagingAttributes,
  messagingSpanName,
  traceField,
} from '../telemetry/tracing.js';

/** Principal of messages enqueued by the library without an API key (reserved: core/principals.ts). */
export { LOCAL_PRINCIPAL };

/** Options of {@link createProducer}. */
export interface ProducerOptions {
  db: Db;
  /** Where the queues and tokens live (Redis or PostgreSQL); not closed by the producer. */
  backend: Backend;
  registry: JobRegistry;
  /** Mints message ids (the worker-id-leased snowflake generator). */
  ids: { nextId(): string };
  /** Principal of calls that do not name one. @defaultValue `local` */
  principal?: string;
  /** TTL of tokens the producer issues, and of accepted-token state. @defaultValue 24 h */
  tokenTtlMs?: number;
  /**
   * Most outstanding (issued, neither used nor expired) tokens per principal; issuing past it
   * throws `TokenLimitError` (the API's 429). `0` turns the bound off.
   * @defaultValue 10,000 (`DEFAULT_MAX_OUTSTANDING_TOKENS`, core/limits.ts)
   */
  maxOutstandingTokens?: number;
  /** Deliveries before a job fails for good. @defaultValue 10 */
  maxAttempts?: number;
  /** Base of BullMQ's exponential backoff between attempts. @defaultValue 1000 ms */
  backoffMs?: number;
  /**
   * How long a first use of a token counts as in flight at most: while it is being answered,
   * the same request again fails with `idempotency_key_in_use` instead of replaying an answer
   * that does not exist yet. A request that dies mid-way holds its token this long, after
   * which a retry takes over. @defaultValue {@link DEFAULT_IN_FLIGHT_MS}
   */
  inFlightMs?: number;
  /**
   * The workers' dedupe window (`ONCEQ_DEDUPE_WINDOW`). A message first delivered after it would
   * be dead-lettered as `expired` unrun, so a `delay` that long is refused. @defaultValue 7 d
   */
  dedupeWindowMs?: number;
}

/** Bad enqueue options; defined in core, re-exported where callers of `enqueue` look. */
export { EnqueueOptionsError };

/** Default of {@link ProducerOptions.inFlightMs}: far above any healthy enqueue. */
export const DEFAULT_IN_FLIGHT_MS = 10_000;

/** Options of one `enqueue`. */
export interface EnqueueOptions {
  /**
   * The idempotency token. Retrying `enqueue` with the same token and request never makes a
   * second message. Without one, the producer issues a fresh token (and a retry is a new message).
   */
  token?: string;
  /** Queue; defaults to the job's. */
  queue?: string;
  /** Delay before the first delivery, ms. */
  delay?: number;
  /** BullMQ priority (1 is highest; 0 or absent means none). */
  priority?: number;
  /**
   * The caller, for the API's per-request principals: the token must have been issued to it.
   * @defaultValue the producer's `principal`
   */
  principal?: string;
}

/** Options of {@link Producer.issueTokens}. */
export interface IssueTokensOptions {
  /** @defaultValue the producer's `principal` */
  principal?: string;
  /** 1 to 100. @defaultValue 1 */
  count?: number;
}

/** What `enqueue` answers. */
export interface EnqueueResult {
  /** The BullMQ job id. */
  jobId: string;
  /** The message's snowflake id, a decimal string. */
  messageId: string;
  /** The queue the message went to. */
  queue: string;
  /** The job's name. */
  name: string;
  /** The idempotency token the message was accepted with: retry with it, never a new one. */
  token: string;
  /** Always `queued` at acceptance. */
  state: 'queued';
  /** True when this was a replay of an earlier acceptance with the same token and request. */
  replayed: boolean;
}

/**
 * A producer; `close()` closes its BullMQ queues and its own token connection (not the
 * connections it was given).
 */
export interface Producer {
  enqueue(name: string, data: unknown, options?: EnqueueOptions): Promise<EnqueueResult>;
  /** Issues a token bound to this producer's principal. */
  issueToken(): Promise<string>;
  /** Issues `count` tokens bound to a principal, with the producer's token TTL. */
  issueTokens(options?: IssueTokensOptions): Promise<IssuedToken[]>;
  /**
   * The BullMQ queue object for a BullMQ queue name (created once): a queue's own name, a
   * partition's (`ledger#2`), or a dead-letter queue's.
   */
  queue(name: string): Queue;
  /**
   * The BullMQ queue that holds the job of `messageId` on the logical `queue`: the queue itself,
   * or for a partitioned queue the partition the messageId routes to.
   */
  queueFor(queue: string, messageId: string): Queue;
  readonly tokens: TokenStore;
  close(): Promise<void>;
}

/** Creates a producer. */
export function createProducer(options: ProducerOptions): Producer {
  const principal = options.principal ?? LOCAL_PRINCIPAL;
  const tokenTtlMs = options.tokenTtlMs ?? DEFAULT_TOKEN_TTL_MS;
  const inFlightMs = options.inFlightMs ?? DEFAULT_IN_FLIGHT_MS;
  // In Redis mode the token store has a connection of its own with auto-pipelining: under load
  // the accepts and settles of many requests leave in one write per tick instead of one each.
  const tokenStore = options.backend.openTokenStore({
    db: options.db,
    maxOutstanding: options.maxOutstandingTokens,
  });
  const { tokens } = tokenStore;
  const queues = createQueueCache(options.backend, options.registry.partitions());
  const acceptance = createAcceptanceWriter(options.db);
  const queue = (name: string): Queue => queues.get(name);
  const queueFor = (name: string, messageId: string): Queue => queues.route(name, messageId);

  async function issueToken(): Promise<string> {
    const [issued] = await tokens.issue(principal, { ttlMs: tokenTtlMs });
    return issued!.token;
  }

  async function issueTokens(opts: IssueTokensOptions = {}): Promise<IssuedToken[]> {
    return tokens.issue(opts.principal ?? principal, { ttlMs: tokenTtlMs, count: opts.count });
  }

  /**
   * A `send <queue>` PRODUCER span around the enqueue (telemetry/tracing.ts): the job's envelope
   * carries its context to the delivery.
   */
  function enqueue(name: string, data: unknown, opts: EnqueueOptions = {}): Promise<EnqueueResult> {
    const queue = opts.queue ?? options.registry.find(name)?.queue;
    return inSpan(
      messagingSpanName('send', queue),
      {
        kind: SpanKind.PRODUCER,
        attributes: () => messagingAttributes('send', queue, { [ATTR.jobName]: name }),
      },
      async (span) => {
        const result = await enqueueMessage(name, data, opts);
        span.setAttributes({
          [ATTR.messageId]: result.messageId,
          [ATTR.replayed]: result.replayed,
        });
        return result;
      },
    );
  }

  async function enqueueMessage(
    name: string,
    data: unknown,
    opts: EnqueueOptions,
  ): Promise<EnqueueResult> {
    const job = options.registry.get(name);
    options.registry.validate(name, data);
    assertJsonbStorable(data, `invalid data for job ${name}`);
    const queueName = opts.queue ?? job.queue;
    checkOptions(job, opts, options.dedupeWindowMs ?? DEFAULT_DEDUPE_WINDOW_MS);
    const caller = opts.principal ?? principal;
    const token = opts.token ?? (await tokens.issue(caller, { ttlMs: tokenTtlMs }))[0]!.token;
    const fingerprint = requestFingerprint({
      name,
      data,
      queue: queueName,
      delay: opts.delay,
      priority: opts.priority,
    });

    let messageId!: string;
    let replayed!: boolean;
    // Whether the acceptance is known to be in PostgreSQL already (read back from there).
    let recorded = false;
    // The message id Redis holds for the token, as far as this request knows; `undefined` when
    // Redis has none or was not asked.
    let redisMid: string | undefined;
    // Redis says this message is done, its effect committed: a replay needs no PostgreSQL look-up
    // to know that it must not bring the job back.
    let redisDone = false;
    /**
     * Redis went back in time and disagrees with PostgreSQL's record of the token: write the
     * record over it, so that the worker's claim and later replays meet the recorded message.
     * Best effort: a failure leaves the worker's claim to do the same when it meets the mismatch.
     */
    async function rebindToken(from: string | undefined, recordedId: string): Promise<void> {
      const rebound = await tokens
        .rebind(token, {
          from,
          messageId: recordedId,
          principal: caller,
          fingerprint,
          ttlMs: tokenTtlMs,
        })
        .catch(() => undefined);
      if (rebound?.status === 'rebound') redisMid = recordedId;
    }
    /** The message id PostgreSQL recorded for this token and request, else `missing()`. */
    async function recordedMessageId(missing: () => Error): Promise<string> {
      const row = await findAcceptedByToken(options.db, caller, token);
      if (!row) throw missing();
      if (row.fingerprint !== fingerprint) throw reusedError();
      return row.message_id;
    }
    let candidateId: string | undefined;
    try {
      candidateId = options.ids.nextId();
    } catch (err) {
      // No id can be minted now (the worker-id lease is being replaced). A replay needs none:
      // it is answered from PostgreSQL; anything else gets the error (503, retry later).
      if (!(err instanceof IdGeneratorStoppedError)) throw err;
      candidateId = undefined;
      messageId = await recordedMessageId(() => err);
      recorded = true;
      replayed = true;
    }
    const accepted =
      candidateId === undefined
        ? undefined
        : await tokens.accept(token, {
            principal: caller,
            fingerprint,
            messageId: candidateId,
            ttlMs: tokenTtlMs,
            inFlightMs,
          });
    switch (accepted?.status) {
      case undefined:
        break;
      case 'accepted':
        messageId = accepted.messageId;
        redisMid = messageId;
        replayed = false;
        break;
      case 'in_use':
        // The first request's window is still open: it is in flight, or it succeeded (a success
        // leaves the window to run out, see the end of this function). PostgreSQL tells the two
        // apart: once the first acceptance is committed, this request is a replay of it.
        messageId = await recordedMessageId(
          () =>
            new OnceqError(
              ErrorCode.TokenInUse,
              'a request with this idempotency token is still in flight; retry shortly',
              { details: { pendingUntil: accepted.pendingUntil } },
            ),
        );
        recorded = true;
        replayed = true;
        break;
      case 'replay':
        messageId = accepted.messageId;
        redisMid = messageId;
        redisDone = accepted.state === 'done';
        replayed = true;
        break;
      case 'reused': {
        // As far as Redis remembers. It may have gone back in time: a worker claimed a restored
        // `issued` copy of the token (which has no fingerprint), or a retry of another request
        // was accepted there. PostgreSQL's record decides; a genuine replay is answered from it.
        const row = await findAcceptedByToken(options.db, caller, token);
        if (!row || row.fingerprint !== fingerprint) throw reusedError();
        messageId = row.message_id;
        recorded = true;
        replayed = true;
        await rebindToken(accepted.storedMessageId, messageId);
        break;
      }
      case 'unknown':
        // Redis may have lost the token after it was accepted: PostgreSQL remembers.
        messageId = await recordedMessageId(
          () =>
            new OnceqError(
              ErrorCode.TokenUnknown,
              'the idempotency token was never issued, has expired, or belongs to another principal',
            ),
        );
        recorded = true;
        replayed = true;
        break;
    }

    let answered = false;
    try {
      if (!recorded) {
        const row = await acceptance.record({
          messageId,
          principal: caller,
          token,
          fingerprint,
          queue: queueName,
          jobName: name,
          data,
          jobId: jobIdFor(messageId),
          options: { delay: opts.delay, priority: opts.priority },
        });
        // The first recorded acceptance is the truth, even if this call minted another id. Redis
        // said first use (or replay) but PostgreSQL holds another request for the token: Redis
        // went back in time (a restored snapshot), and this request reuses the token. What Redis
        // now holds is wrong and would refuse the first request's own replays: drop it, so that
        // they are answered from PostgreSQL.
        if (row.fingerprint !== fingerprint) {
          await tokens.settle(token, { messageId, forget: true }).catch(() => undefined);
          throw reusedError();
        }
        if (row.message_id !== messageId) {
          // The same request, recorded before under another id: Redis went back in time and
          // took this retry for a first use under a fresh id. The record is the answer, and
          // Redis is rebound to it; else the worker would meet a token bound to the fresh id.
          replayed = true;
          redisDone = false;
          if (redisMid !== undefined) await rebindToken(redisMid, row.message_id);
          messageId = row.message_id;
        }
      }
      // A first use adds the job. A replay brings it back only for a message that is neither
      // applied nor dead-lettered: its job may be gone (removed after completion, lost with
      // Redis), and re-adding it for an applied message costs a delivery, for a dead-lettered
      // one a fresh attempt budget around the dead-letter queue and its operator. For an open
      // message the add is a no-op while the job exists (same job id).
      if (
        !replayed ||
        (!(redisDone && redisMid === messageId) &&
          (await findMessageFate(options.db, messageId)) === 'open')
      ) {
        const envelope: MessageEnvelope = replayed
          ? { messageId, token, data, readded: true, ...traceField() }
          : { messageId, token, data, ...traceField() };
        // Its partition, when the queue has several: a duplicate's add meets the same job id.
        await queueFor(queueName, messageId).add(
          name,
          envelope,
          messageJobOptions(messageId, {
            maxAttempts: options.maxAttempts,
            backoffMs: options.backoffMs,
            delay: opts.delay,
            priority: opts.priority,
          }),
        );
      }
      answered = true;
    } finally {
      // A first use that failed closes its in-flight window, so a retry takes over at once
      // instead of getting 409 until the window runs out. One that succeeded leaves the window
      // open: a replay inside it finds the committed acceptance in PostgreSQL (the 'in_use' case
      // above), and every successful enqueue, the common case, saves a Redis script. Not
      // awaited: the command is queued on the token connection before the answer leaves, so a
      // retry through it runs after; a failure to settle only leaves the window to run out.
      if (accepted?.status === 'accepted' && !answered && redisMid !== undefined) {
        tokens.settle(token, { messageId: redisMid }).catch(() => undefined);
      }
    }
    return {
      jobId: jobIdFor(messageId),
      messageId,
      queue: queueName,
      name,
      token,
      state: 'queued',
      replayed,
    };
  }

  return {
    enqueue,
    issueToken,
    issueTokens,
    queue,
    queueFor,
    tokens,
    async close() {
      try {
        await queues.close();
      } finally {
        await tokenStore.close();
      }
    },
  };
}

function reusedError(): OnceqError {
  return new OnceqError(
    ErrorCode.TokenReused,
    'the idempotency token was already used for a different request; the original is unchanged',
  );
}

function checkOptions(job: JobDefinition, opts: EnqueueOptions, dedupeWindowMs: number): void {
  assertEnqueueOptions(opts, { jobName: job.name, queues: job.queues, dedupeWindowMs });
}
