/**
 * Quarantine for outbox rows that can never be sent: a follow-up whose message id already belongs
 * to another accepted message (an id minted twice). Such a row stays in the outbox, marked with
 * when and why, and the relay takes only unmarked rows, so one clash can neither be sent (BullMQ
 * would drop it as a duplicate job id) nor stop every follow-up behind it.
 */
import { sql, type Kysely } from 'kysely';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('outbox')
    .addColumn('quarantined_at', 'timestamptz')
    .addColumn('error', 'text')
    .execute();
  // The relay's batch query: unmarked rows in message-id order.
  await db.schema
    .createIndex('outbox_pending_idx')
    .on('outbox')
    .column('message_id')
    .where(sql.ref('quarantined_at'), 'is', null)
    .execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('outbox_pending_idx').execute();
  await db.schema.alterTable('outbox').dropColumn('quarantined_at').dropColumn('error').execute();
}
