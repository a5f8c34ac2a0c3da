/**
 * The real `onceq` CLI, in child processes, started against services that are not there and with
 * configuration that is wrong: it must exit 1 promptly with one line per problem on stderr (which
 * service, where, how to start it), never a stack trace, never a password, never a hang.
 */
import { expect } from 'chai';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { uniqueName } from '../support/env.js';

/** Nothing listens on port 1. */
const CLOSED_REDIS_URL = 'redis://127.0.0.1:1';
const CLOSED_DATABASE_URL = 'postgres://postgres@127.0.0.1:1/onceq';
/** Well under mocha's timeout: a CLI that hangs fails here, with its output. */
const EXIT_WITHIN_MS = 20_000;

interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Non-empty lines of stderr. */
  lines: string[];
  ms: number;
}

describe('cli: unreachable services and bad configuration', function () {
  this.timeout(60_000);
  const children: WorkerChild[] = [];
  after(async () => {
    await Promise.all(children.splice(0).map((c) => c.destroy()));
  });

  // The runs start up front, two at a time: each spends most of its time starting Node and tsx
  // (CPU-bound), so two lanes keep the file quick without starving the machine. Each test awaits
  // its own runs.
  const runs = new Map<string, Promise<CliRun>>();
  const RUNS: Record<string, [string[], Record<string, string>]> = {
    redisWorker: [['worker'], { REDIS_URL: CLOSED_REDIS_URL }],
    redisPassword: [['worker'], { REDIS_URL: 'redis://:hunter2secret@127.0.0.1:1/0' }],
    redisEnqueue: [
      ['enqueue', 'account.open', '--data', '{"owner":"a","openingBalance":1}'],
      { REDIS_URL: CLOSED_REDIS_URL },
    ],
    pgWorker: [['worker'], { DATABASE_URL: CLOSED_DATABASE_URL }],
    pgMigrate: [['migrate', 'latest'], { DATABASE_URL: CLOSED_DATABASE_URL }],
    pgStart: [['start'], { DATABASE_URL: 'postgres://postgres:pgSecret99@127.0.0.1:1/onceq' }],
    badConfig: [
      ['worker'],
      {
        ONCEQ_CONCURRENCY: 'abc',
        LOG_LEVEL: 'loud',
        ONCEQ_LOCK_DURATION: '5 minutes',
        // Unreachable too: the config error must come first and alone.
        REDIS_URL: CLOSED_REDIS_URL,
      },
    ],
    badUrl: [['migrate', 'status'], { DATABASE_URL: 'postgres://user:leakme@[::1', PORT: '99999' }],
  };
  before(() => {
    const lanes: Promise<unknown>[] = [Promise.resolve(), Promise.resolve()];
    Object.entries(RUNS).forEach(([key, [args, env]], i) => {
      const run = lanes[i % lanes.length]!.then(() => runCli(args, env));
      lanes[i % lanes.length] = run.catch(() => undefined);
      runs.set(key, run);
    });
  });
  const result = (key: keyof typeof RUNS): Promise<CliRun> => runs.get(key)!;

  /** Runs `onceq ARGS` to its end (or kills it after EXIT_WITHIN_MS and fails). */
  async function runCli(args: string[], env: Record<string, string>): Promise<CliRun> {
    const started = Date.now();
    const child = spawnWorker({
      schema: uniqueName('unreach'),
      prefix: uniqueName('unreach'),
      args,
      env,
    });
    children.push(child);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), EXIT_WITHIN_MS);
    });
    const exit = await Promise.race([child.exited, timedOut]);
    clearTimeout(timer);
    if (exit === 'timeout') {
      throw new Error(
        `onceq ${args.join(' ')} still running after ${EXIT_WITHIN_MS} ms:\n${child.output()}`,
      );
    }
    const stderr = child.stderr();
    return {
      ...exit,
      stdout: child.stdout(),
      stderr,
      lines: stderr.split('\n').filter((l) => l.trim() !== ''),
      ms: Date.now() - started,
    };
  }

  /** The run failed with code 1 and stderr carries no stack trace. */
  function expectCleanFailure(run: CliRun): void {
    expect(run.code, run.stderr).to.equal(1);
    expect(run.signal).to.equal(null);
    expect(run.stderr, 'a stack trace').not.to.match(/^\s+at /m);
    expect(run.stderr).not.to.match(/node:internal|\.ts:\d+/);
  }

  describe('Redis at a closed port', () => {
    it('onceq worker: exits 1 with one line naming Redis, the URL and how to start it', async () => {
      const run = await result('redisWorker');
      expectCleanFailure(run);
      expect(run.lines, run.stderr).to.have.length(1);
      const [line] = run.lines as [string];
      expect(line).to.match(/^onceq: Redis is not reachable at redis:\/\/127\.0\.0\.1:1\b/);
      expect(line).to.contain('docker compose up -d redis');
      expect(line).to.contain('REDIS_URL');
      // The reason is the socket's, not ioredis's generic "Connection is closed."
      expect(line).to.contain('ECONNREFUSED');
      expect(line).not.to.contain('PostgreSQL');
    });

    it('never prints the password of REDIS_URL', async () => {
      const run = await result('redisPassword');
      expectCleanFailure(run);
      expect(run.lines).to.have.length(1);
      expect(run.lines[0]).to.contain('Redis is not reachable at redis://:***@127.0.0.1:1/0');
      expect(run.stderr + run.stdout).not.to.contain('hunter2secret');
    });

    it('onceq enqueue: the same one line', async () => {
      const run = await result('redisEnqueue');
      expectCleanFailure(run);
      expect(run.lines, run.stderr).to.have.length(1);
      expect(run.lines[0]).to.contain('Redis is not reachable at redis://127.0.0.1:1');
      expect(run.lines[0]).to.contain('docker compose up -d redis');
    });
  });

  describe('PostgreSQL at a closed port', () => {
    it('onceq worker: exits 1 with one line naming PostgreSQL, the URL and how to start it', async () => {
      const run = await result('pgWorker');
      expectCleanFailure(run);
      expect(run.lines, run.stderr).to.have.length(1);
      const [line] = run.lines as [string];
      expect(line).to.match(
        /^onceq: PostgreSQL is not reachable at postgres:\/\/postgres@127\.0\.0\.1:1\/onceq\b/,
      );
      expect(line).to.contain('docker compose up -d postgres');
      expect(line).to.contain('DATABASE_URL');
      expect(line).to.contain('ECONNREFUSED');
      expect(line).not.to.contain('Redis');
    });

    it('onceq migrate and onceq start (which create the database first): the same one line', async () => {
      const secret = 'pgSecret99';
      const [migrate, start] = await Promise.all([result('pgMigrate'), result('pgStart')]);
      for (const run of [migrate, start]) {
        expectCleanFailure(run);
        expect(run.lines, run.stderr).to.have.length(1);
        expect(run.lines[0]).to.contain('PostgreSQL is not reachable at postgres://postgres');
        expect(run.lines[0]).to.contain('@127.0.0.1:1/onceq');
        expect(run.lines[0]).to.contain('docker compose up -d postgres');
      }
      expect(start.stderr + start.stdout).not.to.contain(secret);
      expect(start.lines[0]).to.contain('postgres://postgres:***@127.0.0.1:1/onceq');
    });
  });

  describe('invalid configuration', () => {
    it('exits 1 with one line per bad variable, before connecting to anything', async () => {
      const run = await result('badConfig');
      expectCleanFailure(run);
      expect(run.lines[0]).to.equal('onceq: invalid configuration:');
      const problems = run.lines.slice(1).map((l) => l.trim());
      expect(problems, run.stderr).to.have.length(3);
      for (const name of [
        'ONCEQ_CONCURRENCY=abc',
        'LOG_LEVEL=loud',
        'ONCEQ_LOCK_DURATION=5 minutes',
      ]) {
        expect(
          problems.filter((p) => p.startsWith(`${name}:`)),
          `one line for ${name} in\n${run.stderr}`,
        ).to.have.length(1);
      }
      expect(run.stderr).not.to.contain('Redis is not reachable');
    });

    it('reports a bad URL without echoing it', async () => {
      const run = await result('badUrl');
      expectCleanFailure(run);
      expect(run.lines.slice(1).map((l) => l.trim())).to.deep.equal([
        'DATABASE_URL: not a URL',
        'PORT=99999: expected an integer from 0 to 65535',
      ]);
      expect(run.stderr).not.to.contain('leakme');
    });
  });
});
