/**
 * `onceq`: the public API, and all of it (DESIGN.md section 9). Define jobs with `defineJob`,
 * run them with `createWorker`, send them with `createProducer`, and create onceq's tables with
 * `migrateToLatest` (or hand `migrations` to your own Kysely Migrator). Nothing here reads
 * `process.env`, registers a job it was not given, or holds global state.
 */
export { defineJob, DEFAULT_QUEUE } from './jobs/define-job.js';
export { MAX_PARTITIONS } from './core/queue-partitions.js';
export type {
  AnyDatabase,
  DefineJob,
  FollowUpOptions,
  InsertOnceOptions,
  JobContext,
  JobData,
  JobDefinition,
  JobSpec,
} from './jobs/define-job.js';
export type { ClusterNode } from './core/cluster-nodes.js';
export type { MessageTransaction } from './db/message-transaction.js';

export { createWorker } from './lib/create-worker.js';
export type { Worker } from './lib/create-worker.js';
export { createProducer } from './lib/create-producer.js';
export type {
  EnqueueOptions,
  IssueTokensOptions,
  JobNamed,
  Producer,
} from './lib/create-producer.js';
export type { EnqueueResult } from './producer/producer.js';
export type { IssuedToken } from './redis/token-store.js';
export { migrateToLatest, migrations } from './lib/migrate.js';
export type {
  ConnectionOptions,
  GroupCommitOptions,
  MigrateOptions,
  OutboxOptions,
  ProducerOptions,
  PrunerOptions,
  ReconcilerOptions,
  WorkerOptions,
} from './lib/options.js';

export {
  ConfigError,
  EnqueueOptionsError,
  ErrorCode,
  IdGeneratorStoppedError,
  InvalidArgumentError,
  NonRetryableError,
  OnceqError,
  ServiceUnreachableError,
  TokenLimitError,
  TokenMismatchError,
  ValidationError,
  VersionConflictError,
  WorkerIdUnavailableError,
} from './core/errors.js';
export type { FieldError } from './core/errors.js';
export { NestedTransactionError } from './db/message-transaction.js';

// Traces: onceq's spans go to whatever OpenTelemetry SDK the application registers (none by
// default); this puts their ids on the application's own pino lines: `pino({ mixin: traceLogFields })`.
export { traceLogFields } from './telemetry/log-fields.js';
export type { TraceLogFields } from './telemetry/log-fields.js';
