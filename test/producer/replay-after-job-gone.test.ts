/**
 * A replay after the job is gone: removed once completed, or dead-lettered. The replay answers
 * from the record and adds no job for a message that is applied (inbox row) or dead-lettered
 * (dead letter): re-adding one would cost a delivery, or run a dead letter again with a fresh
 * attempt budget around the dead-letter queue and its operator. Only a message with neither, whose
 * job Redis lost, gets its job back. Real Redis (own prefix) and PostgreSQL (own schema).
 */
import { expect } from 'chai';
import { jobIdFor } from '../../src/core/message.js';
import { messageJobOptions } from '../../src/queues/message-job-options.js';
import { tokenKey } from '../../src/redis/keys.js';
import { upsertDeadLetter } from '../../src/db/dead-letters.repository.js';
import type { EnqueueResult } from '../../src/producer/producer.js';
import type { OnceqWorker } from '../../src/worker/worker.js';
import { createTestStack, type TestStack } from '../support/stack.js';
import {
  createFixtureTables,
  effectCounts,
  FIXTURE_QUEUE,
  fixtureJobs,
  setFailing,
} from '../fixtures/jobs.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function waitFor(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

describe('producer: a replay after the job is gone', function () {
  this.timeout(60_000);
  let stack: TestStack;
  let closeStack: (() => Promise<void>) | undefined;

  beforeEach(async () => {
    // One attempt: a failure dead-letters the message at once.
    stack = await createTestStack('replaygone', { jobs: fixtureJobs, maxAttempts: 1 });
    const opened = stack;
    closeStack = () => opened.close();
    await createFixtureTables(stack.db);
  });
  afterEach(async () => {
    // Closed once: a beforeEach that failed leaves the previous, closed stack in `stack`.
    const close = closeStack;
    closeStack = undefined;
    await close?.();
  });

  const queue = () => stack.producer.queue(FIXTURE_QUEUE);
  const worker = (): Promise<OnceqWorker> =>
    stack.startWorker({ reconciler: false, pruner: false, outbox: false });
  async function enqueue(token: string): Promise<EnqueueResult> {
    return stack.producer.enqueue('fixture.bump', { n: 1 }, { token });
  }
  /** A replay's answer is the first one, marked as a replay. */
  function expectSameAnswer(replay: EnqueueResult, first: EnqueueResult): void {
    expect(replay).to.deep.equal({ ...first, replayed: true });
  }
  const deliveriesOf = (messageId: string) =>
    stack.outcomes.filter((o) => o.messageId === messageId).map((o) => o.outcome);
  async function deadLetter(messageId: string) {
    return stack.db
      .selectFrom('dead_letters')
      .selectAll()
      .where('message_id', '=', messageId)
      .executeTakeFirst();
  }

  async function appliedAndRemoved(): Promise<{ token: string; first: EnqueueResult }> {
    await worker();
    const token = await stack.producer.issueToken();
    const first = await enqueue(token);
    expect(first.replayed).to.equal(false);
    await waitFor('the completed job', async () => {
      const job = await queue().getJob(first.jobId);
      return (await job?.getState()) === 'completed';
    });
    // A day later BullMQ has removed the completed job.
    expect(await queue().remove(first.jobId)).to.equal(1);
    return { token, first };
  }

  it('applied, its completed job removed: same answer, no job added, no delivery', async () => {
    const { token, first } = await appliedAndRemoved();
    for (let i = 0; i < 3; i++) expectSameAnswer(await enqueue(token), first);
    expect(await queue().getJob(first.jobId), 'no job in Redis').to.equal(undefined);
    await sleep(300);
    expect(deliveriesOf(first.messageId)).to.deep.equal(['applied']);
    expect((await effectCounts(stack.db)).get(first.messageId)).to.equal(1);
  });

  it('applied, its job and token state both gone from Redis: answered from PostgreSQL, no job', async () => {
    const { token, first } = await appliedAndRemoved();
    // The `done` marker expired too: PostgreSQL alone knows the message.
    await stack.redis.del(tokenKey(stack.prefix, token));
    expectSameAnswer(await enqueue(token), first);
    expectSameAnswer(await enqueue(token), first);
    expect(await queue().getJob(first.jobId), 'no job in Redis').to.equal(undefined);
    await sleep(300);
    expect(deliveriesOf(first.messageId)).to.deep.equal(['applied']);
  });

  it('dead-lettered: same answer, no job added, the dead letter untouched, the handler never runs again', async () => {
    await setFailing(stack.db, true);
    await worker();
    const token = await stack.producer.issueToken();
    const first = await enqueue(token);
    await waitFor('the dead letter', async () => (await deadLetter(first.messageId)) !== undefined);
    await waitFor(
      'the original removed',
      async () => (await queue().getJob(first.jobId)) === undefined,
    );
    const letter = await deadLetter(first.messageId);
    expect(letter).to.include({ reason: 'exhausted', replayed_at: null });
    // The cause is fixed: a run now would apply the message, behind the operator's back.
    await setFailing(stack.db, false);
    for (let i = 0; i < 3; i++) expectSameAnswer(await enqueue(token), first);
    // The same with the token state lost from Redis: PostgreSQL answers.
    await stack.redis.del(tokenKey(stack.prefix, token));
    expectSameAnswer(await enqueue(token), first);
    expect(await queue().getJob(first.jobId), 'no job in Redis').to.equal(undefined);
    await sleep(500);
    expect(await effectCounts(stack.db), 'the handler never ran again').to.deep.equal(new Map());
    expect(deliveriesOf(first.messageId)).to.deep.equal(['dead']);
    expect(await deadLetter(first.messageId), 'the dead letter untouched').to.deep.equal(letter);
  });

  it('a replay whose look-up crossed a dead-letter move: the job it added is taken away unrun', async () => {
    await setFailing(stack.db, true);
    await worker();
    const token = await stack.producer.issueToken();
    const first = await enqueue(token);
    await waitFor('the dead letter', async () => (await deadLetter(first.messageId)) !== undefined);
    await waitFor(
      'the original removed',
      async () => (await queue().getJob(first.jobId)) === undefined,
    );
    const letter = await deadLetter(first.messageId);
    await setFailing(stack.db, false);
    // What a replay adds when its look-up ran just before the dead letter committed and its add
    // just after the original was removed.
    await queue().add(
      'fixture.bump',
      { messageId: first.messageId, token, data: { n: 1 }, readded: true },
      messageJobOptions(first.messageId, { maxAttempts: 1 }),
    );
    await waitFor(
      'the stray job removed',
      async () => (await queue().getJob(first.jobId)) === undefined,
    );
    await sleep(300);
    expect(await effectCounts(stack.db), 'the handler never ran again').to.deep.equal(new Map());
    expect(deliveriesOf(first.messageId)).to.deep.equal(['dead', 'duplicate']);
    expect(await deadLetter(first.messageId), 'the dead letter untouched').to.deep.equal(letter);
  });

  it('neither applied nor dead-lettered, its job lost: the replay adds it back, applied once', async () => {
    const token = await stack.producer.issueToken();
    const first = await enqueue(token);
    // Redis lost the job (no worker ran it): no inbox row, no dead letter.
    expect(await queue().remove(first.jobId)).to.equal(1);
    expect(await queue().getJob(first.jobId)).to.equal(undefined);
    expectSameAnswer(await enqueue(token), first);
    const job = await queue().getJob(first.jobId);
    expect(job?.data).to.deep.include({ messageId: first.messageId, token, readded: true });
    expect(job?.id).to.equal(jobIdFor(first.messageId));
    await worker();
    await waitFor('the effect', async () => (await effectCounts(stack.db)).size === 1);
    expectSameAnswer(await enqueue(token), first);
    await sleep(300);
    expect((await effectCounts(stack.db)).get(first.messageId)).to.equal(1);
    expect(deliveriesOf(first.messageId)).to.deep.equal(['applied']);
  });

  it('a dead letter the operator replayed is back on its queue: a replay may re-add its lost job', async () => {
    const token = await stack.producer.issueToken();
    const first = await enqueue(token);
    // As if dead-lettered, then replayed by the operator, and the replayed job lost with Redis.
    await upsertDeadLetter(stack.db, {
      messageId: first.messageId,
      queue: FIXTURE_QUEUE,
      jobName: 'fixture.bump',
      jobId: first.jobId,
      data: { n: 1 },
      token,
      reason: 'exhausted',
      error: 'refused',
      stack: null,
      attempts: 1,
      options: {},
      enqueuedAt: null,
    });
    await stack.db
      .updateTable('dead_letters')
      .set({ replayed_at: new Date() })
      .where('message_id', '=', first.messageId)
      .execute();
    expect(await queue().remove(first.jobId)).to.equal(1);
    expectSameAnswer(await enqueue(token), first);
    expect(await queue().getJob(first.jobId), 'the job is back').not.to.equal(undefined);
  });
});
