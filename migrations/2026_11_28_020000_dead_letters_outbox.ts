/**
 * Dead letters (DESIGN.md section 5) and the transactional outbox (section 6).
 *
 * `dead_letters` is the durable dead-letter queue: one row per message, written before the
 * BullMQ original goes, so a Redis that loses data loses no dead letter. The BullMQ queue
 * `<queue>.dlq` holds a visible copy for dashboards; this table is the truth. A replayed row is
 * kept (`replayed_at`) for the audit trail and so that replays stay idempotent; a purged row is
 * kept as a tombstone (`purged_at`) so the reconciler does not bring the message back, until it
 * is older than the dedupe window.
 *
 * `outbox` holds follow-up messages written by handlers in their own transaction; the relay
 * moves committed rows to BullMQ (and to `accepted_messages`) and deletes them.
 */
import { sql, type Kysely } from 'kysely';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('dead_letters')
    // One row per message: dead-lettering again (a crash mid-move, a replay that fails again)
    // updates it instead of adding a second copy.
    .addColumn('message_id', 'bigint', (c) => c.primaryKey())
    .addColumn('queue', 'text', (c) => c.notNull())
    .addColumn('job_name', 'text', (c) => c.notNull())
    .addColumn('job_id', 'text', (c) => c.notNull())
    .addColumn('data', 'jsonb', (c) => c.notNull())
    .addColumn('token', 'text')
    .addColumn('reason', 'text', (c) => c.notNull())
    .addColumn('error', 'text')
    .addColumn('stack', 'text')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('options', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('enqueued_at', 'timestamptz')
    .addColumn('dead_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('dead_count', 'integer', (c) => c.notNull().defaultTo(1))
    .addColumn('replayed_at', 'timestamptz')
    .addColumn('replay_count', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('purged_at', 'timestamptz')
    .execute();
  // What `dlq list` and `replay --all` read: the pending dead letters, in message order.
  await db.schema
    .createIndex('dead_letters_pending_idx')
    .on('dead_letters')
    .columns(['queue', 'message_id'])
    .where(sql.ref('replayed_at'), 'is', null)
    .where(sql.ref('purged_at'), 'is', null)
    .execute();

  await db.schema
    .createTable('outbox')
    // The follow-up's pre-minted messageId: the relay sends rows in id order.
    .addColumn('message_id', 'bigint', (c) => c.primaryKey())
    .addColumn('parent_message_id', 'bigint', (c) => c.notNull())
    .addColumn('queue', 'text', (c) => c.notNull())
    .addColumn('job_name', 'text', (c) => c.notNull())
    .addColumn('data', 'jsonb', (c) => c.notNull())
    .addColumn('token', 'text', (c) => c.notNull())
    .addColumn('options', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('outbox').execute();
  await db.schema.dropTable('dead_letters').execute();
}
