/**
 * The batched add: the jobs of messages already recorded in PostgreSQL (the reconciler's
 * re-adds, the outbox relay's sends, dead-letter replay), grouped by queue, so that one message
 * BullMQ refuses cannot stop the others.
 *
 * `addBulk` is all or nothing: BullMQ validates every job's options before it sends the batch,
 * and one refusal (a priority above its limit, say) rejects the whole call. A loop that retried
 * such a batch would retry it forever, and every good message in it with it. So each job is first
 * put through BullMQ's own validation, locally and without Redis: the ones it refuses are handed
 * back with BullMQ's error, for the caller to dead-letter as `invalid`; the rest go in one
 * `addBulk` per BullMQ queue: a message's job goes to its queue's partition for its messageId
 * (queues/queue-cache.ts), the one routing every path that adds a message's job shares. A refusal here is a property of the message and fails the same way on
 * every attempt; any error of the adds themselves (Redis down, a timeout, Redis refusing writes)
 * is thrown instead, and the caller keeps the messages for its next run: Redis being away must
 * never turn a message into a dead letter.
 */
import { Job, type JobsOptions, type Queue } from 'bullmq';
import type { QueueCache } from './queue-cache.js';
import type { MessageJob } from './message-job.js';

/** What {@link addMessageJobs} did with each item. */
export interface AddedMessageJobs<T> {
  /** Items whose jobs are in BullMQ now (or were already, under the same job id). */
  added: T[];
  /** Items BullMQ refuses to add, with its reason; nothing was sent for them. */
  refused: { item: T; error: Error }[];
}

/**
 * Adds the job of each item (`jobOf` builds it): the ones BullMQ would refuse are set aside, the
 * others are added in one `addBulk` per BullMQ queue (a partition, for a partitioned queue). Throws when an add fails (nothing is refused
 * for it); jobs of other queues may have been added by then, which the job ids make harmless to
 * repeat.
 */
export async function addMessageJobs<T>(
  queues: QueueCache,
  items: readonly T[],
  jobOf: (item: T) => MessageJob,
): Promise<AddedMessageJobs<T>> {
  const result: AddedMessageJobs<T> = { added: [], refused: [] };
  const byQueue = new Map<Queue, { item: T; job: MessageJob }[]>();
  for (const item of items) {
    const job = jobOf(item);
    const error = refusal(queues, job);
    if (error) {
      result.refused.push({ item, error });
      continue;
    }
    const queue = queues.route(job.queue, job.data.messageId);
    const batch = byQueue.get(queue);
    if (batch) batch.push({ item, job });
    else byQueue.set(queue, [{ item, job }]);
  }
  await Promise.all(
    [...byQueue].map(([queue, batch]) =>
      queue.addBulk(batch.map(({ job }) => ({ name: job.name, data: job.data, opts: job.opts }))),
    ),
  );
  for (const batch of byQueue.values()) result.added.push(...batch.map(({ item }) => item));
  return result;
}

/**
 * Why BullMQ would refuse to add `job`, or `undefined`: its queue (a name BullMQ refuses) or the
 * job itself. It builds the job as `addBulk` does (the queue's default options under the job's
 * own) and runs BullMQ's own checks (`Job#validateOptions`, the one `addBulk` calls; it is
 * protected, hence the subclass), so the rules stay BullMQ's and follow its upgrades. Nothing is
 * sent to Redis.
 */
export function refusal(queues: QueueCache, job: MessageJob): Error | undefined {
  try {
    const queue = queues.route(job.queue, job.data.messageId);
    new ValidatedJob(queue, job.name, job.data, { ...queue.jobsOpts, ...job.opts }).check();
    return undefined;
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

/** A job that is never added: built only to run BullMQ's validation of its options and data. */
class ValidatedJob extends Job {
  constructor(queue: Queue, name: string, data: unknown, opts: JobsOptions) {
    super(queue, name, data, opts, opts.jobId);
  }

  check(): void {
    this.validateOptions(this.asJSON());
  }
}
