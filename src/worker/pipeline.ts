/**
 * The per-delivery pipeline (DESIGN.md section 2), the heart of onceq:
 *
 *   validate → claim the token (Redis) → one transaction: inbox insert, handler, result → commit
 *   → token `done` (Redis) → BullMQ completes the job with the result.
 *
 * Each delivery is traced (telemetry/tracing.ts): a `process <queue>` span with `claim` and
 * `transaction` (`handler <job>`, `commit`) children; no-ops without an OpenTelemetry SDK.
 *
 * Every step is safe to repeat and every crash between two steps is covered by the next
 * delivery (see the crash table in DESIGN.md). PostgreSQL is the truth; Redis is the fast path.
 */
import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { Db } from '../db/create-db.js';
import {
  MessagePrunedError,
  runMessageTransaction,
  type MessageTransaction,
} from '../db/message-transaction.js';
import {
  ErrorCode,
  NonRetryableError,
  OnceqError,
  TokenMismatchError,
  VersionConflictError,
} from '../core/errors.js';
import { findAcceptedByMessageId } from '../db/accepted-messages.repository.js';
import { findDeadLetter } from '../db/dead-letters.repository.js';
import { findApplied } from '../db/inbox.repository.js';
import { assertJsonbStorable } from '../core/jsonb.js';
import { envelopeProblem, type MessageEnvelope } from '../core/message.js';
import { isExpired, type DeadLetterReason } from '../core/dead-letter.js';
import { generateToken } from '../core/token.js';
import { QUEUE_NAME, QUEUE_NAME_RULE } from '../core/queue-name.js';
import { logicalQueueName } from '../core/queue-partitions.js';
import type { Database } from '../db/database.js';
import { insertOutbox } from '../db/outbox.repository.js';
import type { FollowUpOptions } from '../jobs/define-job.js';
import {
  conflictDelayMs,
  DEFAULT_CONFLICT_RETRY,
  type ConflictRetryOptions,
} from '../core/retry.js';
import type { DeliveryOutcome } from '../core/outcome.js';
import type { TokenStore } from '../redis/token-store.js';
import type { JobRegistry } from '../jobs/registry.js';
import { createJobContext } from '../jobs/context.js';
import { NO_FAULTS, type FaultHook } from './fault-hook.js';
import { DeadLetteredError, deadLetterOf, type DeadLetterWriter } from './dead-letters.js';
import { DEFAULT_DEDUPE_WINDOW_MS } from '../core/defaults.js';
import type { CommitGroups } from './commit-groups.js';
import { context, SpanKind } from '@opentelemetry/api';
import {
  ATTR,
  inSpan,
  messagingAttributes,
  messagingSpanName,
  recordSpan,
  startDeliverySpan,
  traceField,
  type DeliverySpan,
} from '../telemetry/tracing.js';

/** Options of {@link createPipeline}. */
export interface PipelineOptions {
  db: Db;
  tokens: TokenStore;
  registry: JobRegistry;
  /** Claim lease; must be at least BullMQ's lock duration. */
  leaseMs: number;
  /** TTL of the `done` marker in Redis. */
  tokenTtlMs: number;
  /** Identifies this process in claim owners (`host:pid:…`). */
  processId: string;
  /** @defaultValue {@link DEFAULT_CONFLICT_RETRY} */
  conflictRetry?: ConflictRetryOptions;
  /** @defaultValue no faults */
  fault?: FaultHook;
  logger?: Logger;
  /** Called once per delivery with its outcome (metrics). */
  onOutcome?: (outcome: DeliveryOutcome, job: Job) => void;
  /**
   * Where messages that cannot succeed go (exhausted, invalid, expired). Without one, such jobs
   * only fail in BullMQ (as before dead letters existed).
   */
  deadLetters?: DeadLetterWriter;
  /** Messages minted longer ago than this are dead-lettered as `expired`. @defaultValue 7 d */
  dedupeWindowMs?: number;
  /** Mints follow-up messageIds for `ctx.enqueue` (the process's id service). */
  ids?: () => Promise<{ nextId(): string }>;
  /** Called after a commit that wrote follow-ups to the outbox (nudges the relay). */
  onFollowUps?: () => void;
  /**
   * Runs a delivery's first transaction in a group with others ready at the same time (see
   * commit-groups.ts); without it each message commits on its own. Re-runs after a version
   * conflict always run alone.
   */
  groups?: CommitGroups;
}

