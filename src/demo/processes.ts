/**
 * `onceq api` and `onceq worker` as child processes of the demo: the same executable that runs
 * the demo (compiled or through tsx), the same environment, with a few overrides. The demo kills
 * workers with SIGKILL on purpose, and stops everything it started when it ends.
 */
import { spawn, type ChildProcess } from 'node:child_process';

/** Lines of a child's output kept for error messages. */
const KEPT_LINES = 40;

/** A running `onceq` child process. */
export interface OnceqChild {
  readonly role: string;
  readonly child: ChildProcess;
  /** Resolves with the first output line containing `text` (rejects if the child exits first). */
  waitFor(text: string, timeoutMs: number): Promise<string>;
  /** The last lines the child wrote, for error messages. */
  tail(): string;
  readonly exited: Promise<number | null>;
  /** SIGKILL now: a crash, as far as the child can tell. */
  kill(): Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs: number): Promise<void>;
}

/**
 * Spawns `onceq <args>` with the environment of this process plus `env` (a value of `undefined`
 * removes a variable).
 */
export function spawnOnceq(
  role: string,
  args: string[],
  env: Record<string, string | undefined>,
): OnceqChild {
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) delete childEnv[name];
    else childEnv[name] = value;
  }
  // process.argv[1] is this CLI's entry point; execArgv carries tsx's loader when it runs the
  // sources, so the child runs exactly what the parent runs.
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...args], {
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters = new Set<{ text: string; resolve: (line: string) => void }>();
  let partial = '';
  const onData = (chunk: Buffer) => {
    const text = partial + chunk.toString();
    const parts = text.split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      lines.push(line);
      if (lines.length > KEPT_LINES) lines.shift();
      for (const w of [...waiters]) {
        if (line.includes(w.text)) {
          waiters.delete(w);
          w.resolve(line);
        }
      }
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code) => resolve(code)),
  );
  const running = () => child.exitCode === null && child.signalCode === null;
  const tail = () => [...lines, partial].filter(Boolean).join('\n');
  return {
    role,
    child,
    tail,
    exited,
    waitFor(text, timeoutMs) {
      return new Promise((resolve, reject) => {
        const waiter = {
          text,
          resolve: (line: string) => {
            clearTimeout(timer);
            resolve(line);
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`${role}: no "${text}" within ${timeoutMs} ms; it wrote:\n${tail()}`));
        }, timeoutMs);
        waiters.add(waiter);
        void exited.then((code) => {
          if (!waiters.has(waiter)) return;
          waiters.delete(waiter);
          clearTimeout(timer);
          reject(new Error(`${role} exited (code ${code}) before "${text}"; it wrote:\n${tail()}`));
        });
      });
    },
    async kill() {
      if (running()) child.kill('SIGKILL');
      await exited;
    },
    async stop(graceMs) {
      if (running()) child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const forced = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          if (running()) child.kill('SIGKILL');
          resolve();
        }, graceMs);
      });
      await Promise.race([exited.then(() => undefined), forced]);
      clearTimeout(timer);
      await exited;
    },
  };
}
