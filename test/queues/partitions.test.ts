/**
 * Partitioned queues end to end, in both modes: a job declared with `partitions: 4` runs on four
 * BullMQ queues (`parted#0` … `parted#3`). Messages spread over them by messageId, each applied
 * once; a duplicate enqueue meets its job in its partition; a follow-up, a replayed dead letter
 * and a job the reconciler re-adds all land in their message's partition; the dead letters, the
 * inbox, `ctx.queue`, job status and the queue-depth metrics speak of `parted` alone. And the
 * rules of the declaration: bad counts refused by `defineJob`, conflicting counts for one queue
 * refused by the registry, one partition keeping the queue's own BullMQ queue.
 */
import { expect } from 'chai';
import { Type } from '@sinclair/typebox';
import { defineJob, type JobDefinition } from '../../src/jobs/define-job.js';
import { JobRegistry } from '../../src/jobs/registry.js';
import { InvalidArgumentError } from '../../src/core/errors.js';
import { jobIdFor } from '../../src/core/message.js';
import { MAX_PARTITIONS, routeMessage } from '../../src/core/queue-partitions.js';
import { findJobStatus } from '../../src/producer/job-status.js';
import { createMetrics } from '../../src/metrics/metrics.js';
import { addStateCollectors } from '../../src/metrics/state-collectors.js';
import { createJobObserver } from '../../src/metrics/job-observer.js';
import { replayDeadLetters } from '../../src/worker/dead-letter-replay.js';
import { createReconciler } from '../../src/worker/reconciler.js';
import { createDeadLetterWriter } from '../../src/worker/dead-letters.js';
import { createTestStack, type TestStack } from '../support/stack.js';
import { waitFor } from '../support/ledger.js';
import { sample } from '../support/metrics.js';
import { BACKENDS } from '../support/env.js';
import { buildApp } from '../../src/http/build-app.js';
import { mintApiKey } from '../../src/core/api-key.js';
import { insertApiKey } from '../../src/db/api-keys.repository.js';
import { findDeadLetter, upsertDeadLetter } from '../../src/db/dead-letters.repository.js';
import { firstSnowflakeAt } from '../../src/core/snowflake.js';
import { generateToken } from '../../src/core/token.js';
import { spawnWorker } from '../support/child.js';
import {
  PARTITIONED_COUNT,
  PARTITIONED_QUEUE,
  partitionedNote,
} from '../fixtures/partitioned-jobs.js';

const PARTED = 'parted';
const PARTITIONS = 4;
const PARTITION_NAMES = Array.from({ length: PARTITIONS }, (_, i) => `${PARTED}#${i}`);

/** Every run of a handler: which message, and the queue its context named. */
const runs: { messageId: string; queue: string; job: string }[] = [];
/** While true, `parted.flaky` throws (its messages are dead-lettered after one attempt). */
let flakyFails = true;

const note = defineJob({
  name: 'parted.note',
  queue: PARTED,
  partitions: PARTITIONS,
  schema: Type.Object({ n: Type.Integer(), follow: Type.Optional(Type.Boolean()) }),
  async handle(ctx) {
    runs.push({ messageId: ctx.messageId, queue: ctx.queue, job: ctx.jobName });
    if (ctx.data.follow) return { followUp: await ctx.enqueue('parted.note', { n: -1 }) };
    return { n: ctx.data.n };
  },
});

const flaky = defineJob({
  name: 'parted.flaky',
  queue: PARTED,
  partitions: PARTITIONS,
  schema: Type.Object({}),
  async handle(ctx) {
    if (flakyFails) throw new Error('flaky fails');
    runs.push({ messageId: ctx.messageId, queue: ctx.queue, job: ctx.jobName });
    return {};
  },
});

/** Jobs waiting, delayed, active, completed or failed, in each partition. */
async function jobsPerPartition(stack: TestStack): Promise<number[]> {
  return Promise.all(
    PARTITION_NAMES.map(async (name) => {
      const c = await stack.producer
        .queue(name)
        .getJobCounts('waiting', 'delayed', 'active', 'completed', 'failed', 'prioritized');
      return Object.values(c).reduce((a, b) => a + b, 0);
    }),
  );
}

