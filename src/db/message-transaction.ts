/**
 * The message transaction: the inbox insert first, the handler, the result, commit, on one
 * pooled connection.
 *
 * It talks to the pg client directly for the statements it owns so that `BEGIN` travels with the
 * inbox insert and `COMMIT` with the result update, each pair in one simple-protocol round trip:
 * two round trips fewer per message than `db.transaction()`, which is most of the gap between
 * exactly-once and a plain insert on a machine where every round trip costs CPU. The handler
 * still gets a Kysely instance: one bound (through AsyncLocalStorage) to the same client, so
 * everything it runs is inside the transaction.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { Kysely, PostgresDialect } from 'kysely';
import type pg from 'pg';
import type { Database } from './database.js';
import { poolOf, type Db } from './create-db.js';

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

/** Runs one message transaction; re-create per Db, reuse across messages. */
export interface MessageTransactionRunner {
  run<R>(
    key: InboxKey,
    body: (trx: Kysely<Database>) => Promise<R>,
    beforeCommit?: () => void,
  ): Promise<MessageTransactionResult<R>>;
}

/** Thrown when COMMIT did not commit (the server answered ROLLBACK). */
export class CommitFailedError extends Error {}

/** Creates the runner for a Db made by createDb. */
export function createMessageTransactionRunner(db: Db): MessageTransactionRunner {
  const pool = poolOf(db);
  const current = new AsyncLocalStorage<pg.PoolClient>();
  const wrappers = new WeakMap<pg.PoolClient, unknown>();
  // Kysely asks this "pool" for a connection per query; it hands out the transaction's client,
  // wrapped so Kysely's release after each query leaves it checked out.
  const scopedPool = {
    async connect() {
      const client = current.getStore();
      if (!client) throw new Error('the handler ran a query outside its message transaction');
      let wrapper = wrappers.get(client);
      if (!wrapper) {
        wrapper = {
          query: (...args: unknown[]) => (client.query as (...a: unknown[]) => unknown)(...args),
          release: () => undefined,
        };
        wrappers.set(client, wrapper);
      }
      return wrapper;
    },
    async end() {},
  };
  const scoped = new Kysely<Database>({
    dialect: new PostgresDialect({ pool: scopedPool as unknown as pg.Pool }),
  });

  return {
    async run(key, body, beforeCommit) {
      if (!/^[0-9]{1,19}$/.test(key.messageId))
        throw new RangeError(`bad message id ${key.messageId}`);
      const client = await pool.connect();
      let broken: Error | undefined;
      try {
        const lit = (v: string) => client.escapeLiteral(v);
        const begun = (await client.query(
          `BEGIN; INSERT INTO inbox (message_id, queue, job_name) ` +
            `VALUES (${key.messageId}, ${lit(key.queue)}, ${lit(key.jobName)}) ` +
            `ON CONFLICT (message_id) DO NOTHING RETURNING message_id`,
        )) as unknown as pg.QueryResult[];
        if (begun[1]?.rowCount !== 1) {
          await client.query('ROLLBACK');
          const stored = await client.query<{ result: unknown }>(
            'SELECT result FROM inbox WHERE message_id = $1',
            [key.messageId],
          );
          return { kind: 'duplicate', result: stored.rows[0]?.result ?? null };
        }
        const result = await current.run(client, () => body(scoped));
        beforeCommit?.();
        const json = JSON.stringify(result ?? null);
        const committed = (await client.query(
          `UPDATE inbox SET result = ${lit(json)}::jsonb WHERE message_id = ${key.messageId}; COMMIT`,
        )) as unknown as pg.QueryResult[];
        if (committed[1]?.command !== 'COMMIT') {
          throw new CommitFailedError(`COMMIT answered ${committed[1]?.command ?? 'nothing'}`);
        }
        return { kind: 'applied', result };
      } catch (err) {
        try {
          await client.query('ROLLBACK');
        } catch (rollbackErr) {
          // The connection is gone (terminated backend, network): do not return it to the pool.
          broken = rollbackErr as Error;
        }
        throw err;
      } finally {
        client.release(broken);
      }
    },
  };
}
