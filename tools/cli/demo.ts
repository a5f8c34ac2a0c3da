/**
 * `onceq demo`: parses the flags and runs tools/demo/demo.ts; exit 0 only when the invariants hold.
 */
import { loadConfig } from '../../src/config.js';
import { parseDuration } from '../../src/core/duration.js';
import { runDemo } from '../demo/demo.js';

/** Flags of `onceq demo` (commander hands them over as strings). */
export interface DemoFlags {
  url?: string;
  key?: string;
  accounts?: string;
  transfers?: string;
  repeat?: string;
  duplicate?: string;
  workers?: string;
  kills?: string;
  concurrency?: string;
  lockDuration?: string;
  timeout?: string;
  progress?: boolean;
}

/** Runs the demo; returns the exit code. */
export async function runDemoCommand(flags: DemoFlags): Promise<number> {
  const config = loadConfig();
  const problems: string[] = [];
  const int = (name: string, value: string | undefined, min: number, max: number) => {
    if (value === undefined) return undefined;
    if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      problems.push(`--${name} ${value}: expected an integer from ${min} to ${max}`);
    }
    return Number(value);
  };
  const share = (name: string, value: string | undefined) => {
    if (value === undefined) return undefined;
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0 || n > 1) problems.push(`--${name} ${value}: expected 0 to 1`);
    return n;
  };
  const duration = (name: string, value: string | undefined) => {
    if (value === undefined) return undefined;
    const ms = parseDuration(value);
    if (ms === undefined) problems.push(`--${name} ${value}: expected a duration such as 90s`);
    return ms;
  };
  const options = {
    url: flags.url ?? config.apiUrl,
    key: flags.key ?? config.apiKey,
    accounts: int('accounts', flags.accounts, 2, 10_000),
    transfers: int('transfers', flags.transfers, 0, 10_000_000),
    repeatShare: share('repeat', flags.repeat),
    duplicateShare: share('duplicate', flags.duplicate),
    workers: int('workers', flags.workers, 1, 64),
    kills: int('kills', flags.kills, 0, 100),
    concurrency: int('concurrency', flags.concurrency, 1, 1_000),
    lockDuration: flags.lockDuration,
    settleTimeoutMs: duration('timeout', flags.timeout),
    progress: flags.progress,
  };
  if (flags.lockDuration !== undefined) duration('lock-duration', flags.lockDuration);
  if (problems.length > 0) {
    process.stderr.write(`onceq demo: ${problems.join('; ')}\n`);
    return 2;
  }
  const report = await runDemo(config, options);
  return report.invariantsHold ? 0 : 1;
}