/** Inbox rows of the partitioned queue (the logical name, as every table records it). */
async function appliedOnParted(stack: TestStack): Promise<number> {
  const row = await stack.db
    .selectFrom('inbox')
    .where('queue', '=', PARTED)
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

for (const mode of BACKENDS) {
  describe(`queues: partitioned queues (${mode})`, function () {
    this.timeout(60_000);
    let stack: TestStack;
    before(async () => {
      runs.length = 0;
      stack = await createTestStack('partitions', {
        jobs: [note, flaky],
        backend: mode,
        maxAttempts: 1,
      });
    });
    after(async () => stack.close());

    it('spreads messages over the partitions, absorbs a duplicate in its partition, applies each once, and counts them as one queue', async () => {
      const sent = [];
      for (let i = 0; i < 40; i++) {
        sent.push(await stack.producer.enqueue('parted.note', { n: i, follow: i === 0 }));
      }
      const perPartition = await jobsPerPartition(stack);
      expect(
        perPartition.every((n) => n > 0),
        `per partition: ${perPartition}`,
      ).to.equal(true);
      expect(perPartition.reduce((a, b) => a + b)).to.equal(40);
      expect(
        await stack.producer.queue(PARTED).count(),
        'the unpartitioned name is unused',
      ).to.equal(0);
      for (const s of sent) {
        expect(s.queue, 'the answer names the logical queue').to.equal(PARTED);
        const home = routeMessage(PARTED, s.messageId, PARTITIONS);
        expect(await stack.producer.queue(home).getJob(s.jobId), home).to.not.equal(undefined);
      }

      // The same token and request again: the same message, its job met in its partition.
      const again = await stack.producer.enqueue(
        'parted.note',
        { n: 5, follow: false },
        { token: sent[5]!.token },
      );
      expect(again).to.include({ replayed: true, messageId: sent[5]!.messageId });
      expect((await jobsPerPartition(stack)).reduce((a, b) => a + b)).to.equal(40);

      // Job status finds the job in its partition: attempts come from BullMQ's job.
      const status = (q: string, id: string) => stack.producer.queueFor(q, id);
      const queued = await findJobStatus(
        { db: stack.db, queue: status },
        sent[7]!.jobId,
        undefined,
      );
      expect(queued).to.include({ state: 'queued', queue: PARTED, attempts: 0 });

      // Depth is reported per logical queue, summed over its partitions.
      const metrics = createMetrics({ defaultMetrics: false });
      const removeCollectors = addStateCollectors(metrics, {
        db: stack.db,
        backend: stack.backend,
        queues: [PARTED],
        partitions: stack.registry.partitions(),
      });
      try {
        const text = await metrics.text();
        expect(sample(text, 'onceq_queue_jobs', { queue: PARTED, state: 'waiting' })).to.equal(40);
        expect(text).to.not.include(`queue="${PARTED}#`);
      } finally {
        await removeCollectors();
      }

      // One BullMQ worker per partition, sharing the queue's concurrency.
      // Outcomes counted under the logical queue, whichever partition ran them.
      const observed = createMetrics({ defaultMetrics: false });
      const observer = createJobObserver({ metrics: observed });
      const worker = await stack.startWorker({
        queues: [PARTED],
        concurrency: 6,
        onOutcome: observer.onOutcome,
      });
      expect(worker.queues).to.deep.equal([PARTED]);
      expect(worker.workers.map((w) => w.name)).to.deep.equal(PARTITION_NAMES);
      expect(worker.workers.map((w) => w.opts.concurrency)).to.deep.equal([2, 2, 1, 1]);
      // The 40 and the first one's follow-up.
      await waitFor('41 applied', async () => (await appliedOnParted(stack)) === 41);
      await worker.close();
      const outcomes = await observed.text();
      expect(sample(outcomes, 'onceq_jobs_total', { queue: PARTED, outcome: 'applied' })).to.equal(
        41,
      );
      expect(outcomes).to.not.include(`queue="${PARTED}#`);

      const byMessage = new Map<string, number>();
      for (const r of runs) byMessage.set(r.messageId, (byMessage.get(r.messageId) ?? 0) + 1);
      expect(byMessage.size).to.equal(41);
      expect(
        [...byMessage.values()].every((n) => n === 1),
        'each applied once',
      ).to.equal(true);
      expect(new Set(runs.map((r) => r.queue))).to.deep.equal(new Set([PARTED]));
      // Every job, the follow-up's too (added by the outbox relay), completed in its partition.
      for (const messageId of byMessage.keys()) {
        const job = await stack.producer.queueFor(PARTED, messageId).getJob(jobIdFor(messageId));
        expect(await job?.getState(), `job of ${messageId}`).to.equal('completed');
      }
      const done = await findJobStatus({ db: stack.db, queue: status }, sent[7]!.jobId, undefined);
      expect(done).to.include({ state: 'completed', attempts: 1 });
    });

    it('dead-letters from a partition into the one dead-letter queue, and replays back to the partition to apply once', async () => {
      flakyFails = true;
      const worker = await stack.startWorker({ queues: [PARTED], reconciler: false });
      try {
        const { messageId, jobId } = await stack.producer.enqueue('parted.flaky', {});
        const home = stack.producer.queueFor(PARTED, messageId);
        const letter = await waitFor('the dead letter', () => findDeadLetter(stack.db, messageId));
        expect(letter.queue, 'recorded under the logical queue').to.equal(PARTED);
        expect(await stack.producer.queue(`${PARTED}.dlq`).getJob(jobId)).to.not.equal(undefined);
        await waitFor(
          'the original removed from its partition',
          async () => !(await home.getJob(jobId)),
        );

        flakyFails = false;
        const summary = await replayDeadLetters({
          db: stack.db,
          backend: stack.backend,
          partitions: stack.registry.partitions(),
          messageIds: [messageId],
        });
        expect(summary).to.include({ replayed: 1, failed: 0 });
        await waitFor('the replay applied', async () =>
          runs.some((r) => r.messageId === messageId),
        );
        await waitFor(
          'completed in its partition',
          async () => (await (await home.getJob(jobId))?.getState()) === 'completed',
        );
        expect(runs.filter((r) => r.messageId === messageId)).to.have.length(1);
        expect(await stack.producer.queue(`${PARTED}.dlq`).getJob(jobId)).to.equal(undefined);
      } finally {
        await worker.close();
      }
    });

    it('shows each partition on Bull Board and finds a job in its partition through GET /v1/jobs/:id', async () => {
      const app = await buildApp({
        db: stack.db,
        backend: stack.backend,
        producer: stack.producer,
        ids: stack.ids,
        keyCacheMs: 0,
        rateLimit: false,
        docs: false,
        adminQueues: { queues: [PARTED], partitions: stack.registry.partitions() },
      });
      try {
        const minted = mintApiKey();
        await insertApiKey(stack.db, {
          id: minted.id,
          principal: 'ops',
          hash: minted.hash,
          admin: true,
        });
        const headers = { authorization: `Bearer ${minted.key}` };
        const listed = await app.inject({ url: '/admin/queues/api/queues', headers });
        expect(listed.statusCode).to.equal(200);
        const queues = (listed.json() as { queues: { name: string; readOnlyMode: boolean }[] })
          .queues;
        expect(queues.map((q) => [q.name, q.readOnlyMode])).to.deep.equal([
          ...PARTITION_NAMES.map((name) => [name, false]),
          [`${PARTED}.dlq`, true],
        ]);
        // A partition's name travels URL-encoded (`#` is `%23`), as the board's UI sends it.
        const name = encodeURIComponent(PARTITION_NAMES[2]!);
        const paused = await app.inject({
          method: 'PUT',
          url: `/admin/queues/api/queues/${name}/pause`,
          headers,
        });
        expect(paused.statusCode, paused.body).to.equal(200);
        expect(await stack.producer.queue(PARTITION_NAMES[2]!).isPaused()).to.equal(true);
        await app.inject({
          method: 'PUT',
          url: `/admin/queues/api/queues/${name}/resume`,
          headers,
        });
        expect(await stack.producer.queue(PARTITION_NAMES[2]!).isPaused()).to.equal(false);

        const { jobId } = await stack.producer.enqueue('parted.note', { n: 200 });
        const status = await app.inject({ url: `/v1/jobs/${jobId}`, headers });
        expect(status.statusCode).to.equal(200);
        expect(status.json()).to.include({ state: 'queued', queue: PARTED, attempts: 0 });
      } finally {
        await app.close();
      }
    });

    it('has the reconciler re-add a lost job to its partition', async () => {
      const { messageId, jobId } = await stack.producer.enqueue('parted.note', { n: 100 });
      const home = stack.producer.queueFor(PARTED, messageId);
      expect(await (await home.getJob(jobId))!.remove()).to.equal(undefined);
      await new Promise((r) => setTimeout(r, 5));
      const deadLetters = createDeadLetterWriter({ db: stack.db, backend: stack.backend });
      const reconciler = createReconciler({
        db: stack.db,
        backend: stack.backend,
        partitions: stack.registry.partitions(),
        deadLetters,
        graceMs: 0,
      });
      try {
        const report = await reconciler.runOnce();
        expect(report).to.include({ ran: true, reenqueued: 1, deadLettered: 0 });
        const others = PARTITION_NAMES.filter((name) => name !== home.name);
        expect(await home.getJob(jobId), 'back in its partition').to.not.equal(undefined);
        for (const name of [PARTED, ...others]) {
          expect(await stack.producer.queue(name).getJob(jobId), name).to.equal(undefined);
        }
      } finally {
        await reconciler.close();
        await deadLetters.close();
      }
    });
  });
}

describe('queues: onceq dlq on a partitioned queue', function () {
  this.timeout(60_000);
  let stack: TestStack;
  before(async () => {
    stack = await createTestStack('partitions_cli', { jobs: [partitionedNote] });
  });
  after(async () => stack.close());

  /** `onceq dlq …` in a child process, with the partitioned job loaded through `ONCEQ_JOBS`. */
  async function dlq(...args: string[]) {
    const child = spawnWorker({
      schema: stack.schema,
      prefix: stack.prefix,
      args: ['dlq', ...args],
      env: { LOG_LEVEL: 'warn', ONCEQ_JOBS: 'test/fixtures/partitioned-jobs.ts' },
    });
    const { code } = await child.exited;
    return { code, stdout: child.stdout(), stderr: child.stderr() };
  }

  it('replays a letter into its partition and purges one from its partition', async () => {
    const base = BigInt(firstSnowflakeAt(Date.now()));
    const [replayed, purged] = [String(base), String(base + 1n)];
    const home = (id: string) => stack.producer.queueFor(PARTITIONED_QUEUE, id);
    for (const messageId of [replayed, purged]) {
      await upsertDeadLetter(stack.db, {
        messageId,
        queue: PARTITIONED_QUEUE,
        jobName: partitionedNote.name,
        jobId: jobIdFor(messageId),
        data: { n: 1 },
        token: generateToken(),
        reason: messageId === purged ? 'invalid' : 'exhausted',
        error: 'boom',
        stack: 'Error: boom',
        attempts: 1,
        options: {},
        enqueuedAt: new Date(),
      });
    }
    // The original of the one to purge, as an interrupted move leaves it in its partition.
    await home(purged).add(
      partitionedNote.name,
      { messageId: purged },
      { jobId: jobIdFor(purged) },
    );

    const replay = await dlq('replay', replayed);
    expect(replay.code, replay.stderr).to.equal(0);
    expect(await home(replayed).getJob(jobIdFor(replayed)), 'back in its partition').to.not.equal(
      undefined,
    );
    expect(await stack.producer.queue(PARTITIONED_QUEUE).count()).to.equal(0);

    const purge = await dlq('purge', '--reason', 'invalid', '--json');
    expect(purge.code, purge.stderr).to.equal(0);
    expect(JSON.parse(purge.stdout)).to.deep.equal({ purged: 1 });
    expect((await findDeadLetter(stack.db, purged))!.purged_at).to.not.equal(null);
    expect(await home(purged).getJob(jobIdFor(purged)), 'removed from its partition').to.equal(
      undefined,
    );
    expect(PARTITIONED_COUNT, 'the fixture is partitioned').to.be.above(1);
  });
});

describe('queues: partition declarations', () => {
  const spec = (partitions: unknown, queue = PARTED) => ({
    name: 'decl.job',
    queue,
    schema: Type.Object({}),
    partitions: partitions as number,
    handle: async () => null,
  });

  it('refuses a partition count that is not an integer from 1 to the maximum, naming the job', () => {
    for (const bad of [0, -1, 1.5, MAX_PARTITIONS + 1, '4', Number.NaN, null]) {
      expect(() => defineJob(spec(bad)), String(bad)).to.throw(
        InvalidArgumentError,
        `job decl.job: partitions must be an integer from 1 to ${MAX_PARTITIONS}`,
      );
    }
    expect(defineJob(spec(MAX_PARTITIONS)).partitions).to.equal(MAX_PARTITIONS);
    expect(defineJob(spec(undefined)).partitions).to.equal(1);
  });

  it('partitions every queue of the job, and refuses two counts for one queue', () => {
    const wide = defineJob({ ...spec(4), name: 'decl.wide', queues: ['bulk'] });
    const registry = new JobRegistry([wide]);
    expect([...registry.partitions()]).to.deep.equal([
      [PARTED, 4],
      ['bulk', 4],
    ]);
    registry.register(defineJob({ ...spec(4), name: 'decl.same' }));
    // No declaration is a declaration of one partition: it conflicts too.
    for (const [name, n, queue] of [
      ['decl.other', 2, PARTED],
      ['decl.plain', undefined, 'bulk'],
    ] as const) {
      expect(() => registry.register(defineJob({ ...spec(n, queue), name }) as JobDefinition))
        .to.throw(InvalidArgumentError)
        .with.property('message')
        .that.matches(
          new RegExp(
            `^job ${name} declares ${n ?? 1} partition\\(s\\) for queue ${queue}, but job decl.wide declares 4`,
          ),
        );
    }
  });

  it('keeps the queue its own BullMQ queue with one partition', () => {
    expect(routeMessage('ledger', '123456789', 1)).to.equal('ledger');
    expect(
      new JobRegistry([defineJob(spec(undefined, 'ledger'))]).partitions().get('ledger'),
    ).to.equal(1);
  });
});
