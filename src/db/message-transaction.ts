/**
 * The message transaction: the inbox insert first, the handler, the result, commit, all on one
 * pooled connection.
 *
 * `BEGIN` travels with the inbox insert and `COMMIT` with the result update, each pair as one
 * simple-protocol query: two round trips (and two socket writes) fewer per message than
 * `db.transaction()`, which is most of the gap between exactly-once and a plain insert on a
 * machine where the worker's CPU is the bottleneck. The literals are a decimal message id, and
 * text escaped by pg's `escapeLiteral`. The handler gets a Kysely instance bound to the same
 * connection, so everything it runs is inside the transaction.
 */
import { sql, type Kysely } from 'kysely';
import type { Database } from './database.js';
import type { Db } from './create-db.js';

/** What a message transaction ended with. */
export type MessageTransactionResult<R> =
  | { kind: 'applied'; result: R }
  /** The inbox already had the message: nothing ran; `result` is the stored one. */
  | { kind: 'duplicate'; result: unknown };

/** The message, as the inbox records it. */
export interface InboxKey {
  messageId: string;
  queue: string;
  jobName: string;
}

/** Thrown when COMMIT did not commit (the server answered ROLLBACK). */
export class CommitFailedError extends Error {}

/**
 * Runs one message transaction: `BEGIN` + inbox insert; if the message is already in the inbox,
 * roll back and return the stored result; else run `body`, call `beforeCommit` (which may throw
 * to abort), then store the result and `COMMIT`. Any error rolls back and is rethrown.
 */
export async function runMessageTransaction<R>(
  db: Db,
  key: InboxKey,
  body: (trx: Kysely<Database>) => Promise<R>,
  beforeCommit?: () => void,
): Promise<MessageTransactionResult<R>> {
  if (!/^[0-9]{1,19}$/.test(key.messageId)) throw new RangeError(`bad message id ${key.messageId}`);
  return db.connection().execute(async (conn) => {
    try {
      const begun = await sql
        .raw<{ message_id: string }>(
          `BEGIN; INSERT INTO inbox (message_id, queue, job_name) ` +
            `VALUES (${key.messageId}, ${literal(key.queue)}, ${literal(key.jobName)}) ` +
            `ON CONFLICT (message_id) DO NOTHING RETURNING message_id`,
        )
        .execute(conn);
      if (begun.rows.length !== 1) {
        await sql.raw('ROLLBACK').execute(conn);
        const stored = await conn
          .selectFrom('inbox')
          .select('result')
          .where('message_id', '=', key.messageId)
          .executeTakeFirst();
        return { kind: 'duplicate', result: stored?.result ?? null };
      }
      const result = await body(conn);
      beforeCommit?.();
      const committed = await sql
        .raw<{ command: string }>(
          `UPDATE inbox SET result = ${literal(JSON.stringify(result ?? null))}::jsonb ` +
            `WHERE message_id = ${key.messageId}; COMMIT`,
        )
        .execute(conn);
      if (committed.rows[0]?.command !== 'COMMIT') {
        throw new CommitFailedError(`COMMIT answered ${committed.rows[0]?.command ?? 'nothing'}`);
      }
      return { kind: 'applied', result };
    } catch (err) {
      // On a dead connection this fails too; pg drops such a client when it is released.
      await sql
        .raw('ROLLBACK')
        .execute(conn)
        .catch(() => undefined);
      throw err;
    }
  });
}

/**
 * A SQL string literal, as pg's `escapeLiteral` writes it: doubled quotes, and the `E''` form
 * with doubled backslashes when the text has any.
 */
export function literal(text: string): string {
  const quoted = `'${text.replace(/'/g, "''")}'`;
  return text.includes('\\') ? ` E${quoted.replace(/\\/g, '\\\\')}` : quoted;
}
