/**
 * The partitions of `inbox` and `accepted_messages` (migration 2026_12_01_180000_partition_by_day):
 * one per UTC day of message ids, created ahead by the workers, a legacy one holding what the
 * tables held before the migration, and a DEFAULT one for ids past the last day. What the
 * catalog says of them, their creation (`onceq_ensure_partitions`) and the pruner's drop.
 */
import { sql, type Kysely } from 'kysely';
import type { Database } from './database.js';

/** The tables partitioned by message id. */
export const PARTITIONED_TABLES = ['accepted_messages', 'inbox'] as const;
/** One of {@link PARTITIONED_TABLES}. */
export type PartitionedTable = (typeof PARTITIONED_TABLES)[number];

/** A partition and the message ids it holds. */
export interface PartitionInfo {
  name: string;
  /** Lowest id it holds; `undefined` for the legacy partition (MINVALUE) and the default. */
  from: string | undefined;
  /** First id past it; `undefined` for the default partition, which has no bound. */
  below: string | undefined;
}

/**
 * SQLSTATE of a lock not granted within `lock_timeout`: the partition maintenance gave up
 * rather than hold every insert behind its wait, and tries again at its next run.
 */
export const LOCK_NOT_AVAILABLE_SQLSTATE = '55P03';

/**
 * How long the pruner's DROP waits for its lock. DROP takes ACCESS EXCLUSIVE on the parent:
 * inserts queue behind a waiting DROP, so the wait is kept short and the drop tried again later.
 */
export const PARTITION_LOCK_TIMEOUT = '1s';

/**
 * Creates the day partitions of both tables from today (UTC) through today + `daysAhead` that do
 * not exist yet; resolves to how many it created. Idempotent and safe to run from many workers
 * at once (the function serializes on an advisory lock).
 * @throws the database error `55P03` when a lock was not granted within 1 s (try again later).
 */
export async function ensurePartitions(db: Kysely<Database>, daysAhead: number): Promise<number> {
  const { rows } = await sql<{ made: number }>`
    select onceq_ensure_partitions(${daysAhead}::integer) as made`.execute(db);
  return rows[0]!.made;
}

/** The partitions of `table`, bounded ones in id order, the default last. */
export async function listPartitions(
  db: Kysely<Database>,
  table: PartitionedTable,
): Promise<PartitionInfo[]> {
  const { rows } = await sql<{ name: string; bound: string }>`
    select c.relname as name, pg_get_expr(c.relpartbound, c.oid) as bound
    from pg_inherits i join pg_class c on c.oid = i.inhrelid
    where i.inhparent = ${table}::regclass`.execute(db);
  const parts = rows.map(({ name, bound }) => {
    const range = /FROM \((?:MINVALUE|'(-?\d+)')\) TO \('(-?\d+)'\)/.exec(bound);
    return { name, from: range?.[1], below: range?.[2] };
  });
  return parts.sort((a, b) => {
    if (a.below === undefined) return 1;
    if (b.below === undefined) return -1;
    return BigInt(a.below) < BigInt(b.below) ? -1 : 1;
  });
}

/**
 * Drops a partition of `table`, in `trx` (the pruner raises the pruning cutoff in the same
 * transaction). Waits at most {@link PARTITION_LOCK_TIMEOUT} for its lock.
 * @throws the database error `55P03` when the lock was not granted in time.
 */
export async function dropPartition(
  trx: Kysely<Database>,
  table: PartitionedTable,
  partition: PartitionInfo,
): Promise<void> {
  if (partition.below === undefined) throw new RangeError('the default partition is never dropped');
  // Named from the catalog, and checked again to be this table's, so nothing else is dropped.
  const owned = await sql<{ ok: boolean }>`
    select exists (select 1 from pg_inherits i
                   where i.inhparent = ${table}::regclass
                     and i.inhrelid = to_regclass(quote_ident(${partition.name}))) as ok`.execute(
    trx,
  );
  if (!owned.rows[0]?.ok) throw new Error(`${partition.name} is not a partition of ${table}`);
  await sql`select set_config('lock_timeout', ${PARTITION_LOCK_TIMEOUT}, true)`.execute(trx);
  await sql`drop table ${sql.id(partition.name)}`.execute(trx);
}
