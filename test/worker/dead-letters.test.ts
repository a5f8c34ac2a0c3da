/**
 * Dead letters in process, against real services and in both modes (queues and tokens in Redis,
 * or on PostgreSQL alone): messages too old for the dedupe window, replay after a fix, replay of
 * a message whose effect already committed, the job-status look-up, the reconciler finishing a
 * dead-letter move that BullMQ started on its own, and replay's batched removal of the visible
 * copies (the removal itself against BullMQ's own: test/queues/remove-jobs.test.ts). On a Redis
 * Cluster too, the cases where Redis does something the cluster changes: a move from a queue to
 * its dead-letter queue (another slot), replay's adds, the reconciler's removal and the batched
 * removal script (in the dead-letter queue's slot); not those that only read PostgreSQL.
 */
import { expect } from 'chai';
import { createTestStack, modeOptions, type TestStack } from '../support/stack.js';
import { MODES, scanKeys, type TestMode } from '../support/env.js';
import { waitFor } from '../support/ledger.js';
import {
  createFixtureTables,
  effectCounts,
  fixtureJobs,
  FIXTURE_QUEUE,
  setFailing,
} from '../fixtures/jobs.js';
import { encodeSnowflake } from '../../src/core/snowflake.js';
import { generateToken } from '../../src/core/token.js';
import { jobIdFor } from '../../src/core/message.js';
import { findDeadLetter, upsertDeadLetter } from '../../src/db/dead-letters.repository.js';
import { replayDeadLetters } from '../../src/worker/dead-letter-replay.js';
import { createDeadLetterWriter } from '../../src/worker/dead-letters.js';
import { REMOVE_JOBS_PER_CALL } from '../../src/queues/remove-jobs.js';
import { firstSnowflakeAt } from '../../src/core/snowflake.js';
import { MAX_PRIORITY } from '../../src/core/limits.js';
import { createDeadLetterLookup } from '../../src/producer/dead-letter-lookup.js';
import { findJobStatus } from '../../src/producer/job-status.js';

for (const mode of MODES) {
  describe(`worker: dead letters (${mode})`, function () {
    this.timeout(60_000);
    deadLetterCases(mode);
  });
}

