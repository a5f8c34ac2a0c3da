/**
 * A delivery whose token is `done` in Redis is answered from Redis alone: one round trip, nothing
 * in PostgreSQL. Proved by locking the inbox against every other session while the duplicate is
 * delivered: a delivery that went to PostgreSQL would wait on the lock instead of completing.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { createTestStack, type TestStack } from '../support/stack.js';
import { waitFor } from '../support/ledger.js';

describe('worker: the duplicate fast path', function () {
  this.timeout(60_000);
  let stack: TestStack;
  before(async () => {
    stack = await createTestStack('dupfast');
  });
  after(async () => stack.close());

  it('answers a duplicate of an applied message from Redis, with PostgreSQL locked out', async () => {
    await stack.startWorker();
    const sent = await stack.producer.enqueue('account.open', { owner: 'ada', openingBalance: 5 });
    const queue = stack.producer.queue('ledger');
    await waitFor(
      'the original completed',
      async () => (await (await queue.getJob(sent.jobId))?.isCompleted()) ?? false,
    );
    const original = (await queue.getJob(sent.jobId))!;

    let answered: unknown;
    await stack.db.transaction().execute(async (trx) => {
      // Held until the duplicate has been answered: any statement on the inbox from another
      // session (the message transaction's first one) waits here.
      await sql`lock table inbox in access exclusive mode`.execute(trx);
      await queue.add(original.name, original.data, { jobId: 'dup-fast' });
      await waitFor(
        'the duplicate answered while the inbox is locked',
        async () => (await (await queue.getJob('dup-fast'))?.isCompleted()) ?? false,
        20_000,
      );
      answered = (await queue.getJob('dup-fast'))!.returnvalue;
    });
    expect(answered).to.deep.equal({
      outcome: 'duplicate',
      result: { status: 'applied', accountId: sent.messageId },
    });
    expect(
      stack.outcomes.filter((o) => o.jobId === 'dup-fast').map((o) => o.outcome),
    ).to.deep.equal(['duplicate']);
  });
});
