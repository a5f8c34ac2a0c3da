/**
 * The job definition API: a name, the queue it runs on, a JSON schema for its data (TypeBox or
 * plain JSON Schema), and a handler that runs inside the message's transaction.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import type { Insertable, Updateable } from 'kysely';
import type { MessageTransaction } from '../db/message-transaction.js';
import { QUEUE_NAME, QUEUE_NAME_RULE } from '../core/queue-name.js';
import { DEAD_LETTER_QUEUE_SUFFIX, isDeadLetterQueueName } from '../core/dead-letter.js';
import { InvalidArgumentError } from '../core/errors.js';
import { isPartitionCount, MAX_PARTITIONS } from '../core/queue-partitions.js';
import { DEFAULT_PARTITIONS } from '../core/defaults.js';

/** Queue a job runs on when its definition names none. */
export const DEFAULT_QUEUE = 'default';

/** Job names: dotted identifiers like `ledger.transfer`. */
export const JOB_NAME = /^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$/i;

/**
 * The database type of a job that names none: any table, any column. Name yours
 * (`defineJob<AppDatabase>()({...})`) and `ctx.trx`, `insertOnce` and `updateVersioned` are
 * checked against your tables, as a `Kysely<AppDatabase>` is.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyDatabase = Record<string, any>;

/** Options of {@link JobContext.insertOnce}. */
export interface InsertOnceOptions<Column extends string = string> {
  /** The primary-key (or unique) column the insert may conflict on. @defaultValue `id` */
  conflict?: Column;
}

/** Options of {@link JobContext.enqueue}. */
export interface FollowUpOptions {
  /** Queue; defaults to the job's, and must be one the job is declared on (`queue`, `queues`). */
  queue?: string;
  /**
   * Delay before the first delivery, ms, counted from when the relay sends it; below the
   * dedupe window.
   */
  delay?: number;
  /** BullMQ priority: 1 is highest, `MAX_PRIORITY` (2,097,151) lowest, 0 none. */
  priority?: number;
}

/**
 * What a handler gets. Everything it writes through `trx` commits together with the inbox row
 * that marks the message applied, or not at all.
 */
export interface JobContext<Data, DB = AnyDatabase> {
  /** The validated job data. */
  readonly data: Data;
  /** The message's snowflake id (decimal string), the same on every delivery and replay. */
  readonly messageId: string;
  /** The job name. */
  readonly jobName: string;
  /** The queue the message runs on. */
  readonly queue: string;
  /** BullMQ's attempt number of this delivery, from 1. */
  readonly attempt: number;
  /** Transaction run within this delivery, from 1 (re-runs follow version conflicts). */
  readonly run: number;
  /**
   * The message's transaction (a Kysely `Transaction`): onceq commits it with the inbox row.
   * `trx.transaction()`, `trx.startTransaction()` and `trx.connection()` throw a
   * `NestedTransactionError` (and do not compile): Kysely would run its own `BEGIN`/`COMMIT`
   * through them and commit the message early. For a partial rollback, run `` sql`SAVEPOINT name` `` and
   * `` sql`ROLLBACK TO SAVEPOINT name` `` on it. Raw SQL is not checked: never run
   * `` sql`COMMIT` `` or `` sql`ROLLBACK` `` here, onceq cannot stop those.
   */
  readonly trx: MessageTransaction<DB>;
  /**
   * `INSERT … ON CONFLICT (conflict) DO NOTHING`; true when the row was inserted. Ids must be
   * chosen before the first attempt (the messageId, or ids from the payload), never minted here.
   */
  insertOnce<T extends keyof DB & string>(
    table: T,
    row: Insertable<DB[T]>,
    options?: InsertOnceOptions<keyof DB[T] & string>,
  ): Promise<boolean>;
  /**
   * `UPDATE table SET …, version = version + 1 WHERE id = $id AND version = $expected`; returns
   * the new version. Throws `VersionConflictError` when the row has another version (or is
   * gone); onceq then re-runs the whole transaction.
   */
  updateVersioned<T extends keyof DB & string>(
    table: T,
    id: string,
    expectedVersion: number,
    set: Updateable<DB[T]>,
  ): Promise<number>;
  /**
   * Enqueues a follow-up message through the transactional outbox: the row is written in this
   * transaction, so the follow-up is sent if and only if this message commits, and it is
   * applied once like any other message. The data is validated against the job's schema now
   * (a `ValidationError` dead-letters this message as `invalid`), and so are the job name and
   * the options, by the producer's rules (an `EnqueueOptionsError`, likewise). Returns the
   * follow-up's pre-minted messageId, the same through every delivery of the follow-up.
   */
  enqueue(name: string, data: unknown, options?: FollowUpOptions): Promise<string>;
}

