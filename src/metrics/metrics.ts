/**
 * Prometheus metrics of one onceq process, on a registry of its own (never prom-client's global
 * one), so that several workers and APIs can live in one process (tests, `onceq start`) without
 * counting into each other.
 *
 * Two kinds of figures:
 * - per process, counted as things happen: jobs by outcome, claim results, handler and
 *   end-to-end latency, reconciler passes, Node's default metrics;
 * - fleet-wide state, read at scrape time by collectors (see state-collectors.ts): dead-letter
 *   depth, outbox lag, queue depth. Every process that has the collector reports the same value,
 *   so aggregate these with `max`, not `sum`.
 *
 * Code that owns a piece of state plugs it in with {@link Metrics.addCollector} (read at scrape)
 * or an `observe*` call (pushed as it happens); nothing here does I/O of its own.
 */
import {
  collectDefaultMetrics,
  Counter,
  Gauge,
  Histogram,
  Registry,
  type LabelValues,
} from 'prom-client';
import { snowflakeTimeMs, isSnowflake } from '../core/snowflake.js';

/** The outcomes `onceq_jobs_total` counts (DESIGN.md section 4; the ledger's result statuses). */
export const JOB_OUTCOMES = [
  'applied',
  'duplicate',
  'conflict',
  'rejected',
  'retried',
  'dead',
] as const;
export type JobOutcome = (typeof JOB_OUTCOMES)[number];

/** Results of the token claim (DESIGN.md section 2, step 2). */
export const CLAIM_RESULTS = ['claimed', 'done', 'busy'] as const;
export type ClaimResult = (typeof CLAIM_RESULTS)[number];

/** Handler run time buckets, seconds: most handlers are a few statements. */
export const HANDLER_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];
/** Enqueue-to-completion buckets, seconds: from a busy queue's milliseconds to retries' hours. */
export const END_TO_END_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600,
];
/** How long one collector may take at a scrape before it is skipped (its gauges keep old values). */
export const COLLECT_TIMEOUT_MS = 2_000;

/** What a reconciler pass reports to {@link Metrics.observeReconcilerPass}. */
export interface ReconcilerPassReport {
  /** False when another process held the reconciler lock (nothing is recorded). */
  ran: boolean;
  /** Accepted messages found with neither an inbox row nor a dead letter. */
  unsettled?: number;
  reenqueued?: number;
  deadLettered?: number;
  /**
   * The oldest accepted message the pass found still unsettled (its id carries its age), or
   * undefined when every message up to the grace boundary is settled.
   */
  oldestUnsettledMessageId?: string;
  /** When the pass ended. @defaultValue now */
  at?: number;
}

/** A function that refreshes gauges at scrape time; it must not throw for long-lived reasons. */
export type Collector = () => Promise<void>;

/** Options of {@link createMetrics}. */
export interface MetricsOptions {
  /** Node's default metrics (`process_*`, `nodejs_*`). @defaultValue true */
  defaultMetrics?: boolean;
  /** Labels added to every series, e.g. `{ component: 'worker' }`. @defaultValue none */
  labels?: Record<string, string>;
  /** Reports collector failures (the scrape goes on without them). */
  onCollectError?: (name: string, err: unknown) => void;
}

