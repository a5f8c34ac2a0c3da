/**
 * The dedupe window (DESIGN.md section 2): inbox rows and accepted messages older than
 * `ONCEQ_DEDUPE_WINDOW` are deleted, in batches, each batch its own short statement. The
 * messageId carries its creation time, so "older than" is a range of the primary key
 * (`message_id < first id of the cutoff`): no extra index, no scan, and the rows deleted are
 * far below the ones workers insert, so no worker waits on them. Rows another session holds are
 * skipped (`SKIP LOCKED`), never waited for.
 *
 * An accepted message that reaches the cutoff without an inbox row was never applied: it is
 * dead-lettered as `expired` in the same statement that deletes it, so it is not lost. Purged
 * dead letters (tombstones) go at the same age. One pruner runs at a time across the fleet.
 */
import { sql } from 'kysely';
import type { Logger } from 'pino';
import type { Db } from '../db/create-db.js';
import { LockId, withAdvisoryLock } from '../db/advisory-lock.js';
import { pruneCutoffId } from '../core/dead-letter.js';
import { startPeriodic, type PeriodicTask } from './periodic.js';

import { DEFAULT_PRUNE_INTERVAL_MS } from '../config.js';
/** Rows per DELETE: small enough that each statement takes milliseconds. */
export const DEFAULT_PRUNE_BATCH = 2_000;
/** Pause between two batches, leaving the database to the workers. */
export const DEFAULT_PRUNE_PAUSE_MS = 10;

/** Options of {@link createPruner}. */
export interface PrunerOptions {
  db: Db;
  /** @defaultValue 7 d */
  dedupeWindowMs?: number;
  /** @defaultValue {@link DEFAULT_PRUNE_INTERVAL_MS} */
  intervalMs?: number;
  /** @defaultValue {@link DEFAULT_PRUNE_BATCH} */
  batchSize?: number;
  /** @defaultValue {@link DEFAULT_PRUNE_PAUSE_MS} */
  pauseMs?: number;
  /** The clock (tests move it). @defaultValue `Date.now` */
  now?: () => number;
  logger?: Logger;
}

/** What one pass deleted. */
export interface PruneReport {
  /** False when another process holds the pruner lock. */
  ran: boolean;
  acceptedMessages: number;
  /** Accepted messages that were never applied, dead-lettered as `expired`. */
  expired: number;
  inbox: number;
  tombstones: number;
}

/** A pruner; `start()` begins the background loop. */
export interface Pruner {
  runOnce(): Promise<PruneReport>;
  start(): void;
  close(): Promise<void>;
}

/** Creates a pruner. */
export function createPruner(options: PrunerOptions): Pruner {
  const db = options.db;
  const windowMs = options.dedupeWindowMs ?? 7 * 86_400_000;
  const limit = options.batchSize ?? DEFAULT_PRUNE_BATCH;
  const pauseMs = options.pauseMs ?? DEFAULT_PRUNE_PAUSE_MS;
  const now = options.now ?? Date.now;
  let closing = false;
  let task: PeriodicTask | undefined;

  /** Repeats a one-batch statement until it deletes less than a full batch. */
  async function drain(batch: () => Promise<{ deleted: number; expired?: number }>) {
    let deleted = 0;
    let expired = 0;
    while (!closing) {
      const r = await batch();
      deleted += r.deleted;
      expired += r.expired ?? 0;
      if (r.deleted < limit) break;
      await new Promise((resolve) => setTimeout(resolve, pauseMs));
    }
    return { deleted, expired };
  }

  async function pass(): Promise<Omit<PruneReport, 'ran'>> {
    const cutoff = pruneCutoffId(now(), windowMs);
    // Accepted messages first: whether one was applied is read from the inbox row, which the
    // next step deletes.
    const accepted = await drain(async () => {
      const { rows } = await sql<{ deleted: number; expired: number }>`
        with batch as (
          select * from accepted_messages where message_id < ${cutoff}
          order by message_id limit ${limit} for update skip locked
        ), expired as (
          insert into dead_letters
            (message_id, queue, job_name, job_id, data, token, reason, error, attempts, options,
             enqueued_at)
          select b.message_id, b.queue, b.job_name, b.job_id, b.data, b.token, 'expired',
                 'never applied within the dedupe window', 0, b.options, b.accepted_at
          from batch b
          where not exists (select 1 from inbox i where i.message_id = b.message_id)
          on conflict (message_id) do update
            set reason = 'expired', error = excluded.error, dead_at = now(),
                dead_count = dead_letters.dead_count + 1, replayed_at = null
            where dead_letters.replayed_at is not null and dead_letters.purged_at is null
          returning 1
        ), gone as (
          delete from accepted_messages a using batch b where a.message_id = b.message_id
          returning 1
        )
        select (select count(*) from gone)::int as deleted,
               (select count(*) from expired)::int as expired`.execute(db);
      return rows[0]!;
    });
    const inbox = await drain(async () => {
      const r = await sql`
        delete from inbox where message_id in (
          select message_id from inbox where message_id < ${cutoff}
          order by message_id limit ${limit} for update skip locked)`.execute(db);
      return { deleted: Number(r.numAffectedRows ?? 0) };
    });
    const tombstones = await drain(async () => {
      const r = await sql`
        delete from dead_letters where message_id in (
          select message_id from dead_letters where message_id < ${cutoff}
            and purged_at is not null
          order by message_id limit ${limit} for update skip locked)`.execute(db);
      return { deleted: Number(r.numAffectedRows ?? 0) };
    });
    const report = {
      acceptedMessages: accepted.deleted,
      expired: accepted.expired,
      inbox: inbox.deleted,
      tombstones: tombstones.deleted,
    };
    if (report.acceptedMessages + report.inbox + report.tombstones > 0) {
      options.logger?.info(report, 'pruned rows older than the dedupe window');
    }
    return report;
  }

  async function runOnce(): Promise<PruneReport> {
    const result = await withAdvisoryLock(db, LockId.Pruner, pass);
    return result.ran
      ? { ran: true, ...result.value }
      : { ran: false, acceptedMessages: 0, expired: 0, inbox: 0, tombstones: 0 };
  }

  return {
    runOnce,
    start() {
      task ??= startPeriodic({
        name: 'pruner',
        intervalMs: options.intervalMs ?? DEFAULT_PRUNE_INTERVAL_MS,
        run: runOnce,
        logger: options.logger,
      });
    },
    async close() {
      closing = true;
      await task?.close();
    },
  };
}
