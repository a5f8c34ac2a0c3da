/**
 * A duplicate delivered while its original is still running finds the claim busy. In the same
 * process it waits for the original to settle and is answered from it, never put back; in
 * another process it is put back, and must be looked at again soon, not parked until the
 * original's lease runs out: the original nearly always commits within milliseconds, and the
 * lease only bounds the wait for an owner that died.
 */
import { expect } from 'chai';
import { Type } from '@sinclair/typebox';
import { createTestStack, type TestStack } from '../support/stack.js';
import { inboxCount, waitFor } from '../support/ledger.js';
import { defineJob } from '../../src/jobs/define-job.js';

describe('worker: a duplicate that finds its message busy', function () {
  this.timeout(60_000);
  const LEASE_MS = 15_000;
  let stack: TestStack;
  let release!: () => void;
  let entered!: () => void;
  let running = new Promise<void>((r) => (entered = r));
  let gate = new Promise<void>((r) => (release = r));
  const held = defineJob({
    name: 'test.held',
    queue: 'held',
    schema: Type.Object({}),
    async handle(ctx) {
      entered();
      await gate;
      return { messageId: ctx.messageId };
    },
  });

  before(async () => {
    stack = await createTestStack('busy', { jobs: [held] });
  });
  after(async () => {
    release();
    await stack.close();
  });

  it('in another process: put back, and answered as a duplicate soon after the original commits, well within the lease', async () => {
    // One job at a time here, so the duplicate goes to the second worker: another pipeline, as
    // another process would be.
    const first = await stack.startWorker({
      queues: ['held'],
      lockDurationMs: LEASE_MS,
      concurrency: 1,
    });
    const sent = await stack.producer.enqueue('test.held', {});
    await running;
    const second = await stack.startWorker({ queues: ['held'], lockDurationMs: LEASE_MS });
    const queue = stack.producer.queue('held');
    // The same message again under another job id while the original holds the claim.
    const original = await queue.getJob(sent.jobId);
    await queue.add('test.held', original!.data, { jobId: 'dup-busy' });
    await waitFor(
      'the duplicate to find the message busy',
      async () =>
        stack.outcomes.some((o) => o.jobId === 'dup-busy' && o.outcome === 'busy') || undefined,
    );

    const committedAt = performance.now();
    release();
    await waitFor(
      'the duplicate to complete',
      async () =>
        stack.outcomes.some((o) => o.jobId === 'dup-busy' && o.outcome === 'duplicate') ||
        undefined,
    );
    const waitedMs = performance.now() - committedAt;
    // Parked until the lease ran out, it would wait about LEASE_MS; looked at again with a
    // doubling backoff, it is answered about as long after the commit as it had waited before.
    expect(waitedMs, `answered ${Math.round(waitedMs)} ms after the commit`).to.be.below(
      LEASE_MS / 2,
    );
    expect(await inboxCount(stack.db)).to.equal(1);
    const dup = await queue.getJob('dup-busy');
    expect(dup!.returnvalue).to.deep.include({ outcome: 'duplicate' });
    // Started more than once (each bounce is a start), but only the answering run counts as an
    // attempt: bounces spend none of the job's attempt budget.
    expect(dup!.attemptsStarted).to.be.above(1);
    expect(dup!.attemptsMade, 'busy bounces are not attempts').to.equal(1);
    await Promise.all([first.close(), second.close()]);
  });

  it('in the same process: waits for the original and is answered from it, never put back', async () => {
    running = new Promise<void>((r) => (entered = r));
    gate = new Promise<void>((r) => (release = r));
    const worker = await stack.startWorker({ queues: ['held'], lockDurationMs: LEASE_MS });
    const sent = await stack.producer.enqueue('test.held', {});
    await running;
    const queue = stack.producer.queue('held');
    const original = await queue.getJob(sent.jobId);
    await queue.add('test.held', original!.data, { jobId: 'dup-local' });
    await waitFor(
      'the worker to take the duplicate',
      async () => (await queue.getJob('dup-local'))?.processedOn !== undefined || undefined,
    );
    // Time for its claim to find the message held (a bounce would be counted as `busy` then).
    await new Promise((r) => setTimeout(r, 300));
    release();
    await waitFor(
      'the duplicate to complete',
      async () =>
        stack.outcomes.some((o) => o.jobId === 'dup-local' && o.outcome === 'duplicate') ||
        undefined,
    );
    const outcomes = stack.outcomes.filter((o) => o.jobId === 'dup-local').map((o) => o.outcome);
    expect(outcomes, 'no bounce through the delayed set').to.deep.equal(['duplicate']);
    const dup = await queue.getJob('dup-local');
    expect(dup!.returnvalue).to.deep.equal({
      outcome: 'duplicate',
      result: { messageId: sent.messageId },
    });
    expect(dup!.attemptsStarted, 'started once').to.equal(1);
    const applied = await stack.db
      .selectFrom('inbox')
      .select('message_id')
      .where('message_id', '=', sent.messageId)
      .execute();
    expect(applied).to.have.length(1);
    await worker.close();
  });
});