/** The result BullMQ stores as the job's return value. */
export interface DeliveryResult {
  outcome: 'applied' | 'duplicate';
  result: unknown;
}

/** PostgreSQL SQLSTATEs after which re-running the transaction is the right answer. */
const RERUN_SQLSTATES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
]);

class LeaseLostError extends OnceqError {
  constructor() {
    super(
      ErrorCode.LeaseLost,
      'the claim lease was lost before commit; another worker owns the message',
    );
  }
}

/** Creates the processor that BullMQ workers call for each delivery. */
export function createPipeline(options: PipelineOptions) {
  const { db, tokens, registry, leaseMs, tokenTtlMs, processId } = options;
  const retry = options.conflictRetry ?? DEFAULT_CONFLICT_RETRY;
  const dedupeWindowMs = options.dedupeWindowMs ?? DEFAULT_DEDUPE_WINDOW_MS;
  const fault = options.fault ?? NO_FAULTS;
  const renewEveryMs = Math.max(250, Math.floor(leaseMs / 3));
  // Owners must be unique per delivery; the process id is already unique per process.
  let deliveries = 0;
  // Claims held by running deliveries; `abandon` makes the delivery roll back instead of commit.
  const inFlight = new Map<
    string,
    { token: string; owner: string; job: Job; bullToken?: string; abandon(): void }
  >();
  // Tokens claimed by deliveries running in this process; settles once each one is done.
  const localHolders = new Map<string, Promise<void>>();
  // Set by releaseAll: deliveries waiting on a local holder no longer claim.
  let releasing = false;
  let running = 0;
  let idleWaiters: (() => void)[] = [];
  // The span of each running delivery, for its outcome.
  const deliverySpans = new WeakMap<Job, DeliverySpan>();

  /** Reports a delivery's outcome: to its span, and to the caller (metrics, the job log line). */
  function onOutcome(outcome: DeliveryOutcome, job: Job): void {
    deliverySpans.get(job)?.outcome(outcome);
    options.onOutcome?.(outcome, job);
  }

  async function process(job: Job, bullToken?: string): Promise<DeliveryResult> {
    running++;
    const span = startDeliverySpan({
      queue: job.queueName,
      jobName: job.name,
      attempt: job.attemptsMade + 1,
      envelope: job.data,
    });
    deliverySpans.set(job, span);
    try {
      const delivered = await context.with(span.context, () => deliver(job, bullToken));
      span.end();
      return delivered;
    } catch (err) {
      span.end(err);
      throw err;
    } finally {
      deliverySpans.delete(job);
      running--;
      if (running === 0) {
        const waiters = idleWaiters;
        idleWaiters = [];
        for (const resolve of waiters) resolve();
      }
    }
  }

  /** Resolves when no delivery is running. */
  function idle(): Promise<void> {
    if (running === 0) return Promise.resolve();
    return new Promise((resolve) => idleWaiters.push(resolve));
  }

  async function deliver(job: Job, bullToken?: string): Promise<DeliveryResult> {
    const problem = envelopeProblem(job.data);
    if (problem) return invalid(job, new NonRetryableError(ErrorCode.ValidationFailed, problem));
    const envelope = job.data as MessageEnvelope;
    const { messageId, token } = envelope;
    try {
      registry.validate(job.name, envelope.data);
    } catch (err) {
      return invalid(job, err);
    }
    // Its inbox row may be pruned already: running it could apply it a second time. This check
    // is on this process's clock and window, and only spares the claim and the transaction; the
    // transaction itself refuses what the pruner recorded as pruned (MessagePrunedError).
    if (isExpired(messageId, Date.now(), dedupeWindowMs)) {
      return deadLetter(
        job,
        'expired',
        new NonRetryableError(
          ErrorCode.ValidationFailed,
          `message ${messageId} is older than the dedupe window; not run, to rule out a second effect`,
        ),
      );
    }

    const definition = registry.get(job.name);

    if (envelope.readded === true) await refuseIfDeadLettered(job, messageId);

    // Step 2: the claim.
    const owner = `${processId}:${++deliveries}`;
    let claim: Awaited<ReturnType<TokenStore['claim']>>;
    for (let waited = false; ; waited = true) {
      try {
        claim = await claimAgreeingWithRecord(token, {
          owner,
          leaseMs,
          messageId,
          ttlMs: tokenTtlMs,
        });
      } catch (err) {
        // A token bound to another message must not run (nor replay that message's result).
        if (err instanceof NonRetryableError) return invalid(job, err);
        throw err;
      }
      // Held by a delivery of this very process (a duplicate job next to its original, which
      // group commit keeps open a little longer): wait for that one to settle, then ask again,
      // rather than park this job in BullMQ's delayed set for a backoff.
      const holder = claim.status === 'busy' && !waited ? localHolders.get(token) : undefined;
      if (!holder) break;
      await waitAtMost(holder, leaseMs);
      if (releasing) {
        // A forced shutdown released the holder's claim meanwhile: this delivery must not take
        // it. Put back, as released deliveries are, for another process.
        onOutcome('busy', job);
        await putBackAtShutdown(job, bullToken);
        throw new DelayedError();
      }
    }
    // The fast path of a duplicate: one Redis round trip and nothing in PostgreSQL, unless Redis
    // kept no result (one too large for it), which the inbox row then gives (null if that row
    // is gone: Redis says done, and done it is, as it always was).
    if (claim.status === 'done') {
      const result =
        'result' in claim ? claim.result : ((await findApplied(db, messageId))?.result ?? null);
      onOutcome('duplicate', job);
      return { outcome: 'duplicate', result };
    }
    if (claim.status === 'busy') {
      onOutcome('busy', job);
      // Back to the queue for a while: not an attempt, not a failure. The holder is nearly always
      // a live delivery that commits within milliseconds (a duplicate enqueued next to its
      // original, a stalled job's first run still going); its lease only bounds the wait for a
      // holder that died. So look again soon and double the wait at each bounce, never past the
      // lease's end: a few cheap claims instead of a whole lease parked. leaseUntil is Redis
      // time; bounded by one lease so a skewed local clock can neither park the message for long
      // nor spin on it.
      const untilLeaseEnd = Math.min(
        Math.max(claim.leaseUntil - Date.now(), BUSY_FIRST_WAIT_MS),
        leaseMs,
      );
      const backoff = BUSY_FIRST_WAIT_MS * 2 ** Math.min(busyBounces(job), 20);
      const wait =
        Math.min(backoff, untilLeaseEnd) + Math.floor(Math.random() * BUSY_FIRST_WAIT_MS);
      await job.moveToDelayed(Date.now() + wait, bullToken);
      throw new DelayedError();
    }
    let settle: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (settle = resolve));
    localHolders.set(token, held);
    try {
      fault.at('after-claim');

      let leaseLost = false;
      let abandoned = false;
      const key = `${job.id}:${owner}`;
      inFlight.set(key, {
        token,
        owner,
        job,
        bullToken,
        abandon: () => {
          abandoned = true;
          leaseLost = true;
        },
      });
      const renewal = setInterval(() => {
        tokens.renew(token, { owner, leaseMs }).then(
          (r) => {
            if (r.status !== 'renewed') leaseLost = true;
          },
          // A renewal lost to a Redis outage is retried at the next tick; the lease runs out on
          // its own if Redis stays away, and the inbox still fences the commit.
          () => undefined,
        );
      }, renewEveryMs);
      renewal.unref();

      let committed: DeliveryResult & { followUps: number };
      try {
        committed = await runTransaction(job, envelope, definition.handle, () => leaseLost);
      } catch (err) {
        clearInterval(renewal);
        inFlight.delete(key);
        // Let the next delivery claim at once instead of waiting out the lease.
        await tokens.release(token, { owner }).catch(() => undefined);
        if (abandoned) {
          // Given up at a forced shutdown (releaseAll): rolled back, and not this delivery's
          // failure, so it spends no attempt. Put back now, unless the shutdown already did.
          onOutcome('busy', job);
          await putBackAtShutdown(job, bullToken);
          throw new DelayedError();
        }
        // Pruned under a delivery that passed the clock check above (a worker clock behind the
        // pruner's, a longer window here than there): refused by PostgreSQL's record instead.
        if (err instanceof MessagePrunedError) return deadLetter(job, 'expired', err);
        if (err instanceof NonRetryableError) return invalid(job, err);
        // The last attempt: BullMQ would fail the job for good, so it goes to the dead-letter
        // queue instead. Not when the lease was lost: another worker owns the message now.
        if (isLastAttempt(job) && !(err instanceof LeaseLostError)) {
          return deadLetter(job, 'exhausted', err);
        }
        onOutcome('retried', job);
        throw err;
      }
      clearInterval(renewal);
      inFlight.delete(key);
      fault.at('after-commit');

      // Step 6: the fast path for the next duplicate. A failure here is harmless: the inbox row
      // answers the next delivery.
      try {
        await tokens.complete(token, { messageId, result: committed.result, ttlMs: tokenTtlMs });
      } catch (err) {
        options.logger?.warn(
          { err, messageId },
          'could not mark the token done; the inbox covers it',
        );
      }
      fault.at('after-done');
      if (committed.followUps > 0) options.onFollowUps?.();
      onOutcome(committed.outcome, job);
      return { outcome: committed.outcome, result: committed.result };
    } finally {
      if (localHolders.get(token) === held) localHolders.delete(token);
      settle();
    }
  }

  /**
   * A job a replay added back (see {@link MessageEnvelope.readded}) whose message has a dead
   * letter that holds it (pending or purged; a replayed one is back on its queue, as the
   * reconciler counts it): the dead-letter queue and its operator own the message, so the job is
   * taken away unrun (the worker removes a job failed with {@link DeadLetteredError}) and the
   * dead letter is left as it is.
   */
  async function refuseIfDeadLettered(job: Job, messageId: string): Promise<void> {
    const letter = await findDeadLetter(db, messageId);
    if (!letter || (letter.replayed_at !== null && letter.purged_at === null)) return;
    const text = `message ${messageId} is dead-lettered (${letter.reason}); a replay's job is not run`;
    options.logger?.warn({ jobId: job.id, queue: job.queueName, messageId }, text);
    // Not a dead letter of its own (the metrics count those): a delivery of a settled message.
    onOutcome('duplicate', job);
    throw new DeadLetteredError(letter.reason, text);
  }

  /**
   * The claim, with PostgreSQL as the judge when Redis binds the token to another message id.
   * Redis may have gone back in time (a restored snapshot): a retry of the request was accepted
   * there under a fresh id while PostgreSQL recorded this message for the token, and the
   * producer that saw it may have died before rebinding Redis. When the acceptance record says
   * this token is this message's, Redis is rebound to it and the claim is tried again; otherwise
   * the mismatch stands (the job carries someone else's token) and the message is invalid.
   */
  function claimAgreeingWithRecord(
    token: string,
    claim: Parameters<TokenStore['claim']>[1],
  ): ReturnType<TokenStore['claim']> {
    return inSpan('claim', {}, async (span) => {
      const claimed = await claimOrRebind(token, claim);
      span.setAttribute(ATTR.claim, claimed.status);
      return claimed;
    });
  }

  async function claimOrRebind(
    token: string,
    claim: Parameters<TokenStore['claim']>[1],
  ): ReturnType<TokenStore['claim']> {
    try {
      return await tokens.claim(token, claim);
    } catch (err) {
      if (!(err instanceof TokenMismatchError)) throw err;
      const row = await findAcceptedByMessageId(db, claim.messageId);
      if (row?.token !== token) throw err;
      const rebound = await tokens.rebind(token, {
        from: err.details.boundMessageId,
        messageId: row.message_id,
        principal: row.principal,
        fingerprint: row.fingerprint,
        ttlMs: tokenTtlMs,
      });
      options.logger?.warn(
        { messageId: claim.messageId, boundMessageId: err.details.boundMessageId, rebound },
        'Redis bound the token to another message id than PostgreSQL recorded; rebound it',
      );
      // Rebound, or moved meanwhile (another delivery rebound it first): either way, once more.
      return tokens.claim(token, claim);
    }
  }

  /** Steps 3 to 5, re-run on version conflicts with jitter, bounded. */
  async function runTransaction(
    job: Job,
    envelope: MessageEnvelope,
    handle: (ctx: ReturnType<typeof createJobContext>) => Promise<unknown>,
    isLeaseLost: () => boolean,
  ): Promise<DeliveryResult & { followUps: number }> {
    const { messageId } = envelope;
    for (let run = 1; ; run++) {
      let followUps = 0;
      try {
        // The logical queue, not a partition's BullMQ queue: what the inbox and `ctx.queue` say.
        const queue = logicalQueueName(job.queueName);
        const key = { messageId, queue, jobName: job.name };
        // A group may run the body more than once (a batch-mate failed): count from zero each time.
        const body = (trx: MessageTransaction<Database>) => {
          // Given up while it waited for its group (a forced shutdown released its claim).
          if (isLeaseLost()) throw new LeaseLostError();
          followUps = 0;
          return handle(
            createJobContext({
              trx,
              data: envelope.data,
              messageId,
              jobName: job.name,
              queue,
              attempt: job.attemptsMade + 1,
              run,
              registry,
              dedupeWindowMs,
              enqueue: async (name, data, opts) => {
                const queue = opts?.queue ?? registry.find(name)?.queue;
                const id = await inSpan(
                  messagingSpanName('create', queue),
                  {
                    kind: SpanKind.PRODUCER,
                    attributes: () =>
                      messagingAttributes('create', queue, { [ATTR.jobName]: name }),
                  },
                  async (span) => {
                    const minted = await enqueueFollowUp(trx, messageId, name, data, opts);
                    span.setAttribute(ATTR.messageId, minted);
                    return minted;
                  },
                );
                followUps++;
                return id;
              },
            }),
          );
        };
        const beforeCommit = () => {
          fault.at('before-commit');
          if (isLeaseLost()) throw new LeaseLostError();
        };
        // Traced: a span per run, the handler and the commit its children. The group calls the
        // body from its own turn of the event loop, hence the explicit parent.
        const outcome = await inSpan(
          'transaction',
          { attributes: { [ATTR.run]: run } },
          async (span) => {
            const parent = context.active();
            let commitStart: number | undefined;
            const traced = (trx: MessageTransaction<Database>) => {
              commitStart = undefined;
              return inSpan(`handler ${job.name}`, { parent }, () => body(trx));
            };
            const tracedBeforeCommit = () => {
              beforeCommit();
              if (span.isRecording()) commitStart = performance.now();
            };
            try {
              const done =
                run === 1 && options.groups
                  ? await options.groups.run(
                      { key, body: traced, beforeCommit: tracedBeforeCommit },
                      span,
                    )
                  : await runMessageTransaction(db, key, traced, tracedBeforeCommit);
              if (commitStart !== undefined) recordSpan('commit', parent, commitStart);
              return done;
            } catch (err) {
              if (commitStart !== undefined) recordSpan('commit', parent, commitStart, err);
              throw err;
            }
          },
        );
        return outcome.kind === 'applied'
          ? { outcome: 'applied', result: outcome.result ?? null, followUps }
          : { outcome: 'duplicate', result: outcome.result, followUps: 0 };
      } catch (err) {
        if (!isConflict(err) || run >= retry.maxRuns) {
          if (isConflict(err)) {
            throw new OnceqError(
              ErrorCode.ConflictRetriesExhausted,
              `gave up after ${run} runs on version conflicts; BullMQ will retry the job`,
              { cause: err },
            );
          }
          throw err;
        }
        await sleep(conflictDelayMs(run, retry));
      }
    }
  }

  /**
   * `ctx.enqueue`: validates the follow-up now (a handler bug should surface in the handler, not
   * in the relay), mints its messageId and token, and writes it to the outbox through `trx`.
   */
  async function enqueueFollowUp(
    trx: Kysely<Database>,
    parentMessageId: string,
    name: string,
    data: unknown,
    opts: FollowUpOptions = {},
  ): Promise<string> {
    if (!options.ids) {
      // Retried as before (a plain Error was); the code says what is wrong.
      throw new OnceqError(
        ErrorCode.ConfigInvalid,
        'ctx.enqueue needs a worker with an id service',
      );
    }
    const definition = registry.get(name);
    registry.validate(name, data);
    assertJsonbStorable(data, `ctx.enqueue(${name})`);
    const queue = opts.queue ?? definition.queue;
    if (!QUEUE_NAME.test(queue)) {
      throw new NonRetryableError(
        ErrorCode.ValidationFailed,
        `ctx.enqueue(${name}): queue "${queue}" must be ${QUEUE_NAME_RULE}`,
      );
    }
    const messageId = (await options.ids()).nextId();
    await insertOutbox(trx, {
      messageId,
      parentMessageId,
      queue,
      jobName: name,
      data,
      token: generateToken(),
      // The create span's context: the follow-up's delivery links to it (telemetry/tracing.ts).
      options: { delay: opts.delay, priority: opts.priority, ...traceField({ link: true }) },
    });
    return messageId;
  }

  /** A job that can never succeed: dead-lettered as `invalid`, no retries. */
  function invalid(job: Job, err: unknown): Promise<never> {
    return deadLetter(job, 'invalid', err);
  }

  /**
   * Moves the message to the dead-letter queue (the durable copy first, see dead-letters.ts)
   * and fails the job without further attempts; the worker then removes the original. A job
   * whose data has no messageId to key a dead letter by only fails, as it would in BullMQ.
   */
  async function deadLetter(job: Job, reason: DeadLetterReason, err: unknown): Promise<never> {
    onOutcome(reason === 'invalid' ? 'invalid' : 'dead', job);
    deliverySpans.get(job)?.span.setAttribute(ATTR.deadLetterReason, reason);
    const message = err instanceof Error ? err.message : String(err);
    options.logger?.warn(
      { jobId: job.id, queue: job.queueName, messageId: job.data?.messageId, outcome: reason },
      message,
    );
    const text = reason === 'invalid' ? `invalid: ${message}` : message;
    const letter = deadLetterOf(job, reason, err, job.attemptsMade + 1);
    if (!options.deadLetters || !letter) throw new UnrecoverableError(text);
    // If PostgreSQL refuses the letter, this throws a plain error: BullMQ keeps the job (a retry,
    // or the failed set on the last attempt, where the reconciler finds it).
    await options.deadLetters.write(letter);
    throw new DeadLetteredError(reason, text);
  }

  /**
   * Releases the claims of deliveries still in flight (at a forced shutdown), so another worker
   * can take them, and returns their jobs with their BullMQ lock tokens: the caller puts the jobs
   * back once its BullMQ workers are closed (see worker.ts), rather than leave them locked until
   * BullMQ finds them stalled. Each abandoned delivery rolls back at its commit point rather than
   * commit after its claim was given up (the inbox would fence it anyway; this keeps it honest).
   */
  async function releaseAll(): Promise<{ job: Job; bullToken?: string }[]> {
    releasing = true;
    const held = [...inFlight.values()];
    inFlight.clear();
    for (const h of held) h.abandon();
    await Promise.all(
      held.map((h) => tokens.release(h.token, { owner: h.owner }).catch(() => undefined)),
    );
    return held.map((h) => ({ job: h.job, bullToken: h.bullToken }));
  }

  return {
    process,
    releaseAll,
    idle,
    /** Deliveries running now (including ones abandoned by {@link releaseAll}). */
    inFlightCount: () => running,
  };
}

