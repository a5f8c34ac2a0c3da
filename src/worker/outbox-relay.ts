/**
 * The outbox relay: moves committed follow-up messages from the `outbox` table to BullMQ with
 * their pre-minted messageIds. Every worker process runs one; `FOR UPDATE SKIP LOCKED` lets
 * relays share the work without waiting on each other. Per batch, in one transaction: take the
 * rows (deleting them and recording them as accepted messages), add their jobs to BullMQ,
 * commit. A relay that dies before the commit leaves the rows for the next run: their jobs are
 * added again under the same job ids, and any extra delivery is absorbed by the inbox.
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Db } from '../db/create-db.js';
import { takeOutboxBatch } from '../db/outbox.repository.js';
import type { MessageEnvelope } from '../core/message.js';
import { messageJobOptions, storedJobOptions } from '../producer/job-options.js';
import { createQueueCache } from './queues.js';
import { startPeriodic, type PeriodicTask } from './periodic.js';

import { DEFAULT_OUTBOX_INTERVAL_MS } from '../config.js';
/** Rows per relay transaction. */
export const DEFAULT_OUTBOX_BATCH = 500;

/** Options of {@link createOutboxRelay}. */
export interface OutboxRelayOptions {
  db: Db;
  redis: Redis;
  prefix: string;
  /** @defaultValue {@link DEFAULT_OUTBOX_INTERVAL_MS} */
  intervalMs?: number;
  /** @defaultValue {@link DEFAULT_OUTBOX_BATCH} */
  batchSize?: number;
  /** Attempts of the follow-up jobs. @defaultValue 10 */
  maxAttempts?: number;
  /** @defaultValue 1000 ms */
  backoffMs?: number;
  logger?: Logger;
}

/** A relay; `start()` begins the background loop. */
export interface OutboxRelay {
  /** Sends every committed row now; resolves with how many were sent. */
  runOnce(): Promise<number>;
  start(): void;
  /** Asks the running loop to send now (after a commit that wrote follow-ups). */
  nudge(): void;
  close(): Promise<void>;
}

/** Creates a relay. */
export function createOutboxRelay(options: OutboxRelayOptions): OutboxRelay {
  const queues = createQueueCache(options.redis, options.prefix);
  const batchSize = options.batchSize ?? DEFAULT_OUTBOX_BATCH;
  let task: PeriodicTask | undefined;

  async function relayBatch(): Promise<number> {
    return options.db.transaction().execute(async (trx) => {
      const rows = await takeOutboxBatch(trx, batchSize);
      const byQueue = new Map<string, typeof rows>();
      for (const row of rows) byQueue.set(row.queue, [...(byQueue.get(row.queue) ?? []), row]);
      await Promise.all(
        [...byQueue].map(([queue, batch]) =>
          queues.get(queue).addBulk(
            batch.map((row) => ({
              name: row.job_name,
              data: {
                messageId: row.message_id,
                token: row.token,
                data: row.data,
              } as MessageEnvelope,
              opts: messageJobOptions(row.message_id, {
                maxAttempts: options.maxAttempts,
                backoffMs: options.backoffMs,
                ...storedJobOptions(row.options),
              }),
            })),
          ),
        ),
      );
      return rows.length;
    });
  }

  async function runOnce(): Promise<number> {
    let sent = 0;
    for (;;) {
      const n = await relayBatch();
      sent += n;
      if (n < batchSize) break;
    }
    if (sent > 0) options.logger?.debug({ sent }, 'outbox relayed');
    return sent;
  }

  return {
    runOnce,
    start() {
      task ??= startPeriodic({
        name: 'outbox-relay',
        intervalMs: options.intervalMs ?? DEFAULT_OUTBOX_INTERVAL_MS,
        firstRunMs: 0,
        run: runOnce,
        logger: options.logger,
      });
    },
    nudge: () => task?.nudge(),
    async close() {
      await task?.close();
      await queues.close();
    },
  };
}
