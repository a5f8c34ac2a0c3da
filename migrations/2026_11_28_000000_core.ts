/**
 * The core tables: the inbox (the fence of exactly-once) and the accepted messages (durable
 * acceptance).
 *
 * History: until 0.1.0 this migration also created the ledger example's `accounts` and
 * `transfers`. They belong to the example now (src/jobs/examples/ledger/migrations/, run by the
 * CLI with its own migration table). A database that ran the earlier version keeps them, data
 * and all: Kysely never runs a migration twice, and the ledger's migration creates them only
 * `if not exists`. Nothing of onceq drops them.
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
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('accepted_messages').execute();
  await db.schema.dropTable('inbox').execute();
}
