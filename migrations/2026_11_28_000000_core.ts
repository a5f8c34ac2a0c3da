/**
 * The core tables: the inbox (the fence of exactly-once), the accepted messages (durable
 * acceptance), and the ledger example (accounts, transfers).
 */
import { sql, type Kysely } from 'kysely';

// Migrations take Kysely<any>: they must keep working after the Database type has moved on.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  // No index but the primary key: snowflake message ids grow with time, so pruning by age is a
  // range scan on the key (`message_id < firstSnowflakeAt(cutoff)`), and every extra index is
  // paid for on each message. fillfactor leaves room on each page so storing the result right
  // after the insert is a HOT update, which touches no index.
  await db.schema
    .createTable('inbox')
    .addColumn('message_id', 'bigint', (c) => c.primaryKey())
    .addColumn('queue', 'text', (c) => c.notNull())
    .addColumn('job_name', 'text', (c) => c.notNull())
    .addColumn('result', 'jsonb')
    .addColumn('applied_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .modifyEnd(sql`with (fillfactor = 80)`)
    .execute();

  await db.schema
    .createTable('accepted_messages')
    .addColumn('message_id', 'bigint', (c) => c.primaryKey())
    .addColumn('principal', 'text', (c) => c.notNull())
    .addColumn('token', 'text', (c) => c.notNull())
    .addColumn('fingerprint', 'text', (c) => c.notNull())
    .addColumn('queue', 'text', (c) => c.notNull())
    .addColumn('job_name', 'text', (c) => c.notNull())
    .addColumn('data', 'jsonb', (c) => c.notNull())
    .addColumn('job_id', 'text', (c) => c.notNull())
    .addColumn('options', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('accepted_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addUniqueConstraint('accepted_messages_principal_token_key', ['principal', 'token'])
    .execute();

  await db.schema
    .createTable('accounts')
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
    .addColumn('id', 'bigint', (c) => c.primaryKey())
    .addColumn('from_id', 'bigint', (c) => c.notNull().references('accounts.id'))
    .addColumn('to_id', 'bigint', (c) => c.notNull().references('accounts.id'))
    .addColumn('amount', 'bigint', (c) => c.notNull().check(sql`amount > 0`))
    .addColumn('message_id', 'bigint', (c) => c.notNull().unique())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.createIndex('transfers_from_id_idx').on('transfers').column('from_id').execute();
  await db.schema.createIndex('transfers_to_id_idx').on('transfers').column('to_id').execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('transfers').execute();
  await db.schema.dropTable('accounts').execute();
  await db.schema.dropTable('accepted_messages').execute();
  await db.schema.dropTable('inbox').execute();
}
