/**
 * Durable acceptance under a Redis that loses its data: the reconciler re-enqueues accepted
 * messages whose jobs are gone, and every accepted message still gets exactly one effect.
 *
 * "FLUSHALL" here is test-scoped: the Redis is shared with other work, so the test deletes every
 * key under its own prefix (BullMQ's queues, jobs and locks, and onceq's tokens and worker-id
 * leases), which is what a FLUSHALL would do to this deployment.
 */
import { expect } from 'chai';
import { createTestStack, type TestStack } from '../support/stack.js';
import { assertLedgerInvariants, inboxCount, waitFor } from '../support/ledger.js';
import { deletePrefix } from '../support/env.js';

describe('worker: reconciler', function () {
  this.timeout(90_000);
  let stack: TestStack;
  before(async () => {
    stack = await createTestStack('reconcile', { backoffMs: 20 });
  });
  after(async () => stack.close());

  it('loses no message and applies none twice when Redis loses every key mid-run', async () => {
    const options = { concurrency: 3, reconciler: { intervalMs: 300, graceMs: 1_000 } };
    const opener = await stack.startWorker(options);
    const accounts: string[] = [];
    for (let i = 0; i < 4; i++) {
      accounts.push(
        (await stack.producer.enqueue('account.open', { owner: `o${i}`, openingBalance: 100_000 }))
          .messageId,
      );
    }
    await waitFor('accounts open', async () => (await inboxCount(stack.db)) === 4);
    await opener.close();
    // Queued while no worker runs, so that the flush surely lands with most of them waiting.
    const transfers = 1_500;
    for (let i = 0; i < transfers; i += 50) {
      await Promise.all(
        Array.from({ length: 50 }, (_, k) =>
          stack.producer.enqueue('ledger.transfer', {
            fromId: accounts[(i + k) % 4]!,
            toId: accounts[(i + k + 1) % 4]!,
            amount: 1 + ((i + k) % 7),
          }),
        ),
      );
    }
    const first = await stack.startWorker(options);
    const second = await stack.startWorker(options);
    await waitFor('some applied', async () => (await inboxCount(stack.db)) >= 4 + 30, 30_000, 5);
    await deletePrefix(stack.redis, stack.prefix);
    const appliedAtFlush = await inboxCount(stack.db);
    expect(appliedAtFlush, 'the flush must land mid-run').to.be.below(4 + transfers);

    await waitFor(
      `all ${transfers + 4} messages applied`,
      async () => (await inboxCount(stack.db)) === transfers + 4,
      60_000,
    );
    const state = await assertLedgerInvariants(stack.db);
    expect(state.transfers).to.equal(transfers);
    expect(state.sumBalances).to.equal(400_000n);
    expect(state.transfers).to.equal(transfers);
    // Whichever worker held the lock ran the passes.
    const reenqueued = first.reconciler!.stats().reenqueued + second.reconciler!.stats().reenqueued;
    expect(reenqueued, 'the reconciler re-added the lost jobs').to.be.at.least(1);
    // Once everything is applied a pass finds nothing left to do.
    const last = await first.reconciler!.runOnce();
    if (last.ran) expect(last).to.include({ unsettled: 0, reenqueued: 0 });
  });
});
