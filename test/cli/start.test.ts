/**
 * `onceq start` as a real child process: migrations, then the API and a worker in one process.
 * It answers /readyz, processes a job sent through the API, counts a duplicate delivery as
 * `duplicate` on /metrics, guards Bull Board with the admin key, never logs a token or a key,
 * and at SIGTERM with a job in flight exits 0, leaving that job applied once or released.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { expect } from 'chai';
import { sql } from 'kysely';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  createTestSchema,
  deletePrefix,
  testRedis,
  uniqueName,
  type TestSchema,
} from '../support/env.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { waitFor } from '../support/ledger.js';
import { sample } from '../support/metrics.js';
import { closeRedis } from '../../src/redis/connection.js';
import { mintApiKey } from '../../src/core/api-key.js';
import { insertApiKey } from '../../src/db/api-keys.repository.js';
import { messageJobOptions } from '../../src/queues/message-job-options.js';

const DEFINE_JOB_URL = pathToFileURL(
  fileURLToPath(new URL('../../src/jobs/define-job.ts', import.meta.url)),
).href;

/** A slow job: announces itself, sleeps inside its transaction, then writes one row. */
const SLOW_MODULE = `
import { defineJob } from ${JSON.stringify(DEFINE_JOB_URL)};
export const slowWrite = defineJob({
  name: 'slow.write',
  queue: 'slow',
  schema: { type: 'object', properties: { sleepMs: { type: 'integer' } }, required: ['sleepMs'] },
  async handle(ctx) {
    process.stdout.write(\`slow-job-started \${ctx.messageId}\\n\`);
    await new Promise((resolve) => setTimeout(resolve, ctx.data.sleepMs));
    await ctx.insertOnce('slow_effects', { id: ctx.messageId });
    return { status: 'applied' };
  },
});
`;

