/**
 * The transactional outbox: follow-ups are sent if and only if the parent commits, each is
 * applied once, and a relay that dies between adding the jobs and committing sends at most a
 * duplicate that the inbox absorbs. Real Redis and PostgreSQL.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { createTestStack, type TestStack } from '../support/stack.js';
import { waitFor } from '../support/ledger.js';
import { createFixtureTables, effectCounts, fixtureJobs, FIXTURE_QUEUE } from '../fixtures/jobs.js';
import { findDeadLetter } from '../../src/db/dead-letters.repository.js';
import { insertOutbox, outboxDepth, OUTBOX_PRINCIPAL } from '../../src/db/outbox.repository.js';
import { createOutboxRelay } from '../../src/worker/outbox-relay.js';
import { generateToken } from '../../src/core/token.js';
import { jobIdFor } from '../../src/core/message.js';
import { firstSnowflakeAt } from '../../src/core/snowflake.js';

describe('worker: transactional outbox', function () {
  this.timeout(60_000);
  let stack: TestStack;
  beforeEach(async () => {
    stack = await createTestStack('outbox', { jobs: fixtureJobs, maxAttempts: 2, backoffMs: 10 });
    await createFixtureTables(stack.db);
  });
  afterEach(async () => stack.close());

  it('a handler that enqueues a follow-up and then throws sends no follow-up', async () => {
    await stack.startWorker({ outbox: { intervalMs: 100 } });
    const sent = await stack.producer.enqueue('fixture.parent', { n: 1, throwAfter: true });
    const letter = await waitFor('parent dead-lettered', () =>
      findDeadLetter(stack.db, sent.messageId),
    );
    expect(letter.reason).to.equal('exhausted');
    // Give the relay several runs to send anything it might have.
    await new Promise((r) => setTimeout(r, 500));
    expect(await outboxDepth(stack.db)).to.equal(0);
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
    expect(await outboxDepth(stack.db)).to.equal(0);
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

    const relays = [1, 2].map(() =>
      createOutboxRelay({ db: stack.db, redis: stack.redis, prefix: stack.prefix }),
    );
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
    expect(await outboxDepth(stack.db)).to.equal(0);
  });

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
});