/**
 * A job: what `defineJob` returns and a worker or producer is given. `DB` is the database type
 * its handler was written against; left out, the type stands for a job of any database (so a
 * list of jobs written against different table types is still a `JobDefinition[]`).
 */
export interface JobDefinition<
  Data = unknown,
  Result = unknown,
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  DB = any,
  Name extends string = string,
> {
  /** The job's name, as `enqueue` takes it. */
  readonly name: Name;
  /** The queue a message of this job goes to when the enqueue names none. */
  readonly queue: string;
  /**
   * Every queue a message of this job may be enqueued on: `queue` first, then the spec's extra
   * `queues`. Enqueues naming any other queue are refused; workers consume all of them.
   */
  readonly queues: readonly string[];
  /**
   * BullMQ queues each of the job's queues is split into (see {@link JobSpec.partitions}); 1 for
   * a queue that is not partitioned.
   */
  readonly partitions: number;
  /** The data's JSON schema; every message's data is checked against it before it is sent. */
  readonly schema: TSchema;
  /** Runs inside the transaction; its result is stored with the inbox row and replayed to duplicates. */
  handle(ctx: JobContext<Data, DB>): Promise<Result>;
}

/** What `defineJob` takes. */
export interface JobSpec<
  S extends TSchema,
  Result,
  DB = AnyDatabase,
  Name extends string = string,
> {
  /** Dotted identifiers such as `order.place`; producers' `enqueue` is typed by it. */
  name: Name;
  /** @defaultValue `default` */
  queue?: string;
  /**
   * Other queues a message of this job may be sent to (the enqueue's `queue` option), say a
   * `bulk` queue with its own workers beside the default one. An enqueue naming a queue that is
   * neither `queue` nor in this list is refused. @defaultValue none
   */
  queues?: readonly string[];
  /**
   * Splits each of the job's queues (`queue` and every one of `queues`) into this many BullMQ
   * queues, `name#0` … `name#N-1`, each with keys of its own: on a Redis Cluster each partition
   * lands on a hash slot of its own, so one busy queue spreads over the masters. A message goes
   * to the partition its messageId hashes to, on every path that adds its job (enqueue, outbox,
   * replay, reconciler); workers consume every partition; the inbox, dead letters, replay,
   * metrics and `ctx.queue` speak of the queue itself. Partitioning is a property of the queue:
   * every job on a queue must declare the same count (the registry refuses others). Changing it
   * moves where new jobs go; drain the queue first (jobs left in the old layout are not
   * consumed, and the reconciler re-adds their messages to the new one after its grace period).
   * An integer from 1 to {@link MAX_PARTITIONS}. @defaultValue 1, the queue's own BullMQ queue
   */
  partitions?: number;
  /** The data's JSON schema; with TypeBox, `ctx.data` gets its static type. */
  schema: S;
  /**
   * Applies one message: every write through `ctx.trx` commits in one transaction with the
   * message's inbox row, so a redelivered message never applies twice. The result is stored
   * with the inbox row and replayed to duplicates.
   */
  handle(ctx: JobContext<Static<S>, DB>): Promise<Result>;
}

/** `defineJob` bound to an application's database type. */
export type DefineJob<DB> = <S extends TSchema, Result, Name extends string = string>(
  spec: JobSpec<S, Result, DB, Name>,
) => JobDefinition<Static<S>, Result, DB, Name>;

