/**
 * Real worker processes for fault tests: `onceq worker` (tools/cli.ts, which holds the product
 * commands and the demo: compiled when the build is up to date, else the sources through tsx),
 * in a child process with its own environment, killed and paused with real signals. Built on the
 * repository's one harness, tools/support/child.ts.
 */
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { spawnChild } from '../../tools/support/child.js';
import type { BackendKind } from '../../src/queues/backend.js';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './env.js';
import { isBuilt } from './build.js';

const CLI = fileURLToPath(new URL('../../tools/cli.ts', import.meta.url));
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
  /**
   * The mode: `postgres` leaves `REDIS_URL` out of the child's environment, which is how the CLI
   * is asked for PostgreSQL-only mode (`DATABASE_URL` alone). Pass the test stack's
   * `backend.kind`, so that the child's queues are the stack's. @defaultValue `redis`
   */
  backend?: BackendKind;
  /**
   * `REDIS_CLUSTER_NODES` instead of `REDIS_URL`: Redis mode on that cluster. Pass the test
   * stack's `clusterNodes`. @defaultValue the shared Redis (`REDIS_URL`)
   */
  clusterNodes?: string;
  env?: Record<string, string>;
  args?: string[];
  /** A script to run instead of the CLI (a fixture under test/fixtures), through tsx. */
  script?: string;
  /**
   * Run the compiled executable (`node bin/onceq.js`, what users run) instead of the sources
   * through tsx; call `ensureBuilt()` (support/build.ts) first. @defaultValue whether the build
   * is up to date (`isBuilt()`) and no TypeScript file is to be loaded: the same code either
   * way, the compiled one starts faster
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

/**
 * Whether the child is to load a module of the test's (`ONCEQ_JOBS`, or any TypeScript file):
 * such a module is TypeScript or imports the sources, which only tsx can load.
 */
function loadsTypeScript(env: Record<string, string> | undefined, args: string[] = []): boolean {
  return (
    env?.ONCEQ_JOBS !== undefined ||
    [...Object.values(env ?? {}), ...args].some((v) => /\.[cm]?ts$/.test(v))
  );
}

/** Spawns `onceq worker` (or `args`, or `options.script`) against the test services. */
export function spawnWorker(options: WorkerChildOptions): WorkerChild {
  const entry = options.node
    ? options.node
    : options.script
      ? ['--import', 'tsx', options.script]
      : (options.compiled ?? (isBuilt() && !loadsTypeScript(options.env, options.args)))
        ? [BIN]
        : ['--import', 'tsx', CLI];
  const args = options.node ? [] : (options.args ?? ['worker']);
  const worker = spawnChild({
    name: 'the worker',
    command: process.execPath,
    args: [...entry, ...args],
    cwd: options.cwd,
    env: {
      PATH: process.env.PATH ?? '',
      DATABASE_URL: TEST_DATABASE_URL,
      ...(options.backend === 'postgres'
        ? {}
        : options.clusterNodes
          ? { REDIS_CLUSTER_NODES: options.clusterNodes }
          : { REDIS_URL: TEST_REDIS_URL }),
      ONCEQ_DB_SCHEMA: options.schema,
      ONCEQ_PREFIX: options.prefix,
      ONCEQ_LOCK_DURATION: '2s',
      ONCEQ_SHUTDOWN_TIMEOUT: '10s',
      LOG_LEVEL: 'info',
      ...options.env,
    },
  });
  return {
    child: worker.process,
    output: worker.output,
    stdout: worker.stdout,
    stderr: worker.stderr,
    exited: worker.exited,
    async waitForOutput(text, timeoutMs) {
      await worker.waitFor(text, timeoutMs);
    },
    async destroy() {
      await worker.destroy();
    },
  };
}
