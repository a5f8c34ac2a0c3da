/**
 * Worker-id leases (migrations/2026_12_01_140000_worker_id_leases.ts): the SQL of leasing,
 * renewing and releasing a snowflake worker id. Lease expiry is judged on PostgreSQL's clock
 * (`clock_timestamp()`), never a process's; the high-water mark `reserved_until_ms` is in the
 * minting process's clock, the one stamped into its ids.
 */
import { sql, type Kysely } from 'kysely';
import { ErrorCode, OnceqError } from '../core/errors.js';
import type { Database } from './database.js';

/** A lease just taken. */
export interface AcquiredWorkerIdRow {
  workerId: number;
  /** The high-water mark the previous holders left: mint only ids stamped at or after it. */
  floorMs: number;
  /** The new high-water mark, reserved for this holder: mint only ids stamped before it. */
  reservedUntilMs: number;
}

/**
 * Leases a free worker id (never leased, released, or expired on PostgreSQL's clock) up to
 * `maxWorkerId`, and reserves timestamps up to `max(floor, clockMs) + reserveMs` for it. Ids that
 * were free longest go first. Concurrent callers skip each other's rows (`skip locked`), so two
 * never get the same id. Resolves to undefined when every id is held.
 * @throws OnceqError `migrations_pending` when the table does not exist yet (a process of this
 * version started before `onceq migrate latest`).
 */
export async function acquireWorkerIdLease(
  db: Kysely<Database>,
  args: { owner: string; ttlMs: number; maxWorkerId: number; clockMs: number; reserveMs: number },
): Promise<AcquiredWorkerIdRow | undefined> {
  const { rows } = await sql<{ worker_id: number; floor_ms: string; reserved_until_ms: string }>`
    with candidate as (
      select worker_id, reserved_until_ms from worker_id_leases
      where worker_id <= ${args.maxWorkerId}
        and (owner is null or expires_at <= clock_timestamp())
      order by coalesce(expires_at, '-infinity'), worker_id
      limit 1
      for update skip locked
    )
    update worker_id_leases as l
    set owner = ${args.owner},
        expires_at = clock_timestamp() + ${args.ttlMs} * interval '1 millisecond',
        reserved_until_ms = greatest(c.reserved_until_ms, ${args.clockMs}::bigint) + ${args.reserveMs},
        acquired_at = clock_timestamp(),
        renewed_at = clock_timestamp()
    from candidate as c
    where l.worker_id = c.worker_id
    returning l.worker_id, c.reserved_until_ms::text as floor_ms,
              l.reserved_until_ms::text as reserved_until_ms`
    .execute(db)
    .catch((err: unknown) => {
      if ((err as { code?: string }).code !== '42P01') throw err;
      throw new OnceqError(
        ErrorCode.MigrationsPending,
        'the worker_id_leases table does not exist; run `onceq migrate latest` first',
        { cause: err },
      );
    });
  const row = rows[0];
  if (!row) return undefined;
  return {
    workerId: row.worker_id,
    floorMs: Number(row.floor_ms),
    reservedUntilMs: Number(row.reserved_until_ms),
  };
}

/**
 * Extends the lease by `ttlMs` from now (PostgreSQL's clock) and raises the high-water mark to
 * at least `reserveUntilMs`, if `owner` still holds the id. A lease that expired but that nobody
 * took is renewed too: nobody else can have minted with it. Resolves to the mark now stored, or
 * undefined when another owner took the id.
 */
export async function renewWorkerIdLease(
  db: Kysely<Database>,
  args: { workerId: number; owner: string; ttlMs: number; reserveUntilMs: number },
): Promise<{ reservedUntilMs: number } | undefined> {
  const { rows } = await sql<{ reserved_until_ms: string }>`
    update worker_id_leases
    set expires_at = clock_timestamp() + ${args.ttlMs} * interval '1 millisecond',
        reserved_until_ms = greatest(reserved_until_ms, ${args.reserveUntilMs}::bigint),
        renewed_at = clock_timestamp()
    where worker_id = ${args.workerId} and owner = ${args.owner}
    returning reserved_until_ms::text as reserved_until_ms`.execute(db);
  const row = rows[0];
  return row ? { reservedUntilMs: Number(row.reserved_until_ms) } : undefined;
}

/**
 * Frees the id if `owner` still holds it, setting the high-water mark to `mintedBeforeMs`: the
 * caller has stopped minting, and every id it minted is stamped before that. Lowering the mark
 * from the reservation to what was really used lets the next holder start at the present.
 * Resolves to whether the lease was still held.
 */
export async function releaseWorkerIdLease(
  db: Kysely<Database>,
  args: { workerId: number; owner: string; mintedBeforeMs: number },
): Promise<boolean> {
  const result = await sql`
    update worker_id_leases
    set owner = null, expires_at = null, reserved_until_ms = ${args.mintedBeforeMs}::bigint
    where worker_id = ${args.workerId} and owner = ${args.owner}`.execute(db);
  return (result.numAffectedRows ?? 0n) > 0n;
}
