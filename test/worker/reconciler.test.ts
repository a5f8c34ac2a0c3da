/**
 * Durable acceptance when the queues lose jobs: the reconciler re-enqueues accepted messages
 * whose jobs are gone, and every accepted message still gets exactly one effect. In both modes
 * (queues and tokens in Redis, or on PostgreSQL alone).
 *
 * Redis: "FLUSHALL" here is test-scoped: the Redis is shared with other work, so the test deletes
 * every key under its own prefix (BullMQ's queues, jobs and locks, and onceq's tokens), which is
 * what a FLUSHALL would do to this deployment. PostgreSQL-only mode loses no data on its own; its
 * jobs go when someone removes them (`drain`, `clean`, `remove`: an operator, a dashboard), which
 * is what its cases do, active jobs included.
 *
 * Redis Cluster: the loss is partial, as when one master restarts without persistence: every key
 * of the deployment on the master that owns the ledger queue's slot goes (the whole queue, and
 * the tokens that hash to that master), the other masters keep theirs (the rest of the tokens).
 * Keys are deleted on that node by pattern, not by FLUSHALL: the cluster is shared by the run.
 * The cluster runs every case that touches the queues but the unreachable one.
 */
import { expect } from 'chai';
import type { Job, Queue } from 'bullmq';
import { sql } from 'kysely';
import type { OnceqWorker } from '../../src/worker/worker.js';
import { jobIdFor } from '../../src/core/message.js';
import { LEDGER_QUEUE } from '../../src/jobs/examples/ledger/index.js';
import { createReconciler, type ReconcileReport } from '../../src/worker/reconciler.js';
import { createMetrics } from '../../src/metrics/metrics.js';
import { createDeadLetterWriter } from '../../src/worker/dead-letters.js';
import { createTestStack, modeOptions, type TestStack } from '../support/stack.js';
import { assertLedgerInvariants, inboxCount, waitFor } from '../support/ledger.js';
import { MODES, deletePrefix, scanKeys, type TestMode } from '../support/env.js';
import { deletePrefixOnMasterOf } from '../../tools/support/redis.js';
import { isCluster } from '../../src/redis/connection.js';
import { unreachableBackend } from '../support/unreachable-backend.js';
import { findDeadLetter } from '../../src/db/dead-letters.repository.js';
import { MAX_PRIORITY } from '../../src/core/limits.js';
import { generateToken } from '../../src/core/token.js';

for (const mode of MODES) {
  describe(`worker: reconciler (${mode})`, function () {
    this.timeout(90_000);
    reconcilerCases(mode);
  });
}

