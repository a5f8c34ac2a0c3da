/**
 * inbox and accepted_messages partitioned by day of message ids (migration
 * 2026_12_01_180000_partition_by_day): the in-place migration and its way back, the partitions
 * the workers create ahead, the default partition past them, the pruner's whole-partition drop
 * under the pruning cutoff, and one acceptance per token across partitions.
 */
import { expect } from 'chai';
import { Migrator, sql } from 'kysely';
import {
  createTestSchema,
  TEST_DATABASE_URL,
  uniqueName,
  type TestSchema,
} from '../support/env.js';
import { createDb, type Db } from '../../src/db/create-db.js';
import {
  FileMigrationProvider,
  migrateDown,
  migrateToLatest,
  runMigrator,
} from '../../src/db/migrate.js';
import {
  ensurePartitions,
  listPartitions,
  type PartitionInfo,
} from '../../src/db/partitions.repository.js';
import {
  findAcceptedByToken,
  recordAccepted,
  type AcceptedMessage,
} from '../../src/db/accepted-messages.repository.js';
import { findApplied } from '../../src/db/inbox.repository.js';
import { findDeadLetter } from '../../src/db/dead-letters.repository.js';
import { readPruneCutoff } from '../../src/db/pruning.repository.js';
import { MessagePrunedError, runMessageTransaction } from '../../src/db/message-transaction.js';
import { createPruner } from '../../src/worker/pruner.js';
import { startPartitionMaintainer } from '../../src/worker/partition-maintainer.js';
import { firstSnowflakeAt } from '../../src/core/snowflake.js';
import { PRUNE_MARGIN_MS } from '../../src/core/dead-letter.js';
import { DEFAULT_DEDUPE_WINDOW_MS } from '../../src/core/defaults.js';

const DAY = 86_400_000;
const TODAY_MS = Math.floor(Date.now() / DAY) * DAY;
/** The first id of the UTC day `days` from today. */
const dayId = (days: number, plus = 0n): string =>
  (BigInt(firstSnowflakeAt(TODAY_MS + days * DAY)) + plus).toString();
const dayName = (days: number): string =>
  new Date(TODAY_MS + days * DAY).toISOString().slice(0, 10).replace(/-/g, '');

function acceptance(messageId: string, token: string): AcceptedMessage {
  return {
    messageId,
    principal: 'p',
    token,
    fingerprint: `fp-${token}`,
    queue: 'q',
    jobName: 'j',
    data: { token },
    jobId: `m-${messageId}`,
    options: {},
  };
}

async function insertInbox(db: Db, messageId: string): Promise<void> {
  await sql`insert into inbox (message_id, queue, job_name, result)
            values (${messageId}, 'q', 'j', '{"ok":true}')`.execute(db);
}

/** The partition that holds a row of `table`. */
async function partitionOf(db: Db, table: string, messageId: string): Promise<string> {
  const { rows } = await sql<{ part: string }>`
    select tableoid::regclass::text as part from ${sql.table(table)}
    where message_id = ${messageId}`.execute(db);
  return rows[0]!.part;
}

const names = (parts: PartitionInfo[]) => parts.map((p) => p.name);

