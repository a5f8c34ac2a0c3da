/**
 * The compiled CLI on a Redis Cluster, as a user runs it: `onceq start` with
 * `REDIS_CLUSTER_NODES` (and no `REDIS_URL`) set to the run's shared cluster takes a message
 * through the API and applies it once, `onceq dlq list` answers against the same cluster, and
 * SIGTERM stops `onceq start` with exit code 0. The single-Redis `onceq start` is
 * test/cli/start.test.ts.
 */
import { expect } from 'chai';
import type { Cluster } from 'ioredis';
import {
  createTestSchema,
  deletePrefix,
  scanKeys,
  uniqueName,
  type TestSchema,
} from '../support/env.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { ensureBuilt } from '../support/build.js';
import { waitFor } from '../support/ledger.js';
import { sharedCluster, sharedClusterClient } from '../support/shared-cluster.js';
import { closeRedis } from '../../src/redis/connection.js';
import { bullmqPrefix } from '../../src/queues/redis-backend.js';
import { mintApiKey } from '../../src/core/api-key.js';
import { insertApiKey } from '../../src/db/api-keys.repository.js';

describe('cli: onceq start on a Redis Cluster, compiled', function () {
  this.timeout(120_000);
  let t: TestSchema;
  let redis: Cluster;
  let nodes: string;
  let start: WorkerChild | undefined;
  const children: WorkerChild[] = [];
  const prefix = uniqueName('cli_cluster');

  before(async () => {
    await ensureBuilt();
    nodes = (await sharedCluster()).nodesSpec;
    redis = await sharedClusterClient();
    t = await createTestSchema('cli_cluster', 2);
  });
  after(async () => {
    await Promise.all(children.splice(0).map((c) => c.destroy()));
    if (redis) {
      await deletePrefix(redis, prefix);
      await closeRedis(redis);
    }
    await t?.drop();
  });

  const onceq = (args: string[], env: Record<string, string> = {}) => {
    const child = spawnWorker({
      schema: t.schema,
      prefix,
      args,
      clusterNodes: nodes,
      compiled: true,
      env,
    });
    children.push(child);
    return child;
  };

  it('takes a message through the API, applies it once, answers dlq list, and exits 0 at SIGTERM', async () => {
    const minted = mintApiKey();
    await insertApiKey(t.db, { id: minted.id, principal: 'shop', hash: minted.hash, admin: false });
    start = onceq(['start'], { PORT: '0', ONCEQ_HOST: '127.0.0.1' });
    await start.waitForOutput('api listening', 60_000);
    await start.waitForOutput('worker started', 60_000);
    const address = /"address":"(http:[^"]+)"/.exec(start.output())![1]!;
    const auth = { authorization: `Bearer ${minted.key}` };

    const tokenRes = await fetch(`${address}/v1/tokens`, { method: 'POST', headers: auth });
    expect(tokenRes.status).to.equal(201);
    const { token } = (await tokenRes.json()) as { token: string };
    const send = () =>
      fetch(`${address}/v1/jobs`, {
        method: 'POST',
        headers: { ...auth, 'idempotency-key': token, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'account.open', data: { owner: 'c', openingBalance: 5 } }),
      });
    const first = await send();
    expect(first.status, await first.clone().text()).to.equal(202);
    const { messageId } = (await first.json()) as { messageId: string };
    // The same request again: the same message, not a second one.
    const again = await send();
    expect(again.status).to.be.oneOf([200, 202]);
    expect(((await again.json()) as { messageId: string }).messageId).to.equal(messageId);

    await waitFor('the message applied', async () => {
      const rows = await t.db.selectFrom('inbox').select('message_id').execute();
      return rows.length === 1 && rows[0]!.message_id === messageId;
    });
    const accounts = await t.db.selectFrom('accounts').select(['id', 'balance']).execute();
    expect(accounts).to.deep.equal([{ id: messageId, balance: '5' }]);
    // On the cluster, under the queue's own hash tag; nothing of it on the shared Redis layout.
    const jobKeys = await scanKeys(redis, `${bullmqPrefix(prefix, 'ledger', true)}:ledger:*`);
    expect(jobKeys, 'the ledger queue on the cluster').to.have.length.above(0);

    const list = onceq(['dlq', 'list', '--json']);
    const listed = await list.exited;
    expect(listed.code, list.output()).to.equal(0);
    expect(list.stdout().trim()).to.equal('');

    start.child.kill('SIGTERM');
    const exit = await start.exited;
    expect(exit, start.output()).to.include({ code: 0, signal: null });
    expect(start.output()).to.contain('"msg":"worker stopped"');
  });
});