/** The metrics of one process. */
export interface Metrics {
  readonly registry: Registry;
  /** `onceq_jobs_total{queue,outcome}`: deliveries by outcome. */
  readonly jobs: Counter<'queue' | 'outcome'>;
  /** `onceq_claims_total{queue,result}`: token claim results. */
  readonly claims: Counter<'queue' | 'result'>;
  /** `onceq_handler_duration_seconds{queue,job}`: one handler run inside its transaction. */
  readonly handlerSeconds: Histogram<'queue' | 'job'>;
  /** `onceq_job_end_to_end_seconds{queue,outcome}`: enqueue (job timestamp) to completion. */
  readonly endToEndSeconds: Histogram<'queue' | 'outcome'>;
  /** `onceq_dead_letters{queue,reason}`: dead letters not yet replayed or purged. */
  readonly deadLetters: Gauge<'queue' | 'reason'>;
  /** `onceq_outbox_messages`: follow-ups committed and not yet relayed to BullMQ. */
  readonly outboxMessages: Gauge;
  /** `onceq_outbox_lag_seconds`: age of the oldest follow-up waiting in the outbox (0: empty). */
  readonly outboxLagSeconds: Gauge;
  /** `onceq_queue_jobs{queue,state}`: BullMQ job counts of the work and dead-letter queues. */
  readonly queueJobs: Gauge<'queue' | 'state'>;
  /** `onceq_reconciler_lag_seconds`: age of the oldest unsettled message the last pass saw. */
  readonly reconcilerLagSeconds: Gauge;
  /** `onceq_reconciler_last_pass_timestamp_seconds`: end of the last pass this process ran. */
  readonly reconcilerLastPass: Gauge;
  /** `onceq_reconciler_messages_total{action}`: re-enqueued and dead-lettered by the reconciler. */
  readonly reconcilerMessages: Counter<'action'>;
  /** `onceq_http_request_duration_seconds{method,route,status}`: API requests (the API only). */
  readonly httpSeconds: Histogram<'method' | 'route' | 'status'>;
  /** `onceq_tokens_issued_total`: idempotency tokens `POST /v1/tokens` issued (the API only). */
  readonly tokensIssued: Counter;
  /**
   * `onceq_auth_failures_total{result}`: requests with a well-formed API key that failed
   * (`unauthorized`: unknown, revoked or wrong; 401) and requests refused because their address
   * failed too often (`refused`; 429). The API only.
   */
  readonly authFailures: Counter<'result'>;
  /** Count a delivery's outcome. */
  recordJob(queue: string, outcome: JobOutcome): void;
  /** Count a claim result. */
  recordClaim(queue: string, result: ClaimResult): void;
  /** Record what a reconciler pass did (the reconciler calls this after each pass). */
  observeReconcilerPass(report: ReconcilerPassReport): void;
  /**
   * Runs `collect` at every scrape (all collectors of a scrape run once, concurrently, each
   * bounded by {@link COLLECT_TIMEOUT_MS}). Returns a function that removes it.
   */
  addCollector(name: string, collect: Collector): () => void;
  /** The exposition text, after running the collectors. */
  text(): Promise<string>;
  /** The Content-Type of {@link text}. */
  readonly contentType: string;
}

