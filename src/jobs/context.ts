/**
 * Builds the handler context: the transaction plus the two helpers that make writes safe to
 * repeat (`insertOnce`) and safe to race (`updateVersioned`), and `enqueue`, which refuses a
 * bad follow-up (unknown job, a queue the job is not declared on, a delay or priority out of
 * range) before it reaches the outbox.
 */
import { sql, type Kysely } from 'kysely';
import type { Database } from '../db/database.js';
import type { MessageTransaction } from '../db/message-transaction.js';
import { ErrorCode, NonRetryableError, VersionConflictError } from '../core/errors.js';
import { assertEnqueueOptions } from '../core/enqueue-options.js';
import { DEFAULT_DEDUPE_WINDOW_MS } from '../core/defaults.js';
import type { AnyDatabase, FollowUpOptions, InsertOnceOptions, JobContext } from './define-job.js';
import type { JobRegistry } from './registry.js';

/** What the pipeline knows about the delivery. */
export interface ContextInput<Data> {
  /** The message's transaction; it refuses nested transactions, so it goes to the handler as is. */
  trx: MessageTransaction<Database>;
  data: Data;
  messageId: string;
  jobName: string;
  queue: string;
  attempt: number;
  run: number;
  /** Writes a follow-up into the outbox through `trx`; absent where there is no outbox. */
  enqueue?: (name: string, data: unknown, options?: FollowUpOptions) => Promise<string>;
  /** The jobs a follow-up may name, with the queues each is declared on; needed by `enqueue`. */
  registry?: Pick<JobRegistry, 'get'>;
  /** The workers' dedupe window, which bounds a follow-up's delay. @defaultValue 7 d */
  dedupeWindowMs?: number;
}

// The helpers address tables by name at run time, which Kysely's static types cannot follow;
// the queries themselves are still built by Kysely with identifiers quoted.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDb = Kysely<any>;

/** The context handed to a job's `handle`. */
export function createJobContext<Data>(input: ContextInput<Data>): JobContext<Data, AnyDatabase> {
  const trx = input.trx as unknown as AnyDb;
  return {
    data: input.data,
    messageId: input.messageId,
    jobName: input.jobName,
    queue: input.queue,
    attempt: input.attempt,
    run: input.run,
    // The handler's own database type is only known to its author; the tables are the same.
    trx: input.trx as unknown as JobContext<Data, AnyDatabase>['trx'],
    async insertOnce(table: string, row: Record<string, unknown>, options?: InsertOnceOptions) {
      const conflict = options?.conflict ?? 'id';
      const inserted = await trx
        .insertInto(table)
        .values(row)
        // Name the conflict target: a bare ON CONFLICT DO NOTHING would also swallow unrelated
        // unique violations (STYLE.md habit 4).
        .onConflict((oc) => oc.column(conflict).doNothing())
        .returning(conflict)
        .executeTakeFirst();
      return inserted !== undefined;
    },
    async updateVersioned(
      table: string,
      id: string,
      expectedVersion: number,
      set: Record<string, unknown>,
    ) {
      const updated = await trx
        .updateTable(table)
        .set({ ...set, version: sql`version + 1` })
        .where('id', '=', id)
        .where('version', '=', expectedVersion)
        .returning('version')
        .executeTakeFirst();
      if (!updated) throw new VersionConflictError(table, id, expectedVersion);
      return Number((updated as { version: number | string }).version);
    },
    async enqueue(name: string, data: unknown, options?: FollowUpOptions) {
      if (!input.enqueue || !input.registry) {
        // A context built without the worker's outbox wiring (a test, a tool): no retry helps.
        throw new NonRetryableError(
          ErrorCode.ConfigInvalid,
          'ctx.enqueue needs a worker with an outbox',
        );
      }
      // Checked here, in the handler's delivery: a follow-up the relay could never send would
      // otherwise commit to the outbox with its parent and fail there on every pass. Refused, it
      // fails (and dead-letters) the parent as `invalid`, with this error.
      if (typeof name !== 'string') {
        throw new NonRetryableError(
          ErrorCode.ValidationFailed,
          `ctx.enqueue: the job name must be a string, got ${typeof name}`,
        );
      }
      const job = input.registry.get(name);
      if (options !== undefined && (typeof options !== 'object' || options === null)) {
        throw new NonRetryableError(
          ErrorCode.ValidationFailed,
          `ctx.enqueue(${name}): options must be an object`,
        );
      }
      assertEnqueueOptions(
        options ?? {},
        {
          jobName: name,
          queues: job.queues,
          dedupeWindowMs: input.dedupeWindowMs ?? DEFAULT_DEDUPE_WINDOW_MS,
        },
        `ctx.enqueue(${name}): invalid options`,
      );
      return input.enqueue(name, data, options);
    },
  };
}
