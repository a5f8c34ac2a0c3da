/**
 * Real worker processes for fault tests: `onceq worker` from the sources, in a child process
 * with its own environment, killed and paused with real signals.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './env.js';

const CLI = fileURLToPath(new URL('../../src/cli/index.ts', import.meta.url));
const BIN = fileURLToPath(new URL('../../bin/onceq.js', import.meta.url));

export interface WorkerChild {
  child: ChildProcess;
  /** Everything the child wrote to stderr and stdout so far. */
  output(): string;
  /** What the child wrote to stdout so far. */
  stdout(): string;
  /** What the child wrote to stderr so far (the CLI's one-line errors go here). */
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when the output contains `text`. */
  waitForOutput(text: string, timeoutMs?: number): Promise<void>;
  /** SIGKILLs the child if it is still running (after-hooks). */
  destroy(): Promise<void>;
}

export interface WorkerChildOptions {
  schema: string;
  prefix: string;
  env?: Record<string, string>;
  args?: string[];
  /** A script to run instead of the CLI (a fixture under test/fixtures), through tsx. */
  script?: string;
  /**
   * Run the compiled executable (`node bin/onceq.js`, what users run) instead of the sources
   * through tsx; call `ensureBuilt()` (support/build.ts) first. @defaultValue false
   */
  compiled?: boolean;
  /** Working directory. @defaultValue this process's */
  cwd?: string;
  /**
   * Node's arguments, run as given instead of the CLI: a compiled script of a project outside
   * the repository (`['dist/worker.js']`), or its installed `node_modules/onceq/bin/onceq.js`.
   */
  node?: string[];
}

/** Spawns `onceq worker` (or `args`, or `options.script`) against the test services. */
export function spawnWorker(options: WorkerChildOptions): WorkerChild {
  const entry = options.node
    ? options.node
    : options.script
      ? ['--import', 'tsx', options.script]
      : options.compiled
        ? [BIN]
        : ['--import', 'tsx', CLI];
  const args = options.node ? [] : (options.args ?? ['worker']);
  const child = spawn(process.execPath, [...entry, ...args], {
    cwd: options.cwd,
    env: {
      PATH: process.env.PATH ?? '',
      DATABASE_URL: TEST_DATABASE_URL,
      REDIS_URL: TEST_REDIS_URL,
      ONCEQ_DB_SCHEMA: options.schema,
      ONCEQ_PREFIX: options.prefix,
      ONCEQ_LOCK_DURATION: '2s',
      ONCEQ_SHUTDOWN_TIMEOUT: '10s',
      LOG_LEVEL: 'info',
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let stdout = '';
  let stderr = '';
  const waiters: { text: string; resolve: () => void; reject: (err: Error) => void }[] = [];
  const onData = (chunk: Buffer) => {
    output += chunk.toString();
    for (const w of [...waiters]) {
      if (output.includes(w.text)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  };
  child.stdout!.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    onData(chunk);
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    onData(chunk);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  // A child that has exited writes nothing more: its waiters fail now, not at their timeout
  // (whose timers would outlive the test).
  void exited.then(({ code, signal }) => {
    for (const w of waiters.splice(0)) {
      w.reject(
        new Error(
          `the worker exited (${signal ?? `code ${code}`}) before writing "${w.text}"; it wrote:\n${output}`,
        ),
      );
    }
  });
  return {
    child,
    output: () => output,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    waitForOutput(text, timeoutMs = 20_000) {
      if (output.includes(text)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          reject(
            new Error(`timed out waiting for "${text}" from the worker; it wrote:\n${output}`),
          );
        }, timeoutMs);
        waiters.push({
          text,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
          reject: (err) => {
            clearTimeout(timer);
            reject(err);
          },
        });
      });
    },
    async destroy() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGCONT');
        child.kill('SIGKILL');
      }
      await exited;
    },
  };
}
