/**
 * A statement that hangs must not hold its message forever: the worker's sessions run with
 * `statement_timeout` (ONCEQ_STATEMENT_TIMEOUT), so a delivery stuck behind a lock nobody
 * releases fails, rolls back, gives its claim back and is retried; once the lock goes, the
 * message is applied once. Real PostgreSQL and Redis; the "hang" is a real table lock held by
 * another session.
 */
import { expect } from 'chai';
import pg from 'pg';
import { createDb, type Db } from '../../src/db/create-db.js';
import { createTestStack, type TestStack } from '../support/stack.js';
import { inboxCount, waitFor } from '../support/ledger.js';
import { TEST_DATABASE_URL } from '../support/env.js';
import { createFixtureTables, effectCounts, fixtureJobs, FIXTURE_QUEUE } from '../fixtures/jobs.js';

describe('worker: a statement that hangs', function () {
  this.timeout(60_000);
  let stack: TestStack;
  let workerDb: Db;
  let locker: pg.Client;

  beforeEach(async () => {
    stack = await createTestStack('hung', { jobs: fixtureJobs, maxAttempts: 50, backoffMs: 10 });
    await createFixtureTables(stack.db);
    workerDb = createDb({
      url: TEST_DATABASE_URL,
      schema: stack.schema,
      poolSize: 5,
      statementTimeoutMs: 300,
      applicationName: 'onceq-test-hung',
    });
    locker = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await locker.connect();
    await locker.query(`set search_path = "${stack.schema}"`);
  });

  afterEach(async () => {
    await locker.end();
    await stack.close();
    await workerDb.destroy();
  });

  it('fails after the statement timeout, is retried, and applies once when the lock is released', async () => {
    // Another session holds the effects table: every insert into it waits.
    await locker.query('begin');
    await locker.query('lock table fixture_effects in access exclusive mode');
    await stack.startWorker({ db: workerDb, lockDurationMs: 2_000 });
    const sent = await stack.producer.enqueue('fixture.bump', { n: 1 });

    // Without the timeout the first delivery would wait on the lock as long as it is held, its
    // claim renewed all along, and no retry would ever happen.
    await waitFor('two deliveries timed out and retried', async () =>
      stack.outcomes.filter((o) => o.outcome === 'retried').length >= 2 ? true : undefined,
    );
    const job = await stack.producer.queue(FIXTURE_QUEUE).getJob(`m-${sent.messageId}`);
    expect(job?.failedReason).to.match(/statement timeout/);
    // Rolled back: no inbox row (the effects table itself is locked, so it is read below).
    expect(await inboxCount(stack.db)).to.equal(0);

    await locker.query('rollback');
    const counts = await waitFor('the message applied', async () => {
      const c = await effectCounts(stack.db);
      return c.size === 1 ? c : undefined;
    });
    expect([...counts]).to.deep.equal([[sent.messageId, 1]]);
    await waitFor('the job completed', async () =>
      stack.outcomes.some((o) => o.outcome === 'applied') ? true : undefined,
    );
    expect(stack.outcomes.filter((o) => o.outcome === 'applied')).to.have.length(1);
  });
});
