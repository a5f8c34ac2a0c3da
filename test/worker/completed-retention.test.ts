/**
 * Completed jobs leave Redis after the worker's retention, on the trimmer's timer even when the
 * queue has gone quiet, and the message's status is then answered from the inbox.
 */
import { expect } from 'chai';
import { createTestStack, type TestStack } from '../support/stack.js';
import { waitFor } from '../support/ledger.js';
import { findJobStatus } from '../../src/producer/job-status.js';

describe('worker: completed-job retention', function () {
  this.timeout(60_000);
  let stack: TestStack;
  before(async () => {
    stack = await createTestStack('retention');
  });
  after(async () => stack.close());

  it('removes a completed job after the retention, with no other job completing, and the status still answers', async () => {
    const worker = await stack.startWorker({ completedJobRetentionMs: 1_000 });
    const sent = await stack.producer.enqueue('account.open', { owner: 'ada', openingBalance: 5 });
    const queue = stack.producer.queue('ledger');
    await waitFor(
      'the job completed',
      async () => (await (await queue.getJob(sent.jobId))?.isCompleted()) ?? false,
    );
    // Nothing else runs on the queue: only the trimmer can remove it.
    await waitFor(
      'the completed job removed',
      async () => (await queue.getJob(sent.jobId)) === undefined,
      20_000,
    );
    expect(await queue.getCompletedCount()).to.equal(0);
    const status = await findJobStatus(
      { db: stack.db, queue: (name) => stack.producer.queue(name) },
      sent.jobId,
      undefined,
    );
    expect(status).to.deep.include({ jobId: sent.jobId, state: 'completed' });
    await worker.close();
  });

  it('keeps completed jobs with the default retention', async () => {
    const worker = await stack.startWorker();
    const sent = await stack.producer.enqueue('account.open', { owner: 'bob', openingBalance: 5 });
    const queue = stack.producer.queue('ledger');
    await waitFor(
      'the job completed',
      async () => (await (await queue.getJob(sent.jobId))?.isCompleted()) ?? false,
    );
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await queue.getJob(sent.jobId)).to.not.equal(undefined);
    await worker.close();
  });
});
