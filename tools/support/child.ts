/**
 * The one child-process harness of the repository: the tests' worker children
 * (test/support/child.ts), the demo's API and workers, and the chaos campaign's supervised
 * processes all spawn and observe their children here. It collects what a child writes, waits
 * for a text (failing as soon as the child exits instead of at a timeout), and ends a child by
 * SIGKILL, by SIGTERM with a grace period, or, in after-hooks, by SIGCONT and SIGKILL (a paused
 * child ignores everything but SIGKILL, and SIGCONT lets it die cleanly on later signals).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';

/** How a child ended: an exit code, or the signal that ended it. */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Options of {@link spawnChild}. */
export interface SpawnChildOptions {
  /** Name in error messages (`worker`, `api`, `worker-2`). */
  name: string;
  command: string;
  args: string[];
  /** The child's whole environment (nothing is inherited beyond it). */
  env: NodeJS.ProcessEnv;
  /** Working directory. @defaultValue this process's */
  cwd?: string;
  /** Called with every complete line the child writes, on either stream. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /**
   * Characters of output kept per stream and in total, the newest ones: a long-running child
   * (a ten-minute chaos campaign) must not grow without bound. A text is still found when it
   * arrives, whatever is dropped later. @defaultValue unlimited
   */
  keepChars?: number;
}

/** A spawned child process and what it wrote. */
export interface Child {
  readonly name: string;
  readonly process: ChildProcess;
  /** Everything the child wrote, stdout and stderr interleaved as they arrived. */
  output(): string;
  stdout(): string;
  stderr(): string;
  /** The last `lines` lines of output, for error messages. @defaultValue 40 */
  tail(lines?: number): string;
  /** Resolves once the child has exited and its streams are closed (also after a failed spawn). */
  readonly exited: Promise<ChildExit>;
  /** The error of a spawn that failed (`ENOENT`: the command is not installed). */
  spawnError(): NodeJS.ErrnoException | undefined;
  /** Not exited yet (maybe paused). */
  running(): boolean;
  /**
   * Resolves with the line holding the first occurrence of `text` in the output (at once when it
   * is there already); rejects when the child exits first or after `timeoutMs`. Leaves no timer.
   * @defaultValue timeoutMs 20 s
   */
  waitFor(text: string, timeoutMs?: number): Promise<string>;
  /** Sends a signal if the child still runs; returns at once. */
  signal(signal: NodeJS.Signals): void;
  /** SIGKILL now (a crash, as far as the child can tell), then waits for the exit. */
  kill(): Promise<ChildExit>;
  /** SIGCONT and SIGTERM, then SIGKILL after `graceMs`; waits for the exit. */
  stop(graceMs: number): Promise<ChildExit>;
  /** SIGCONT and SIGKILL (after-hooks, aborted runs), then waits for the exit. */
  destroy(): Promise<ChildExit>;
}

/** The line of `output` around index `at`. */
function lineAt(output: string, at: number): string {
  const start = output.lastIndexOf('\n', at) + 1;
  const end = output.indexOf('\n', at);
  return output.slice(start, end === -1 ? undefined : end).replace(/\r$/, '');
}

/** Spawns a child with piped stdout and stderr and starts collecting them. */
export function spawnChild(options: SpawnChildOptions): Child {
  const { name, keepChars = Infinity } = options;
  const child = spawn(options.command, options.args, {
    cwd: options.cwd,
    env: options.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const kept = { output: '', stdout: '', stderr: '' };
  const keep = (text: string) => (text.length > keepChars ? text.slice(-keepChars) : text);
  let spawnError: NodeJS.ErrnoException | undefined;
  const waiters = new Set<{ text: string; resolve: (line: string) => void }>();

  const onData = (stream: 'stdout' | 'stderr') => {
    let partial = '';
    return (chunk: Buffer) => {
      const text = chunk.toString();
      // Search the new text with enough of the old before it for a text split across chunks.
      const longest = Math.max(0, ...[...waiters].map((w) => w.text.length));
      const before = longest > 1 ? kept.output.slice(-(longest - 1)) : '';
      kept.output = keep(kept.output + text);
      kept[stream] = keep(kept[stream] + text);
      if (waiters.size > 0) {
        const searched = before + text;
        for (const w of [...waiters]) {
          const at = searched.indexOf(w.text);
          if (at === -1) continue;
          waiters.delete(w);
          // The line may have begun before `searched`: look it up in what is kept.
          const inKept = kept.output.length - searched.length + at;
          w.resolve(lineAt(inKept >= 0 ? kept.output : searched, inKept >= 0 ? inKept : at));
        }
      }
      if (options.onLine) {
        const lines = (partial + text).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) options.onLine(line.replace(/\r$/, ''), stream);
      }
    };
  };
  child.stdout!.on('data', onData('stdout'));
  child.stderr!.on('data', onData('stderr'));

  const exited = new Promise<ChildExit>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal }));
    child.on('error', (err: NodeJS.ErrnoException) => {
      // A failed spawn: no process, so no exit to wait for beyond this.
      if (child.pid === undefined) {
        spawnError = err;
        resolve({ code: null, signal: null });
      }
    });
  });
  const running = () =>
    spawnError === undefined && child.exitCode === null && child.signalCode === null;
  const signal = (sig: NodeJS.Signals) => {
    if (running()) child.kill(sig);
  };
  const tail = (lines = 40) => kept.output.split('\n').filter(Boolean).slice(-lines).join('\n');

  return {
    name,
    process: child,
    output: () => kept.output,
    stdout: () => kept.stdout,
    stderr: () => kept.stderr,
    tail,
    exited,
    spawnError: () => spawnError,
    running,
    waitFor(text, timeoutMs = 20_000) {
      const at = kept.output.indexOf(text);
      if (at !== -1) return Promise.resolve(lineAt(kept.output, at));
      return new Promise((resolve, reject) => {
        const fail = (why: string) => {
          if (!waiters.delete(waiter)) return;
          clearTimeout(timer);
          reject(new Error(`${name} ${why} "${text}"; it wrote:\n${tail()}`));
        };
        const timer = setTimeout(() => fail(`wrote no line with`), timeoutMs);
        const waiter = {
          text,
          resolve: (line: string) => {
            clearTimeout(timer);
            resolve(line);
          },
        };
        waiters.add(waiter);
        // A child that has exited writes nothing more: fail now, not at the timeout.
        void exited.then(({ code, signal: sig }) =>
          fail(
            spawnError
              ? `could not start (${spawnError.code ?? spawnError.message}) to write`
              : `exited (${sig ?? `code ${code}`}) before writing`,
          ),
        );
      });
    },
    signal,
    async kill() {
      signal('SIGKILL');
      return exited;
    },
    async stop(graceMs) {
      signal('SIGCONT');
      signal('SIGTERM');
      const timer = setTimeout(() => signal('SIGKILL'), graceMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
    async destroy() {
      signal('SIGCONT');
      signal('SIGKILL');
      return exited;
    },
  };
}

/** A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
