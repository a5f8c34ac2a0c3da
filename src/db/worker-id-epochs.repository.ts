/**
 * Worker-id epochs (migrations/2026_11_30_000000_worker_id_epochs.ts): whether the worker-id hash
 * a process leased from is the prefix's first, or replaced one that Redis lost.
 */
import { sql, type Kysely } from 'kysely';
import type { Database } from './database.js';

/**
 * Records `epoch` as the prefix's current one and answers whether it follows a loss: false for
 * the prefix's first epoch, true when it replaced another (now or when another process saw it
 * first). Concurrent callers with the same epoch agree on the answer.
 */
export async function recordWorkerIdEpoch(
  db: Kysely<Database>,
  prefix: string,
  epoch: string,
): Promise<{ afterLoss: boolean }> {
  const { rows } = await sql<{ after_loss: boolean }>`
    with changed as (
      insert into worker_id_epochs (prefix, epoch) values (${prefix}, ${epoch})
      on conflict (prefix) do update
        set epoch = excluded.epoch, after_loss = true, changed_at = now()
        where worker_id_epochs.epoch <> excluded.epoch
      returning after_loss
    )
    select after_loss from changed
    union all
    select after_loss from worker_id_epochs
      where prefix = ${prefix} and epoch = ${epoch} and not exists (select 1 from changed)`.execute(
    db,
  );
  if (rows[0]) return { afterLoss: rows[0].after_loss };
  // No row: another process recorded this epoch after this statement's snapshot was taken (two
  // processes starting at once); a new statement sees its row. Another epoch there means the
  // hash was replaced again meanwhile: a loss in any case.
  const row = await db
    .selectFrom('worker_id_epochs')
    .select(['epoch', 'after_loss'])
    .where('prefix', '=', prefix)
    .executeTakeFirst();
  return { afterLoss: row?.epoch === epoch ? row.after_loss : true };
}
