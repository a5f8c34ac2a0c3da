/**
 * Graceful shutdown of `onceq worker` (DESIGN.md section 4): at SIGTERM/SIGINT it stops taking
 * jobs, finishes or releases the ones in flight within ONCEQ_SHUTDOWN_TIMEOUT, closes its
 * connections and exits 0; a second signal exits at once with 130. Real child processes, real
 * signals, a slow user job loaded through ONCEQ_JOBS; the effect of every message is counted.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { expect } from 'chai';
import { sql } from 'kysely';
import { createTestStack, type TestStack } from '../support/stack.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { inboxCount, waitFor } from '../support/ledger.js';
import { defineJob } from '../../src/jobs/define-job.js';

const DEFINE_JOB_URL = pathToFileURL(
  fileURLToPath(new URL('../../src/jobs/define-job.ts', import.meta.url)),
).href;

const SLOW_SCHEMA = {
  type: 'object',
  properties: { sleepMs: { type: 'integer', minimum: 0 }, label: { type: 'string' } },
  required: ['sleepMs', 'label'],
  additionalProperties: false,
} as const;

/**
 * The slow job the child workers load: it announces itself on stdout, sleeps inside the
 * transaction, then writes one row tagged with the pid of the process that ran it.
 */
const SLOW_MODULE = `
import { defineJob } from ${JSON.stringify(DEFINE_JOB_URL)};

export const slowWrite = defineJob({
  name: 'slow.write',
  queue: 'slow',
  schema: ${JSON.stringify(SLOW_SCHEMA)},
  async handle(ctx) {
    process.stdout.write(\`slow-job-started \${ctx.messageId}\\n\`);
    await new Promise((resolve) => setTimeout(resolve, ctx.data.sleepMs));
    await ctx.insertOnce('slow_effects', { id: ctx.messageId, label: ctx.data.label, pid: process.pid });
    return { pid: process.pid };
  },
});
`;

/** The same job for the in-process rescuer: no sleep, so a redelivery finishes quickly. */
const fastWrite = defineJob({
  name: 'slow.write',
  queue: 'slow',
  schema: SLOW_SCHEMA as never,
  async handle(ctx) {
    await ctx.insertOnce('slow_effects', {
      id: ctx.messageId,
      label: (ctx.data as { label: string }).label,
      pid: process.pid,
    });
    return { pid: process.pid };
  },
});

interface EffectRow {
  id: string;
  label: string;
  pid: number;
}