/**
 * Defines a job: `ctx.data` is typed from the TypeBox schema. The result must be
 * JSON-serialisable (it is stored as `jsonb`).
 *
 * Called with the application's Kysely database type and no argument, it returns a `defineJob`
 * whose handlers get `ctx.trx`, `insertOnce` and `updateVersioned` typed against those tables:
 *
 * ```ts
 * const defineAppJob = defineJob<AppDatabase>();
 * export const addNote = defineAppJob({ name: 'note.add', schema: Note, async handle(ctx) { … } });
 * ```
 */
export function defineJob<S extends TSchema, Result, Name extends string = string>(
  spec: JobSpec<S, Result, AnyDatabase, Name>,
): JobDefinition<Static<S>, Result, AnyDatabase, Name>;
export function defineJob<DB>(): DefineJob<DB>;
export function defineJob<S extends TSchema, Result, Name extends string>(
  spec?: JobSpec<S, Result, AnyDatabase, Name>,
): JobDefinition<Static<S>, Result, AnyDatabase, Name> | DefineJob<unknown> {
  if (spec === undefined) return defineJobSpec as DefineJob<unknown>;
  return defineJobSpec(spec);
}

/** The data type of a job definition (`unknown` for a plain JSON schema). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type JobData<Job> = Job extends JobDefinition<infer Data, any, any, any> ? Data : never;

function defineJobSpec<S extends TSchema, Result, DB, Name extends string>(
  spec: JobSpec<S, Result, DB, Name>,
): JobDefinition<Static<S>, Result, DB, Name> {
  if (typeof spec.name !== 'string' || !JOB_NAME.test(spec.name)) {
    throw new InvalidArgumentError(
      `job name "${String(spec.name)}" must be dotted identifiers such as "ledger.transfer"`,
    );
  }
  const queue = spec.queue ?? DEFAULT_QUEUE;
  const extra = spec.queues ?? [];
  if (!Array.isArray(extra)) {
    throw new InvalidArgumentError(`job ${spec.name}: queues must be an array of queue names`);
  }
  for (const q of [queue, ...extra]) checkQueueName(spec.name, q);
  const queues = Object.freeze([...new Set<string>([queue, ...extra])]);
  const partitions = spec.partitions === undefined ? DEFAULT_PARTITIONS : spec.partitions;
  if (!isPartitionCount(partitions)) {
    throw new InvalidArgumentError(
      `job ${spec.name}: partitions must be an integer from 1 to ${MAX_PARTITIONS}, got ${String(spec.partitions)}`,
    );
  }
  if (typeof spec.handle !== 'function')
    throw new InvalidArgumentError(`job ${spec.name}: handle must be a function`);
  if (typeof spec.schema !== 'object' || spec.schema === null)
    throw new InvalidArgumentError(`job ${spec.name}: schema must be a JSON schema object`);
  return Object.freeze({
    name: spec.name,
    queue,
    queues,
    partitions,
    schema: spec.schema,
    handle: spec.handle,
  });
}

/** A queue a job may run on; checked at definition rather than when a worker starts. */
function checkQueueName(job: string, queue: unknown): void {
  // BullMQ refuses some names (`:`) only when a worker starts.
  if (typeof queue !== 'string' || !QUEUE_NAME.test(queue)) {
    throw new InvalidArgumentError(
      `job ${job}: queue "${String(queue)}" must be ${QUEUE_NAME_RULE}`,
    );
  }
  if (isDeadLetterQueueName(queue)) {
    throw new InvalidArgumentError(
      `job ${job}: queue "${queue}" ends with ${DEAD_LETTER_QUEUE_SUFFIX}, which names dead-letter queues`,
    );
  }
}

/** True for values that look like a job definition (used when loading `ONCEQ_JOBS`). */
export function isJobDefinition(value: unknown): value is JobDefinition {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v.name === 'string' && typeof v.handle === 'function' && typeof v.schema === 'object'
  );
}
