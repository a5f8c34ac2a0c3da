/**
 * Fault tests of group commit (issue 14): worker processes whose concurrent deliveries share one
 * transaction, SIGKILLed and SIGSTOPped at the group's crash points, a poison member among its
 * batch-mates, and two processes' groups locking the same few accounts in opposite orders. Real
 * processes, real signals, real Redis and PostgreSQL. Afterwards every message has exactly one
 * effect and none is lost.
 *
 * That a group of two or more was in flight is checked, not assumed: the group points fire only
 * for a group (a batch of one runs the single-message path, see worker/commit-groups.ts), and
 * the tests read how many inbox rows the dying group committed or rolled back.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { sql } from 'kysely';
import { createTestStack, type TestStack } from '../support/stack.js';
import { assertLedgerInvariants, inboxCount, waitFor } from '../support/ledger.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { createGroupTables, GROUP_QUEUE, groupJobs } from '../fixtures/group-jobs.js';
import { findDeadLetter } from '../../src/db/dead-letters.repository.js';
import type { Db } from '../../src/db/create-db.js';
import type { EnqueueResult } from '../../src/producer/producer.js';

const JOBS_MODULE = fileURLToPath(new URL('../fixtures/group-jobs.ts', import.meta.url));
const LEDGER_QUEUE = 'ledger';
/** Enough deliveries in flight at once that BullMQ hands the child many and groups form. */
const CONCURRENCY = '30';