export type Pipeline = ReturnType<typeof createPipeline>;

/** First wait of a delivery that found its message claimed by a live owner; doubles per bounce. */
const BUSY_FIRST_WAIT_MS = 50;

/**
 * How many times this job was already put back as busy: BullMQ counts every start
 * (`attemptsStarted`), failed attempts (`attemptsMade`) and stalls (`stalledCounter`); the
 * starts that were neither, before this one, were busy bounces.
 */
function busyBounces(job: Job): number {
  return Math.max(0, job.attemptsStarted - 1 - job.attemptsMade - job.stalledCounter);
}

/**
 * Longest wait for the put-back of a delivery given up at a forced shutdown. The put-back goes
 * through the job's own BullMQ worker, which the shutdown may have closed by then: on Redis the
 * command then fails at once, but BullMQ's PostgreSQL backend parks every command issued on a
 * closing connection in a promise that never settles, and the delivery would never end. Past
 * the bound the job is left where the put-back may still take it, or to the shutdown's own
 * put-back (worker.ts) and BullMQ's stalled-job check; an attempt is spent in no case.
 */
const PUT_BACK_WAIT_MS = 1_000;

/**
 * Moves a job given up at a forced shutdown back to delayed-until-now (no attempt spent), best
 * effort and bounded (see {@link PUT_BACK_WAIT_MS}).
 */
async function putBackAtShutdown(job: Job, bullToken: string | undefined): Promise<void> {
  if (!bullToken) return;
  await waitAtMost(
    job.moveToDelayed(Date.now(), bullToken).catch(() => undefined),
    PUT_BACK_WAIT_MS,
  );
}

/** Whether this delivery is the job's last attempt: a failure now fails it for good. */
function isLastAttempt(job: Job): boolean {
  return job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
}

function isConflict(err: unknown): boolean {
  if (err instanceof VersionConflictError) return true;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && RERUN_SQLSTATES.has(code);
}

/** Resolves when `promise` settles or `ms` have passed, whichever is first; leaves no timer. */
async function waitAtMost(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
