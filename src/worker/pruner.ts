/**
 * The dedupe window (DESIGN.md section 2): inbox rows and accepted messages older than
 * `ONCEQ_DEDUPE_WINDOW` are deleted. Both tables are partitioned by day of message ids
 * (db/partitions.repository.ts): a partition whose every id is older goes whole, with one DROP;
 * what is left (a day that straddles the cutoff, the legacy partition of the rows written before
 * partitioning, the default partition) goes in batches, each batch its own short transaction. The
 * messageId carries its creation time, so "older than" is a range of the primary key
 * (`message_id <= the cutoff`): no extra index, no scan, and the rows deleted are
 * far below the ones workers insert, so no worker waits on them. Rows another session holds are
 * skipped (`SKIP LOCKED`), never waited for.
 *
 * An accepted message that reaches the cutoff without an inbox row was never applied: it is
 * dead-lettered as `expired` in the same transaction that deletes it, so it is not lost. Purged
 * dead letters (tombstones) go at the same age. One pruner runs at a time across the fleet.
 *
 * The pruner's clock and window decide what is old; what is pruned is then recorded in
 * PostgreSQL as the pruning cutoff, raised in the transaction of every batch, and the message
 * transaction refuses any message at or below it. So a worker whose clock is behind, or whose
 * window is set longer, still cannot apply a message whose inbox row is gone.
 */
import type { Logger } from 'pino';
import type { Db } from '../db/create-db.js';
import { LockId, withAdvisoryLock } from '../db/advisory-lock.js';
import { prunedThroughId } from '../core/dead-letter.js';
import { advancePruneCutoff } from '../db/pruning.repository.js';
import { deleteAccepted, lockAcceptedThrough } from '../db/accepted-messages.repository.js';
import { deleteInboxThrough } from '../db/inbox.repository.js';
import { deletePurgedThrough, expireUnapplied } from '../db/dead-letters.repository.js';
import {
  dropPartition,
  listPartitions,
  LOCK_NOT_AVAILABLE_SQLSTATE,
  PARTITIONED_TABLES,
} from '../db/partitions.repository.js';
import { startPeriodic, type PeriodicTask } from './periodic.js';

import { DEFAULT_DEDUPE_WINDOW_MS, DEFAULT_PRUNE_INTERVAL_MS } from '../core/defaults.js';
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
  /**
   * Partitions of inbox and accepted_messages dropped whole, every id in them older than the
   * window: their rows are not counted in `acceptedMessages` and `inbox` (counting would scan a
   * day), but their never-applied accepted messages are in `expired`.
   */
  partitionsDropped: number;
}

/** A pruner; `start()` begins the background loop. */
export interface Pruner {
  runOnce(): Promise<PruneReport>;
  start(): void;
  close(): Promise<void>;
}

/** What one batch deleted. */
interface PruneBatch {
  deleted: number;
  /** Accepted messages of the batch that were never applied, dead-lettered as `expired`. */
  expired?: number;
}

/**
 * Deletes up to `limit` accepted messages at or below `prunedThrough`; those without an inbox
 * row were never applied and are dead-lettered as `expired` first, in the same transaction, so
 * they are not lost. Rows another session holds are skipped.
 */
async function pruneAcceptedBatch(
  trx: Db,
  prunedThrough: string,
  limit: number,
): Promise<PruneBatch> {
  const ids = await lockAcceptedThrough(trx, prunedThrough, limit);
  const expired = await expireUnapplied(trx, ids);
  return { deleted: await deleteAccepted(trx, ids), expired };
}

async function pruneInboxBatch(trx: Db, prunedThrough: string, limit: number): Promise<PruneBatch> {
  return { deleted: await deleteInboxThrough(trx, prunedThrough, limit) };
}

async function pruneTombstoneBatch(
  trx: Db,
  prunedThrough: string,
  limit: number,
): Promise<PruneBatch> {
  return { deleted: await deletePurgedThrough(trx, prunedThrough, limit) };
}