describe('fault: group commit', function () {
  this.timeout(90_000);
  const children: WorkerChild[] = [];
  const spawn = (stack: TestStack, env: Record<string, string> = {}) => {
    const child = spawnWorker({ schema: stack.schema, prefix: stack.prefix, env });
    children.push(child);
    return child;
  };
  afterEach(async () => {
    await Promise.all(children.splice(0).map((c) => c.destroy()));
  });

  /**
   * Opens `accounts` accounts in-process, then enqueues `transfers` transfers between them for the
   * child workers, in both directions: transfer i goes from account i to account i + 1 + (i / n)
   * (mod n), so each pair of accounts sees transfers both ways.
   */
  async function prepare(stack: TestStack, transfers: number, accounts = 2, opening = 1_000) {
    const worker = await stack.startWorker();
    const opened: EnqueueResult[] = [];
    for (let i = 0; i < accounts; i++) {
      opened.push(
        await stack.producer.enqueue('account.open', {
          owner: `owner-${i}`,
          openingBalance: opening,
        }),
      );
    }
    await waitFor('accounts opened', async () => (await inboxCount(stack.db)) === accounts);
    await worker.close();
    for (let i = 0; i < transfers; i++) {
      const from = i % accounts;
      const to = (from + 1 + (Math.floor(i / accounts) % (accounts - 1))) % accounts;
      await stack.producer.enqueue('ledger.transfer', {
        fromId: opened[from]!.messageId,
        toId: opened[to]!.messageId,
        amount: 1 + (i % 7),
      });
    }
  }

  /** Every message applied exactly once, none lost, and every job off its queue. */
  async function assertExactlyOnce(stack: TestStack, transfers: number, accounts = 2) {
    await waitFor(
      `all ${transfers + accounts} messages applied`,
      async () => (await inboxCount(stack.db)) === transfers + accounts,
      40_000,
    );
    const state = await assertLedgerInvariants(stack.db);
    expect(state.transfers, 'one transfer row per transfer message').to.equal(transfers);
    expect(state.appliedTransferMessages).to.equal(transfers);
    expect(state.sumBalances).to.equal(state.sumOpening);
    await waitFor('the ledger queue drained', () => drained(stack, LEDGER_QUEUE), 20_000);
  }

  for (const point of ['group-before-commit', 'group-after-commit', 'after-done'] as const) {
    describe(`SIGKILL at ${point} with a group in flight`, () => {
      let stack: TestStack;
      before(async () => {
        stack = await createTestStack(`gkill-${point}`);
      });
      after(async () => stack.close());

      it('a second worker finishes: every message applied exactly once', async () => {
        const transfers = 30;
        await prepare(stack, transfers);
        const doomed = spawn(stack, {
          ONCEQ_FAULT: `${point}:kill`,
          ONCEQ_CONCURRENCY: CONCURRENCY,
        });
        const { signal } = await doomed.exited;
        expect(signal, doomed.output()).to.equal('SIGKILL');
        expect(doomed.output()).to.contain(`onceq-fault: ${point} SIGKILL`);

        const committed = (await inboxCount(stack.db)) - 2;
        if (point === 'group-before-commit') {
          // The group's inbox rows were inserted, then rolled back with the dead session.
          const rolledBack = await waitFor(
            'the dead session rolled back a group of two or more',
            async () => {
              const n = (await insertedInboxRows(stack.db, stack.schema)) - 2 - committed;
              return n >= 2 && n;
            },
            15_000,
          );
          expect(rolledBack).to.be.at.least(2);
        } else {
          // The group committed as a whole before the process died.
          expect(committed, 'messages committed by the killed worker').to.be.at.least(2);
          expect(await largestCommittedGroup(stack.db)).to.be.at.least(2);
        }
        if (point === 'group-before-commit') expect(committed).to.be.below(transfers);
        // Jobs the dead worker held are still on the queue, committed or not.
        expect(await drained(stack, LEDGER_QUEUE), 'jobs left for the survivor').to.equal(false);

        const survivor = spawn(stack, { ONCEQ_CONCURRENCY: CONCURRENCY });
        await survivor.waitForOutput('worker started');
        await assertExactlyOnce(stack, transfers);
        survivor.child.kill('SIGTERM');
        expect((await survivor.exited).code, survivor.output()).to.equal(0);
      });
    });
  }

  describe('SIGKILL at group-after-commit, effects with no key of their own', () => {
    let stack: TestStack;
    before(async () => {
      stack = await createTestStack('gkill-keyless', { jobs: groupJobs });
      await createGroupTables(stack.db);
    });
    after(async () => stack.close());

    it('only the inbox stands between a redelivered group and a second effect', async () => {
      const sent: EnqueueResult[] = [];
      for (let n = 0; n < 30; n++) {
        sent.push(await stack.producer.enqueue('group.bump', { n, poison: false }));
      }
      const env = { ONCEQ_JOBS: JOBS_MODULE, ONCEQ_CONCURRENCY: CONCURRENCY };
      const doomed = spawn(stack, { ...env, ONCEQ_FAULT: 'group-after-commit:kill' });
      expect((await doomed.exited).signal, doomed.output()).to.equal('SIGKILL');
      expect(doomed.output()).to.contain('onceq-fault: group-after-commit SIGKILL');
      expect(await largestCommittedGroup(stack.db)).to.be.at.least(2);

      const survivor = spawn(stack, env);
      await waitFor('the group queue drained', () => drained(stack, GROUP_QUEUE), 30_000);
      survivor.child.kill('SIGTERM');
      expect((await survivor.exited).code, survivor.output()).to.equal(0);
      const { rows } = await sql<{ message_id: string; n: string }>`
        select message_id::text, count(*)::text as n from group_effects group by message_id`.execute(
        stack.db,
      );
      const effects = new Map(rows.map((r) => [r.message_id, Number(r.n)]));
      for (const s of sent) expect(effects.get(s.messageId), s.messageId).to.equal(1);
      expect(await inboxCount(stack.db)).to.equal(sent.length);
    });
  });

  describe('a zombie group: SIGSTOP at group-before-commit past the lease, then SIGCONT', () => {
    let stack: TestStack;
    before(async () => {
      stack = await createTestStack('gzombie');
    });
    after(async () => stack.close());

    it('another worker commits every message; resumed, the zombie group commits nothing', async () => {
      const transfers = 30;
      await prepare(stack, transfers);
      const zombie = spawn(stack, {
        ONCEQ_FAULT: 'group-before-commit:stop',
        ONCEQ_CONCURRENCY: CONCURRENCY,
      });
      await zombie.waitForOutput('onceq-fault: group-before-commit SIGSTOP');
      await waitFor('zombie stopped', async () => readState(zombie.child.pid!) === 'T');
      const committedByZombie = (await inboxCount(stack.db)) - 2;
      expect(committedByZombie).to.be.below(transfers);

      // At once: the rescuer's claims wait out the zombie's leases (2 s), and its inbox inserts
      // wait on the zombie's uncommitted rows until its session is ended (idle in transaction
      // for the lock duration) — its groups give up at their lock_timeout, the members alone wait.
      const rescuer = spawn(stack, { ONCEQ_CONCURRENCY: CONCURRENCY });
      await assertExactlyOnce(stack, transfers);
      expect(readState(zombie.child.pid!), 'the zombie was stopped all along').to.equal('T');
      const before = await snapshot(stack.db);

      zombie.child.kill('SIGCONT');
      // The zombie sends its COMMIT on a session PostgreSQL ended, finishes (or abandons) its
      // stale deliveries, and exits gracefully.
      zombie.child.kill('SIGTERM');
      const exit = await zombie.exited;
      expect(exit, zombie.output()).to.deep.equal({ code: 0, signal: null });
      rescuer.child.kill('SIGTERM');
      expect((await rescuer.exited).code, rescuer.output()).to.equal(0);

      expect(await snapshot(stack.db), 'what the zombie changed').to.deep.equal(before);
      // Resumed, the zombie applied nothing: its stale members found the rescuer's inbox rows.
      const resumed = zombie.output().split('onceq-fault: group-before-commit SIGSTOP')[1]!;
      expect(resumed, zombie.output()).to.not.contain('"msg":"job applied"');
      await assertExactlyOnce(stack, transfers);
    });
  });

  describe('one poison handler among 20 in one group', () => {
    let stack: TestStack;
    before(async () => {
      stack = await createTestStack('gpoison', { jobs: groupJobs, maxAttempts: 2 });
      await createGroupTables(stack.db);
    });
    after(async () => stack.close());

    it('applies the 19 once each and dead-letters the poison, its effect never committed', async () => {
      const sent: EnqueueResult[] = [];
      for (let n = 0; n < 20; n++) {
        sent.push(await stack.producer.enqueue('group.bump', { n, poison: n === 7 }));
      }
      const poison = sent[7]!;
      const worker = spawnWorker({
        schema: stack.schema,
        prefix: stack.prefix,
        env: { ONCEQ_JOBS: JOBS_MODULE, ONCEQ_CONCURRENCY: '20', ONCEQ_MAX_ATTEMPTS: '2' },
      });
      children.push(worker);
      await waitFor(
        'the poison dead-lettered and the queue drained',
        async () =>
          (await findDeadLetter(stack.db, poison.messageId)) !== undefined &&
          (await drained(stack, GROUP_QUEUE)),
        30_000,
      );
      worker.child.kill('SIGTERM');
      expect((await worker.exited).code, worker.output()).to.equal(0);
      // The poison's first delivery ran in a group: its error counts the group's inbox rows.
      const sizes = [...worker.output().matchAll(/poison 7 refused in a transaction of (\d+)/g)];
      expect(Math.max(0, ...sizes.map((m) => Number(m[1]))), worker.output()).to.be.at.least(2);

      const letter = (await findDeadLetter(stack.db, poison.messageId))!;
      expect(letter.reason).to.equal('exhausted');
      expect(letter.error).to.contain('poison 7 refused');
      expect(letter.attempts).to.equal(2);

      const { rows } = await sql<{ message_id: string; n: string; group_rows: number }>`
        select message_id::text, count(*)::text as n, max(group_rows) as group_rows
        from group_effects group by message_id`.execute(stack.db);
      const effects = new Map(rows.map((r) => [r.message_id, Number(r.n)]));
      for (const s of sent) {
        expect(effects.get(s.messageId), `effects of message ${s.messageId}`).to.equal(
          s === poison ? undefined : 1,
        );
      }
      const inbox = await stack.db.selectFrom('inbox').select('message_id').execute();
      expect(inbox.map((r) => String(r.message_id)).sort()).to.deep.equal(
        sent
          .filter((s) => s !== poison)
          .map((s) => s.messageId)
          .sort(),
      );
      // The batch-mates did share a transaction with one another.
      expect(Math.max(...rows.map((r) => r.group_rows))).to.be.at.least(2);
    });
  });

  describe('two worker processes whose groups lock the same accounts in opposite orders', () => {
    let stack: TestStack;
    before(async () => {
      stack = await createTestStack('gdeadlock');
    });
    after(async () => stack.close());

    it('applies every transfer exactly once, the ledger invariants holding', async () => {
      const transfers = 80;
      const accounts = 3;
      await prepare(stack, transfers, accounts, 100_000);
      const deadlocksBefore = await deadlocks(stack.db);
      const workers = [0, 1].map(() => spawn(stack, { ONCEQ_CONCURRENCY: '40' }));
      await assertExactlyOnce(stack, transfers, accounts);
      const deadlocksSeen = (await deadlocks(stack.db)) - deadlocksBefore;
      for (const w of workers) w.child.kill('SIGTERM');
      for (const w of workers) expect((await w.exited).code, w.output()).to.equal(0);
      // Not deterministic, so only reported (the counter is the whole database's).
      console.log(`      deadlocks detected during the run: ${deadlocksSeen}`);
      expect(await largestCommittedGroup(stack.db)).to.be.at.least(2);
    });
  });
});