describe('worker: graceful shutdown', function () {
  this.timeout(60_000);
  let dir: string;
  let jobsFile: string;
  const children: WorkerChild[] = [];
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'onceq-shutdown-'));
    jobsFile = path.join(dir, 'slow-jobs.ts');
    writeFileSync(jobsFile, SLOW_MODULE);
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  afterEach(async () => {
    await Promise.all(children.splice(0).map((c) => c.destroy()));
  });

  async function prepare(label: string): Promise<TestStack> {
    const stack = await createTestStack(label, { jobs: [fastWrite] });
    await sql`create table slow_effects (id bigint primary key, label text not null, pid integer not null)`.execute(
      stack.db,
    );
    return stack;
  }

  function spawn(stack: TestStack, env: Record<string, string>): WorkerChild {
    const child = spawnWorker({
      schema: stack.schema,
      prefix: stack.prefix,
      // A short lock: an abandoned delivery stalls, and is redelivered, within a few seconds.
      env: { ONCEQ_JOBS: jobsFile, ONCEQ_QUEUES: 'slow', ONCEQ_LOCK_DURATION: '1s', ...env },
    });
    children.push(child);
    return child;
  }

  async function effects(stack: TestStack): Promise<EffectRow[]> {
    const { rows } = await sql<EffectRow>`
      select id::text, label, pid from slow_effects order by id`.execute(stack.db);
    return rows;
  }

  /** Sends `signal` and resolves with the exit and how long it took. */
  async function signalAndWait(child: WorkerChild, signal: NodeJS.Signals) {
    const sentAt = Date.now();
    child.child.kill(signal);
    const exit = await child.exited;
    return { ...exit, ms: Date.now() - sentAt };
  }

  describe('a job that finishes within ONCEQ_SHUTDOWN_TIMEOUT', () => {
    let stack: TestStack;
    before(async () => {
      stack = await prepare('shutdown_finish');
    });
    after(async () => stack.close());

    it('is finished and committed once, then the worker exits 0', async () => {
      // The lock also bounds how long a transaction may sit idle (a zombie's must not block the
      // next owner), so it is longer than the handler's sleep here.
      const worker = spawn(stack, { ONCEQ_SHUTDOWN_TIMEOUT: '10s', ONCEQ_LOCK_DURATION: '3s' });
      await worker.waitForOutput('worker started');
      const sent = await stack.producer.enqueue('slow.write', { sleepMs: 1_500, label: 'finish' });
      await worker.waitForOutput(`slow-job-started ${sent.messageId}`);
      expect(await effects(stack)).to.deep.equal([]);

      const exit = await signalAndWait(worker, 'SIGTERM');
      expect(exit, worker.output()).to.include({ code: 0, signal: null });
      // It waited for the handler (~1.5 s) but not for the bound.
      expect(exit.ms, worker.output()).to.be.below(10_000);
      expect(worker.stdout()).to.contain('shutting down');

      // The effect was committed by that process, once, and BullMQ knows the job is done.
      const rows = await effects(stack);
      expect(rows).to.deep.equal([{ id: sent.messageId, label: 'finish', pid: worker.child.pid }]);
      expect(await inboxCount(stack.db)).to.equal(1);
      const job = await stack.producer.queue('slow').getJob(sent.jobId);
      expect(await job!.isCompleted()).to.equal(true);
      expect(job!.returnvalue).to.deep.equal({
        outcome: 'applied',
        result: { pid: worker.child.pid },
      });
      // Marked done in Redis too: nothing is left for another worker to redo.
      expect((await stack.producer.tokens.inspect(sent.token))?.state).to.equal('done');
    });
  });

  describe('a job slower than ONCEQ_SHUTDOWN_TIMEOUT', () => {
    let stack: TestStack;
    before(async () => {
      stack = await prepare('shutdown_release');
    });
    after(async () => stack.close());

    it('is released: the worker exits 0 promptly, commits nothing, and another worker applies it once', async () => {
      // A lock (and so an idle-in-transaction bound) longer than the shutdown bound: the open
      // transaction is still alive when the process leaves, and must roll back with it.
      const worker = spawn(stack, { ONCEQ_SHUTDOWN_TIMEOUT: '1s', ONCEQ_LOCK_DURATION: '3s' });
      await worker.waitForOutput('worker started');
      const sent = await stack.producer.enqueue('slow.write', {
        sleepMs: 10_000,
        label: 'release',
      });
      await worker.waitForOutput(`slow-job-started ${sent.messageId}`);
      const held = await stack.producer.tokens.inspect(sent.token);
      expect(held?.state).to.equal('claimed');
      expect(held?.owner).to.contain(`:${worker.child.pid}:`);

      const exit = await signalAndWait(worker, 'SIGTERM');
      expect(exit, worker.output()).to.include({ code: 0, signal: null });
      // The 1 s bound plus the CLI's 1 s release grace; far less than the handler's 10 s.
      expect(exit.ms, worker.output()).to.be.below(5_000);

      // Nothing committed by that process, and its claim is given back (not left to expire).
      expect(await effects(stack)).to.deep.equal([]);
      expect(await inboxCount(stack.db)).to.equal(0);
      const released = await stack.producer.tokens.inspect(sent.token);
      expect(released?.state).to.equal('accepted');
      expect(released?.owner).to.equal(undefined);

      // The job stalls (its lock is not renewed) and is redelivered to another worker.
      await stack.startWorker({ lockDurationMs: 1_000 });
      await waitFor(
        'the message applied by the rescuer',
        async () => (await inboxCount(stack.db)) === 1,
      );
      expect(await effects(stack)).to.deep.equal([
        { id: sent.messageId, label: 'release', pid: process.pid },
      ]);
      const job = await waitFor('the job completed', async () => {
        // Read once: finishedOn and returnvalue are written together (isCompleted() would ask
        // Redis again, after this object was read).
        const j = await stack.producer.queue('slow').getJob(sent.jobId);
        return j?.finishedOn ? j : undefined;
      });
      expect(job.returnvalue).to.deep.equal({ outcome: 'applied', result: { pid: process.pid } });
      expect(
        stack.outcomes.filter((o) => o.messageId === sent.messageId).map((o) => o.outcome),
      ).to.deep.equal(['applied']);
    });
  });

  describe('a second signal during shutdown', () => {
    let stack: TestStack;
    before(async () => {
      stack = await prepare('shutdown_twice');
    });
    after(async () => stack.close());

    for (const [first, second, rescue] of [
      ['SIGTERM', 'SIGINT', true],
      // The other order only for the exit: the redelivery is the same as above.
      ['SIGINT', 'SIGTERM', false],
    ] as const) {
      it(`${first} then ${second}: exits at once with code 130${rescue ? ', and the message is not lost' : ', committing nothing'}`, async () => {
        const worker = spawn(stack, { ONCEQ_SHUTDOWN_TIMEOUT: '20s' });
        await worker.waitForOutput('worker started');
        const sent = await stack.producer.enqueue('slow.write', { sleepMs: 10_000, label: first });
        await worker.waitForOutput(`slow-job-started ${sent.messageId}`);

        worker.child.kill(first);
        await worker.waitForOutput('shutting down');
        // Still waiting for the in-flight job, as the first signal asked.
        await new Promise((r) => setTimeout(r, 300));
        expect(worker.child.exitCode).to.equal(null);

        const exit = await signalAndWait(worker, second);
        expect(exit, worker.output()).to.include({ code: 130, signal: null });
        expect(exit.ms, worker.output()).to.be.below(2_000);
        expect(worker.output()).to.contain('second signal');
        expect((await effects(stack)).filter((r) => r.id === sent.messageId)).to.deep.equal([]);

        if (!rescue) return;
        // The abandoned delivery stalls and is applied once by another worker.
        const rescuer = await stack.startWorker({ lockDurationMs: 1_000 });
        await waitFor(
          'the message applied by the rescuer',
          async () => (await effects(stack)).some((r) => r.id === sent.messageId),
          30_000,
        );
        await rescuer.close();
        expect((await effects(stack)).filter((r) => r.id === sent.messageId)).to.deep.equal([
          { id: sent.messageId, label: first, pid: process.pid },
        ]);
      });
    }
  });
});
