/**
 * The worker's small HTTP server (`ONCEQ_METRICS_PORT`): `GET /metrics` for Prometheus,
 * `GET /healthz` (the process is up) and `GET /readyz` (its services answer) for orchestrators.
 * Unauthenticated, like any exporter: bind it to a private network. It reads; it never changes
 * anything.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Metrics } from './metrics.js';

/** Options of {@link startMetricsServer}. */
export interface MetricsServerOptions {
  metrics: Metrics;
  /** `0` picks a free port. */
  port: number;
  /** @defaultValue `0.0.0.0` */
  host?: string;
  /** Readiness probe. @defaultValue always ready */
  ready?: () => Promise<boolean>;
  logger?: Logger;
}

/** A listening metrics server. */
export interface MetricsServer {
  /** `http://host:port`. */
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Starts listening; rejects when the port cannot be bound (a clear error beats no metrics). */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const { metrics, logger } = options;
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(405, 'text/plain', 'method not allowed\n');
      return;
    }
    if (path === '/metrics') {
      metrics.text().then(
        (text) => send(200, metrics.contentType, text),
        (err) => {
          logger?.error({ err }, 'metrics scrape failed');
          send(500, 'text/plain', 'metrics unavailable\n');
        },
      );
    } else if (path === '/healthz') {
      send(200, 'application/json', '{"status":"ok"}');
    } else if (path === '/readyz') {
      (options.ready ?? (() => Promise.resolve(true)))().then(
        (ready) =>
          send(
            ready ? 200 : 503,
            'application/json',
            JSON.stringify({ status: ready ? 'ready' : 'unavailable' }),
          ),
        () => send(503, 'application/json', '{"status":"unavailable"}'),
      );
    } else {
      send(404, 'text/plain', 'not found: try /metrics\n');
    }
  });
  // Scrapers keep connections alive; closing must not wait for them.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '0.0.0.0', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { address, port } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  return {
    address: `http://${host}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