/** Rows ever inserted into `schema.inbox`'s partitions, rolled back ones included (statistics). */
async function insertedInboxRows(db: Db, schema: string): Promise<number> {
  const { rows } = await sql<{ n: string }>`
    select coalesce(sum(n_tup_ins), 0)::text as n from pg_stat_user_tables
    where schemaname = ${schema}
      and relid in (select inhrelid from pg_inherits
                    where inhparent = ${`${schema}.inbox`}::regclass)`.execute(db);
  return Number(rows[0]?.n ?? 0);
}

/** The most inbox rows one transaction committed. */
async function largestCommittedGroup(db: Db): Promise<number> {
  const { rows } = await sql<{ n: string }>`
    select coalesce(max(n), 0)::text as n
    from (select count(*) as n from inbox group by xmin::text) g`.execute(db);
  return Number(rows[0]!.n);
}

/** PostgreSQL's count of deadlocks detected in this database. */
async function deadlocks(db: Db): Promise<number> {
  const { rows } = await sql<{ n: string }>`
    select deadlocks::text as n from pg_stat_database where datname = current_database()`.execute(
    db,
  );
  return Number(rows[0]!.n);
}

/** True when no job of `queue` waits, runs, is delayed or failed. */
async function drained(stack: TestStack, queue: string): Promise<boolean> {
  const counts = await stack.producer
    .queue(queue)
    .getJobCounts('wait', 'active', 'delayed', 'failed', 'prioritized', 'waiting-children');
  return Object.values(counts).every((n) => n === 0);
}

/** What a resumed zombie must not change: inbox rows, transfers, balances. */
async function snapshot(db: Db) {
  const inbox = await sql<{ message_id: string; result: unknown; xmin: string }>`
    select message_id::text, result, xmin::text from inbox order by message_id`.execute(db);
  const transfers = await sql<{ message_id: string }>`
    select message_id::text from transfers order by message_id`.execute(db);
  const accounts = await sql<{ id: string; balance: string; version: number }>`
    select id::text, balance::text, version from accounts order by id`.execute(db);
  return { inbox: inbox.rows, transfers: transfers.rows, accounts: accounts.rows };
}

/** The process state letter from /proc (T = stopped). */
function readState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}
