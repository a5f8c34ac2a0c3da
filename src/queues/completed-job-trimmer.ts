/**
 * Retention of completed jobs, enforced on a timer. A completed job costs Redis about 1.4 KB (its
 * hash, its entry in the `completed` set) and every message leaves one. BullMQ drops completed
 * jobs past `removeOnComplete` (age a day, count 100,000: message-job-options.ts) only inside
 * the script that completes another job of the same queue (moveToFinished-14.lua,
 * removeJobsByMaxAge, at most 1,000 a completion): a queue that goes quiet keeps its last day of
 * jobs, and no shorter retention can be had without re-adding every job with other options.
 *
 * The trimmer removes, every `everyMs`, the completed jobs of its queues that finished more than
 * `keepMs` ago, with BullMQ's own `Queue.clean` (its script cleanJobsInSet-3.lua, in batches).
 * Removing a completed job never risks a second effect: a re-added job of the same message is a
 * duplicate that the token and the inbox absorb, and the job status falls back to the inbox row
 * (producer/job-status.ts: completed with its result, `attempts` and `startedAt` then null). So
 * `keepMs` may be as short as the token ttl, after which Redis no longer answers for the message
 * either, or shorter. Several processes trimming the same queue only share the work.
 */
import type { Queue } from 'bullmq';
import {
  DEFAULT_COMPLETED_JOB_TRIM_BATCH,
  DEFAULT_COMPLETED_JOB_TRIM_INTERVAL_MS,
} from '../core/defaults.js';

/** Options of {@link startCompletedJobTrimmer}. */
export interface CompletedJobTrimmerOptions {
  /** The queues to trim (the worker's, from its queue cache). */
  queues: () => readonly Queue[];
  /** Completed jobs are kept this long after they finished (ms, at least 1). */
  keepMs: number;
  /**
   * Time between two trims; never longer than `keepMs`, so that a short retention holds.
   * @defaultValue {@link DEFAULT_COMPLETED_JOB_TRIM_INTERVAL_MS}
   */
  everyMs?: number;
  /** Jobs removed per script call. @defaultValue {@link DEFAULT_COMPLETED_JOB_TRIM_BATCH} */
  batch?: number;
  /** Told of a failed trim (Redis away): the next tick tries again. */
  onError?: (err: unknown, queue: string) => void;
}

/** A running trimmer. */
export interface CompletedJobTrimmer {
  /** Trims every queue once now; resolves with the number of jobs removed. */
  trim(): Promise<number>;
  /** Stops the timer and waits for a trim in progress. */
  close(): Promise<void>;
}

/** Starts trimming; the timer does not keep the process alive. */
export function startCompletedJobTrimmer(options: CompletedJobTrimmerOptions): CompletedJobTrimmer {
  const { keepMs } = options;
  if (!Number.isSafeInteger(keepMs) || keepMs < 1) {
    throw new RangeError('keepMs must be a positive integer (milliseconds)');
  }
  const everyMs = Math.min(options.everyMs ?? DEFAULT_COMPLETED_JOB_TRIM_INTERVAL_MS, keepMs);
  const batch = options.batch ?? DEFAULT_COMPLETED_JOB_TRIM_BATCH;
  let running: Promise<number> | undefined;
  let closed = false;

  async function trimQueue(queue: Queue): Promise<number> {
    let removed = 0;
    // `clean` loops over batches itself while given a limit above the batch; one batch per call
    // here, so that a close is not held up behind a backlog.
    for (;;) {
      const ids = await queue.clean(keepMs, batch, 'completed');
      removed += ids.length;
      if (ids.length < batch || closed) return removed;
    }
  }

  function trim(): Promise<number> {
    running ??= (async () => {
      let removed = 0;
      for (const queue of options.queues()) {
        try {
          removed += await trimQueue(queue);
        } catch (err) {
          options.onError?.(err, queue.name);
        }
      }
      return removed;
    })().finally(() => {
      running = undefined;
    });
    return running;
  }

  const timer = setInterval(() => void trim(), everyMs);
  timer.unref();

  return {
    trim,
    async close() {
      closed = true;
      clearInterval(timer);
      await running;
    },
  };
}
