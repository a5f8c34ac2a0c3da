/**
 * Migrations against the real PostgreSQL: what `migrateToLatest` creates (tables, keys, unique
 * constraints, indexes), what `migrateDown` removes, the status in between, `ensureDatabase`, and
 * the `onceq migrate` command in a child process. Every schema and database made here is dropped.
 */
import { readdirSync } from 'node:fs';
import { expect } from 'chai';
import { sql, type RawBuilder } from 'kysely';
import pg from 'pg';
import { createDb, type Db } from '../../src/db/create-db.js';
import {
  MIGRATIONS_DIR,
  ensureDatabase,
  migrateDown,
  migrateToLatest,
  migrationStatus,
} from '../../src/db/migrate.js';
import { ErrorCode, ServiceUnreachableError } from '../../src/core/errors.js';
import { firstSnowflakeAt } from '../../src/core/snowflake.js';
import { LEDGER_MIGRATIONS } from '../../src/jobs/examples/ledger/migrations.js';
import { TEST_DATABASE_URL, uniqueName } from '../support/env.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';

/**
 * Every migration, in order, read from the directory the provider reads: the tests keep holding
 * when a migration is added. The core tables come from the first.
 */
const MIGRATIONS = [
  ...new Set(
    readdirSync(MIGRATIONS_DIR)
      .filter((f) => /\.(ts|js)$/.test(f) && !f.endsWith('.d.ts'))
      .map((f) => f.replace(/\.(ts|js)$/, '')),
  ),
].sort();
const CORE_MIGRATION = '2026_11_28_000000_core';
const LAST_MIGRATION = MIGRATIONS[MIGRATIONS.length - 1]!;
/** onceq's core tables; the ledger example's (`accounts`, `transfers`) are not onceq's. */
const TABLES = ['accepted_messages', 'inbox'];
/** The ledger example's migrations and tables, installed by the CLI apart from onceq's. */
const LEDGER_MIGRATION = '2026_12_01_160000_ledger_tables';
const LEDGER_TABLES = ['accounts', 'transfers'];

