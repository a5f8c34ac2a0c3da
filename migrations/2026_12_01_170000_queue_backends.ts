/**
 * Which backend each prefix's queues live on: `redis` or `postgres` (PostgreSQL-only mode). The
 * first process of a prefix records it; a process that would run the same prefix on the other
 * backend is refused at start (src/db/queue-backends.repository.ts), because its queues and
 * tokens would be another store's: a producer there enqueues jobs that no worker of the first
 * mode ever sees, and tokens issued by one mode are unknown to the other.
 */
import { sql, type Kysely } from 'kysely';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('queue_backends')
    .addColumn('prefix', 'text', (c) => c.primaryKey())
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('redis', 'postgres')`))
    .addColumn('recorded_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('queue_backends').execute();
}