/** The cases, declared once per mode; `mode` is where the stacks keep queues and tokens. */
function deadLetterCases(mode: TestMode): void {
  const onCluster = mode === 'redis-cluster';
  let stack: TestStack;
  beforeEach(async () => {
    stack = await createTestStack('dead', {
      jobs: fixtureJobs,
      maxAttempts: 2,
      backoffMs: 10,
      ...modeOptions(mode),
    });
    await createFixtureTables(stack.db);
  });
  afterEach(async () => stack.close());

  const replay = (messageIds?: string[]) =>
    replayDeadLetters({
      db: stack.db,
      backend: stack.backend,
      messageIds,
      backoffMs: 10,
    });

  it('dead-letters a message older than the dedupe window as expired, without running it', async () => {
    await stack.startWorker({ dedupeWindowMs: 60_000 });
    const old = encodeSnowflake({ timestampMs: Date.now() - 120_000, workerId: 3, sequence: 0 });
    const queue = stack.backend.newQueue(FIXTURE_QUEUE);
    try {
      await queue.add(
        'fixture.bump',
        { messageId: old, token: generateToken(), data: { n: 1 } },
        { jobId: jobIdFor(old), attempts: 3 },
      );
      const letter = await waitFor('expired letter', () => findDeadLetter(stack.db, old));
      expect(letter.reason).to.equal('expired');
      expect(letter.error).to.contain('older than the dedupe window');
      expect(letter.attempts).to.equal(1);
      expect((await effectCounts(stack.db)).size).to.equal(0);
      // Replay refuses it too: the pipeline would only expire it again.
      const summary = await replayDeadLetters({
        db: stack.db,
        backend: stack.backend,
        dedupeWindowMs: 60_000,
      });
      expect(summary).to.include({ replayed: 0, failed: 1 });
      expect(summary.failures[0]!.error).to.contain('dedupe window');
    } finally {
      await queue.close();
    }
  });

  it('replays an exhausted message after the fault is fixed: one effect, status dead then completed', async () => {
    await setFailing(stack.db, true);
    await stack.startWorker();
    const sent = await stack.producer.enqueue('fixture.bump', { n: 7 });
    const letter = await waitFor('exhausted letter', () =>
      findDeadLetter(stack.db, sent.messageId),
    );
    expect(letter).to.include({ reason: 'exhausted', attempts: 2, token: sent.token });
    const status = () =>
      findJobStatus(
        {
          db: stack.db,
          queue: (q) => stack.producer.queue(q),
          deadLetters: createDeadLetterLookup(stack.db),
        },
        sent.jobId,
        undefined,
      );
    await waitFor(
      'original removed',
      async () =>
        (await status())?.state === 'dead' &&
        !(await stack.producer.queue(FIXTURE_QUEUE).getJob(sent.jobId)),
    );
    expect((await status())!.error).to.contain('refused');

    await setFailing(stack.db, false);
    const first = await replay([sent.messageId]);
    expect(first).to.include({ total: 1, replayed: 1, alreadyApplied: 0, failed: 0, skipped: 0 });
    await waitFor(
      'applied after replay',
      async () => (await effectCounts(stack.db)).get(sent.messageId) === 1,
    );
    await waitFor('status completed', async () => (await status())?.state === 'completed');
    const row = (await findDeadLetter(stack.db, sent.messageId))!;
    expect(row.replayed_at).to.be.instanceOf(Date);
    expect(row.replay_count).to.equal(1);
    expect(await stack.producer.queue('fixture.dlq').getJob(sent.jobId)).to.equal(undefined);

    // Replaying it again by id: not pending any more, nothing sent.
    const again = await replay([sent.messageId]);
    expect(again).to.include({ replayed: 0, skipped: 1 });
    expect((await effectCounts(stack.db)).get(sent.messageId)).to.equal(1);
  });

  if (!onCluster) {
    it('counts a dead letter whose effect already committed as already applied; the effect count stays one', async () => {
      await stack.startWorker();
      const sent = await stack.producer.enqueue('fixture.bump', { n: 1 });
      await waitFor(
        'applied',
        async () => (await effectCounts(stack.db)).get(sent.messageId) === 1,
      );
      // The window this covers: the last attempt committed, and the move to the dead-letter queue
      // ran anyway (a lease lost at commit, a crash before BullMQ heard of the success).
      await upsertDeadLetter(stack.db, {
        messageId: sent.messageId,
        queue: FIXTURE_QUEUE,
        jobName: 'fixture.bump',
        jobId: sent.jobId,
        data: { n: 1 },
        token: sent.token,
        reason: 'exhausted',
        error: 'lost lease',
        stack: null,
        attempts: 2,
        options: {},
        enqueuedAt: new Date(),
      });
      const summary = await replay();
      expect(summary).to.include({ total: 1, replayed: 0, alreadyApplied: 1, failed: 0 });
      // Nothing was sent; even a stray delivery would be a duplicate.
      await new Promise((r) => setTimeout(r, 300));
      expect((await effectCounts(stack.db)).get(sent.messageId)).to.equal(1);
      expect((await findDeadLetter(stack.db, sent.messageId))!.replayed_at).to.be.instanceOf(Date);
    });
  }

  // Letters of messages BullMQ refuses (the reconciler and the outbox relay dead-letter them as
  // `invalid`, their priority kept as it was refused). Replayed in one addBulk with the others,
  // such a letter made the whole batch of its queue fail at every replay.
  it('replays the letters beside one BullMQ refuses; that one stays pending with the reason', async () => {
    await stack.startWorker();
    const ids = [1, 2, 3].map((n) =>
      encodeSnowflake({ timestampMs: Date.now() - 1_000, workerId: 5, sequence: n }),
    );
    const bad = ids[1]!;
    for (const [n, messageId] of ids.entries()) {
      await upsertDeadLetter(stack.db, {
        messageId,
        queue: FIXTURE_QUEUE,
        jobName: 'fixture.bump',
        jobId: jobIdFor(messageId),
        data: { n },
        token: generateToken(),
        reason: 'invalid',
        error: 'refused',
        stack: null,
        attempts: 0,
        options: { priority: messageId === bad ? MAX_PRIORITY + 1 : 1 },
        enqueuedAt: new Date(),
      });
    }
    const summary = await replay();
    expect(summary, JSON.stringify(summary)).to.include({ total: 3, replayed: 2, failed: 1 });
    expect(summary.failures).to.have.length(1);
    expect(summary.failures[0]!.messageId).to.equal(bad);
    expect(summary.failures[0]!.error).to.contain('BullMQ refused the job').and.contain('Priority');
    expect((await findDeadLetter(stack.db, bad))!).to.include({
      replayed_at: null,
      replay_count: 0,
    });
    const counts = await waitFor('the two good letters applied', async () => {
      const c = await effectCounts(stack.db);
      return c.size === 2 ? c : undefined;
    });
    expect([...counts.keys()].sort()).to.deep.equal([ids[0]!, ids[2]!].sort());
  });

  if (!onCluster) {
    it('refuses unknown ids naming them, and touches nothing', async () => {
      await setFailing(stack.db, true);
      await stack.startWorker();
      const sent = await stack.producer.enqueue('fixture.bump', { n: 2 });
      await waitFor('letter', () => findDeadLetter(stack.db, sent.messageId));
      let error: Error | undefined;
      try {
        await replay([sent.messageId, '42', 'nope']);
      } catch (err) {
        error = err as Error;
      }
      expect(error?.message)
        .to.contain('42')
        .and.contain('nope')
        .and.contain('nothing was replayed');
      expect((await findDeadLetter(stack.db, sent.messageId))!.replayed_at).to.equal(null);
    });
  }

  it('the reconciler finishes the move of a job BullMQ failed on its own (stalled too often)', async () => {
    const sent = await stack.producer.enqueue('fixture.bump', { n: 3 });
    // Play BullMQ's part: the job fails outside onceq's pipeline, as the stalled-job check does.
    const raw = stack.backend.newWorker(
      FIXTURE_QUEUE,
      () => Promise.reject(new Error('the raw worker only fetches, by hand')),
      { concurrency: 1, lockDuration: 30_000, stalledInterval: 30_000, maxStalledCount: 1 },
    );
    try {
      const job = (await raw.getNextJob('raw-token'))!;
      expect(job.id).to.equal(sent.jobId);
      job.opts.attempts = 1;
      await job.moveToFailed(new Error('job stalled more than allowable limit'), 'raw-token');
    } finally {
      await raw.close();
    }
    const worker = await stack.startWorker({ reconciler: { intervalMs: 60_000, graceMs: 100 } });
    await new Promise((r) => setTimeout(r, 150));
    const report = await worker.reconciler!.runOnce();
    expect(report).to.include({ ran: true, deadLettered: 1, reenqueued: 0 });
    const letter = (await findDeadLetter(stack.db, sent.messageId))!;
    expect(letter).to.include({ reason: 'stalled', token: sent.token });
    expect(letter.error).to.contain('stalled');
    expect(await stack.producer.queue(FIXTURE_QUEUE).getJob(sent.jobId)).to.equal(undefined);
    // A second pass finds nothing to do.
    expect(await worker.reconciler!.runOnce()).to.include({ deadLettered: 0, reenqueued: 0 });
  });
  it('replay removes the visible copies it replays, logs and all, in batches, and re-adds the same envelopes', async () => {
    // More letters than one script call takes, so that the batching itself is exercised.
    const count = 2 * REMOVE_JOBS_PER_CALL + 200;
    const base = BigInt(firstSnowflakeAt(Date.now()));
    const letters = Array.from({ length: count }, (_, i) => ({
      messageId: String(base + BigInt(i)),
      token: generateToken(),
    }));
    const writer = createDeadLetterWriter({
      db: stack.db,
      backend: stack.backend,
    });
    try {
      for (let i = 0; i < count; i += 100) {
        await Promise.all(
          letters.slice(i, i + 100).map((l, j) =>
            writer.write({
              messageId: l.messageId,
              queue: FIXTURE_QUEUE,
              jobName: 'fixture.bump',
              jobId: jobIdFor(l.messageId),
              data: { n: i + j },
              token: l.token,
              reason: 'exhausted',
              error: 'boom',
              stack: null,
              attempts: 2,
              options: {},
              enqueuedAt: new Date(),
            }),
          ),
        );
      }
    } finally {
      await writer.close();
    }
    const dlq = stack.producer.queue('fixture.dlq');
    // A copy with logs: its logs must go too.
    const logged = jobIdFor(letters[7]!.messageId);
    await (await dlq.getJob(logged))!.log('looked at by an operator');
    expect((await dlq.getJobLogs(logged)).count).to.equal(1);
    expect(await dlq.getJobCountByTypes('wait')).to.equal(count);
    // Redis: every key of every copy (hash and `:logs`), and a `removed` event each.
    const jobKeys = () => scanKeys(stack.redis, `${dlq.toKey('m-')}*`);
    if (mode !== 'postgres') expect(await jobKeys()).to.have.length(count + 1);

    const summary = await replay();
    expect(summary).to.include({ total: count, replayed: count, failed: 0, skipped: 0 });
    expect(await dlq.getJobCounts()).to.satisfy((c: Record<string, number>) =>
      Object.values(c).every((n) => n === 0),
    );
    expect(await dlq.getJob(logged)).to.equal(undefined);
    expect((await dlq.getJobLogs(logged)).count).to.equal(0);
    if (mode !== 'postgres') {
      expect(await jobKeys()).to.deep.equal([]);
      const events = await stack.redis.xrange(dlq.toKey('events'), '-', '+');
      const removed = events.filter(([, fields]) => fields[1] === 'removed');
      expect(removed).to.have.length(count);
    }
    const queue = stack.producer.queue(FIXTURE_QUEUE);
    expect(await queue.count()).to.equal(count);
    for (const l of [letters[0]!, letters[7]!, letters[count - 1]!]) {
      const job = (await queue.getJob(jobIdFor(l.messageId)))!;
      expect(job.data).to.deep.include({ messageId: l.messageId, token: l.token });
      expect(job.opts.attempts).to.equal(10);
      expect(job.attemptsMade).to.equal(0);
    }
  });
}
