/**
 * The operations routes over a Redis Cluster, through `app.inject()`: /metrics with the
 * scrape-time collectors (src/metrics/state-collectors.ts) reports the depth of a queue whose
 * keys are in a slot of their own, and Bull Board (src/http/routes/admin-queues.ts) lists the
 * work queue and its dead-letter queue with their counts read from the cluster. The single-Redis
 * shape of both is test/http/admin.test.ts.
 */
import { expect } from 'chai';
import { createApiTest, type ApiTest } from '../support/api.js';
import { createMetrics } from '../../src/metrics/metrics.js';
import { addStateCollectors } from '../../src/metrics/state-collectors.js';
import { sample } from '../support/metrics.js';

describe('http: /metrics and /admin/queues on a Redis Cluster', function () {
  this.timeout(30_000);
  let api: ApiTest;
  let admin: string;
  let removeCollectors: () => Promise<void>;
  const metrics = createMetrics({ defaultMetrics: false });
  const WAITING = 3;

  before(async () => {
    api = await createApiTest('http_cluster', {
      metrics,
      adminQueues: { queues: ['ledger'] },
      stack: { cluster: true },
    });
    removeCollectors = addStateCollectors(metrics, {
      db: api.stack.db,
      backend: api.stack.backend,
      queues: ['ledger'],
    });
    admin = await api.key('ops', true);
    // No worker: the jobs wait.
    for (let i = 0; i < WAITING; i++) {
      await api.stack.producer.enqueue('account.open', { owner: `o${i}`, openingBalance: 1 });
    }
  });
  after(async () => {
    await removeCollectors?.();
    await api?.close();
  });

  const get = (url: string) =>
    api.inject({ method: 'GET', url, headers: { authorization: `Bearer ${admin}` } });

  it('reports the depth of each queue from the cluster in /metrics', async () => {
    const res = await get('/metrics');
    expect(res.statusCode).to.equal(200);
    const gauge = (queue: string, state: string) =>
      sample(res.body, 'onceq_queue_jobs', { queue, state });
    expect(gauge('ledger', 'waiting')).to.equal(WAITING);
    expect(gauge('ledger', 'active')).to.equal(0);
    expect(gauge('ledger.dlq', 'waiting')).to.equal(0);
  });

  it("lists the queues in Bull Board's API, with their counts from the cluster", async () => {
    const res = await get('/admin/queues/api/queues');
    expect(res.statusCode, res.body).to.equal(200);
    const queues = (
      res.json() as {
        queues: { name: string; readOnlyMode: boolean; counts: Record<string, number> }[];
      }
    ).queues;
    expect(queues.map((q) => [q.name, q.readOnlyMode])).to.deep.equal([
      ['ledger', false],
      ['ledger.dlq', true],
    ]);
    expect(queues[0]!.counts.waiting).to.equal(WAITING);
  });
});
