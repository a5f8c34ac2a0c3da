/**
 * `onceq chaos`: a randomized fault campaign against real processes, checked afterwards (see
 * tools/chaos/run.ts). Prints a progress line while it runs and a report at the end; exits 0 only
 * when the checker finds the run valid.
 */
import { randomInt } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { loadConfig } from '../../src/config.js';
import { parseDuration } from '../../src/core/duration.js';
import { runCampaign } from '../chaos/run.js';
import { formatReport } from '../chaos/report.js';
import { parseFaultList } from '../chaos/schedule.js';

/** Flags of `onceq chaos`, as commander hands them over. */
export interface ChaosCommandOptions {
  seed?: string;
  duration: string;
  workers: string;
  rate: string;
  backend: string;
  redisCluster?: boolean;
  faults: string;
  history?: string;
  lockDuration: string;
  drainTimeout: string;
  keepSchema: string;
  json?: string;
}

/** Runs a campaign; returns the exit code. */
export async function runChaos(opts: ChaosCommandOptions): Promise<number> {
  const problems: string[] = [];
  const int = (flag: string, text: string, min: number, max: number): number => {
    const n = Number(text);
    if (!/^\d+$/.test(text) || n < min || n > max) {
      problems.push(`${flag} ${text}: expected an integer from ${min} to ${max}`);
    }
    return n;
  };
  const duration = (flag: string, text: string): number => {
    const ms = parseDuration(text);
    if (ms === undefined || ms < 1_000) {
      problems.push(`${flag} ${text}: expected a duration such as 60s or 10m`);
      return 0;
    }
    return ms;
  };
  const seed =
    opts.seed === undefined ? randomInt(1, 2 ** 31) : int('--seed', opts.seed, 0, 2 ** 32 - 1);
  const durationMs = duration('--duration', opts.duration);
  const workers = int('--workers', opts.workers, 1, 32);
  const rate = int('--rate', opts.rate, 1, 10_000);
  const lockDurationMs = duration('--lock-duration', opts.lockDuration);
  const drainTimeoutMs = duration('--drain-timeout', opts.drainTimeout);
  const backend = opts.backend === 'postgres' ? 'postgres' : 'redis';
  if (opts.backend !== 'redis' && opts.backend !== 'postgres') {
    problems.push(`--backend ${opts.backend}: expected redis or postgres`);
  }
  const redisCluster = opts.redisCluster === true;
  if (redisCluster && backend === 'postgres') {
    problems.push('--redis-cluster: the postgres backend runs without Redis');
  }
  let faults: ReturnType<typeof parseFaultList> = [];
  try {
    faults = parseFaultList(opts.faults, backend, redisCluster);
  } catch (err) {
    problems.push(`--faults: ${(err as Error).message}`);
  }
  if (!['always', 'never', 'invalid'].includes(opts.keepSchema)) {
    problems.push(`--keep-schema ${opts.keepSchema}: expected always, never or invalid`);
  }
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(`onceq chaos: ${p}\n`);
    return 2;
  }

  const config = loadConfig();
  const historyFile = opts.history ?? `chaos-${seed}.history.jsonl`;
  const tty = process.stderr.isTTY;
  let lastPrinted = 0;
  const abort = new AbortController();
  const onSignal = () => {
    process.stderr.write('\nonceq chaos: stopping the workload; healing, draining, checking\n');
    abort.abort();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.stderr.write(
    `onceq chaos: seed ${seed}, ` +
      `${backend === 'postgres' ? 'PostgreSQL-only mode' : redisCluster ? 'Redis mode on a Redis Cluster (3 masters, 3 replicas)' : 'Redis mode'}, ` +
      `${durationMs / 1_000} s, ${workers} workers, ${rate} ops/s, ` +
      `faults ${faults.join(',') || 'none'}; history ${historyFile}\n`,
  );
  try {
    const report = await runCampaign({
      seed,
      durationMs,
      workers,
      rate,
      faults,
      backend,
      redisCluster,
      historyFile,
      databaseUrl: config.databaseUrl,
      lockDurationMs,
      drainTimeoutMs,
      keepSchema: opts.keepSchema as 'always' | 'never' | 'invalid',
      signal: abort.signal,
      onProgress(line, final) {
        if (tty) {
          process.stderr.write(`\r\x1b[2K${line}${final ? '\n' : ''}`);
        } else if (final || Date.now() - lastPrinted >= 5_000) {
          lastPrinted = Date.now();
          process.stderr.write(`${line}\n`);
        }
      },
    });
    process.stdout.write(`${formatReport(report)}\n`);
    if (opts.json) writeFileSync(opts.json, `${JSON.stringify(report, null, 2)}\n`);
    return report.valid ? 0 : 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
