/**
 * `jobOf` (src/queues/message-job.ts), the one mapping from a recorded message to its BullMQ job
 * that the reconciler, the outbox relay and dead-letter replay share. Pure: no Redis needed.
 */
import { expect } from 'chai';
import { jobIdFor } from '../../src/core/message.js';
import { jobOf } from '../../src/queues/message-job.js';
import { messageJobOptions } from '../../src/queues/message-job-options.js';

describe('queues: jobOf', () => {
  const row = {
    queue: 'ledger',
    job_name: 'ledger.transfer',
    message_id: '7203691551471493121',
    token: 'tok',
    data: { amount: '10' },
    // Columns beyond the ones a job is made of are ignored.
    options: { priority: 3 },
  };

  it("builds the envelope from the row and the message's job options", () => {
    const job = jobOf(row, { maxAttempts: 4, backoffMs: 50, priority: 3, delay: 1_000 });
    expect(job).to.deep.equal({
      queue: 'ledger',
      name: 'ledger.transfer',
      data: { messageId: row.message_id, token: 'tok', data: { amount: '10' } },
      opts: messageJobOptions(row.message_id, {
        maxAttempts: 4,
        backoffMs: 50,
        priority: 3,
        delay: 1_000,
      }),
    });
    expect(job.opts).to.include({ jobId: jobIdFor(row.message_id), attempts: 4, delay: 1_000 });
  });

  it("leaves delay and priority to the caller: none given, none set, the producer's defaults", () => {
    const { opts } = jobOf(row);
    expect(opts).to.not.have.any.keys('delay', 'priority');
    expect(opts).to.include({ attempts: 10, removeOnFail: false });
    expect(opts.backoff).to.deep.equal({ type: 'exponential', delay: 1_000, jitter: 0.5 });
  });
});
