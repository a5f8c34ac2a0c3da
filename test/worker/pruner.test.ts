/**
 * The dedupe window: rows older than it are pruned in batches while workers run, without making
 * any job wait on a lock for long, and accepted messages that were never applied are
 * dead-lettered as expired rather than dropped.
 *
 * Lock waits are measured, not inferred: a sampler polls pg_stat_activity every 20 ms for the
 * workers' sessions waiting on a lock (`wait_event_type = 'Lock'`) and records how long each such
 * statement has been running; the test asserts the longest is under 1 s.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { createTestStack, type TestStack } from '../support/stack.js';
import { inboxCount, waitFor } from '../support/ledger.js';
import { createPruner } from '../../src/worker/pruner.js';
import { findDeadLetter } from '../../src/db/dead-letters.repository.js';
import { findApplied } from '../../src/db/inbox.repository.js';
import { findAcceptedByMessageId } from '../../src/db/accepted-messages.repository.js';
import { firstSnowflakeAt, encodeSnowflake } from '../../src/core/snowflake.js';
import { createDb } from '../../src/db/create-db.js';
import { TEST_DATABASE_URL } from '../support/env.js';
import { createFixtureTables, effectCounts, fixtureJobs, FIXTURE_QUEUE } from '../fixtures/jobs.js';
import { readPruneCutoff } from '../../src/db/pruning.repository.js';
import { jobIdFor, type MessageEnvelope } from '../../src/core/message.js';
import { forgetToken } from '../support/token-loss.js';

const DAY = 86_400_000;

describe('worker: dedupe-window pruning', function () {
  this.timeout(90_000);
  let stack: TestStack;
  beforeEach(async () => {
    stack = await createTestStack('prune', { poolSize: 12 });
  });
  afterEach(async () => stack.close());

  it('prunes 100,000 old rows while workers run; no job waits 1 s on a lock', async () => {
    const old = firstSnowflakeAt(Date.now() - 30 * DAY);
    await sql`
      insert into inbox (message_id, queue, job_name, result)
      select ${old}::bigint + g, 'ledger', 'account.open', '{"status":"applied"}'::jsonb
      from generate_series(1, 100000) g`.execute(stack.db);
    await sql`
      insert into accepted_messages
        (message_id, principal, token, fingerprint, queue, job_name, data, job_id)
      select ${old}::bigint + g, 'p', 'tok-' || g, 'fp', 'ledger', 'account.open', '{}'::jsonb,
             'm-' || (${old}::bigint + g)::text
      from generate_series(1, 20000) g`.execute(stack.db);

    // The sampler runs on its own pool so that it never waits behind the workers for a connection.
    const observer = createDb({ url: TEST_DATABASE_URL, poolSize: 1, applicationName: 'observer' });
    let maxLockWaitMs = 0;
    let samples = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const { rows } = await sql<{ ms: number }>`
          select coalesce(max(extract(epoch from clock_timestamp() - query_start) * 1000), 0)::float8 as ms
          from pg_stat_activity
          where wait_event_type = 'Lock' and application_name = 'onceq-test'
            and query not like '%pg_stat_activity%'`.execute(observer);
        maxLockWaitMs = Math.max(maxLockWaitMs, rows[0]!.ms);
        samples++;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    try {
      await stack.startWorker({ concurrency: 10, pruner: false });
      await stack.startWorker({ concurrency: 10, pruner: false });
      const opened = [];
      for (let i = 0; i < 4; i++) {
        opened.push(
          (await stack.producer.enqueue('account.open', { owner: `o${i}`, openingBalance: 10_000 }))
            .messageId,
        );
      }
      const transfers = [];
      for (let i = 0; i < 600; i++) {
        transfers.push(
          stack.producer.enqueue('ledger.transfer', {
            fromId: opened[i % 4]!,
            toId: opened[(i + 1) % 4]!,
            amount: 1,
          }),
        );
      }
      await Promise.all(transfers);
      const pruner = createPruner({ db: stack.db, batchSize: 2_000, pauseMs: 5 });
      try {
        const report = await pruner.runOnce();
        expect(report).to.include({ ran: true, inbox: 100_000, acceptedMessages: 20_000 });
        // Every old accepted message had its inbox row, so none was expired.
        expect(report.expired).to.equal(0);
      } finally {
        await pruner.close();
      }
      await waitFor(
        'all transfers applied',
        async () => (await inboxCount(stack.db)) === 604,
        60_000,
      );
    } finally {
      sampling = false;
      await sampler;
      await observer.destroy();
    }
    const left = await sql<{ n: string }>`
      select count(*) as n from inbox where message_id < ${firstSnowflakeAt(Date.now() - DAY)}`.execute(
      stack.db,
    );
    expect(Number(left.rows[0]!.n)).to.equal(0);
    expect(samples).to.be.above(10);
    expect(maxLockWaitMs, `longest lock wait seen in ${samples} samples`).to.be.below(1_000);
  });

  it('dead-letters accepted messages that were never applied as expired, and keeps young rows', async () => {
    const oldId = encodeSnowflake({ timestampMs: Date.now() - 8 * DAY, workerId: 1, sequence: 1 });
    const youngId = firstSnowflakeAt(Date.now() - DAY);
    for (const id of [oldId, youngId]) {
      await stack.db
        .insertInto('accepted_messages')
        .values({
          message_id: id,
          principal: 'p',
          token: `tok-${id}`,
          fingerprint: 'fp',
          queue: 'ledger',
          job_name: 'account.open',
          data: JSON.stringify({ owner: 'x', openingBalance: 1 }),
          job_id: `m-${id}`,
          options: '{}',
        })
        .execute();
      await stack.db
        .insertInto('inbox')
        .values({
          message_id: String(BigInt(id) + 1n),
          queue: 'ledger',
          job_name: 'x',
          result: 'null',
        })
        .execute();
    }
    const pruner = createPruner({ db: stack.db });
    try {
      expect(await pruner.runOnce()).to.include({ acceptedMessages: 1, expired: 1, inbox: 1 });
    } finally {
      await pruner.close();
    }
    const letter = (await findDeadLetter(stack.db, oldId))!;
    expect(letter).to.include({
      reason: 'expired',
      token: `tok-${oldId}`,
      job_name: 'account.open',
    });
    expect(letter.data).to.deep.equal({ owner: 'x', openingBalance: 1 });
    const kept = await stack.db.selectFrom('accepted_messages').select('message_id').execute();
    expect(kept.map((r) => r.message_id)).to.deep.equal([youngId]);
    expect(await inboxCount(stack.db)).to.equal(1);
  });

  // The dedupe window rests on PostgreSQL's record, not on the worker's clock or setting. A
  // message is applied; the pruner (window W = 1 day, its clock two days ahead) prunes its inbox
  // row; Redis loses the token's `done` marker and the message is delivered again, to a worker
  // whose window is a year (or whose clock is behind): its own expiry check lets the message
  // through, and only the cutoff the pruner recorded stops a second effect.
  it('a worker with a longer window (or a slow clock) cannot re-apply a message the pruner pruned', async () => {
    await stack.close();
    stack = await createTestStack('prune_skew', { jobs: fixtureJobs, maxAttempts: 3 });
    await createFixtureTables(stack.db);
    await stack.startWorker({
      dedupeWindowMs: 365 * DAY,
      pruner: false,
      reconciler: false,
      outbox: false,
    });
    const { messageId } = await stack.producer.enqueue('fixture.bump', { n: 1 });
    const queue = stack.producer.queue(FIXTURE_QUEUE);
    const job = await waitFor('the first delivery completed', async () => {
      const j = await queue.getJob(jobIdFor(messageId));
      return (await j?.isCompleted()) ? j : undefined;
    });
    expect(job.returnvalue).to.include({ outcome: 'applied' });

    const pruner = createPruner({
      db: stack.db,
      dedupeWindowMs: DAY,
      now: () => Date.now() + 2 * DAY,
    });
    try {
      // In batches, or with the whole partition that holds them (the legacy one, which ends at
      // the next UTC midnight, lies past the window unless this runs in the first 10 minutes
      // of the day): either way its rows are gone and the cutoff covers them.
      const report = await pruner.runOnce();
      expect(report.ran).to.equal(true);
      if (report.partitionsDropped === 0) {
        expect(report).to.include({ inbox: 1, acceptedMessages: 1 });
      } else {
        expect(report.partitionsDropped).to.equal(2);
      }
      expect(await findApplied(stack.db, messageId)).to.equal(undefined);
      expect(await findAcceptedByMessageId(stack.db, messageId)).to.equal(undefined);
    } finally {
      await pruner.close();
    }
    expect(
      BigInt(await readPruneCutoff(stack.db)) >= BigInt(messageId),
      'cutoff recorded',
    ).to.equal(true);

    const envelope = job.data as MessageEnvelope;
    await forgetToken(stack, envelope.token);
    await queue.add(job.name, envelope, { jobId: 'redelivery' });
    const letter = await waitFor('the redelivery dead-lettered', () =>
      findDeadLetter(stack.db, messageId),
    );
    expect(letter.reason).to.equal('expired');
    expect(letter.error).to.contain('at or below the pruning cutoff');
    expect(letter.attempts, 'refused at once, not retried').to.equal(1);
    expect((await effectCounts(stack.db)).get(messageId), 'one effect').to.equal(1);
    expect(await inboxCount(stack.db)).to.equal(0);
  });
});
