/**
 * The per-delivery pipeline (DESIGN.md section 2), the heart of onceq:
 *
 *   validate → claim the token (Redis) → one transaction: inbox insert, handler, result → commit
 *   → token `done` (Redis) → BullMQ completes the job with the result.
 *
 * Every step is safe to repeat and every crash between two steps is covered by the next
 * delivery (see the crash table in DESIGN.md). PostgreSQL is the truth; Redis is the fast path.
 */
import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import type { Logger } from 'pino';
import type { Db } from '../db/create-db.js';
import { runMessageTransaction } from '../db/message-transaction.js';
import { ErrorCode, NonRetryableError, OnceqError, VersionConflictError } from '../core/errors.js';
import { envelopeProblem, type MessageEnvelope } from '../core/message.js';
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
  const fault = options.fault ?? NO_FAULTS;
  const renewEveryMs = Math.max(250, Math.floor(leaseMs / 3));
  // Owners must be unique per delivery; the process id is already unique per process.
  let deliveries = 0;
  // Claims held by running deliveries; `abandon` makes the delivery roll back instead of commit.
  const inFlight = new Map<string, { token: string; owner: string; abandon(): void }>();
  let running = 0;
  let idleWaiters: (() => void)[] = [];

  async function process(job: Job, bullToken?: string): Promise<DeliveryResult> {
    running++;
    try {
      return await deliver(job, bullToken);
    } finally {
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
    const definition = registry.get(job.name);

    // Step 2: the claim.
    const owner = `${processId}:${++deliveries}`;
    let claim: Awaited<ReturnType<TokenStore['claim']>>;
    try {
      claim = await tokens.claim(token, { owner, leaseMs, messageId, ttlMs: tokenTtlMs });
    } catch (err) {
      // A token bound to another message must not run (nor replay that message's result).
      if (err instanceof NonRetryableError) return invalid(job, err);
      throw err;
    }
    if (claim.status === 'done') {
      options.onOutcome?.('duplicate', job);
      return { outcome: 'duplicate', result: claim.result };
    }
    if (claim.status === 'busy') {
      options.onOutcome?.('busy', job);
      // Back to the queue until the other owner's lease runs out: not an attempt, not a failure.
      const wait = Math.max(claim.leaseUntil - Date.now(), 50) + Math.floor(Math.random() * 100);
      await job.moveToDelayed(Date.now() + wait, bullToken);
      throw new DelayedError();
    }
    fault.at('after-claim');

    let leaseLost = false;
    const key = `${job.id}:${owner}`;
    inFlight.set(key, { token, owner, abandon: () => (leaseLost = true) });
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

    let committed: DeliveryResult;
    try {
      committed = await runTransaction(job, envelope, definition.handle, () => leaseLost);
    } catch (err) {
      clearInterval(renewal);
      inFlight.delete(key);
      // Let the next delivery claim at once instead of waiting out the lease.
      await tokens.release(token, { owner }).catch(() => undefined);
      if (err instanceof NonRetryableError) return invalid(job, err);
      options.onOutcome?.('retried', job);
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
    options.onOutcome?.(committed.outcome, job);
    return committed;
  }

  /** Steps 3 to 5, re-run on version conflicts with jitter, bounded. */
  async function runTransaction(
    job: Job,
    envelope: MessageEnvelope,
    handle: (ctx: ReturnType<typeof createJobContext>) => Promise<unknown>,
    isLeaseLost: () => boolean,
  ): Promise<DeliveryResult> {
    const { messageId } = envelope;
    for (let run = 1; ; run++) {
      try {
        const outcome = await runMessageTransaction(
          db,
          { messageId, queue: job.queueName, jobName: job.name },
          (trx) =>
            handle(
              createJobContext({
                trx,
                data: envelope.data,
                messageId,
                jobName: job.name,
                queue: job.queueName,
                attempt: job.attemptsMade + 1,
                run,
              }),
            ),
          () => {
            fault.at('before-commit');
            if (isLeaseLost()) throw new LeaseLostError();
          },
        );
        return outcome.kind === 'applied'
          ? { outcome: 'applied', result: outcome.result ?? null }
          : { outcome: 'duplicate', result: outcome.result };
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

  function invalid(job: Job, err: unknown): never {
    options.onOutcome?.('invalid', job);
    const message = err instanceof Error ? err.message : String(err);
    options.logger?.warn({ jobId: job.id, queue: job.queueName, outcome: 'invalid' }, message);
    // UnrecoverableError: BullMQ fails the job without spending further attempts.
    throw new UnrecoverableError(`invalid: ${message}`);
  }

  /**
   * Releases the claims of deliveries still in flight (at a forced shutdown), so another worker
   * can take them at once. Each abandoned delivery rolls back at its commit point rather than
   * commit after its claim was given up (the inbox would fence it anyway; this keeps it honest).
   */
  async function releaseAll(): Promise<number> {
    const held = [...inFlight.values()];
    inFlight.clear();
    for (const h of held) h.abandon();
    await Promise.all(
      held.map((h) => tokens.release(h.token, { owner: h.owner }).catch(() => undefined)),
    );
    return held.length;
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

function isConflict(err: unknown): boolean {
  if (err instanceof VersionConflictError) return true;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && RERUN_SQLSTATES.has(code);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
