/**
 * Watches deliveries from outside the pipeline: times each handler run (by wrapping the
 * registry's handlers), counts each delivery's outcome and claim result, observes end-to-end
 * latency, and writes one log line per delivery carrying `messageId`, `jobId`, `queue` and
 * `outcome`.
 *
 * The pipeline reports an outcome (`applied`, `duplicate`, `busy`, `retried`, `invalid`, `dead`)
 * but not the result; a committed result whose `status` is `conflict` or `rejected` (the ledger's
 * recorded refusals, and any user job that follows the same convention) is counted as that
 * status. The result comes from the handler wrapper: the last handler run of the delivery is the
 * one that committed.
 */
import type { Job } from 'bullmq';
import type { Logger } from 'pino';
import type { DeliveryOutcome } from '../core/outcome.js';
import { JobRegistry } from '../jobs/registry.js';
import type { JobDefinition } from '../jobs/define-job.js';
import type { ClaimResult, JobOutcome, Metrics } from './metrics.js';
import { logicalQueueName } from '../core/queue-partitions.js';

/**
 * Handler runs remembered until their delivery reports its outcome. A run whose outcome never
 * comes (a process killed mid-delivery loses them anyway) must not grow the map without bound.
 */
const MAX_PENDING_RUNS = 10_000;

/** Options of {@link createJobObserver}. */
export interface JobObserverOptions {
  metrics?: Metrics;
  /** Where the per-delivery lines go. @defaultValue none */
  logger?: Logger;
}

/** What {@link createJobObserver} returns. */
export interface JobObserver {
  /** A registry with the same jobs, whose handlers are timed; give it to the worker. */
  instrument(registry: JobRegistry): JobRegistry;
  /** The worker's `onOutcome` callback. */
  onOutcome(outcome: DeliveryOutcome, job: Job): void;
}

/**
 * Maps a pipeline outcome (and the committed result) to the outcome `onceq_jobs_total` counts;
 * undefined for `busy`, which is not an outcome of the message but a claim result.
 */
export function jobOutcomeOf(outcome: DeliveryOutcome, result?: unknown): JobOutcome | undefined {
  switch (outcome) {
    case 'applied': {
      const status = resultStatus(result);
      return status === 'conflict' || status === 'rejected' ? status : 'applied';
    }
    case 'duplicate':
      return 'duplicate';
    case 'retried':
      return 'retried';
    case 'invalid':
    case 'dead':
      return 'dead';
    case 'busy':
      return undefined;
  }
}

/**
 * The claim result behind a delivery outcome. `handlerRan` tells a delivery that took the claim
 * from one stopped before it. A `duplicate` without a handler run is counted as `done`; in the
 * rare case where the claim succeeded and the inbox caught the duplicate (Redis had lost the
 * `done` marker) that is one `claimed` counted as `done`.
 */
export function claimResultOf(
  outcome: DeliveryOutcome,
  handlerRan: boolean,
): ClaimResult | undefined {
  if (outcome === 'busy') return 'busy';
  if (outcome === 'duplicate' && !handlerRan) return 'done';
  if (handlerRan || outcome === 'applied' || outcome === 'retried') return 'claimed';
  // Dead-lettered or invalid before the claim (bad envelope, expired, unknown job).
  return undefined;
}

function resultStatus(result: unknown): unknown {
  return typeof result === 'object' && result !== null
    ? (result as { status?: unknown }).status
    : undefined;
}

/** Creates an observer; one per worker process (or per in-process worker in tests). */
export function createJobObserver(options: JobObserverOptions): JobObserver {
  const { metrics, logger } = options;
  // messageId → the result of the last handler run of its delivery in flight.
  const runs = new Map<string, { result: unknown }>();

  function wrap(definition: JobDefinition): JobDefinition {
    const handle: JobDefinition['handle'] = async (ctx) => {
      const end = metrics?.handlerSeconds.startTimer({ queue: ctx.queue, job: ctx.jobName });
      try {
        const result = await definition.handle(ctx);
        if (runs.size >= MAX_PENDING_RUNS) runs.clear();
        runs.set(ctx.messageId, { result });
        return result;
      } finally {
        end?.();
      }
    };
    return Object.freeze({ ...definition, handle });
  }

  return {
    instrument(registry) {
      return new JobRegistry(registry.names().map((name) => wrap(registry.get(name))));
    },
    onOutcome(outcome, job) {
      const messageId = typeof job.data?.messageId === 'string' ? job.data.messageId : undefined;
      // A duplicate or busy delivery never runs the handler, and the same message may be
      // running in this process under another job (a duplicated job): leave its entry alone.
      const ranHere = outcome !== 'busy' && outcome !== 'duplicate' && messageId !== undefined;
      const run = ranHere ? runs.get(messageId) : undefined;
      if (ranHere) runs.delete(messageId);
      // Labelled by the logical queue: a partitioned queue's partitions count as one.
      const queue = logicalQueueName(job.queueName);
      const counted = jobOutcomeOf(outcome, run?.result);
      const claim = claimResultOf(outcome, run !== undefined);
      if (metrics) {
        if (counted) metrics.recordJob(queue, counted);
        if (claim) metrics.recordClaim(queue, claim);
        if (outcome === 'applied' || outcome === 'duplicate') {
          const seconds = (Date.now() - job.timestamp) / 1000;
          if (seconds >= 0) metrics.endToEndSeconds.observe({ queue, outcome: counted }, seconds);
        }
      }
      if (logger) {
        const line = {
          messageId,
          jobId: job.id,
          queue,
          job: job.name,
          outcome: counted ?? outcome,
          attempt: job.attemptsMade + 1,
        };
        if (outcome === 'busy') logger.debug(line, 'job busy: another worker holds the claim');
        else if (counted === 'retried' || counted === 'dead') logger.warn(line, `job ${counted}`);
        else logger.info(line, `job ${counted}`);
      }
    },
  };
}
