/**
 * A Redis Cluster shard that goes down whole (its master and its replica SIGKILLed, so no
 * failover) and comes back empty, while worker processes consume the queue whose slot it
 * owns: the cluster is down meanwhile, then the queue's keys and the tokens on that shard are
 * gone. The workers must go on taking jobs afterwards (the reconciler re-adds the lost jobs) and
 * every message a producer sent is applied once. Real child processes, a cluster of the test's
 * own.
 *
 * The producer retries the way the contract asks: each message has its own token, and a send
 * that fails is retried with the same token until it is answered, so a send that was accepted in
 * PostgreSQL but failed on its way back is not sent twice. (An earlier version of this test sent
 * a fresh message after every failure and counted the failed ones as not sent: when one had been
 * accepted before its queue add failed, the reconciler applied it, one more than the test
 * expected, and the test timed out waiting for a count it had already passed. That read as
 * workers that stopped taking jobs.)
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { createTestStack, type TestStack } from '../support/stack.js';
import { assertLedgerInvariants, inboxCount, waitFor } from '../support/ledger.js';
import { ErrorCode, OnceqError } from '../../src/core/errors.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { startRedisCluster, type RedisCluster } from '../../tools/support/redis-cluster.js';
import { bullmqPrefix } from '../../src/queues/redis-backend.js';

describe('fault: a Redis Cluster shard restarted empty under running workers', function () {
  this.timeout(180_000);
  let cluster: RedisCluster | undefined;
  let stack: TestStack | undefined;
  const workers: WorkerChild[] = [];
  // The traffic loop's switch: off in afterEach too, so a failed test leaves no loop behind.
  let sending = false;

  afterEach(async () => {
    sending = false;
    await Promise.all(workers.splice(0).map((w) => w.destroy()));
    await stack?.close();
    stack = undefined;
    await cluster?.stop();
    cluster = undefined;
  });

  it('keeps consuming after the shard of the queue comes back, each message applied once', async () => {
    cluster = await startRedisCluster();
    stack = await createTestStack('cl_shard', { cluster });
    const env = {
      ONCEQ_RECONCILE_INTERVAL: '1s',
      ONCEQ_RECONCILE_GRACE: '2s',
      ONCEQ_LOCK_DURATION: '3s',
    };
    for (let i = 0; i < 2; i++) {
      const w = spawnWorker({
        schema: stack.schema,
        prefix: stack.prefix,
        clusterNodes: cluster.nodesSpec,
        env,
      });
      workers.push(w);
      await w.waitForOutput('worker started', 60_000);
    }
    const open = async (n: number, from: number) => {
      for (let i = 0; i < n; i++) {
        await stack!.producer.enqueue('account.open', {
          accountId: String(from + i),
          owner: `o${from + i}`,
          openingBalance: 10,
        });
      }
    };
    await open(20, 1);
    await waitFor('the first 20 applied', async () => (await inboxCount(stack!.db)) === 20, 60_000);

    // Traffic through the outage. Each message has a token of its own and is retried with it
    // until answered; a token lost with the shard before its first use (unknown now) is
    // replaced by a fresh one, since nothing was accepted with it.
    const pause = () => new Promise((r) => setTimeout(r, 100));
    const sendOnce = async (id: string): Promise<string | undefined> => {
      while (sending) {
        let token: string;
        try {
          token = await stack!.producer.issueToken();
        } catch {
          await pause();
          continue;
        }
        while (sending) {
          try {
            const r = await stack!.producer.enqueue(
              'account.open',
              { accountId: id, owner: `o${id}`, openingBalance: 10 },
              { token },
            );
            return r.messageId;
          } catch (err) {
            if (err instanceof OnceqError && err.code === ErrorCode.TokenUnknown) break;
            await pause();
          }
        }
      }
      return undefined;
    };
    sending = true;
    let next = 1_000;
    const sent: string[] = [];
    const traffic = (async () => {
      while (sending) {
        const id = await sendOnce(String(next++));
        if (id !== undefined) sent.push(id);
      }
    })();
    await new Promise((r) => setTimeout(r, 500));

    // The shard that owns the ledger queue's slot: replica first (no failover), then master.
    const owner = await cluster.slotOwner(`${bullmqPrefix(stack.prefix, 'ledger', true)}:wait`);
    const replicas = (await cluster.replicasOf(owner.port)).map((r) => r.port);
    for (const port of replicas) await cluster.killNode(port);
    await cluster.killNode(owner.port);
    // Down until the other nodes hold the cluster failed (node timeout 1 s), and a while more.
    await cluster.waitUntilFailed();
    await new Promise((r) => setTimeout(r, 1_000));
    await cluster.restartNode(owner.port);
    for (const port of replicas) await cluster.restartNode(port);
    await cluster.waitUntilHealthy();
    await new Promise((r) => setTimeout(r, 1_000));
    sending = false;
    await traffic;

    await open(20, 101);
    const total = 40 + sent.length;
    await waitFor(
      `all ${total} applied by the running workers`,
      async () => (await inboxCount(stack!.db)) === total,
      90_000,
    );
    // Every message sent through the outage is among them, and nothing else was applied.
    const { rows } = await sql<{ message_id: string }>`select message_id::text from inbox`.execute(
      stack.db,
    );
    const applied = new Set(rows.map((r) => r.message_id));
    expect(sent.filter((id) => !applied.has(id))).to.deep.equal([]);
    expect(applied.size).to.equal(total);
    await assertLedgerInvariants(stack.db);
  });
});
