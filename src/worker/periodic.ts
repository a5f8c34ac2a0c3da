/**
 * A background task run every `intervalMs` (with jitter, so a fleet started at once spreads
 * out), or sooner when nudged. One run at a time per task; `close()` stops the loop and waits
 * for the run in progress. Errors are logged and the next run tries again.
 */
import type { Logger } from 'pino';

/** Options of {@link startPeriodic}. */
export interface PeriodicOptions {
  name: string;
  intervalMs: number;
  run: () => Promise<unknown>;
  /** Delay before the first run. @defaultValue a random part of `intervalMs` */
  firstRunMs?: number;
  logger?: Logger;
}

/** A running task. */
export interface PeriodicTask {
  /** Runs again as soon as the current run (if any) ends. */
  nudge(): void;
  close(): Promise<void>;
}

/** Starts the loop. */
export function startPeriodic(options: PeriodicOptions): PeriodicTask {
  let closed = false;
  let nudged = false;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      wake = resolve;
      timer = setTimeout(resolve, ms);
    }).finally(() => {
      clearTimeout(timer);
      wake = undefined;
    });

  const loop = (async () => {
    await sleep(options.firstRunMs ?? Math.floor(Math.random() * options.intervalMs));
    while (!closed) {
      nudged = false;
      try {
        await options.run();
      } catch (err) {
        options.logger?.warn({ err, task: options.name }, 'background task failed; will retry');
      }
      if (closed) break;
      if (!nudged) await sleep(options.intervalMs * (0.8 + Math.random() * 0.4));
    }
  })();

  return {
    nudge() {
      nudged = true;
      wake?.();
    },
    async close() {
      closed = true;
      wake?.();
      await loop;
    },
  };
}
