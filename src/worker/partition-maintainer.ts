/**
 * Keeps the day partitions of inbox and accepted_messages created ahead of the ids being minted
 * (db/partitions.repository.ts): on start and every hour, today through today + 3 days (UTC).
 * Every worker runs it; the database function serializes the runs on an advisory lock and does
 * nothing for a day that exists, so a fleet creates each partition once.
 *
 * Why ahead and a DEFAULT partition both: creating a partition when its day comes would race the
 * first ids of that day, and a partition created after rows of its day landed in the default one
 * is refused by PostgreSQL. Days ahead leave hours of retries to a creation whose lock was busy;
 * the default partition catches ids past the last day when the whole fleet was down longer than
 * that, so such an insert never fails a message (the pruner deletes those rows in batches).
 */
import type { Logger } from 'pino';
import type { Db } from '../db/create-db.js';
import { ensurePartitions } from '../db/partitions.repository.js';
import { DEFAULT_PARTITION_DAYS_AHEAD, DEFAULT_PARTITION_INTERVAL_MS } from '../core/defaults.js';
import { startPeriodic, type PeriodicTask } from './periodic.js';

/** Options of {@link startPartitionMaintainer}. */
export interface PartitionMaintainerOptions {
  /** @defaultValue {@link DEFAULT_PARTITION_INTERVAL_MS} (1 h) */
  intervalMs?: number;
  /** Days of partitions past today. @defaultValue {@link DEFAULT_PARTITION_DAYS_AHEAD} (3) */
  daysAhead?: number;
  logger?: Logger;
}

/** Starts the task; its first run is at once. */
export function startPartitionMaintainer(
  db: Db,
  options: PartitionMaintainerOptions = {},
): PeriodicTask {
  const daysAhead = options.daysAhead ?? DEFAULT_PARTITION_DAYS_AHEAD;
  if (!Number.isInteger(daysAhead) || daysAhead < 0 || daysAhead > 366) {
    throw new RangeError(`partitions.daysAhead must be an integer from 0 to 366, got ${daysAhead}`);
  }
  return startPeriodic({
    name: 'partitions',
    intervalMs: options.intervalMs ?? DEFAULT_PARTITION_INTERVAL_MS,
    firstRunMs: 0,
    run: async () => {
      const made = await ensurePartitions(db, daysAhead);
      if (made > 0) options.logger?.info({ made, daysAhead }, 'created partitions ahead');
    },
    logger: options.logger,
  });
}