/** The cases, declared once per mode; `mode` is where the stacks keep queues and tokens. */
function reconcilerCases(mode: TestMode): void {
  let stack: TestStack;
  before(async () => {
    stack = await createTestStack('reconcile', { backoffMs: 20, ...modeOptions(mode) });
  });
  after(async () => stack.close());

  /** Every job of the ledger queue lost at once, the ones in flight included. */
  const loseEveryJob =
    mode === 'redis'
      ? {
          what: 'Redis loses every key mid-run',
          lose: () => deletePrefix(stack.redis, stack.prefix),
        }
      : mode === 'redis-cluster'
        ? {
            what: "the master of the queue's slot loses every key mid-run, the others keep theirs",
            async lose() {
              const { redis } = stack;
              if (!isCluster(redis)) throw new Error('a cluster stack without a cluster');
              const queue = stack.producer.queue(LEDGER_QUEUE);
              const deleted = await deletePrefixOnMasterOf(
                redis,
                stack.prefix,
                queue.toKey('wait'),
              );
              expect(deleted, 'keys deleted on that master').to.be.above(0);
              // Partial: tokens of the deployment are still on the other masters.
              const left = await scanKeys(redis, `${stack.prefix}:~token:*`);
              expect(left, 'tokens kept on the other masters').to.have.length.above(0);
            },
          }
        : {
            what: 'every job is removed mid-run, active ones included',
            async lose() {
              const queue = stack.backend.newQueue(LEDGER_QUEUE);
              try {
                await queue.drain(true);
                // `clean` of active jobs takes them whatever their lock (what `remove` refuses).
                await queue.clean(0, 0, 'active');
                await queue.clean(0, 0, 'completed');
                await queue.clean(0, 0, 'failed');
              } finally {
                await queue.close();
              }
            },
          };

  it(`loses no message and applies none twice when ${loseEveryJob.what}`, async () => {
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
    // Queued while no worker runs, so that the flush surely lands with most of them waiting
    // (fewer on the cluster, whose run adds to the whole suite's time).
    const transfers = mode === 'redis-cluster' ? 400 : 1_500;
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
    await loseEveryJob.lose();
    const appliedAtFlush = await inboxCount(stack.db);
    expect(appliedAtFlush, 'the flush must land mid-run').to.be.below(4 + transfers);

    try {
      await waitFor(
        `all ${transfers + 4} messages applied`,
        async () => (await inboxCount(stack.db)) === transfers + 4,
        60_000,
      );
    } catch (err) {
      throw new Error(
        `${(err as Error).message}\n${await describeUnapplied(stack, [first, second])}`,
        { cause: err },
      );
    }
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

  /**
   * Opens a stack of its own with a reconciler wired as `onceq worker` wires it (every pass
   * reaches the reconciler metrics), and runs `body`; closes everything after.
   */
  async function withReconciler(
    label: string,
    body: (r: {
      stack: TestStack;
      queue: Queue;
      reconciler: ReturnType<typeof createReconciler>;
      passes: ReconcileReport[];
      metrics: ReturnType<typeof createMetrics>;
    }) => Promise<void>,
  ): Promise<void> {
    const own = await createTestStack(label, { backoffMs: 20, ...modeOptions(mode) });
    const queue = own.backend.newQueue(LEDGER_QUEUE);
    const deadLetters = createDeadLetterWriter({ db: own.db, backend: own.backend });
    const metrics = createMetrics({ defaultMetrics: false });
    const passes: ReconcileReport[] = [];
    const reconciler = createReconciler({
      db: own.db,
      backend: own.backend,
      deadLetters,
      graceMs: 0,
      onPass: (r) => {
        passes.push(r);
        metrics.observeReconcilerPass(r);
      },
    });
    try {
      await body({ stack: own, queue, reconciler, passes, metrics });
    } finally {
      await reconciler.close();
      await deadLetters.close();
      await queue.close();
      await own.close();
    }
  }

  // The job of an accepted message removed from its queue before any worker ran it (by hand, a
  // dashboard, `clean`): the accepted record stays, and the reconciler adds the job back.
  it('re-enqueues a message whose job was removed from its queue, its accepted record kept', async () => {
    await withReconciler(
      'reconcile_removed',
      async ({ stack: own, queue, reconciler, passes, metrics }) => {
        const { messageId, jobId } = await own.producer.enqueue('account.open', {
          owner: 'removed',
          openingBalance: 1,
        });
        expect(await queue.remove(jobId)).to.equal(1);
        expect(await queue.getJob(jobId)).to.equal(undefined);

        const report = await reconciler.runOnce();
        expect(report).to.include({ ran: true, unsettled: 1, reenqueued: 1, deadLettered: 0 });
        expect(report.oldestUnsettledMessageId).to.equal(messageId);
        expect(passes).to.deep.equal([report]);
        expect(await metrics.text()).to.match(
          /onceq_reconciler_messages_total\{action="reenqueued"\} 1\b/,
        );
        expect((await queue.getJob(jobId))?.data).to.include({ messageId });
        await own.startWorker({ concurrency: 1, reconciler: false });
        await waitFor('the message applied', async () => (await inboxCount(own.db)) === 1);
        await waitFor(
          'its job completed',
          async () => (await queue.getJobState(jobId)) === 'completed',
        );
        expect(await reconciler.runOnce()).to.include({ unsettled: 0, reenqueued: 0 });
        expect(await inboxCount(own.db)).to.equal(1);
      },
    );
  });

  // What the flush above sometimes leaves behind (its SCAN and UNLINK race the workers and the
  // reconciler): a job id still in the wait list whose hash is gone. A worker pops the id anyway,
  // BullMQ's moveToActive writes `processedOn` and `ats` into a new hash, and the pipeline fails
  // that husk (no envelope in it). The reconciler must not take the husk for the message's job.
  // Redis only: a job of BullMQ's PostgreSQL backend is one row, there is no half of it to lose.
  if (mode !== 'postgres') {
    it('re-enqueues a message whose job is a husk BullMQ recreated after a partial loss', async () => {
      await withReconciler(
        'reconcile_husk',
        async ({ stack: husk, queue, reconciler, passes, metrics }) => {
          const { messageId } = await husk.producer.enqueue('account.open', {
            owner: 'husk',
            openingBalance: 1,
          });
          const jobId = jobIdFor(messageId);
          await husk.redis.del(queue.toKey(jobId));
          await husk.startWorker({ concurrency: 1, reconciler: false });
          await waitFor(
            'the husk failed',
            async () => (await queue.getJobState(jobId)) === 'failed',
          );
          expect(
            (await queue.getJob(jobId))?.data,
            'the failed job carries no envelope',
          ).to.deep.equal({});

          const report = await reconciler.runOnce();
          expect(report).to.include({ ran: true, unsettled: 1, reenqueued: 1, deadLettered: 0 });
          expect(report.oldestUnsettledMessageId).to.equal(messageId);
          expect(passes).to.deep.equal([report]);
          expect(await metrics.text()).to.match(
            /onceq_reconciler_messages_total\{action="reenqueued"\} 1\b/,
          );
          await waitFor('the message applied', async () => (await inboxCount(husk.db)) === 1);
          expect((await queue.getJob(jobId))?.data).to.include({ messageId });
          expect(await reconciler.runOnce()).to.include({ unsettled: 0, reenqueued: 0 });
        },
      );
    });
  }

  // A message recorded in PostgreSQL with options BullMQ refuses (a priority above its limit,
  // written straight into the table: the API refuses it at the door now, but rows accepted before
  // that, or written by another path, may be there). Without isolation, the one addBulk of the
  // pass threw on it at every pass, and no message after it was ever re-enqueued.
  it('dead-letters messages BullMQ refuses as invalid, and re-enqueues the good ones around them', async () => {
    const poisoned = await createTestStack('reconcile_poison', {
      backoffMs: 20,
      ...modeOptions(mode),
    });
    const deadLetters = createDeadLetterWriter({
      db: poisoned.db,
      backend: poisoned.backend,
    });
    const reconciler = createReconciler({
      db: poisoned.db,
      backend: poisoned.backend,
      deadLetters,
      graceMs: 0,
    });
    try {
      // Seven accepted messages whose jobs Redis never got (as after a loss), ids in order; the
      // fourth asks for priority MAX_PRIORITY + 1, the sixth names a queue BullMQ cannot open.
      const ids = Array.from({ length: 7 }, () => poisoned.ids.nextId());
      const [bad, badQueue] = [ids[3]!, ids[5]!];
      for (const [i, id] of ids.entries()) {
        await recordDirectly(
          poisoned,
          id,
          { owner: `o${i}`, openingBalance: 10 },
          { priority: id === bad ? MAX_PRIORITY + 1 : i + 1 },
          id === badQueue ? 'bad:queue' : LEDGER_QUEUE,
        );
      }

      // Past the grace boundary (0 ms, but a boundary in whole milliseconds).
      await new Promise((resolve) => setTimeout(resolve, 5));
      const report = await reconciler.runOnce();
      expect(report).to.include({ ran: true, unsettled: 7, reenqueued: 5, deadLettered: 2 });
      const queueLetter = await findDeadLetter(poisoned.db, badQueue);
      expect(queueLetter).to.include({ reason: 'invalid', queue: 'bad:queue' });
      expect(queueLetter!.error).to.contain('Queue name cannot contain');
      const letter = await findDeadLetter(poisoned.db, bad);
      expect(letter).to.include({ reason: 'invalid', attempts: 0, job_id: jobIdFor(bad) });
      expect(letter!.error).to.contain('BullMQ refused the job').and.contain('Priority');
      expect(letter!.options).to.deep.equal({ priority: MAX_PRIORITY + 1 });
      expect(letter!.data).to.deep.equal({ owner: 'o3', openingBalance: 10 });
      // Its visible copy is in the dead-letter queue; no job of it in the work queue.
      const queue = poisoned.producer.queue(LEDGER_QUEUE);
      expect(await queue.getJob(jobIdFor(bad))).to.equal(undefined);
      const dlq = poisoned.backend.newQueue(`${LEDGER_QUEUE}.dlq`);
      try {
        expect((await dlq.getJob(jobIdFor(bad)))?.data).to.include({ messageId: bad });
      } finally {
        await dlq.close();
      }

      await poisoned.startWorker({ concurrency: 2, reconciler: false });
      await waitFor(
        'the five good messages applied',
        async () => (await inboxCount(poisoned.db)) === 5,
      );
      const applied = await poisoned.db.selectFrom('inbox').select('message_id').execute();
      expect(applied.map((r) => r.message_id).sort()).to.deep.equal(
        ids.filter((id) => id !== bad && id !== badQueue),
      );
      // Settled: the next pass finds nothing to do, and does not dead-letter it again.
      expect(await reconciler.runOnce()).to.include({
        unsettled: 0,
        reenqueued: 0,
        deadLettered: 0,
      });
      expect((await findDeadLetter(poisoned.db, bad))!.dead_count).to.equal(1);
      expect((await findDeadLetter(poisoned.db, badQueue))!.dead_count).to.equal(1);
    } finally {
      await reconciler.close();
      await deadLetters.close();
      await poisoned.close();
    }
  });

  // Not on the cluster: nothing there that one unreachable Redis does not already show.
  if (mode !== 'redis-cluster') {
    // The queues being away is not the message's fault: the pass fails, nothing is dead-lettered,
    // and the next pass with the queues back re-enqueues every message.
    it(`dead-letters nothing while ${mode === 'redis' ? 'Redis' : "the queues' PostgreSQL"} is unreachable, and re-enqueues once it is back`, async () => {
      const away = await createTestStack('reconcile_away', {
        backoffMs: 20,
        backend: mode,
      });
      const unreachable = unreachableBackend(mode, away.prefix);
      const writers = [unreachable.backend, away.backend].map((backend) =>
        createDeadLetterWriter({ db: away.db, backend }),
      );
      const [down, up] = [unreachable.backend, away.backend].map((backend, i) =>
        createReconciler({
          db: away.db,
          backend,
          deadLetters: writers[i]!,
          graceMs: 0,
        }),
      );
      try {
        const ids = Array.from({ length: 3 }, () => away.ids.nextId());
        for (const [i, id] of ids.entries()) {
          await recordDirectly(away, id, { owner: `o${i}`, openingBalance: 1 }, {});
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
        const failed = await down!.runOnce().then(
          () => undefined,
          (err: unknown) => err,
        );
        expect(failed, 'the pass fails while the queues are away').to.be.instanceOf(Error);
        expect(await countDeadLetters(away.db)).to.equal(0);

        expect(await up!.runOnce()).to.include({ unsettled: 3, reenqueued: 3, deadLettered: 0 });
        await away.startWorker({ concurrency: 2, reconciler: false });
        await waitFor('all three applied', async () => (await inboxCount(away.db)) === 3);
        expect(await countDeadLetters(away.db)).to.equal(0);
      } finally {
        await Promise.all([down!.close(), up!.close()]);
        await Promise.all(writers.map((w) => w.close()));
        await unreachable.close();
        await away.close();
      }
    });
  }
}

/** Records an accepted message straight into PostgreSQL, as the API would, without its job. */
async function recordDirectly(
  stack: TestStack,
  messageId: string,
  data: unknown,
  options: Record<string, unknown>,
  queue: string = LEDGER_QUEUE,
): Promise<void> {
  await stack.db
    .insertInto('accepted_messages')
    .values({
      message_id: messageId,
      principal: 'p',
      token: generateToken(),
      fingerprint: `fp-${messageId}`,
      queue,
      job_name: 'account.open',
      data: JSON.stringify(data),
      job_id: jobIdFor(messageId),
      options: JSON.stringify(options),
    })
    .execute();
}

async function countDeadLetters(db: TestStack['db']): Promise<number> {
  const row = await db
    .selectFrom('dead_letters')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/**
 * The failure message of a timed-out wait: every accepted message still without an inbox row (up
 * to 20), with its BullMQ job as stored (in Redis, its hash's fields and its lock too), its
 * token's state and the deliveries the workers reported for it, then the queue counts and what
 * the reconcilers did and would do now.
 */
async function describeUnapplied(stack: TestStack, workers: OnceqWorker[]): Promise<string> {
  const { rows } = await sql<{ message_id: string; queue: string; job_id: string; token: string }>`
    select a.message_id::text as message_id, a.queue, a.job_id, a.token
    from accepted_messages a
    where not exists (select 1 from inbox i where i.message_id = a.message_id)
    order by a.message_id`.execute(stack.db);
  const lines = [`${rows.length} accepted messages without an inbox row:`];
  const queues = new Map<string, Queue>();
  const queueOf = (name: string) => {
    let queue = queues.get(name);
    if (!queue) {
      queue = stack.backend.newQueue(name);
      queues.set(name, queue);
    }
    return queue;
  };
  const redis = stack.backend.kind === 'redis' ? stack.redis : undefined;
  try {
    for (const row of rows.slice(0, 20)) {
      const queue = queueOf(row.queue);
      const job = (await queue.getJob(row.job_id)) as Job | undefined;
      lines.push(
        JSON.stringify({
          messageId: row.message_id,
          job: job && {
            state: await job.getState(),
            fields: redis && Object.keys(await redis.hgetall(queue.toKey(row.job_id))),
            hasEnvelope: (job.data as { messageId?: string })?.messageId === row.message_id,
            attemptsMade: job.attemptsMade,
            stalledCounter: job.stalledCounter,
            failedReason: job.failedReason,
            delay: job.opts.delay,
            timestamp: job.timestamp,
            processedOn: job.processedOn,
            finishedOn: job.finishedOn,
          },
          lock: await redis?.get(`${queue.toKey(row.job_id)}:lock`),
          token: await stack.producer.tokens.inspect(row.token),
          outcomes: stack.outcomes
            .filter((o) => o.messageId === row.message_id)
            .map((o) => o.outcome),
        }),
      );
    }
    for (const queue of queues.values()) {
      lines.push(`queue ${queue.name}: ${JSON.stringify(await queue.getJobCounts())}`);
    }
    lines.push(`reconciler totals: ${JSON.stringify(workers.map((w) => w.reconciler?.stats()))}`);
    lines.push(`a pass now: ${JSON.stringify(await workers[0]!.reconciler!.runOnce())}`);
  } finally {
    await Promise.all([...queues.values()].map((q) => q.close()));
  }
  return lines.join('\n');
}
