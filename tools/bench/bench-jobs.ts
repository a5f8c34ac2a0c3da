/**
 * The bench's own job, in a module of its own so that the `onceq worker` processes of the
 * `workers-*` figures load it through `ONCEQ_JOBS` and run the very handler the in-process onceq
 * figures run: their figures compare.
 */
import type { Queue } from 'bullmq';
import { Type } from '@sinclair/typebox';
import { defineJob } from '../../src/jobs/define-job.js';

/** The queue of every bench figure. */
export const BENCH_QUEUE = 'bench';

/** The handler of the onceq figures: the same single INSERT as the at-least-once baseline. */
export const benchInsert = defineJob({
  name: 'bench.insert',
  queue: BENCH_QUEUE,
  schema: Type.Object({ n: Type.Integer() }),
  async handle(ctx) {
    await ctx.insertOnce('bench_events', { id: ctx.messageId, n: ctx.data.n });
    return { status: 'applied' };
  },
});

/** The same completed-job retention in every figure, so BullMQ does the same work in each. */
export const REMOVE_ON_COMPLETE = { count: 1000 };

/** Adds `jobs` a thousand at a time (one addBulk of 10,000 is one very long script call). */
export async function addInChunks(
  queue: Queue,
  jobs: Parameters<Queue['addBulk']>[0],
): Promise<void> {
  for (let i = 0; i < jobs.length; i += 1000) await queue.addBulk(jobs.slice(i, i + 1000));
}
