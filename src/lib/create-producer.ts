/**
 * `createProducer`: enqueue messages of exactly the given jobs, from one options object, as
 * `onceq api` and `onceq enqueue` do. It leases a worker id before it resolves (message ids are
 * minted under it), so the first `enqueue` does not wait for one.
 */
import type { RedisClient } from '../redis/connection.js';
import type { Backend } from '../queues/backend.js';
import type { Db } from '../db/create-db.js';
import { createIdService, type IdService } from '../ids/id-service.js';
import {
  createProducer as createCoreProducer,
  type EnqueueOptions as CoreEnqueueOptions,
  type EnqueueResult,
  type IssueTokensOptions as CoreIssueTokensOptions,
  type Producer as CoreProducer,
} from '../producer/producer.js';
import type { IssuedToken } from '../redis/token-store.js';
import type { JobData, JobDefinition } from '../jobs/define-job.js';
import { openConnections } from './connections.js';
import { assertNoLegacyWorkerIdLeases } from '../ids/legacy-lease-check.js';
import { buildRegistry } from './create-worker.js';
import {
  resolveProducerOptions,
  type ProducerOptions,
  type ResolvedProducerOptions,
} from './options.js';

/**
 * Options of one {@link Producer.enqueue}.
 * @interface
 */
export type EnqueueOptions = Omit<CoreEnqueueOptions, 'principal'>;
/**
 * Options of {@link Producer.issueTokens}.
 * @interface
 */
export type IssueTokensOptions = Omit<CoreIssueTokensOptions, 'principal'>;

/**
 * The job of `Jobs` called `Name`; all of them when their names are not known to the type
 * system (jobs given as a `JobDefinition[]`), whose data is then checked at run time only.
 */
export type JobNamed<Jobs extends JobDefinition, Name extends string> = string extends Jobs['name']
  ? Jobs
  : Extract<
      Jobs,
      {
        /** The name to match. */
        readonly name: Name;
      }
    >;

/**
 * A producer of the jobs `Job` (a union of job definitions): `enqueue` takes only their names,
 * each with its own data type.
 */
export interface Producer<Job extends JobDefinition = JobDefinition> {
  /**
   * Validates `data` against the job's schema and enqueues one message. Retrying with the same
   * `token` and the same request, after any failure, never makes a second message: the retry
   * gets the first answer (`replayed: true`).
   */
  enqueue<Name extends Job['name']>(
    name: Name,
    data: JobData<JobNamed<Job, Name>>,
    options?: EnqueueOptions,
  ): Promise<EnqueueResult>;
  /** Issues one token, for a caller that retries `enqueue` with it. */
  issueToken(): Promise<string>;
  /** Issues up to 100 tokens at once, each with its expiry. */
  issueTokens(options?: IssueTokensOptions): Promise<IssuedToken[]>;
  /** Closes the producer's queues, releases its worker id and closes the connections onceq opened. */
  close(): Promise<void>;
}

/** What the CLI adds to a producer. */
export interface ProducerHooks {
  /** `application_name` of the sessions. @defaultValue `onceq-producer` */
  name?: string;
  /** Give up on an unreachable Redis instead of waiting (short CLI commands). */
  failFast?: boolean;
}

/** A producer with what the CLI needs of it (the HTTP API runs on these). */
export interface OpenProducer {
  readonly producer: Producer;
  readonly core: CoreProducer;
  readonly ids: IdService;
  readonly options: ResolvedProducerOptions;
  readonly db: Db;
  /** `undefined` in PostgreSQL-only mode. */
  readonly redis: RedisClient | undefined;
  readonly backend: Backend;
}

/**
 * Creates a producer. Resolves once Redis and PostgreSQL answered and a worker id is leased;
 * rejects with a `ConfigError` listing every bad option, or with a `ServiceUnreachableError`.
 *
 * ```ts
 * const producer = await createProducer({ redis: 'redis://127.0.0.1:6379', database: url, jobs: [addNote] });
 * const { messageId } = await producer.enqueue('note.add', { body: 'hi' }, { token });
 * ```
 */
export async function createProducer<const Jobs extends readonly JobDefinition[]>(
  options: ProducerOptions<Jobs>,
): Promise<Producer<Jobs[number]>> {
  // The jobs' types are the caller's; at run time the registry checks names and data anyway.
  return (await openProducer(options)).producer as Producer<Jobs[number]>;
}

/** `createProducer` with the CLI's hooks; the one path both take. */
export async function openProducer(
  input: ProducerOptions,
  hooks: ProducerHooks = {},
): Promise<OpenProducer> {
  const options = resolveProducerOptions(input);
  const registry = buildRegistry(options.jobs, 'createProducer');
  const connections = await openConnections(options, {
    name: hooks.name ?? 'onceq-producer',
    failFast: hooks.failFast,
  });
  const log = options.logger;
  let ids: IdService;
  try {
    if (connections.redis) await assertNoLegacyWorkerIdLeases(connections.redis, options.prefix);
    ids = await createIdService(connections.db, {
      onLost: (event) => log?.warn(event, 'worker id lost; leasing another'),
      onReacquired: (event) => log?.info(event, 'worker id leased again'),
    });
  } catch (err) {
    await connections.close().catch(() => undefined);
    throw err;
  }
  const core = createCoreProducer({
    db: connections.db,
    backend: connections.backend,
    registry,
    ids,
    principal: options.principal,
    tokenTtlMs: options.tokenTtlMs,
    maxOutstandingTokens: options.maxUnusedTokens,
    maxAttempts: options.maxAttempts,
    dedupeWindowMs: options.dedupeWindowMs,
  });
  let closing: Promise<void> | undefined;
  const producer: Producer = {
    // Without `principal`: a library producer enqueues as itself only.
    enqueue: (name, data, opts = {}) =>
      core.enqueue(name, data, {
        token: opts.token,
        queue: opts.queue,
        delay: opts.delay,
        priority: opts.priority,
      }),
    issueToken: () => core.issueToken(),
    issueTokens: (opts = {}) => core.issueTokens({ count: opts.count }),
    close() {
      closing ??= (async () => {
        try {
          await core.close();
        } finally {
          await ids.close();
          await connections.close();
        }
      })();
      return closing;
    },
  };
  return {
    producer,
    core,
    ids,
    options,
    db: connections.db,
    redis: connections.redis,
    backend: connections.backend,
  };
}
