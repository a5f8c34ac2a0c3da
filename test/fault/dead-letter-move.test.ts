/**
 * A worker SIGKILLed halfway through a dead-letter move: the copy is written (PostgreSQL and the
 * BullMQ dead-letter queue), the original is still on its queue. Afterwards each message is in
 * exactly one of the two places or in both, and once replayed it is applied exactly once.
 * Real child processes, real signals, real services, in both modes (queues and tokens in Redis,
 * or on PostgreSQL alone: the children then run without REDIS_URL). It passes on a Redis Cluster
 * too (`MODES`: the children get REDIS_CLUSTER_NODES), but is not run there by `npm test`: its
 * ~25 s buy nothing the in-process cluster cases of test/worker/dead-letters.test.ts (the move
 * across two slots, the reconciler finishing it, replay) do not already show.
 */
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { createTestStack, modeOptions, type TestStack } from '../support/stack.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { waitFor } from '../support/ledger.js';
import {
  createFixtureTables,
  effectCounts,
  fixtureJobs,
  FIXTURE_QUEUE,
  setFailing,
} from '../fixtures/jobs.js';
import { findDeadLetter } from '../../src/db/dead-letters.repository.js';
import { replayDeadLetters } from '../../src/worker/dead-letter-replay.js';
import type { EnqueueResult } from '../../src/producer/producer.js';
import { BACKENDS, type TestMode } from '../support/env.js';

const JOBS_MODULE = fileURLToPath(new URL('../fixtures/jobs.ts', import.meta.url));

for (const mode of BACKENDS) {
  describe(`fault: SIGKILL during a dead-letter move (${mode})`, function () {
    this.timeout(90_000);
    deadLetterMoveCases(mode);
  });
}

/** The case, declared once per mode; `mode` is where the stack and children keep queues. */
function deadLetterMoveCases(mode: TestMode): void {
  let stack: TestStack;
  const children: WorkerChild[] = [];
  const spawn = (env: Record<string, string> = {}) => {
    const child = spawnWorker({
      schema: stack.schema,
      prefix: stack.prefix,
      backend: stack.backend.kind,
      clusterNodes: stack.clusterNodes,
      env: { ONCEQ_JOBS: JOBS_MODULE, ...env },
    });
    children.push(child);
    return child;
  };
  before(async () => {
    stack = await createTestStack('dl-kill', {
      jobs: fixtureJobs,
      maxAttempts: 1,
      ...modeOptions(mode),
    });
    await createFixtureTables(stack.db);
  });
  after(async () => {
    await Promise.all(children.splice(0).map((c) => c.destroy()));
    await stack.close();
  });

  it('leaves the message in one place or both, and a replay applies it once', async () => {
    await setFailing(stack.db, true);
    const sent: EnqueueResult[] = [];
    for (let n = 0; n < 3; n++) sent.push(await stack.producer.enqueue('fixture.bump', { n }));
    const queue = stack.producer.queue(FIXTURE_QUEUE);
    const dlq = stack.producer.queue(`${FIXTURE_QUEUE}.dlq`);

    const doomed = spawn({ ONCEQ_FAULT: 'dead-letter-copied:kill', ONCEQ_CONCURRENCY: '1' });
    const { signal } = await doomed.exited;
    expect(signal, doomed.output()).to.equal('SIGKILL');
    expect(doomed.output()).to.contain('onceq-fault: dead-letter-copied SIGKILL');
    // Halfway: the first message is copied, and its original is still on its queue.
    const first = sent[0]!;
    expect((await findDeadLetter(stack.db, first.messageId))?.reason).to.equal('exhausted');
    expect(await dlq.getJob(first.jobId)).to.not.equal(undefined);
    expect(await (await queue.getJob(first.jobId))?.getState()).to.equal('active');

    // A healthy worker takes the stalled original over (its lock runs out in 2 s), fails it
    // again and finishes the move; the other two go dead the ordinary way.
    const survivor = spawn();
    await survivor.waitForOutput('worker started');
    await waitFor(
      'every message dead-lettered and off its queue',
      async () => {
        const letters = await Promise.all(sent.map((s) => findDeadLetter(stack.db, s.messageId)));
        const counts = await queue.getJobCounts('wait', 'active', 'delayed', 'failed');
        return letters.every(Boolean) && Object.values(counts).every((n) => n === 0);
      },
      30_000,
    );
    for (const s of sent) {
      const letter = (await findDeadLetter(stack.db, s.messageId))!;
      expect(letter.reason).to.equal('exhausted');
      expect(await dlq.getJob(s.jobId), 'visible copy').to.not.equal(undefined);
      expect(await queue.getJob(s.jobId), 'original').to.equal(undefined);
    }
    // The interrupted one was moved twice: one row, counted twice.
    expect((await findDeadLetter(stack.db, first.messageId))!.dead_count).to.equal(2);
    expect((await effectCounts(stack.db)).size).to.equal(0);

    await setFailing(stack.db, false);
    const summary = await replayDeadLetters({
      db: stack.db,
      backend: stack.backend,
    });
    expect(summary).to.include({ replayed: 3, alreadyApplied: 0, failed: 0 });
    const counts = await waitFor('three effects', async () => {
      const c = await effectCounts(stack.db);
      return c.size === 3 ? c : undefined;
    });
    expect([...counts.values()]).to.deep.equal([1, 1, 1]);
    expect(await dlq.count()).to.equal(0);
    survivor.child.kill('SIGTERM');
    expect((await survivor.exited).code).to.equal(0);
  });
}
