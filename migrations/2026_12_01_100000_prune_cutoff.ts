/**
 * The pruning cutoff: the largest message id whose inbox row the pruner may have deleted, so that
 * the dedupe window is a fact recorded in PostgreSQL rather than each process's own clock and
 * setting. One row; the pruner raises it in the transaction of each batch it deletes (never
 * lowers it), and the message transaction refuses any message at or below it just before its
 * commit, through `onceq_assert_not_pruned` (see src/db/message-transaction.ts for why that
 * ordering cannot apply a pruned message twice).
 */
import { sql, type Kysely } from 'kysely';

/** SQLSTATE of the refusal; the worker maps it to an `expired` dead letter. */
const PRUNED_SQLSTATE = 'OQ410';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('prune_cutoff')
    // At most one row: the check refuses any key but true.
    .addColumn('singleton', 'boolean', (c) =>
      c
        .primaryKey()
        .defaultTo(true)
        .check(sql`singleton`),
    )
    // 0 until the first pass: nothing pruned.
    .addColumn('pruned_through', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('advanced_at', 'timestamptz')
    .execute();
  await sql`insert into prune_cutoff (singleton) values (true)`.execute(db);
  // Volatile (the default), so its query reads a fresh snapshot: it sees a prune committed while
  // the message's transaction ran.
  await sql`
    create function onceq_assert_not_pruned(candidate bigint) returns void
    language plpgsql as $$
    declare
      through bigint;
    begin
      select c.pruned_through into through from prune_cutoff c;
      if candidate <= through then
        raise exception 'message % is at or below the pruning cutoff %', candidate, through
          using errcode = '${sql.raw(PRUNED_SQLSTATE)}',
                hint = 'its inbox row may be pruned: applying it could apply it a second time';
      end if;
    end
    $$`.execute(db);
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop function onceq_assert_not_pruned(bigint)`.execute(db);
  await db.schema.dropTable('prune_cutoff').execute();
}
