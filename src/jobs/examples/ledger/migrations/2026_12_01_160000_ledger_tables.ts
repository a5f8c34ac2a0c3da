/**
 * The ledger example's tables: accounts with optimistic versions, and transfers between them.
 *
 * `if not exists` throughout: onceq's own core migration (2026_11_28_000000_core) created these
 * two tables until the ledger became an example, and a database that ran it keeps them, data
 * and all, since Kysely never runs a migration twice. There this migration only records itself;
 * on a new database it creates them.
 */
import { sql, type Kysely } from 'kysely';

// Migrations take Kysely<any>: they must keep working after the Database type has moved on.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('accounts')
    .ifNotExists()
    .addColumn('id', 'bigint', (c) => c.primaryKey())
    .addColumn('owner', 'text', (c) => c.notNull())
    .addColumn('opening_balance', 'bigint', (c) => c.notNull().check(sql`opening_balance >= 0`))
    .addColumn('balance', 'bigint', (c) => c.notNull().check(sql`balance >= 0`))
    .addColumn('version', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('closed_at', 'timestamptz')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable('transfers')
    .ifNotExists()
    .addColumn('id', 'bigint', (c) => c.primaryKey())
    .addColumn('from_id', 'bigint', (c) => c.notNull().references('accounts.id'))
    .addColumn('to_id', 'bigint', (c) => c.notNull().references('accounts.id'))
    .addColumn('amount', 'bigint', (c) => c.notNull().check(sql`amount > 0`))
    .addColumn('message_id', 'bigint', (c) => c.notNull().unique())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createIndex('transfers_from_id_idx')
    .ifNotExists()
    .on('transfers')
    .column('from_id')
    .execute();
  await db.schema
    .createIndex('transfers_to_id_idx')
    .ifNotExists()
    .on('transfers')
    .column('to_id')
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('transfers').ifExists().execute();
  await db.schema.dropTable('accounts').ifExists().execute();
}