describe('db: partitions by day', function () {
  this.timeout(60_000);

  describe('the in-place migration', () => {
    let db: Db;
    let schema: string;
    before(async () => {
      schema = uniqueName('partmig');
      db = createDb({ url: TEST_DATABASE_URL, schema, poolSize: 4 });
      await sql`create schema ${sql.id(schema)}`.execute(db);
      // Through runMigrator: another test's schema dropped meanwhile is waited out, as in use.
      await runMigrator(schema, () =>
        new Migrator({
          db,
          provider: new FileMigrationProvider(),
          migrationTableSchema: schema,
        }).migrateTo('2026_12_01_170000_queue_backends'),
      );
    });
    after(async () => {
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
      await db.destroy();
    });

    it('keeps every row and the lookups going up, and restores the old shape going down', async () => {
      // The old shape, populated: 2,000 rows each, from a week ago to now.
      const from = BigInt(firstSnowflakeAt(Date.now() - 7 * DAY));
      await sql`
        insert into inbox (message_id, queue, job_name, result)
        select ${from.toString()}::bigint + g::bigint * 1000000000, 'q', 'j', '{"n":1}'::jsonb
        from generate_series(1, 2000) g`.execute(db);
      await sql`
        insert into accepted_messages
          (message_id, principal, token, fingerprint, queue, job_name, data, job_id)
        select ${from.toString()}::bigint + g::bigint * 1000000000, 'p', 'tok-' || g, 'fp', 'q', 'j',
               '{}'::jsonb, 'm-' || g
        from generate_series(1, 2000) g`.execute(db);
      const oldest = (from + 1_000_000_000n).toString();

      await migrateToLatest(db, schema);
      const inboxParts = await listPartitions(db, 'inbox');
      expect(names(inboxParts)).to.deep.equal([
        'inbox_legacy',
        `inbox_p${dayName(1)}`,
        `inbox_p${dayName(2)}`,
        `inbox_p${dayName(3)}`,
        'inbox_default',
      ]);
      // The legacy partition ends where the first day partition starts: tomorrow.
      expect(inboxParts[0]).to.deep.equal({
        name: 'inbox_legacy',
        from: undefined,
        below: dayId(1),
      });
      const counts = await sql<{ inbox: string; accepted: string }>`
        select (select count(*) from inbox_legacy)::text as inbox,
               (select count(*) from accepted_messages_legacy)::text as accepted`.execute(db);
      expect(counts.rows[0]).to.deep.equal({ inbox: '2000', accepted: '2000' });
      expect((await findAcceptedByToken(db, 'p', 'tok-1'))?.message_id).to.equal(oldest);
      expect(await findApplied(db, oldest))
        .to.have.property('result')
        .that.deep.equals({ n: 1 });

      // One acceptance per token still, across the legacy row and a new day's id.
      const again = await recordAccepted(db, acceptance(dayId(2, 5n), 'tok-1'));
      expect(again.message_id).to.equal(oldest);
      const fresh = await recordAccepted(db, acceptance(dayId(2, 6n), 'tok-new'));
      expect(await partitionOf(db, 'accepted_messages', fresh.message_id)).to.equal(
        `accepted_messages_p${dayName(2)}`,
      );
      await insertInbox(db, dayId(2, 6n));

      // Down: one plain table each again, every row kept, the token's unique key back.
      await migrateDown(db, schema);
      const { rows: kinds } = await sql<{ relname: string; relkind: string }>`
        select relname, relkind::text from pg_class
        where relnamespace = ${schema}::regnamespace
          and relname in ('inbox', 'accepted_messages') order by relname`.execute(db);
      expect(kinds).to.deep.equal([
        { relname: 'accepted_messages', relkind: 'r' },
        { relname: 'inbox', relkind: 'r' },
      ]);
      const after = await sql<{ inbox: string; accepted: string; parts: string }>`
        select (select count(*) from inbox)::text as inbox,
               (select count(*) from accepted_messages)::text as accepted,
               (select count(*) from pg_class where relnamespace = ${schema}::regnamespace
                  and relname ~ '_(p[0-9]{8}|default|legacy)$')::text as parts`.execute(db);
      expect(after.rows[0]).to.deep.equal({ inbox: '2001', accepted: '2001', parts: '0' });
      const reused = await sql`
        insert into accepted_messages
          (message_id, principal, token, fingerprint, queue, job_name, data, job_id)
        values (1, 'p', 'tok-new', 'f', 'q', 'j', '{}'::jsonb, 'm-1')`
        .execute(db)
        .then(
          () => undefined,
          (err: { code?: string; constraint?: string }) => err,
        );
      expect(reused).to.include({
        code: '23505',
        constraint: 'accepted_messages_principal_token_key',
      });
      // And up again, as a deployment that rolled back and forward would.
      await migrateToLatest(db, schema);
      expect((await findAcceptedByToken(db, 'p', 'tok-new'))?.message_id).to.equal(
        fresh.message_id,
      );
    });
  });

  describe('on a migrated schema', () => {
    let t: TestSchema;
    beforeEach(async () => {
      t = await createTestSchema('parts');
    });
    afterEach(async () => t.drop());

    it('creates partitions ahead once, however many workers ask at once', async () => {
      const made = await Promise.all(Array.from({ length: 4 }, () => ensurePartitions(t.db, 6)));
      // The migration made today + 3 (today's ids are in the legacy partition): three more each.
      expect(made.reduce((a, b) => a + b, 0)).to.equal(6);
      expect(await ensurePartitions(t.db, 6)).to.equal(0);
      const parts = await listPartitions(t.db, 'accepted_messages');
      expect(names(parts)).to.deep.equal([
        'accepted_messages_legacy',
        ...[1, 2, 3, 4, 5, 6].map((d) => `accepted_messages_p${dayName(d)}`),
        'accepted_messages_default',
      ]);
      // Contiguous: each ends where the next starts.
      for (let i = 1; i < parts.length - 1; i++)
        expect(parts[i]!.from).to.equal(parts[i - 1]!.below);
      // The worker's task does it on start.
      const task = startPartitionMaintainer(t.db, { daysAhead: 7, intervalMs: 3_600_000 });
      try {
        const deadline = Date.now() + 5_000;
        while ((await listPartitions(t.db, 'inbox')).length < 9 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
        }
      } finally {
        await task.close();
      }
      expect(names(await listPartitions(t.db, 'inbox'))).to.include(`inbox_p${dayName(7)}`);
      const bad = await ensurePartitions(t.db, -1).then(
        () => undefined,
        (err: Error) => err,
      );
      expect(bad?.message).to.match(/days ahead must be 0 to 366, got -1/);
    });

    it('takes ids past the last partition into the default one, and leaves that day to it', async () => {
      const late = dayId(5, 42n);
      await insertInbox(t.db, late);
      const stored = await recordAccepted(t.db, acceptance(late, 'tok-late'));
      expect(stored.message_id).to.equal(late);
      expect(await partitionOf(t.db, 'inbox', late)).to.equal('inbox_default');
      // The day the default holds rows of is not created (PostgreSQL would refuse it); the days
      // before it are, and the run does not fail.
      expect(await ensurePartitions(t.db, 6)).to.equal(4);
      const inbox = names(await listPartitions(t.db, 'inbox'));
      expect(inbox).to.include(`inbox_p${dayName(4)}`);
      expect(inbox).not.to.include(`inbox_p${dayName(5)}`);
      expect(await partitionOf(t.db, 'inbox', late)).to.equal('inbox_default');
      expect((await findAcceptedByToken(t.db, 'p', 'tok-late'))?.message_id).to.equal(late);
    });

    it('prunes by dropping whole partitions, raises the cutoff, and refuses a pruned message', async () => {
      // Day 1: an applied message and one never applied.
      const applied = dayId(1, 10n);
      const unapplied = dayId(1, 11n);
      await recordAccepted(t.db, acceptance(applied, 'tok-a'));
      await recordAccepted(t.db, acceptance(unapplied, 'tok-u'));
      await insertInbox(t.db, applied);
      // Day 2 straddles the cutoff: its first hour is past the window, the rest is not.
      const early2 = dayId(2, 1n);
      const late2 = firstSnowflakeAt(TODAY_MS + 2 * DAY + 3 * 3_600_000);
      await insertInbox(t.db, early2);
      await insertInbox(t.db, late2);

      const nowMs = TODAY_MS + 2 * DAY + 3_600_000 + DEFAULT_DEDUPE_WINDOW_MS + PRUNE_MARGIN_MS;
      const pruner = createPruner({ db: t.db, now: () => nowMs, pauseMs: 0 });
      const report = await pruner.runOnce();
      await pruner.close();
      // Legacy and day 1, of both tables, dropped; day 2's early row deleted in a batch.
      expect(report).to.deep.include({ ran: true, partitionsDropped: 4, expired: 1, inbox: 1 });
      const inbox = names(await listPartitions(t.db, 'inbox'));
      expect(inbox[0]).to.equal(`inbox_p${dayName(2)}`);
      expect(await findApplied(t.db, early2)).to.equal(undefined);
      expect(await findApplied(t.db, late2)).not.to.equal(undefined);
      // The never-applied message is not lost: dead-lettered as expired before its partition went.
      expect(await findDeadLetter(t.db, unapplied)).to.include({ reason: 'expired' });
      expect(BigInt(await readPruneCutoff(t.db)) >= BigInt(early2)).to.equal(true);

      // A redelivery of the applied message finds no inbox row (its partition is gone; the id
      // now routes to the default partition), and the cutoff refuses it: nothing runs twice.
      const refused = await runMessageTransaction(
        t.db,
        { messageId: applied, queue: 'q', jobName: 'j' },
        async () => 'again',
      ).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(refused).to.be.instanceOf(MessagePrunedError);
      const { rows } = await sql<{ n: string }>`
        select count(*)::text as n from inbox_default`.execute(t.db);
      expect(rows[0]!.n).to.equal('0');
    });

    it('leaves a day whose drop cannot get its lock to a later pass, whole', async () => {
      const id = dayId(1, 3n);
      await recordAccepted(t.db, acceptance(id, 'tok-held'));
      await insertInbox(t.db, id);
      const nowMs = TODAY_MS + 3 * DAY + DEFAULT_DEDUPE_WINDOW_MS + PRUNE_MARGIN_MS;
      const pruner = createPruner({ db: t.db, now: () => nowMs, pauseMs: 0 });
      const other = createDb({ url: TEST_DATABASE_URL, schema: t.schema, poolSize: 1 });
      try {
        // A reader holds accepted_messages: DROP needs it exclusively, and gives up after 1 s.
        const held = await other.transaction().execute(async (trx) => {
          await sql`select count(*) from accepted_messages`.execute(trx);
          return pruner.runOnce();
        });
        expect(held).to.deep.include({
          ran: true,
          partitionsDropped: 0,
          acceptedMessages: 0,
          inbox: 0,
        });
        expect((await findAcceptedByToken(t.db, 'p', 'tok-held'))?.message_id).to.equal(id);
        expect(await findApplied(t.db, id)).not.to.equal(undefined);
        const later = await pruner.runOnce();
        expect(later).to.deep.include({ partitionsDropped: 6, acceptedMessages: 0, inbox: 0 });
        expect(await findAcceptedByToken(t.db, 'p', 'tok-held')).to.equal(undefined);
      } finally {
        await pruner.close();
        await other.destroy();
      }
    });

    it('keeps one acceptance per token when two race with ids in different partitions', async () => {
      const other = createDb({ url: TEST_DATABASE_URL, schema: t.schema, poolSize: 4 });
      try {
        for (let i = 0; i < 25; i++) {
          const token = `tok-race-${i}`;
          const [a, b] = await Promise.all([
            recordAccepted(t.db, acceptance(dayId(0, BigInt(i)), token)),
            recordAccepted(other, acceptance(dayId(3, BigInt(i)), token)),
          ]);
          expect(a.message_id, token).to.equal(b.message_id);
        }
        const { rows } = await sql<{ n: string; tokens: string }>`
          select count(*)::text as n, count(distinct token)::text as tokens
          from accepted_messages where token like 'tok-race-%'`.execute(t.db);
        expect(rows[0]).to.deep.equal({ n: '25', tokens: '25' });
      } finally {
        await other.destroy();
      }
    });

    it('takes a bulk insert past the lock-table budget whole, still one row per token', async () => {
      // 3,000 rows in one statement, two of each of 1,500 tokens: past 512 token locks the
      // statement takes the schema-wide lock instead of running out of shared memory.
      const { rows } = await sql<{ n: string }>`
        with put as (
          insert into accepted_messages
            (message_id, principal, token, fingerprint, queue, job_name, data, job_id)
          select ${dayId(1)}::bigint + g, 'p', 'tok-bulk-' || (g % 1500), 'f', 'q', 'j',
                 '{}'::jsonb, 'm-' || g
          from generate_series(1, 3000) g
          returning 1)
        select count(*)::text as n from put`.execute(t.db);
      expect(rows[0]!.n).to.equal('1500');
      const first = await findAcceptedByToken(t.db, 'p', 'tok-bulk-7');
      expect(first?.message_id).to.equal((BigInt(dayId(1)) + 7n).toString());
    });

    it('refuses to write an acceptance under REPEATABLE READ, where the check could miss one', async () => {
      const refused = await t.db
        .transaction()
        .setIsolationLevel('repeatable read')
        .execute((trx) => recordAccepted(trx, acceptance(dayId(1, 99n), 'tok-rr')))
        .then(
          () => undefined,
          (err: { code?: string; message?: string }) => err,
        );
      expect(refused).to.include({ code: '0A000' });
      expect(refused?.message).to.match(/READ COMMITTED only, not repeatable read/);
    });
  });
});
