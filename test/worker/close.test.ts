/**
 * `OnceqWorker.close(timeoutMs)` as a library call: a graceful close waits for running jobs, and
 * a close past its bound returns without them and releases their claims. In both modes (queues
 * and tokens in Redis, or on PostgreSQL alone).
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { Type } from '@sinclair/typebox';
import { createTestStack, type TestStack } from '../support/stack.js';
import { inboxCount, waitFor } from '../support/ledger.js';
import { BACKENDS } from '../support/env.js';
import { defineJob } from '../../src/jobs/define-job.js';
import type { BackendKind } from '../../src/queues/backend.js';

/** A gate the test opens; the handler waits on it inside its transaction. */
function gate(): { wait: Promise<void>; open(): void; entered: Promise<void>; enter(): void } {
  let open!: () => void;
  let enter!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  const entered = new Promise<void>((r) => (enter = r));
  return { wait, open, entered, enter };
}

for (const mode of BACKENDS) {
  describe(`worker: close(timeoutMs) (${mode})`, function () {
    this.timeout(30_000);
    closeCases(mode);
  });
}

/** The cases, declared once per mode; `mode` is where the stacks keep queues and tokens. */
function closeCases(mode: BackendKind): void {
  let stack: TestStack;
  let current = gate();
  const held = defineJob({
    name: 'test.held',
    queue: 'held',
    schema: Type.Object({}),
    async handle(ctx) {
      current.enter();
      await current.wait;
      return { messageId: ctx.messageId };
    },
  });

  beforeEach(async () => {
    current = gate();
    stack = await createTestStack('close', { jobs: [held], backend: mode });
  });
  afterEach(async () => {
    current.open();
    await stack.close();
  });

  it('waits for a job that ends within the bound, and commits it', async () => {
    const worker = await stack.startWorker({ queues: ['held'] });
    await stack.producer.enqueue('test.held', {});
    await current.entered;
    const closing = worker.close(10_000);
    setTimeout(() => current.open(), 200);
    expect(await closing).to.deep.equal({ forced: false });
    expect(await inboxCount(stack.db)).to.equal(1);
  });

  it('returns past the bound with the job still running, and releases its claim', async () => {
    const worker = await stack.startWorker({ queues: ['held'] });
    const { token } = await stack.producer.enqueue('test.held', {});
    await current.entered;
    // The gate stays shut until close() has answered: if close waited for the job, this test
    // would time out instead of passing.
    expect(await worker.close(300)).to.deep.equal({ forced: true });
    expect(worker.pipeline.inFlightCount()).to.equal(1);
    const state = await stack.producer.tokens.inspect(token);
    expect(state?.state, 'claim released for another worker').to.equal('accepted');
    expect(await inboxCount(stack.db)).to.equal(0);
    current.open();
    await waitFor(
      'the abandoned delivery to end',
      async () => worker.pipeline.inFlightCount() === 0,
    );
    expect(await inboxCount(stack.db), 'the abandoned delivery rolled back').to.equal(0);
  });

  it('hands the released job to the next worker at once, which applies it once', async () => {
    // A long lock: left to BullMQ's stalled-job check, the job would wait this long or more.
    const LOCK_MS = 20_000;
    const worker = await stack.startWorker({ queues: ['held'], lockDurationMs: LOCK_MS });
    const sent = await stack.producer.enqueue('test.held', {});
    await current.entered;
    expect(await worker.close(300)).to.deep.equal({ forced: true });
    const closedAt = performance.now();

    // The released job is put back at once, so the next worker takes it long before the lock
    // would have run out. The abandoned delivery still holds its uncommitted inbox row, so the
    // next one waits on that row lock until the abandoned handler returns and rolls back.
    const abandoned = current;
    current = gate();
    current.open();
    await stack.startWorker({ queues: ['held'] });
    await waitFor('the next delivery to wait on the abandoned inbox row', async () => {
      const { rows } = await sql<{ n: string }>`
        select count(*)::text as n from pg_stat_activity
        where datname = current_database() and wait_event_type = 'Lock'
          and query ilike '%inbox%'`.execute(stack.db);
      return Number(rows[0]!.n) > 0 || undefined;
    });
    expect(performance.now() - closedAt, 'taken before the lock ran out').to.be.below(LOCK_MS / 2);
    expect(await inboxCount(stack.db)).to.equal(0);
    abandoned.open();
    await waitFor('the message applied by the next worker', async () =>
      stack.outcomes.some((o) => o.outcome === 'applied') ? true : undefined,
    );
    await waitFor(
      'the abandoned delivery to end',
      async () => worker.pipeline.inFlightCount() === 0,
    );
    expect(await inboxCount(stack.db)).to.equal(1);
    const outcomes = stack.outcomes.filter((o) => o.messageId === sent.messageId);
    expect(outcomes.filter((o) => o.outcome === 'applied')).to.have.length(1);
    const job = await stack.producer.queue('held').getJob(sent.jobId);
    await waitFor('the job completed', async () => (await job?.isCompleted()) || undefined);
    // Put back as delayed, not failed: the release spent none of the job's attempts.
    expect((await stack.producer.queue('held').getJob(sent.jobId))!.attemptsMade).to.equal(1);
  });
}
