/**
 * Worker-id leases in PostgreSQL (DESIGN.md section 2, "Ids"): one row per snowflake worker id,
 * so a Redis data loss can no longer take a lease away.
 *
 * A row is held while `owner` is set and `expires_at` (PostgreSQL's clock) is in the future; the
 * holder renews it with a heartbeat. `reserved_until_ms` is the high-water mark: every id ever
 * minted under the worker id carries a timestamp below it. A holder raises it (a few seconds
 * ahead) before minting in that range, and the next holder mints only from it upwards, so ids
 * under one worker id keep rising across restarts, takeovers and clocks that step back.
 *
 * This replaces `worker_id_epochs`, which only existed to tell a Redis that lost the leases
 * from a first start; nothing in it is worth carrying over. The ids minted under the Redis
 * leases assumed clocks within a second of each other, so after such a fleet the marks start one
 * second past now.
 * Processes of the previous version lease from Redis and do not see these rows: stop them all
 * before starting this version.
 */
import { sql, type Kysely } from 'kysely';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('worker_id_leases')
    // 1 to 1022: the ids the generator stamps unchanged (see ids/snowflake-generator.ts).
    .addColumn('worker_id', 'smallint', (c) =>
      c.primaryKey().check(sql`worker_id between 1 and 1022`),
    )
    // The holder's lease token (host, pid, random); null when free.
    .addColumn('owner', 'text')
    .addColumn('expires_at', 'timestamptz')
    .addColumn('reserved_until_ms', 'bigint', (c) => c.notNull())
    .addColumn('acquired_at', 'timestamptz')
    .addColumn('renewed_at', 'timestamptz')
    .addCheckConstraint(
      'worker_id_leases_owner_expiry',
      sql`(owner is null) = (expires_at is null)`,
    )
    .execute();
  // Every id has a row from the start: acquiring is then one `for update skip locked` over
  // existing rows, with no race between two processes inserting the same new id.
  // A fleet that ran the Redis leases left an epoch row; only its ids need the second of margin.
  // A fresh install starts at now, so its first ids are not stamped in the future (a reconciler
  // grace or a pruning cutoff compares them with the clock).
  await sql`
    insert into worker_id_leases (worker_id, reserved_until_ms)
    select id, (extract(epoch from clock_timestamp()) * 1000)::bigint
      + case when exists (select 1 from worker_id_epochs) then 1000 else 0 end
    from generate_series(1, 1022) as id`.execute(db);
  await db.schema.dropTable('worker_id_epochs').ifExists().execute();
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('worker_id_epochs')
    .addColumn('prefix', 'text', (c) => c.primaryKey())
    .addColumn('epoch', 'text', (c) => c.notNull())
    .addColumn('after_loss', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('changed_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.dropTable('worker_id_leases').execute();
}