/** Creates a pruner. */
export function createPruner(options: PrunerOptions): Pruner {
  const db = options.db;
  const windowMs = options.dedupeWindowMs ?? DEFAULT_DEDUPE_WINDOW_MS;
  const limit = options.batchSize ?? DEFAULT_PRUNE_BATCH;
  const pauseMs = options.pauseMs ?? DEFAULT_PRUNE_PAUSE_MS;
  const now = options.now ?? Date.now;
  let closing = false;
  let task: PeriodicTask | undefined;

  /**
   * Repeats a batch until it deletes less than a full one. Each batch is a transaction that
   * also raises the pruning cutoff over what it deleted (see db/pruning.repository.ts).
   */
  async function drain(
    prunedThrough: string,
    batch: (trx: Db, prunedThrough: string, limit: number) => Promise<PruneBatch>,
  ) {
    let deleted = 0;
    let expired = 0;
    while (!closing) {
      const r = await db.transaction().execute(async (trx) => {
        const done = await batch(trx, prunedThrough, limit);
        await advancePruneCutoff(trx, prunedThrough);
        return done;
      });
      deleted += r.deleted;
      expired += r.expired ?? 0;
      if (r.deleted < limit) break;
      await new Promise((resolve) => setTimeout(resolve, pauseMs));
    }
    return { deleted, expired };
  }

  /**
   * Drops the partitions whose every id is at or below `prunedThrough`, accepted messages' first
   * (their unapplied ones are dead-lettered from the inbox partition of the same day, dropped
   * after). Each drop is a transaction that dead-letters, drops and raises the pruning cutoff,
   * exactly as a batch of deletes does, so the cutoff covers every row the drop removes before
   * anyone can see them gone. A drop whose lock is not granted within a second is left to the
   * next pass: `heldBack` is then the first id of the lowest such partition, and this pass's
   * batches stop below it rather than delete a day row by row that a later pass drops at once.
   */
  async function dropWhole(
    prunedThrough: string,
  ): Promise<{ dropped: number; expired: number; heldBack?: bigint }> {
    const limitId = BigInt(prunedThrough) + 1n;
    let dropped = 0;
    let expired = 0;
    let heldBack: bigint | undefined;
    const holdBack = (from: string | undefined) => {
      const id = from === undefined ? -1n : BigInt(from);
      if (heldBack === undefined || id < heldBack) heldBack = id;
    };
    for (const table of PARTITIONED_TABLES) {
      for (const part of await listPartitions(db, table)) {
        if (closing) return { dropped, expired, heldBack: -1n };
        if (part.below === undefined || BigInt(part.below) > limitId) continue;
        try {
          expired += await db.transaction().execute(async (trx) => {
            const letters =
              table === 'accepted_messages'
                ? await expireUnapplied(trx, { from: part.from, below: part.below! })
                : 0;
            await dropPartition(trx, table, part);
            await advancePruneCutoff(trx, prunedThrough);
            return letters;
          });
          dropped++;
        } catch (err) {
          if ((err as { code?: string }).code !== LOCK_NOT_AVAILABLE_SQLSTATE) throw err;
          options.logger?.warn(
            { partition: part.name },
            'pruner: partition not dropped, its lock was busy; next pass',
          );
          holdBack(part.from);
          // The inbox partitions of the same days must outlive the accepted ones they answer.
          if (table === 'accepted_messages') return { dropped, expired, heldBack };
        }
      }
    }
    return { dropped, expired, heldBack };
  }

  async function pass(): Promise<Omit<PruneReport, 'ran'>> {
    const prunedThrough = prunedThroughId(now(), windowMs);
    const whole = await dropWhole(prunedThrough);
    // What is left below the cutoff lies in a partition that straddles it, in the legacy
    // partition while it still holds newer rows, or in the default one: deleted in batches.
    // Accepted messages first: whether one was applied is read from the inbox row, which the
    // next step deletes.
    const batchThrough =
      whole.heldBack !== undefined && whole.heldBack - 1n < BigInt(prunedThrough)
        ? (whole.heldBack - 1n).toString()
        : prunedThrough;
    const accepted = await drain(batchThrough, pruneAcceptedBatch);
    const inbox = await drain(batchThrough, pruneInboxBatch);
    const tombstones = await drain(prunedThrough, pruneTombstoneBatch);
    const report = {
      acceptedMessages: accepted.deleted,
      expired: accepted.expired + whole.expired,
      inbox: inbox.deleted,
      tombstones: tombstones.deleted,
      partitionsDropped: whole.dropped,
    };
    if (report.acceptedMessages + report.inbox + report.tombstones + whole.dropped > 0) {
      options.logger?.info(report, 'pruned rows older than the dedupe window');
    }
    return report;
  }

  async function runOnce(): Promise<PruneReport> {
    const result = await withAdvisoryLock(db, LockId.Pruner, pass);
    return result.ran
      ? { ran: true, ...result.value }
      : {
          ran: false,
          acceptedMessages: 0,
          expired: 0,
          inbox: 0,
          tombstones: 0,
          partitionsDropped: 0,
        };
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
