/**
 * The message transaction: the inbox insert first, the handler, the pruning-cutoff check, the
 * result, commit, all on one pooled connection.
 *
 * `BEGIN` travels with the inbox insert and `COMMIT` with the cutoff check and the result update,
 * each as one simple-protocol query: two round trips (and two socket writes) fewer per message than
 * `db.transaction()`, which is most of the gap between exactly-once and a plain insert on a
 * machine where the worker's CPU is the bottleneck. The literals are a decimal message id, and
 * text escaped by pg's `escapeLiteral`.
 *
 * The handler gets a {@link MessageTransaction} bound to the same connection, so everything it
 * runs is inside the transaction. Since that `BEGIN` is ours, not Kysely's, Kysely does not know
 * the connection is in a transaction: a plain Kysely instance there would let the handler run
 * `trx.transaction()` or `trx.startTransaction()`, whose `COMMIT` would commit the message
 * early (the inbox row without the handler's later effects, or without its result). The class
 * refuses those; a raw `` sql`COMMIT` `` it cannot see, and nothing here stops it.
 */
import {
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  sql,
  Transaction,
  type Dialect,
  type DrainOuterGeneric,
  type Driver,
  type KyselyPlugin,
  type KyselyProps,
  type QueryExecutor,
} from 'kysely';
import { ErrorCode, NonRetryableError, OnceqError } from '../core/errors.js';
import { jsonTextProblem } from '../core/jsonb.js';
import type { Database } from './database.js';
import type { Db } from './create-db.js';
import { PRUNED_SQLSTATE } from './pruning.repository.js';

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

/** Thrown when COMMIT did not commit (the server answered ROLLBACK); code `commit_failed`. */
export class CommitFailedError extends OnceqError {
  constructor(message: string) {
    super(ErrorCode.CommitFailed, message);
  }
}

/**
 * The message is at or below the pruning cutoff (db/pruning.repository.ts): its inbox row may be
 * gone, so nothing was committed and the message must be dead-lettered as `expired`.
 *
 * Why a concurrent prune cannot slip a second effect past the check. The pruner deletes inbox
 * rows and raises the cutoff over them in one transaction. The message transaction inserts its
 * inbox row first, and reads the cutoff (`onceq_assert_not_pruned`, a statement of its own, so
 * under READ COMMITTED a fresh snapshot) after the insert, just before COMMIT. Take a message X
 * applied once, and a redelivery of X while the pruner deletes X's row:
 *
 * - the insert runs before the pruner's delete commits: it either finds the committed row (a
 *   duplicate, nothing runs) or waits on the row the pruner is deleting, and proceeds only once
 *   the pruner's transaction has ended;
 * - the insert can therefore succeed only after the delete committed, and with it the raised
 *   cutoff; the check starts after the insert returned, so its snapshot sees that cutoff and
 *   refuses X.
 *
 * Reading the cutoff before the insert would not do: the prune could commit between the read and
 * the insert, which would then find no row and apply X again. The check takes no lock, so no
 * delivery waits on the pruner (nor the pruner on a long transaction). Under a session default of
 * REPEATABLE READ or SERIALIZABLE the check would read the snapshot taken before the wait, but
 * PostgreSQL fails such an insert with a serialization failure (40001) instead, which the
 * pipeline re-runs with a fresh snapshot (test/db/pruning.test.ts runs all three).
 */
export class MessagePrunedError extends NonRetryableError {
  constructor(messageId: string, cause: unknown) {
    super(
      ErrorCode.MessageExpired,
      `message ${messageId} is at or below the pruning cutoff recorded in PostgreSQL: its inbox ` +
        'row may be pruned, so it was not applied, to rule out a second effect',
      { cause },
    );
  }
}

/**
 * A handler tried to open a transaction or take a connection from `ctx.trx`; `details.attempted`
 * names the call. Nothing was sent to PostgreSQL, and the message's transaction rolls back. It is
 * a bug in the handler that no retry fixes, so the message is dead-lettered as `invalid` at once.
 */
export class NestedTransactionError extends NonRetryableError {
  declare readonly details: {
    /** The refused call, e.g. `ctx.trx.transaction()`. */
    attempted: string;
  };
  constructor(attempted: string) {
    super(
      ErrorCode.NestedTransaction,
      `${attempted} refused: ctx.trx already runs inside the message's transaction, which onceq ` +
        'commits together with the inbox row; a transaction or connection opened from it would let ' +
        "Kysely run its own BEGIN/COMMIT on the message's connection, commit the message early " +
        'and break exactly-once. Run the queries on ctx.trx itself; for a ' +
        'partial rollback, use sql`SAVEPOINT name` and sql`ROLLBACK TO SAVEPOINT name`.',
      { details: { attempted } },
    );
  }
}

/**
 * What a handler gets as `ctx.trx`: a Kysely `Transaction` on the message's connection, inside
 * the message's transaction. Queries (and `withSchema`, `withPlugin`…) work as on any Kysely
 * transaction; `transaction()`, `startTransaction()` and `connection()` throw a
 * {@link NestedTransactionError}, and are typed `never` so the compiler flags them too. Kysely's
 * own `Transaction` refuses the first and the last but not `startTransaction()`, and only at run
 * time.
 *
 * Raw SQL goes through unchecked: a handler's `` sql`COMMIT` `` would still commit the message
 * early. Do not write one.
 */
export class MessageTransaction<DB> extends Transaction<DB> {
  readonly #props: KyselyProps;

  /** @internal Built by {@link runMessageTransaction}; handlers never construct one. */
  constructor(props: KyselyProps) {
    super(props);
    this.#props = props;
  }

