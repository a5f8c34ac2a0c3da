/**
 * The transactional outbox: follow-ups are sent if and only if the parent commits, each is
 * applied once, and a relay that dies between adding the jobs and committing sends at most a
 * duplicate that the inbox absorbs. Real services, in both modes (queues and tokens in Redis, or
 * on PostgreSQL alone). On a Redis Cluster too, the cases where the relay adds jobs (one follow-up
 * each, a duplicate send, a batch with refused jobs and a dead-letter queue in another slot);
 * not those decided in PostgreSQL or the handler alone.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { createTestStack, modeOptions, type TestStack } from '../support/stack.js';
import { waitFor } from '../support/ledger.js';
import { createFixtureTables, effectCounts, fixtureJobs, FIXTURE_QUEUE } from '../fixtures/jobs.js';
import { findDeadLetter } from '../../src/db/dead-letters.repository.js';
import {
  insertOutbox,
  outboxBacklog,
  OUTBOX_PRINCIPAL,
  quarantinedFollowUps,
} from '../../src/db/outbox.repository.js';
import { pino } from 'pino';
import { createOutboxRelay } from '../../src/worker/outbox-relay.js';
import { generateToken } from '../../src/core/token.js';
import { jobIdFor } from '../../src/core/message.js';
import { firstSnowflakeAt } from '../../src/core/snowflake.js';
import { MAX_PRIORITY } from '../../src/core/limits.js';
import { deadLetterQueueName } from '../../src/core/dead-letter.js';
import { MODES, type TestMode } from '../support/env.js';
import { unreachableBackend } from '../support/unreachable-backend.js';

for (const mode of MODES) {
  describe(`worker: transactional outbox (${mode})`, function () {
    this.timeout(60_000);
    outboxCases(mode);
  });
}

/** The cases, declared once per mode; `mode` is where the stacks keep queues and tokens. */
function outboxCases(mode: TestMode): void {
  const onCluster = mode === 'redis-cluster';
  let stack: TestStack;
  beforeEach(async () => {
    stack = await createTestStack('outbox', {
      jobs: fixtureJobs,
      maxAttempts: 2,
      backoffMs: 10,
      ...modeOptions(mode),
    });
    await createFixtureTables(stack.db);
  });
  afterEach(async () => stack.close());

  if (!onCluster) {
    it('a handler that enqueues a follow-up and then throws sends no follow-up', async () => {
      await stack.startWorker({ outbox: { intervalMs: 100 } });
      const sent = await stack.producer.enqueue('fixture.parent', { n: 1, throwAfter: true });
      const letter = await waitFor('parent dead-lettered', () =>
        findDeadLetter(stack.db, sent.messageId),
      );
      expect(letter.reason).to.equal('exhausted');
      // Give the relay several runs to send anything it might have.
      await new Promise((r) => setTimeout(r, 500));
      expect((await outboxBacklog(stack.db)).depth).to.equal(0);
      expect((await effectCounts(stack.db)).size).to.equal(0);
      const followUps = await stack.db
        .selectFrom('accepted_messages')
        .select('message_id')
        .where('principal', '=', OUTBOX_PRINCIPAL)
        .execute();
      expect(followUps).to.deep.equal([]);
      expect(
        await stack.producer.queue(FIXTURE_QUEUE).getJobCountByTypes('wait', 'delayed', 'active'),
      ).to.equal(0);
    });
  }

  it('a handler that commits sends exactly one follow-up, applied once, recorded as accepted', async () => {
    await stack.startWorker({ outbox: { intervalMs: 5_000 } });
    const parents = [];
    for (let n = 0; n < 20; n++) {
      parents.push(await stack.producer.enqueue('fixture.parent', { n, throwAfter: false }));
    }
    // The relay is nudged by each commit: far sooner than its 5 s interval.
    const counts = await waitFor(
      '20 follow-ups applied',
      async () => {
        const c = await effectCounts(stack.db);
        return c.size === 20 ? c : undefined;
      },
      4_000,
    );
    expect([...counts.values()].every((n) => n === 1)).to.equal(true);
    const results = await stack.db
      .selectFrom('inbox')
      .select(['message_id', 'result'])
      .where(
        'message_id',
        'in',
        parents.map((p) => p.messageId),
      )
      .execute();
    const followUpIds = results.map((r) => (r.result as { followUp: string }).followUp).sort();
    expect([...counts.keys()].sort()).to.deep.equal(followUpIds);
    const accepted = await stack.db
      .selectFrom('accepted_messages')
      .select(['message_id', 'fingerprint', 'job_id'])
      .where('principal', '=', OUTBOX_PRINCIPAL)
      .execute();
    expect(accepted.map((a) => a.message_id).sort()).to.deep.equal(followUpIds);
    expect(
      accepted.every(
        (a) => a.fingerprint.startsWith('outbox:') && a.job_id === jobIdFor(a.message_id),
      ),
    ).to.equal(true);
    expect((await outboxBacklog(stack.db)).depth).to.equal(0);
  });

  it('a relay that dies after adding the jobs and before committing sends a duplicate the inbox absorbs', async () => {
    const messageId = firstSnowflakeAt(Date.now());
    const token = generateToken();
    await insertOutbox(stack.db, {
      messageId,
      parentMessageId: '1',
      queue: FIXTURE_QUEUE,
      jobName: 'fixture.bump',
      data: { n: 5 },
      token,
      options: {},
    });
    // The dying relay's half: the job is in BullMQ, the outbox row was never deleted. It is also
    // already applied, so the relay's second send must not apply it again.
    await stack.producer
      .queue(FIXTURE_QUEUE)
      .add('fixture.bump', { messageId, token, data: { n: 5 } }, { jobId: 'first-send' });
    await stack.startWorker({ outbox: false });
    await waitFor(
      'first send applied',
      async () => (await effectCounts(stack.db)).get(messageId) === 1,
    );

    const relays = [1, 2].map(() => createOutboxRelay({ db: stack.db, backend: stack.backend }));
    try {
      // Two relays at once: SKIP LOCKED gives the row to one of them.
      const sent = await Promise.all(relays.map((r) => r.runOnce()));
      expect(sent.sort()).to.deep.equal([0, 1]);
    } finally {
      await Promise.all(relays.map((r) => r.close()));
    }
    const job = await stack.producer.queue(FIXTURE_QUEUE).getJob(jobIdFor(messageId));
    await waitFor('second send completed', async () => (await job?.isCompleted()) ?? false);
    expect(
      (await stack.producer.queue(FIXTURE_QUEUE).getJob(jobIdFor(messageId)))!.returnvalue,
    ).to.include({
      outcome: 'duplicate',
    });
    expect((await effectCounts(stack.db)).get(messageId)).to.equal(1);
    expect((await outboxBacklog(stack.db)).depth).to.equal(0);
  });

  // Rows written straight into the outbox (ctx.enqueue refuses such options at the door now; rows
  // written before that, or by another path, may be there). Before isolation, the relay's one
  // addBulk threw on the bad row and rolled back the whole batch at every run: no follow-up left.
  it('dead-letters follow-ups BullMQ refuses as invalid, in the batch that sends the good ones', async () => {
    const ids = await writeFollowUps(stack, 7, 3, 5);
    const [bad, badQueue] = [ids[3]!, ids[5]!];
    const relay = createOutboxRelay({ db: stack.db, backend: stack.backend });
    try {
      expect(await relay.runOnce()).to.equal(7);
      // Nothing left behind, and a second run has nothing to send or dead-letter again.
      expect((await outboxBacklog(stack.db)).depth).to.equal(0);
      expect(await relay.runOnce()).to.equal(0);
    } finally {
      await relay.close();
    }
    const letter = await findDeadLetter(stack.db, bad);
    expect(letter).to.include({
      reason: 'invalid',
      attempts: 0,
      job_name: 'fixture.bump',
      job_id: jobIdFor(bad),
      dead_count: 1,
    });
    expect(letter!.error).to.contain('BullMQ refused the job').and.contain('Priority');
    expect(letter!.options).to.deep.equal({ priority: MAX_PRIORITY + 1 });
    expect(letter!.data).to.deep.equal({ n: 3 });
    const queueLetter = await findDeadLetter(stack.db, badQueue);
    expect(queueLetter).to.include({ reason: 'invalid', queue: 'bad:queue' });
    expect(queueLetter!.error).to.contain('Queue name cannot contain');
    expect(await stack.producer.queue(FIXTURE_QUEUE).getJob(jobIdFor(bad))).to.equal(undefined);
    // Its visible copy, written after the commit.
    const dlq = stack.producer.queue(deadLetterQueueName(FIXTURE_QUEUE));
    expect((await dlq.getJob(jobIdFor(bad)))?.data).to.include({ messageId: bad });
    // It is recorded as accepted like the others, and settled by its dead letter.
    const accepted = await stack.db
      .selectFrom('accepted_messages')
      .select('message_id')
      .where('principal', '=', OUTBOX_PRINCIPAL)
      .execute();
    expect(accepted.map((a) => a.message_id).sort()).to.deep.equal([...ids].sort());

    await stack.startWorker({ outbox: false, reconciler: false });
    const counts = await waitFor('the five good follow-ups applied', async () => {
      const c = await effectCounts(stack.db);
      return c.size === 5 ? c : undefined;
    });
    expect([...counts.keys()].sort()).to.deep.equal(
      ids.filter((id) => id !== bad && id !== badQueue).sort(),
    );
    expect([...counts.values()].every((n) => n === 1)).to.equal(true);
  });

  if (!onCluster) {
    it('quarantines a follow-up whose id another message holds, loudly, and sends the rest', async () => {
      const ids = await writeFollowUps(stack, 5);
      const clash = ids[2]!;
      // Another message already holds that id (an id minted twice): accepted through the API path.
      await stack.db
        .insertInto('accepted_messages')
        .values({
          message_id: clash,
          principal: 'alice',
          token: generateToken(),
          fingerprint: 'f',
          queue: FIXTURE_QUEUE,
          job_name: 'fixture.bump',
          data: JSON.stringify({ n: 99 }),
          job_id: jobIdFor(clash),
          options: JSON.stringify({}),
        })
        .execute();
      const errors: unknown[] = [];
      const logger = pino(
        { level: 'error' },
        { write: (line: string) => errors.push(JSON.parse(line)) },
      );
      const relay = createOutboxRelay({
        db: stack.db,
        backend: stack.backend,
        logger,
      });
      try {
        expect(await relay.runOnce()).to.equal(4);
        // The loop goes on: the next run neither sends it nor stops on it.
        expect(await relay.runOnce()).to.equal(0);
        await writeFollowUps(stack, 1);
        expect(await relay.runOnce()).to.equal(1);
      } finally {
        await relay.close();
      }
      expect(errors).to.have.length(1);
      expect(errors[0]).to.deep.include({ messageIds: [clash] });
      expect((errors[0] as { msg: string }).msg).to.contain('quarantined');
      const quarantined = await quarantinedFollowUps(stack.db);
      expect(quarantined.map((q) => q.message_id)).to.deep.equal([clash]);
      expect(quarantined[0]!.error).to.contain('id clash');
      // The other message's record is untouched; no job was added under its id by the relay.
      const holder = await stack.db
        .selectFrom('accepted_messages')
        .select(['principal', 'data'])
        .where('message_id', '=', clash)
        .executeTakeFirstOrThrow();
      expect(holder).to.deep.equal({ principal: 'alice', data: { n: 99 } });
      expect(await stack.producer.queue(FIXTURE_QUEUE).getJob(jobIdFor(clash))).to.equal(undefined);
      for (const id of ids.filter((i) => i !== clash)) {
        expect(await stack.producer.queue(FIXTURE_QUEUE).getJob(jobIdFor(id)), id).to.not.equal(
          undefined,
        );
      }
    });
  }

  if (!onCluster) {
    // The queues being away is not the rows' fault: the batch rolls back whole, nothing is
    // dead-lettered, and a run with the queues back sends every row.
    it(`dead-letters nothing while ${mode === 'redis' ? 'Redis' : "the queues' PostgreSQL"} is unreachable; the rows wait for the next run`, async () => {
      const ids = await writeFollowUps(stack, 4);
      const unreachable = unreachableBackend(mode, stack.prefix);
      const down = createOutboxRelay({ db: stack.db, backend: unreachable.backend });
      try {
        const failed = await down.runOnce().then(
          () => undefined,
          (err: unknown) => err,
        );
        expect(failed, 'the run fails while the queues are away').to.be.instanceOf(Error);
      } finally {
        await down.close();
        await unreachable.close();
      }
      expect((await outboxBacklog(stack.db)).depth).to.equal(4);
      const letters = await stack.db.selectFrom('dead_letters').select('message_id').execute();
      expect(letters).to.deep.equal([]);

      const up = createOutboxRelay({ db: stack.db, backend: stack.backend });
      try {
        expect(await up.runOnce()).to.equal(4);
      } finally {
        await up.close();
      }
      await stack.startWorker({ outbox: false, reconciler: false });
      await waitFor('all four applied', async () => (await effectCounts(stack.db)).size === 4);
      expect([...(await effectCounts(stack.db)).keys()].sort()).to.deep.equal([...ids].sort());
    });
  }

  if (!onCluster) {
    it('validates follow-up data in the handler: a bad follow-up dead-letters the parent as invalid', async () => {
      const badParent = {
        ...fixtureJobs[1]!,
        name: 'fixture.bad-parent',
        async handle(ctx: Parameters<(typeof fixtureJobs)[1]['handle']>[0]) {
          await ctx.enqueue('fixture.bump', { n: 'not a number' });
          return { status: 'applied' };
        },
      };
      // Data the schema accepts but PostgreSQL's jsonb cannot store (half a surrogate pair).
      const halfPairParent = {
        ...badParent,
        name: 'fixture.half-pair-parent',
        async handle(ctx: Parameters<(typeof fixtureJobs)[1]['handle']>[0]) {
          await ctx.enqueue('account.open', { owner: 'half \ud83d', openingBalance: 1 });
          return { status: 'applied' };
        },
      };
      await stack.close();
      stack = await createTestStack('outbox-bad', {
        jobs: [...fixtureJobs, badParent, halfPairParent],
        maxAttempts: 3,
        backend: mode,
      });
      await createFixtureTables(stack.db);
      await stack.startWorker();
      const sent = await stack.producer.enqueue('fixture.bad-parent', { n: 1, throwAfter: false });
      const letter = await waitFor('bad parent dead-lettered', () =>
        findDeadLetter(stack.db, sent.messageId),
      );
      expect(letter.reason).to.equal('invalid');
      expect(letter.attempts).to.equal(1);
      expect(letter.error).to.contain('/n');
      const half = await stack.producer.enqueue('fixture.half-pair-parent', {
        n: 2,
        throwAfter: false,
      });
      const halfLetter = await waitFor('half-pair parent dead-lettered', () =>
        findDeadLetter(stack.db, half.messageId),
      );
      expect(halfLetter.reason).to.equal('invalid');
      expect(halfLetter.attempts).to.equal(1);
      expect(halfLetter.error).to.contain('/owner').and.contain('surrogate');
      expect(
        Number(
          (await sql<{ n: string }>`select count(*) as n from outbox`.execute(stack.db)).rows[0]!.n,
        ),
      ).to.equal(0);
    });
  }
}

/**
 * Writes `count` bump follow-ups straight into the outbox, in id order; the one at `poisonAt`
 * (if any) asks for priority MAX_PRIORITY + 1, the one at `badQueueAt` names a queue BullMQ
 * cannot open (`:`). Returns their ids.
 */
async function writeFollowUps(
  stack: TestStack,
  count: number,
  poisonAt?: number,
  badQueueAt?: number,
): Promise<string[]> {
  const ids: string[] = [];
  for (let n = 0; n < count; n++) {
    const messageId = stack.ids.nextId();
    ids.push(messageId);
    await insertOutbox(stack.db, {
      messageId,
      parentMessageId: '1',
      queue: n === badQueueAt ? 'bad:queue' : FIXTURE_QUEUE,
      jobName: 'fixture.bump',
      data: { n },
      token: generateToken(),
      options: { priority: n === poisonAt ? MAX_PRIORITY + 1 : n + 1 },
    });
  }
  return ids;
}
