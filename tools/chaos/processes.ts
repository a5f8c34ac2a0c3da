/**
 * The campaign's child processes: the real `onceq api` and `onceq worker` commands and a private
 * `redis-server`, each supervised so the nemesis can kill, pause and restart them, and so a
 * process that dies on its own (a crash the nemesis did not ask for) is recorded and restarted.
 */
import { fileURLToPath } from 'node:url';
import type { Writable } from 'node:stream';
import type { HistoryWriter, ProcessEvent } from './history.js';
import { ErrorCode, OnceqError } from '../../src/core/errors.js';
import { sleep, spawnChild, type Child } from '../support/child.js';

/**
 * How to run the `onceq` CLI as a child: from the sources through tsx when this module runs from
 * the sources (tests, `npm run onceq`), from the compiled file otherwise (`bin/onceq.js`).
 */
export function cliCommand(): { command: string; args: string[] } {
  const fromSources = import.meta.url.endsWith('.ts');
  const entry = fileURLToPath(new URL(`../cli.${fromSources ? 'ts' : 'js'}`, import.meta.url));
  return {
    command: process.execPath,
    args: fromSources ? ['--import', 'tsx', entry] : [entry],
  };
}

/** Path of a sibling module of this one, `.ts` or `.js` as this module is. */
export function siblingModule(name: string): string {
  const ext = import.meta.url.endsWith('.ts') ? 'ts' : 'js';
  return fileURLToPath(new URL(`./${name}.${ext}`, import.meta.url));
}

/** `url` with `application_name` set, so `pg_stat_activity` tells the children apart. */
export function withApplicationName(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.searchParams.set('application_name', name);
  return parsed.toString();
}

/** Options of {@link ManagedProcess}. */
export interface ManagedProcessOptions {
  /** Name in the history and the log (`api`, `worker-1`, `redis`). */
  name: string;
  command: string;
  args: string[];
  env: Record<string, string>;
  /** Output that means the process is ready. */
  readyText: string;
  /** Receives the children's output, one prefixed line at a time. */
  log?: Writable;
  history?: HistoryWriter;
  /** Called with every line the process writes (stdout and stderr). */
  onLine?: (line: string) => void;
  /** How long to wait for `readyText` per start attempt. @defaultValue 30 s */
  startTimeoutMs?: number;
}

/** A supervised child: started, killed, paused, restarted by the nemesis; restarted if it dies. */
export class ManagedProcess {
  private child: Child | undefined;
  private exited: Promise<void> = Promise.resolve();
  private expectExit = false;
  private stopping = false;
  private starting: Promise<void> | undefined;
  /** True while SIGSTOPped. */
  paused = false;
  /** Exits the nemesis did not cause. */
  crashes = 0;
  /** Successful starts. */
  starts = 0;
  /** The last start failed because the command does not exist. */
  private notInstalled = false;

  constructor(readonly options: ManagedProcessOptions) {}

  get name(): string {
    return this.options.name;
  }

  get pid(): number | undefined {
    return this.child?.process.pid;
  }

  /** Running (maybe paused) and ready. */
  get running(): boolean {
    return this.child?.running() ?? false;
  }

  /** Starts the process and resolves once it is ready; retries a start that fails, until stopped. */
  start(): Promise<void> {
    if (this.running && !this.starting) return Promise.resolve();
    this.starting ??= this.startLoop().finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async startLoop(): Promise<void> {
    for (let attempt = 1; !this.stopping; attempt++) {
      if (await this.startOnce()) return;
      // A program that is not installed will not appear by retrying: say so once, clearly
      // (a checkout on a machine without redis-server).
      if (this.notInstalled) {
        throw new OnceqError(
          ErrorCode.ConfigInvalid,
          `chaos: cannot start ${this.options.name}: \`${this.options.command}\` is not ` +
            `installed or not on PATH; the campaign runs a private ${this.options.name} of its ` +
            `own, so run it where that program is installed`,
        );
      }
      await sleep(Math.min(500 * attempt, 3_000));
    }
  }

  private async startOnce(): Promise<boolean> {
    const { options } = this;
    this.expectExit = false;
    const child = spawnChild({
      name: options.name,
      command: options.command,
      args: options.args,
      env: options.env,
      // A campaign runs for minutes: keep only what an error message needs.
      keepChars: 16_384,
      onLine:
        options.log || options.onLine
          ? (line, stream) => {
              options.log?.write(`[${options.name}${stream === 'stderr' ? '!' : ''}] ${line}\n`);
              options.onLine?.(line);
            }
          : undefined,
    });
    this.child = child;
    this.paused = false;
    let ready = false;
    this.exited = child.exited.then(({ code, signal }) => {
      const expected = this.expectExit || this.stopping;
      if (child.spawnError()?.code === 'ENOENT') this.notInstalled = true;
      options.history?.write<ProcessEvent>({
        type: 'process',
        name: options.name,
        event: 'exited',
        pid: child.process.pid,
        code,
        signal,
        expected,
      });
      if (this.child === child) this.child = undefined;
      if (ready && !expected) {
        // A crash: restart it, as an operator's supervisor would.
        this.crashes++;
        void sleep(500).then(() => {
          if (!this.stopping && !this.child) void this.start();
        });
      }
    });
    try {
      await child.waitFor(options.readyText, options.startTimeoutMs ?? 30_000);
    } catch {
      // Not ready in time (or exited first): a start that failed, retried by startLoop.
      await child.kill();
      await this.exited;
      return false;
    }
    ready = true;
    this.starts++;
    options.history?.write<ProcessEvent>({
      type: 'process',
      name: options.name,
      event: 'started',
      pid: child.process.pid,
    });
    return true;
  }

  /** Sends a signal; SIGKILL and SIGTERM wait for the exit. */
  async signal(signal: NodeJS.Signals): Promise<void> {
    // A start in progress finishes first: a kill must hit a running process.
    if (this.starting) await this.starting;
    const child = this.child;
    if (!child || !this.running) return;
    if (signal === 'SIGSTOP' || signal === 'SIGCONT') {
      child.signal(signal);
      this.paused = signal === 'SIGSTOP';
      return;
    }
    this.expectExit = true;
    if (this.paused) child.signal('SIGCONT');
    child.signal(signal);
    await this.exited;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; no restart afterwards. */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping = true;
    // A process still starting is not worth a graceful stop.
    if (this.starting) await this.destroy();
    const child = this.child;
    if (!child || !this.running) return;
    this.expectExit = true;
    await child.stop(graceMs);
    await this.exited;
  }

  /** SIGKILL at once; no restart afterwards (after-hooks, aborted runs). */
  async destroy(): Promise<void> {
    this.stopping = true;
    this.expectExit = true;
    await this.child?.destroy();
    await this.starting?.catch(() => undefined);
    await this.exited;
  }
}
