/**
 * The metrics a command owns: a registry for the process, the scrape-time collectors of
 * fleet-wide state (dead letters, outbox, queue depth) and, for workers, the small HTTP server on
 * `ONCEQ_METRICS_PORT`. `onceq start` owns one set and lends it to both of its halves, so one
 * `/metrics` covers the API and the worker.
 */
import type { Logger } from 'pino';
import { createMetrics, type Metrics } from '../metrics/metrics.js';
import { addStateCollectors } from '../metrics/state-collectors.js';
import { startMetricsServer, type MetricsServer } from '../metrics/server.js';
import { ConfigError } from '../core/errors.js';
import { pingDatabase } from '../db/create-db.js';
import type { Runtime } from './runtime.js';
import type { QueuePartitions } from '../core/queue-partitions.js';

/** Options of {@link openMetrics}. */
export interface OpenMetricsOptions {
  /** Added as the `component` label of every series (`api`, `worker`, `start`). */
  component: string;
  /** Work queues whose depth (and whose dead-letter queues' depth) is reported. */
  queues: readonly string[];
  /** Partition counts of those queues (the registry's `partitions()`). @defaultValue none */
  partitions?: QueuePartitions;
  /** Serve `/metrics`, `/healthz` and `/readyz` on this port. @defaultValue no server */
  port?: number;
  /**
   * Collect into these, made before the connections (a worker's observer needs them when the
   * worker is created). @defaultValue new metrics
   */
  metrics?: Metrics;
}

/** What the metrics read from: the command's config, logger and connections. */
export type MetricsRuntime = Pick<Runtime, 'config' | 'logger' | 'db' | 'backend'>;

/** Metrics owned by a command; `close()` stops the server and the collectors. */
export interface OwnedMetrics {
  metrics: Metrics;
  server: MetricsServer | undefined;
  close(): Promise<void>;
}

/** Creates the metrics, their collectors and (with a port) their server. */
export async function openMetrics(
  runtime: MetricsRuntime,
  options: OpenMetricsOptions,
): Promise<OwnedMetrics> {
  const { config, logger } = runtime;
  const metrics = options.metrics ?? createCommandMetrics(options.component, logger);
  const removeCollectors = addStateCollectors(metrics, {
    db: runtime.db,
    backend: runtime.backend,
    queues: options.queues,
    partitions: options.partitions,
  });
  let server: MetricsServer | undefined;
  try {
    if (options.port !== undefined) {
      server = await startMetricsServer({
        metrics,
        port: options.port,
        host: config.host,
        logger,
        ready: async () => {
          await Promise.all([runtime.backend.ping(), pingDatabase(runtime.db)]);
          return true;
        },
      });
      logger.info({ address: `${server.address}/metrics` }, 'metrics listening');
    }
  } catch (err) {
    await removeCollectors();
    const code = (err as NodeJS.ErrnoException)?.code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
      throw new ConfigError([
        `ONCEQ_METRICS_PORT=${options.port}: cannot listen on ${config.host}:${options.port} (${code}); ` +
          'pick a free port, or 0 for any',
      ]);
    }
    throw err;
  }
  return {
    metrics,
    server,
    async close() {
      await server?.close();
      await removeCollectors();
    },
  };
}

/** The metrics of a command, labelled with its component. */
export function createCommandMetrics(component: string, logger: Logger): Metrics {
  return createMetrics({
    labels: { component },
    onCollectError: (name, err) => logCollectError(logger, name, err),
  });
}

function logCollectError(logger: Logger, name: string, err: unknown): void {
  logger.warn(
    { collector: name, err: (err as Error)?.message ?? String(err) },
    'metrics collector failed',
  );
}