describe('cli: onceq start', function () {
  this.timeout(90_000);
  let db: TestSchema;
  let redis: Redis;
  let dir: string;
  let start: WorkerChild;
  let address: string;
  let adminKey: string;
  let producerKey: string;
  const prefix = uniqueName('cli_start');
  const secrets: string[] = [];

  before(async () => {
    db = await createTestSchema('cli_start');
    redis = testRedis();
    dir = mkdtempSync(path.join(tmpdir(), 'onceq-start-'));
    const jobsFile = path.join(dir, 'slow-jobs.ts');
    writeFileSync(jobsFile, SLOW_MODULE);
    await sql`create table slow_effects (id bigint primary key)`.execute(db.db);
    for (const admin of [true, false]) {
      const minted = mintApiKey();
      await insertApiKey(db.db, { id: minted.id, principal: 'shop', hash: minted.hash, admin });
      if (admin) adminKey = minted.key;
      else producerKey = minted.key;
      secrets.push(minted.key);
    }
    start = spawnWorker({
      schema: db.schema,
      prefix,
      args: ['start'],
      env: {
        PORT: '0',
        ONCEQ_HOST: '127.0.0.1',
        ONCEQ_JOBS: jobsFile,
        // Longer than the slow job's sleep: the worker's sessions end idle transactions after it.
        ONCEQ_LOCK_DURATION: '3s',
        ONCEQ_SHUTDOWN_TIMEOUT: '8s',
        // Everything a run logs, so that the secret check covers the most verbose output.
        LOG_LEVEL: 'trace',
      },
    });
    await start.waitForOutput('api listening', 60_000);
    await start.waitForOutput('worker started', 60_000);
    address = /"address":"(http:[^"]+)"/.exec(start.output())![1]!;
  });

  after(async () => {
    await start?.destroy();
    await deletePrefix(redis, prefix);
    await closeRedis(redis);
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  const get = (url: string, key?: string) =>
    fetch(`${address}${url}`, { headers: key ? { authorization: `Bearer ${key}` } : {} });

  async function enqueue(name: string, data: unknown) {
    const tokenRes = await fetch(`${address}/v1/tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${producerKey}` },
    });
    const { token } = (await tokenRes.json()) as { token: string };
    secrets.push(token);
    const res = await fetch(`${address}/v1/jobs`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${producerKey}`,
        'idempotency-key': token,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ name, data }),
    });
    expect(res.status).to.equal(202);
    return { token, ...((await res.json()) as { messageId: string; jobId: string }) };
  }

  it('answers /readyz once migrated and connected', async () => {
    const res = await get('/readyz');
    expect(res.status).to.equal(200);
    expect(await res.json()).to.deep.include({ status: 'ready' });
  });

  it('guards Bull Board: 401 without a key, 403 for a producer key, 200 for an admin key', async () => {
    const none = await get('/admin/queues');
    expect(none.status).to.equal(401);
    expect(none.headers.get('www-authenticate')).to.match(/^Basic /);
    expect((await get('/admin/queues', producerKey)).status).to.equal(403);
    expect((await get('/admin/queues', adminKey)).status).to.equal(200);
    const queues = await get('/admin/queues/api/queues', adminKey);
    expect(queues.status).to.equal(200);
    const names = ((await queues.json()) as { queues: { name: string }[] }).queues.map(
      (q) => q.name,
    );
    expect(names).to.include.members(['ledger', 'ledger.dlq', 'slow', 'slow.dlq']);
  });

  it('processes a job, and counts a duplicate delivery of it as duplicate on /metrics', async () => {
    const sent = await enqueue('account.open', { owner: 'alice', openingBalance: 100 });
    await waitFor('the account', async () => {
      const { rows } = await sql`select 1 from accounts where id = ${sent.messageId}`.execute(
        db.db,
      );
      return rows.length === 1;
    });
    // The same message under a second job id: a second delivery the worker must absorb.
    const queue = new Queue('ledger', { connection: redis, prefix });
    try {
      await queue.add(
        'account.open',
        {
          messageId: sent.messageId,
          token: sent.token,
          data: { owner: 'alice', openingBalance: 100 },
        },
        { ...messageJobOptions(sent.messageId), jobId: `${sent.jobId}-dup` },
      );
      await waitFor(
        'the duplicate to complete',
        async () => (await queue.getJobState(`${sent.jobId}-dup`)) === 'completed',
      );
    } finally {
      await queue.close();
    }
    expect((await get('/metrics')).status).to.equal(401);
    const text = await (await get('/metrics', producerKey)).text();
    const count = (outcome: string) =>
      sample(text, 'onceq_jobs_total', { queue: 'ledger', outcome });
    expect(count('applied'), text).to.equal(1);
    expect(count('duplicate'), text).to.equal(1);
    expect(sample(text, 'onceq_claims_total', { queue: 'ledger', result: 'done' })).to.equal(1);
    expect(
      sample(text, 'onceq_handler_duration_seconds_count', {
        queue: 'ledger',
        job: 'account.open',
      }),
    ).to.equal(1);
    expect(
      sample(text, 'onceq_job_end_to_end_seconds_count', { queue: 'ledger', outcome: 'applied' }),
    ).to.equal(1);
    expect(text).to.contain('# TYPE onceq_dead_letters gauge');
    expect(sample(text, 'onceq_queue_jobs', { queue: 'ledger.dlq', state: 'waiting' })).to.equal(0);
    expect(text).to.match(/^nodejs_heap_size_total_bytes/m);
    const lines = start
      .stdout()
      .split('\n')
      .filter((l) => l.includes('"msg":"job duplicate"'));
    expect(lines).to.have.length(1);
    expect(JSON.parse(lines[0]!)).to.include({
      messageId: sent.messageId,
      jobId: `${sent.jobId}-dup`,
      queue: 'ledger',
      outcome: 'duplicate',
    });
  });

  it('exits 0 at SIGTERM with a job in flight, which ends applied once or released', async () => {
    const sent = await enqueue('slow.write', { sleepMs: 1_500 });
    await start.waitForOutput(`slow-job-started ${sent.messageId}`);
    start.child.kill('SIGTERM');
    const exit = await start.exited;
    expect(exit, start.output()).to.include({ code: 0, signal: null });
    expect(start.output()).to.contain('"msg":"api stopped"');
    expect(start.output()).to.contain('"msg":"worker stopped"');

    const { rows: effects } = await sql<{ n: string }>`
      select count(*)::text as n from slow_effects where id = ${sent.messageId}`.execute(db.db);
    const { rows: inbox } = await sql<{ n: string }>`
      select count(*)::text as n from inbox where message_id = ${sent.messageId}`.execute(db.db);
    // Applied once (effect and inbox row together), or released (neither, the job still queued).
    expect(`${effects[0]!.n}/${inbox[0]!.n}`).to.be.oneOf(['1/1', '0/0']);
    if (effects[0]!.n === '0') {
      const queue = new Queue('slow', { connection: redis, prefix });
      try {
        expect(await queue.getJobState(sent.jobId)).to.be.oneOf(['active', 'waiting', 'delayed']);
      } finally {
        await queue.close();
      }
    }
  });

  it('logged no token and no API key in the whole run', () => {
    const output = start.output();
    expect(output.length).to.be.greaterThan(0);
    for (const secret of secrets) expect(output).not.to.contain(secret);
    expect(output).not.to.match(/oqt_[A-Za-z0-9_-]{32}/);
    expect(output).not.to.match(/oqk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}/);
  });
});