  /** @deprecated Refused, see {@link NestedTransactionError}: the transaction is already open. */
  override transaction(): never {
    throw new NestedTransactionError('ctx.trx.transaction()');
  }

  /** @deprecated Refused, see {@link NestedTransactionError}: the transaction is already open. */
  override startTransaction(): never {
    throw new NestedTransactionError('ctx.trx.startTransaction()');
  }

  /** @deprecated Refused, see {@link NestedTransactionError}: the transaction is already open. */
  override connection(): never {
    throw new NestedTransactionError('ctx.trx.connection()');
  }

  // Kysely's versions return a plain `Transaction`: only the driver would stop that one, with a
  // vaguer error, and its types would not flag the calls.
  override withPlugin(plugin: KyselyPlugin): MessageTransaction<DB> {
    return this.#derive(super.withPlugin(plugin).getExecutor());
  }

  override withoutPlugins(): MessageTransaction<DB> {
    return this.#derive(super.withoutPlugins().getExecutor());
  }

  /** Kysely's `withSchema`, still on the message's connection and transaction. */
  override withSchema(schema: string): MessageTransaction<DB> {
    return this.#derive(super.withSchema(schema).getExecutor());
  }

  // `any` as in Kysely's own signature, which an override must match.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  override withTables<T extends Record<string, Record<string, any>>>(): MessageTransaction<
    DrainOuterGeneric<DB & T>
  > {
    return new MessageTransaction(this.#props);
  }

  #derive(executor: QueryExecutor): MessageTransaction<DB> {
    return new MessageTransaction({ ...this.#props, executor });
  }
}

/**
 * The driver of a {@link MessageTransaction}. Its executor already holds the connection, so a
 * driver is only reached to open, end or drop transactions and connections, which the pipeline
 * alone does: every such call is refused, a second fence behind the class's own overrides.
 */
const PINNED_DRIVER: Driver = {
  init: () => Promise.resolve(),
  acquireConnection: () => Promise.reject(new NestedTransactionError('acquiring a connection')),
  beginTransaction: () => Promise.reject(new NestedTransactionError('BEGIN')),
  commitTransaction: () => Promise.reject(new NestedTransactionError('COMMIT')),
  rollbackTransaction: () => Promise.reject(new NestedTransactionError('ROLLBACK')),
  releaseConnection: () => Promise.resolve(),
  destroy: () => Promise.reject(new NestedTransactionError('destroy()')),
};

/** PostgreSQL, as a {@link MessageTransaction} needs it: for introspection, and for the props. */
const PINNED_DIALECT: Dialect = {
  createAdapter: () => new PostgresAdapter(),
  createDriver: () => PINNED_DRIVER,
  createQueryCompiler: () => new PostgresQueryCompiler(),
  createIntrospector: (db) => new PostgresIntrospector(db),
};

/**
 * The handler's view of the message's connection, whose executor `executor` is.
 * @internal The message and group transactions build it; handlers never do.
 */
export function messageTransactionOn(executor: QueryExecutor): MessageTransaction<Database> {
  return new MessageTransaction<Database>({
    config: { dialect: PINNED_DIALECT },
    dialect: PINNED_DIALECT,
    driver: PINNED_DRIVER,
    executor,
  });
}

/**
 * Runs one message transaction: `BEGIN` + inbox insert; if the message is already in the inbox,
 * roll back and return the stored result; else run `body`, call `beforeCommit` (which may throw
 * to abort), then check the pruning cutoff, store the result and `COMMIT`. Any error rolls back
 * and is rethrown; a message at or below the cutoff as a {@link MessagePrunedError}.
 */
export async function runMessageTransaction<R>(
  db: Db,
  key: InboxKey,
  body: (trx: MessageTransaction<Database>) => Promise<R>,
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
      const result = await body(messageTransactionOn(conn.getExecutor()));
      beforeCommit?.();
      // The cutoff check runs here, in a statement of its own after the inbox insert: see
      // MessagePrunedError for why that order cannot apply a pruned message twice.
      const committed = await sql
        .raw<{ command: string }>(
          `SELECT onceq_assert_not_pruned(${key.messageId}); ` +
            `UPDATE inbox SET result = ${literal(resultJson(result))}::jsonb ` +
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
      if ((err as { code?: unknown } | null)?.code === PRUNED_SQLSTATE) {
        throw new MessagePrunedError(key.messageId, err);
      }
      throw err;
    }
  });
}

/**
 * The handler's result as jsonb text. A result that cannot be stored fails the same way on every
 * attempt, so it is a non-retryable error (the message is dead-lettered as `invalid`) rather
 * than a retry loop: one JSON.stringify refuses (a BigInt, a cycle), or one PostgreSQL's jsonb
 * refuses (a string holding U+0000 or a lone surrogate).
 */
export function resultJson(result: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(result ?? null);
  } catch (err) {
    throw new NonRetryableError(
      ErrorCode.InvalidResult,
      `the handler's result cannot be stored as JSON: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const problem = jsonTextProblem(text);
  if (problem) {
    throw new NonRetryableError(ErrorCode.InvalidResult, `the handler's result ${problem}`);
  }
  return text;
}

/**
 * A SQL string literal, as pg's `escapeLiteral` writes it: doubled quotes, and the `E''` form
 * with doubled backslashes when the text has any.
 */
export function literal(text: string): string {
  const quoted = `'${text.replace(/'/g, "''")}'`;
  return text.includes('\\') ? ` E${quoted.replace(/\\/g, '\\\\')}` : quoted;
}