/** A URL of the test server naming another database. */
function urlOfDatabase(name: string): string {
  const url = new URL(TEST_DATABASE_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Runs one statement on the server's `postgres` database (create/drop database). */
async function admin<R extends pg.QueryResultRow = pg.QueryResultRow>(
  text: string,
  values: unknown[] = [],
): Promise<pg.QueryResult<R>> {
  const client = new pg.Client({ connectionString: urlOfDatabase('postgres') });
  await client.connect();
  try {
    return await client.query<R>(text, values);
  } finally {
    await client.end();
  }
}

async function databaseExists(name: string): Promise<boolean> {
  const found = await admin('select 1 from pg_database where datname = $1', [name]);
  return found.rowCount === 1;
}

async function dropDatabase(name: string): Promise<void> {
  await admin(`drop database if exists ${pg.escapeIdentifier(name)} with (force)`);
}

/** Base tables of a schema, sorted. */
async function tablesOf(db: Db, schema: string): Promise<string[]> {
  const { rows } = await sql<{ table_name: string }>`
    select table_name from information_schema.tables
    where table_schema = ${schema} and table_type = 'BASE TABLE'`.execute(db);
  return rows.map((r) => r.table_name).sort();
}

/** `table: TYPE(col, col)` for every primary key, unique and foreign key constraint, sorted. */
async function constraintsOf(db: Db, schema: string): Promise<string[]> {
  const { rows } = await sql<{ table_name: string; constraint_type: string; columns: string }>`
    select tc.table_name, tc.constraint_type,
           string_agg(kcu.column_name, ', ' order by kcu.ordinal_position) as columns
    from information_schema.table_constraints tc
    join information_schema.key_column_usage kcu
      on kcu.constraint_schema = tc.constraint_schema and kcu.constraint_name = tc.constraint_name
    where tc.table_schema = ${schema}
      and tc.constraint_type in ('PRIMARY KEY', 'UNIQUE', 'FOREIGN KEY')
      and tc.table_name not like 'kysely_%'
      and not ${isPartition(schema, sql.ref('tc.table_name'))}
    group by tc.table_name, tc.constraint_type, tc.constraint_name`.execute(db);
  return rows.map((r) => `${r.table_name}: ${r.constraint_type}(${r.columns})`).sort();
}

/** Whether `table` is a partition (of inbox or accepted_messages): the parents are asserted. */
function isPartition(schema: string, table: RawBuilder<unknown> | ReturnType<typeof sql.ref>) {
  return sql<boolean>`exists (
    select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = ${schema} and c.relname = ${table} and c.relispartition)`;
}

/** Index names of a schema's onceq tables, sorted. */
async function indexesOf(db: Db, schema: string): Promise<string[]> {
  const { rows } = await sql<{ indexname: string }>`
    select indexname from pg_indexes
    where schemaname = ${schema} and tablename not like 'kysely_%'`.execute(db);
  return rows.map((r) => r.indexname).sort();
}

describe('db: migrations', function () {
  this.timeout(60_000);

  describe('migrateToLatest, migrationStatus and migrateDown on a fresh schema', () => {
    const schema = uniqueName('migrate');
    let db: Db;
    before(() => {
      db = createDb({ url: TEST_DATABASE_URL, schema, poolSize: 2, applicationName: 'onceq-test' });
    });
    after(async () => {
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
      await db.destroy();
    });

    it('lists the migration as pending before it ran, and creates nothing doing so', async () => {
      expect(MIGRATIONS).to.include(CORE_MIGRATION);
      expect(await migrationStatus(db, schema)).to.deep.equal(
        MIGRATIONS.map((name) => ({ name, executedAt: undefined })),
      );
      expect(await tablesOf(db, schema)).to.deep.equal([]);
    });

    it("creates the schema and onceq's tables, with Kysely bookkeeping in the same schema", async () => {
      const { results } = await migrateToLatest(db, schema);
      expect(results).to.deep.equal(
        MIGRATIONS.map((migrationName) => ({ migrationName, direction: 'Up', status: 'Success' })),
      );
      // Later migrations may add tables; these, and the bookkeeping, must be here.
      expect(await tablesOf(db, schema)).to.include.members([
        ...TABLES,
        'kysely_migration',
        'kysely_migration_lock',
      ]);
      // The ledger is an example: onceq's migrations do not create its tables.
      expect(await tablesOf(db, schema)).to.not.include.members(LEDGER_TABLES);
      // The bookkeeping lives in this schema, not in `public`.
      const { rows } = await sql<{ n: string }>`
        select count(*)::text as n from information_schema.tables
        where table_schema = ${schema} and table_name = 'kysely_migration'`.execute(db);
      expect(rows[0]!.n).to.equal('1');
    });

    it('gives each table its primary key, unique constraints and foreign keys', async () => {
      expect(await constraintsOf(db, schema)).to.include.members([
        'accepted_messages: PRIMARY KEY(message_id)',
        'inbox: PRIMARY KEY(message_id)',
      ]);
      // Partitioned by message id, so no unique key of the parent can hold (principal, token):
      // the trigger enforces one acceptance per token, and each partition has its own key.
      expect(await constraintsOf(db, schema)).not.to.include(
        'accepted_messages: UNIQUE(principal, token)',
      );
      const { rows: triggers } = await sql<{ tgname: string }>`
        select tgname from pg_trigger
        where tgrelid = ${`${schema}.accepted_messages`}::regclass and not tgisinternal`.execute(
        db,
      );
      expect(triggers.map((t) => t.tgname)).to.deep.equal(['accepted_messages_token_unique']);
      // The indexes behind those keys (secondary indexes are a tuning choice, not asserted).
      expect(await indexesOf(db, schema)).to.include.members([
        'accepted_messages_pkey',
        'accepted_messages_legacy_principal_token_key',
        'accepted_messages_default_principal_token_key',
        'inbox_pkey',
      ]);
      // Exactly one constraint per table is the primary key, and the inbox has no unique key
      // besides it that could make an `ON CONFLICT (message_id)` ambiguous.
      const keys = await constraintsOf(db, schema);
      expect(keys.filter((k) => k.startsWith('inbox:'))).to.deep.equal([
        'inbox: PRIMARY KEY(message_id)',
      ]);
    });

    it('types every id as bigint (int8), never a JS-number-sized integer', async () => {
      const { rows } = await sql<{ table_name: string; column_name: string; data_type: string }>`
        select table_name, column_name, data_type from information_schema.columns
        where table_schema = ${schema}
          and table_name not like 'kysely_%'
          and not ${isPartition(schema, sql.ref('table_name'))}
          and column_name in ('id', 'message_id', 'from_id', 'to_id')`.execute(db);
      expect(rows.map((r) => `${r.table_name}.${r.column_name}`).sort()).to.deep.equal([
        'accepted_messages.message_id',
        'dead_letters.message_id',
        'inbox.message_id',
        'outbox.message_id',
      ]);
      for (const r of rows)
        expect(r.data_type, `${r.table_name}.${r.column_name}`).to.equal('bigint');
    });

    it('enforces the keys the exactly-once fence relies on', async () => {
      // The inbox primary key is the fence: a second row for a message is refused.
      await sql`insert into inbox (message_id, queue, job_name) values (1, 'q', 'j')`.execute(db);
      const again = await sql`insert into inbox (message_id, queue, job_name) values (1, 'q', 'j')`
        .execute(db)
        .then(
          () => undefined,
          (err: { code?: string; constraint?: string }) => err,
        );
      // Raised by the primary key of the partition that holds the row (here the legacy one).
      expect(again).to.include({ code: '23505', constraint: 'inbox_legacy_pkey' });

      // One accepted message per (principal, token), whichever partitions the ids fall in: the
      // second is skipped, as ON CONFLICT (principal, token) DO NOTHING skipped it.
      const accept = (id: string) =>
        sql`insert into accepted_messages
              (message_id, principal, token, fingerprint, queue, job_name, data, job_id)
            values (${id}, 'p', 'tok', 'f', 'q', 'j', '{}'::jsonb, ${`m-${id}`})
            returning message_id`.execute(db);
      expect((await accept('1')).rows).to.have.length(1);
      const nextWeek = firstSnowflakeAt(Date.now() + 2 * 86_400_000);
      expect((await accept(nextWeek)).rows).to.have.length(0);
      const { rows: kept } = await sql<{ message_id: string }>`
        select message_id::text from accepted_messages where token = 'tok'`.execute(db);
      expect(kept).to.deep.equal([{ message_id: '1' }]);
      await sql`delete from inbox`.execute(db);
      await sql`delete from accepted_messages`.execute(db);
    });

    it('lists the migration as applied, with the time it ran', async () => {
      const status = await migrationStatus(db, schema);
      expect(status.map((m) => m.name)).to.deep.equal(MIGRATIONS);
      for (const m of status) {
        expect(m.executedAt, m.name).to.be.instanceOf(Date);
        expect(Math.abs(Date.now() - m.executedAt!.getTime())).to.be.below(60_000);
      }
    });

    it('does nothing when run again', async () => {
      const { results } = await migrateToLatest(db, schema);
      expect(results).to.deep.equal([]);
      expect(await tablesOf(db, schema)).to.include.members(TABLES);
    });

    it('keeps schemas apart: another schema still sees the migration pending', async () => {
      const other = uniqueName('migrate_other');
      const otherDb = createDb({ url: TEST_DATABASE_URL, schema: other, poolSize: 1 });
      try {
        expect((await migrationStatus(otherDb, other))[0]!.executedAt).to.equal(undefined);
        const { results } = await migrateToLatest(otherDb, other);
        expect(results?.map((r) => r.status)).to.deep.equal(MIGRATIONS.map(() => 'Success'));
        expect(await tablesOf(otherDb, other)).to.include.members(TABLES);
      } finally {
        await sql`drop schema if exists ${sql.id(other)} cascade`.execute(otherDb);
        await otherDb.destroy();
      }
    });

    it('migrateDown undoes one migration at a time, down to no tables and all pending', async () => {
      const { results } = await migrateDown(db, schema);
      expect(results).to.deep.equal([
        { migrationName: LAST_MIGRATION, direction: 'Down', status: 'Success' },
      ]);
      expect((await migrationStatus(db, schema)).at(-1)).to.deep.equal({
        name: LAST_MIGRATION,
        executedAt: undefined,
      });
      for (const name of MIGRATIONS.slice(0, -1).reverse()) {
        expect((await migrateDown(db, schema)).results?.map((r) => r.migrationName)).to.deep.equal([
          name,
        ]);
      }
      expect(await tablesOf(db, schema)).to.deep.equal([
        'kysely_migration',
        'kysely_migration_lock',
      ]);
      expect(await constraintsOf(db, schema)).to.deep.equal([]);
      expect(await migrationStatus(db, schema)).to.deep.equal(
        MIGRATIONS.map((name) => ({ name, executedAt: undefined })),
      );
      // Nothing left to undo.
      expect((await migrateDown(db, schema)).results).to.deep.equal([]);
    });

    it('migrates up again after a down', async () => {
      const { results } = await migrateToLatest(db, schema);
      expect(results?.map((r) => `${r.direction} ${r.status}`)).to.deep.equal(
        MIGRATIONS.map(() => 'Up Success'),
      );
      expect(await tablesOf(db, schema)).to.include.members(TABLES);
    });
  });

  describe('ensureDatabase', () => {
    const name = uniqueName('ensure_db');
    after(async () => dropDatabase(name));

    it('creates a missing database and returns true', async () => {
      expect(await databaseExists(name)).to.equal(false);
      expect(await ensureDatabase(urlOfDatabase(name))).to.equal(true);
      expect(await databaseExists(name)).to.equal(true);
    });

    it('returns false when the database exists, and leaves it alone', async () => {
      expect(await ensureDatabase(urlOfDatabase(name))).to.equal(false);
      expect(await databaseExists(name)).to.equal(true);
    });

    it('creates it once when several processes race for it', async () => {
      const racing = uniqueName('ensure_race');
      try {
        const created = await Promise.all(
          Array.from({ length: 4 }, () => ensureDatabase(urlOfDatabase(racing))),
        );
        expect(created.filter(Boolean)).to.have.length(1);
        expect(await databaseExists(racing)).to.equal(true);
      } finally {
        await dropDatabase(racing);
      }
    });

    it('reports a server that is down as unreachable, in one line, without the password', async () => {
      const err = await ensureDatabase('postgres://postgres:topsecret@127.0.0.1:1/x').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(ServiceUnreachableError);
      const { code, message } = err as ServiceUnreachableError;
      expect(code).to.equal(ErrorCode.ServiceUnreachable);
      expect(message).to.contain(
        'PostgreSQL is not reachable at postgres://postgres:***@127.0.0.1:1/x',
      );
      expect(message).to.contain('docker compose up -d postgres');
      expect(message).not.to.contain('topsecret');
      expect(message).not.to.contain('\n');
    });
  });

  describe("the ledger example's migrations, apart from onceq's", () => {
    const schema = uniqueName('migrate_ledger');
    let db: Db;
    before(async () => {
      db = createDb({ url: TEST_DATABASE_URL, schema, poolSize: 2, applicationName: 'onceq-test' });
      await migrateToLatest(db, schema);
    });
    after(async () => {
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
      await db.destroy();
    });

    it('creates accounts and transfers, recorded in a migration table of their own', async () => {
      const { results } = await migrateToLatest(db, schema, LEDGER_MIGRATIONS);
      expect(results).to.deep.equal([
        { migrationName: LEDGER_MIGRATION, direction: 'Up', status: 'Success' },
      ]);
      expect(await tablesOf(db, schema)).to.include.members([
        ...LEDGER_TABLES,
        'onceq_ledger_migration',
        'onceq_ledger_migration_lock',
      ]);
      // onceq's history lists onceq's migrations only.
      expect((await migrationStatus(db, schema)).map((m) => m.name)).to.deep.equal(MIGRATIONS);
      expect((await migrateToLatest(db, schema, LEDGER_MIGRATIONS)).results).to.deep.equal([]);
    });

    it('gives them their keys, and bigint ids', async () => {
      expect(await constraintsOf(db, schema)).to.include.members([
        'accounts: PRIMARY KEY(id)',
        'transfers: FOREIGN KEY(from_id)',
        'transfers: FOREIGN KEY(to_id)',
        'transfers: PRIMARY KEY(id)',
        'transfers: UNIQUE(message_id)',
      ]);
      const { rows } = await sql<{ table_name: string; column_name: string; data_type: string }>`
        select table_name, column_name, data_type from information_schema.columns
        where table_schema = ${schema} and table_name in ('accounts', 'transfers')
          and column_name in ('id', 'message_id', 'from_id', 'to_id')`.execute(db);
      expect(rows.map((r) => `${r.table_name}.${r.column_name}`).sort()).to.deep.equal([
        'accounts.id',
        'transfers.from_id',
        'transfers.id',
        'transfers.message_id',
        'transfers.to_id',
      ]);
      for (const r of rows) expect(r.data_type).to.equal('bigint');
    });

    it('keeps the tables and rows of a database whose core migration created them', async () => {
      // As before the ledger left onceq: the tables exist, with data, and no ledger history.
      const other = uniqueName('migrate_ledger_old');
      const otherDb = createDb({ url: TEST_DATABASE_URL, schema: other, poolSize: 1 });
      try {
        await migrateToLatest(otherDb, other);
        const { up } =
          await import('../../src/jobs/examples/ledger/migrations/2026_12_01_160000_ledger_tables.js');
        await up(otherDb);
        await sql`insert into accounts (id, owner, opening_balance, balance)
                  values (1, 'ada', 100, 100)`.execute(otherDb);
        const { results } = await migrateToLatest(otherDb, other, LEDGER_MIGRATIONS);
        expect(results?.map((r) => r.status)).to.deep.equal(['Success']);
        const { rows } = await sql<{ owner: string }>`select owner from accounts`.execute(otherDb);
        expect(rows).to.deep.equal([{ owner: 'ada' }]);
      } finally {
        await sql`drop schema if exists ${sql.id(other)} cascade`.execute(otherDb);
        await otherDb.destroy();
      }
    });

    it("migrateDown of the ledger removes its tables and leaves onceq's", async () => {
      const { results } = await migrateDown(db, schema, LEDGER_MIGRATIONS);
      expect(results?.map((r) => r.migrationName)).to.deep.equal([LEDGER_MIGRATION]);
      const tables = await tablesOf(db, schema);
      expect(tables).to.include.members(TABLES);
      expect(tables).to.not.include.members(LEDGER_TABLES);
    });
  });

  describe('onceq migrate (child process)', () => {
    // A database of its own, missing at first: `onceq migrate` must create it.
    const database = uniqueName('cli_migrate');
    const schema = uniqueName('cli_migrate');
    const children: WorkerChild[] = [];
    let db: Db | undefined;
    after(async () => {
      await Promise.all(children.splice(0).map((c) => c.destroy()));
      await db?.destroy();
      await dropDatabase(database);
    });

    async function migrate(...args: string[]) {
      const child = spawnWorker({
        schema,
        prefix: uniqueName('cli_migrate'),
        args: ['migrate', ...args],
        env: { DATABASE_URL: urlOfDatabase(database) },
      });
      children.push(child);
      const exit = await child.exited;
      return { ...exit, stdout: child.stdout(), stderr: child.stderr(), output: child.output() };
    }

    it('rejects an unknown action with exit code 1 and one clear line', async () => {
      const run = await migrate('sideways');
      expect(run.code, run.output).to.equal(1);
      expect(run.stderr.trim()).to.equal(
        'onceq migrate: unknown action "sideways"; expected latest, down or status',
      );
      expect(run.stdout).to.equal('');
      // It did not get as far as creating the database.
      expect(await databaseExists(database)).to.equal(false);
    });

    it('status: creates the missing database and lists the migration as pending', async () => {
      const run = await migrate('status');
      expect(run.code, run.output).to.equal(0);
      expect(run.stderr).to.equal('');
      expect(run.stdout.trim().split('\n')).to.deep.equal([
        `created database ${database}`,
        ...[...MIGRATIONS, LEDGER_MIGRATION].map((name) => `pending  ${name}`),
      ]);
      expect(await databaseExists(database)).to.equal(true);
      db = createDb({ url: urlOfDatabase(database), schema, poolSize: 1 });
      expect(await tablesOf(db, schema)).to.deep.equal([]);
    });

    it('latest: applies the migration and says so', async () => {
      const run = await migrate('latest');
      expect(run.code, run.output).to.equal(0);
      // onceq's, then the ledger example's: the CLI's built-in jobs need its tables.
      expect(run.stdout.trim().split('\n')).to.deep.equal(
        [...MIGRATIONS, LEDGER_MIGRATION].map((name) => `up   ${name}: Success`),
      );
      expect(await tablesOf(db!, schema)).to.include.members([...TABLES, ...LEDGER_TABLES]);
    });

    it('status: lists the migration as applied, with its time', async () => {
      const run = await migrate('status');
      expect(run.code, run.output).to.equal(0);
      const lines = run.stdout.trim().split('\n');
      expect(lines).to.have.length(MIGRATIONS.length + 1);
      [...MIGRATIONS, LEDGER_MIGRATION].forEach((name, i) =>
        expect(lines[i]).to.match(new RegExp(`^applied  ${name}  \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z$`)),
      );
    });

    it("down: undoes onceq's most recent migration and says so; the ledger's stay", async () => {
      const run = await migrate('down');
      expect(run.code, run.output).to.equal(0);
      expect(run.stdout.trim()).to.equal(`down ${LAST_MIGRATION}: Success`);
      expect(await tablesOf(db!, schema)).to.include.members(LEDGER_TABLES);
      const status = await migrationStatus(db!, schema);
      expect(status.map((m) => m.executedAt === undefined)).to.deep.equal(
        MIGRATIONS.map((name) => name === LAST_MIGRATION),
      );
    });

    it('no action means latest; and with nothing to do it says so', async () => {
      const first = await migrate();
      expect(first.code, first.output).to.equal(0);
      expect(first.stdout.trim()).to.equal(`up   ${LAST_MIGRATION}: Success`);
      expect((await migrationStatus(db!, schema)).every((m) => m.executedAt)).to.equal(true);
      expect(await tablesOf(db!, schema)).to.include.members(TABLES);
      const second = await migrate('latest');
      expect(second.code, second.output).to.equal(0);
      expect(second.stdout.trim()).to.equal('nothing to do');
    });
  });
});