/** Creates the metrics of a process, on a new registry. */
export function createMetrics(options: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  if (options.labels) registry.setDefaultLabels(options.labels);
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const collectors = new Map<string, Collector>();
  const collectErrors = new Counter({
    name: 'onceq_metrics_collect_errors_total',
    help: 'Scrape-time collectors that failed or timed out (their gauges keep their last values)',
    labelNames: ['collector'],
    registers,
  });
  // Every gauge read at scrape time asks for a refresh; the first one runs the collectors and
  // the others share that run, so one scrape runs each collector once.
  let refreshing: Promise<void> | undefined;
  const refresh = (): Promise<void> =>
    (refreshing ??= runCollectors().finally(() => {
      refreshing = undefined;
    }));
  async function runCollectors(): Promise<void> {
    await Promise.all(
      [...collectors].map(async ([name, collect]) => {
        let timer: NodeJS.Timeout | undefined;
        try {
          await Promise.race([
            collect(),
            new Promise((_, reject) => {
              timer = setTimeout(
                () => reject(new Error(`timed out after ${COLLECT_TIMEOUT_MS} ms`)),
                COLLECT_TIMEOUT_MS,
              );
            }),
          ]);
        } catch (err) {
          collectErrors.inc({ collector: name });
          options.onCollectError?.(name, err);
        } finally {
          clearTimeout(timer);
        }
      }),
    );
  }
  const collect = async () => {
    await refresh();
  };

  const jobs = new Counter({
    name: 'onceq_jobs_total',
    help:
      'Deliveries by outcome: applied (committed), duplicate (already applied, stored result ' +
      'returned), conflict and rejected (committed with a conflict or rejected result), retried ' +
      '(failed, BullMQ retries), dead (dead-lettered)',
    labelNames: ['queue', 'outcome'],
    registers,
  });
  const claims = new Counter({
    name: 'onceq_claims_total',
    help:
      'Token claims: claimed (this delivery took the message), done (already applied: answered ' +
      'with the stored result), busy (another live owner: put back without spending an attempt)',
    labelNames: ['queue', 'result'],
    registers,
  });
  const handlerSeconds = new Histogram({
    name: 'onceq_handler_duration_seconds',
    help: 'One run of a job handler inside its transaction (re-runs after conflicts count apart)',
    labelNames: ['queue', 'job'],
    buckets: HANDLER_BUCKETS,
    registers,
  });
  const endToEndSeconds = new Histogram({
    name: 'onceq_job_end_to_end_seconds',
    help:
      'From the job being added to BullMQ to the delivery that completed it, retries and ' +
      'delays included',
    labelNames: ['queue', 'outcome'],
    buckets: END_TO_END_BUCKETS,
    registers,
  });
  const deadLetters = new Gauge({
    name: 'onceq_dead_letters',
    help: 'Dead letters neither replayed nor purged (fleet-wide: aggregate with max)',
    labelNames: ['queue', 'reason'],
    registers,
    collect,
  });
  const outboxMessages = new Gauge({
    name: 'onceq_outbox_messages',
    help: 'Follow-up messages committed and not yet relayed to BullMQ (fleet-wide)',
    registers,
    collect,
  });
  const outboxLagSeconds = new Gauge({
    name: 'onceq_outbox_lag_seconds',
    help: 'Age of the oldest follow-up waiting in the outbox, 0 when empty (fleet-wide)',
    registers,
    collect,
  });
  const queueJobs = new Gauge({
    name: 'onceq_queue_jobs',
    help: 'BullMQ jobs by queue and state, dead-letter queues included (fleet-wide)',
    labelNames: ['queue', 'state'],
    registers,
    collect,
  });
  let lastPassAt: number | undefined;
  let oldestUnsettledAt: number | undefined;
  const reconcilerLagSeconds = new Gauge({
    name: 'onceq_reconciler_lag_seconds',
    help:
      'Age of the oldest accepted message the last reconciler pass of this process found ' +
      'unsettled (no inbox row, no dead letter); 0 when none, and before its first pass',
    registers,
    collect() {
      if (lastPassAt === undefined) return;
      this.set(oldestUnsettledAt === undefined ? 0 : (Date.now() - oldestUnsettledAt) / 1000);
    },
  });
  const reconcilerLastPass = new Gauge({
    name: 'onceq_reconciler_last_pass_timestamp_seconds',
    help: 'When this process last finished a reconciler pass (one process at a time runs them)',
    registers,
  });
  const reconcilerMessages = new Counter({
    name: 'onceq_reconciler_messages_total',
    help: 'Accepted messages the reconciler re-enqueued (their jobs were gone) or dead-lettered',
    labelNames: ['action'],
    registers,
  });

  const httpSeconds = new Histogram({
    name: 'onceq_http_request_duration_seconds',
    help: 'Producer API requests by method, route pattern and status',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  });

  // No principal label: principals are as many as keys, and one series each would let key
  // creation grow the scrape without bound. Refusals show as 429s in the request histogram.
  const tokensIssued = new Counter({
    name: 'onceq_tokens_issued_total',
    help: 'Idempotency tokens issued by POST /v1/tokens (refused requests issue none)',
    registers,
  });

  const authFailures = new Counter({
    name: 'onceq_auth_failures_total',
    help:
      'API requests whose well-formed key failed (result=unauthorized: unknown, revoked or wrong) ' +
      'or that were refused before any lookup because their address failed too often ' +
      '(result=refused)',
    labelNames: ['result'],
    registers,
  });

  return {
    registry,
    httpSeconds,
    tokensIssued,
    authFailures,
    jobs,
    claims,
    handlerSeconds,
    endToEndSeconds,
    deadLetters,
    outboxMessages,
    outboxLagSeconds,
    queueJobs,
    reconcilerLagSeconds,
    reconcilerLastPass,
    reconcilerMessages,
    recordJob(queue, outcome) {
      jobs.inc({ queue, outcome } satisfies LabelValues<'queue' | 'outcome'>);
    },
    recordClaim(queue, result) {
      claims.inc({ queue, result });
    },
    observeReconcilerPass(report) {
      if (!report.ran) return;
      lastPassAt = report.at ?? Date.now();
      reconcilerLastPass.set(lastPassAt / 1000);
      const oldest = report.oldestUnsettledMessageId;
      oldestUnsettledAt = oldest && isSnowflake(oldest) ? snowflakeTimeMs(oldest) : undefined;
      if (report.reenqueued) reconcilerMessages.inc({ action: 'reenqueued' }, report.reenqueued);
      if (report.deadLettered) {
        reconcilerMessages.inc({ action: 'dead_lettered' }, report.deadLettered);
      }
    },
    addCollector(name, fn) {
      if (collectors.has(name)) throw new TypeError(`metrics collector ${name} is added twice`);
      collectors.set(name, fn);
      return () => void collectors.delete(name);
    },
    text: () => registry.metrics(),
    contentType: registry.contentType,
  };
}
