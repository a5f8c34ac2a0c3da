/**
 * Worker-id epochs: the last lifetime of each key prefix's worker-id hash in Redis that a process
 * saw (acquire-worker-id-1.lua). Redis cannot tell its first start from a start after it lost
 * its data; PostgreSQL can: a prefix with no row has never leased an id, a prefix whose row
 * names another epoch lost its hash, and processes that leased ids before the loss may still be
 * minting with them for up to a lease ttl (id-service.ts waits that out).
 */
import { sql, type Kysely } from 'kysely';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('worker_id_epochs')
    .addColumn('prefix', 'text', (c) => c.primaryKey())
    .addColumn('epoch', 'text', (c) => c.notNull())
    // False for the prefix's first epoch; true once an epoch replaced another (a data loss).
    .addColumn('after_loss', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('changed_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('worker_id_epochs').execute();
}
