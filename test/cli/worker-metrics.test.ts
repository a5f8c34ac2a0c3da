/**
 * `onceq worker` with `ONCEQ_METRICS_PORT` as a real child process: its own small server answers
 * `/healthz`, `/readyz` (Redis and PostgreSQL pinged, the latter through `pingDatabase`) and
 * `/metrics`, and at SIGTERM the worker exits 0.
 */
import { expect } from 'chai';
import {
  createTestSchema,
  deletePrefix,
  testRedis,
  uniqueName,
  type TestSchema,
} from '../support/env.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { closeRedis } from '../../src/redis/connection.js';

describe('cli: onceq worker with ONCEQ_METRICS_PORT', function () {
  this.timeout(60_000);
  const prefix = uniqueName('cli_wmetrics');
  let db: TestSchema;
  let worker: WorkerChild | undefined;

  before(async () => {
    db = await createTestSchema('cli_wmetrics', 2);
  });
  after(async () => {
    await worker?.destroy();
    const redis = testRedis();
    await deletePrefix(redis, prefix);
    await closeRedis(redis);
    await db?.drop();
  });

  it('answers /healthz, /readyz and /metrics on its port, and exits 0 at SIGTERM', async () => {
    worker = spawnWorker({
      schema: db.schema,
      prefix,
      env: { ONCEQ_METRICS_PORT: '0', ONCEQ_HOST: '127.0.0.1' },
    });
    await worker.waitForOutput('metrics listening', 45_000);
    const metricsUrl = /"address":"(http:[^"]+\/metrics)"/.exec(worker.output())?.[1];
    expect(metricsUrl, worker.output()).to.be.a('string');
    const base = metricsUrl!.replace(/\/metrics$/, '');

    expect((await fetch(`${base}/healthz`)).status).to.equal(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status, worker.output()).to.equal(200);
    expect(await ready.json()).to.deep.equal({ status: 'ready' });
    const metrics = await fetch(metricsUrl!);
    expect(metrics.status).to.equal(200);
    expect(await metrics.text()).to.match(/^onceq_/m);

    worker.child.kill('SIGTERM');
    const exit = await worker.exited;
    expect(exit, worker.output()).to.deep.equal({ code: 0, signal: null });
  });
});
