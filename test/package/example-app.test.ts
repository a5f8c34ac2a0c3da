/**
 * examples/app as a user runs it: copied into a temporary folder outside the repository, its
 * `"onceq": "file:../.."` pointed at the tarball `npm pack` made (one per test process, shared
 * with the package test), installed with `npm install`, compiled by its own strict tsconfig
 * against the installed `.d.ts`, then run against the real Redis and PostgreSQL: its migrations,
 * `onceq api` from the installed package with the app's jobs, the app's worker, and its sender
 * (createProducer and onceq/client, each message sent twice with its token). Every message has
 * one effect; so does every message whose job is then added to BullMQ again, twice, while the
 * worker is stopped, and run by the restarted worker.
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Queue } from 'bullmq';
import { expect } from 'chai';
import { sql } from 'kysely';
import { createDb, type Db } from '../../src/db/create-db.js';
import { closeRedis } from '../../src/redis/connection.js';
import { ROOT } from '../support/build.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import {
  deletePrefix,
  testRedis,
  TEST_DATABASE_URL,
  TEST_REDIS_URL,
  uniqueName,
} from '../support/env.js';
import { packOnce } from '../support/packed.js';

const run = promisify(execFile);
const EXAMPLE = path.join(ROOT, 'examples', 'app');
const ONCEQ_BIN = path.join('node_modules', 'onceq', 'bin', 'onceq.js');

/** A port nobody listens on right now, for `onceq api`. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

interface SendOutput {
  ticketId: string;
  sent: { via: string; name: string; jobId: string; messageId: string; replayed: boolean }[];
  results: ({ ticketId: string } | { status: string; votes: number; version: number })[];
}

describe('example app: examples/app installed from the tarball, outside the repo', function () {
  this.timeout(60_000);
  const schema = uniqueName('exapp');
  const prefix = uniqueName('exapp');
  let dir: string;
  let app: string;
  let db: Db;
  const children: WorkerChild[] = [];
  let env: Record<string, string>;
  let sentOut: SendOutput;

  const spawnInApp = (node: string[], extra: Record<string, string> = {}) => {
    const child = spawnWorker({ schema, prefix, cwd: app, node, env: { ...env, ...extra } });
    children.push(child);
    return child;
  };
  const tickets = () =>
    sql<{ id: string; title: string; votes: number; version: number }>`
      select id, title, votes, version from ${sql.table(`${schema}.tickets`)} order by id`
      .execute(db)
      .then((r) => r.rows);
  const inboxCount = (ids: string[]) =>
    db
      .withSchema(schema)
      .selectFrom('inbox')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .where('message_id', 'in', ids)
      .executeTakeFirstOrThrow()
      .then((r) => Number(r.n));

  before(async function () {
    this.timeout(180_000);
    const { tarball } = await packOnce();
    dir = mkdtempSync(path.join(tmpdir(), 'onceq-example-'));
    app = path.join(dir, 'app');
    // The example as committed: whatever a local `npm install` or build left in it stays behind.
    cpSync(EXAMPLE, app, {
      recursive: true,
      filter: (src) => !/[\\/](node_modules|dist|package-lock\.json)$/.test(src),
    });
    const manifestPath = path.join(app, 'package.json');
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as {
      dependencies: Record<string, string>;
    };
    expect(manifest.dependencies.onceq).to.equal('file:../..');
    manifest.dependencies.onceq = `file:${tarball}`;
    writeFileSync(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`);
    await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline'], {
      cwd: app,
      timeout: 150_000,
    });
    env = {
      DATABASE_URL: TEST_DATABASE_URL,
      REDIS_URL: TEST_REDIS_URL,
      ONCEQ_DB_SCHEMA: schema,
      ONCEQ_PREFIX: prefix,
      LOG_LEVEL: 'warn',
    };
    db = createDb({ url: TEST_DATABASE_URL });
  });

  after(async () => {
    for (const child of children) await child.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (db) {
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
      await db.destroy();
    }
    const redis = testRedis();
    await deletePrefix(redis, prefix);
    await closeRedis(redis);
  });

  it('compiles with its strict tsconfig against the installed declarations', async () => {
    const tsc = path.join('node_modules', 'typescript', 'bin', 'tsc');
    const { stdout } = await run(process.execPath, [tsc, '-p', '.'], {
      cwd: app,
      timeout: 90_000,
    }).catch((err: { stdout?: string; stderr?: string }) => {
      throw new Error(`tsc refused the example:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
    });
    expect(stdout).to.equal('');
    const tsconfig = JSON.parse(readFileSync(path.join(app, 'tsconfig.json'), 'utf8')) as {
      compilerOptions: { strict?: boolean };
    };
    expect(tsconfig.compilerOptions.strict).to.equal(true);
    // No copy of onceq's sources: the check ran on the .d.ts alone.
    expect(readdirSync(path.join(app, 'node_modules', 'onceq'))).to.not.include('src');
    expect(readdirSync(path.join(app, 'dist')).sort()).to.include.members(['jobs.js', 'send.js']);
  });

  it("runs onceq's migrations, then its own with its own Migrator; again, nothing", async () => {
    const migrate = () =>
      run(process.execPath, ['dist/migrate.js'], {
        cwd: app,
        env: { PATH: process.env.PATH ?? '', ...env },
        timeout: 30_000,
      });
    expect((await migrate()).stdout).to.equal('2026_12_01_000000_tickets: Success\n');
    expect((await migrate()).stdout).to.equal('');
    const tables = await db
      .selectFrom('information_schema.tables' as never)
      .select('table_name' as never)
      .where('table_schema' as never, '=', schema as never)
      .execute();
    const names = (tables as { table_name: string }[]).map((t) => t.table_name);
    expect(names).to.include.members(['tickets', 'tickets_migration', 'inbox']);
  });

  it('sends each message twice, by producer and by HTTP client: one effect per message', async () => {
    const { stdout: key } = await run(
      process.execPath,
      [ONCEQ_BIN, 'keys', 'create', '--principal', 'tickets'],
      { cwd: app, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 20_000 },
    );
    const port = await freePort();
    const api = spawnInApp([ONCEQ_BIN, 'api'], {
      PORT: String(port),
      ONCEQ_HOST: '127.0.0.1',
      ONCEQ_JOBS: 'dist/jobs.js',
      LOG_LEVEL: 'info',
    });
    const worker = spawnInApp(['dist/worker.js']);
    await worker.waitForOutput('worker ready');
    const apiUrl = `http://127.0.0.1:${port}`;
    for (let i = 0; ; i++) {
      const ready = await fetch(`${apiUrl}/readyz`).then(
        (r) => r.ok,
        () => false,
      );
      if (ready) break;
      if (i === 200) throw new Error(`onceq api never got ready:\n${api.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }

    const { stdout } = await run(process.execPath, ['dist/send.js'], {
      cwd: app,
      env: { PATH: process.env.PATH ?? '', ...env, API_URL: apiUrl, API_KEY: key.trim() },
      timeout: 40_000,
    });
    sentOut = JSON.parse(stdout) as SendOutput;
    const { sent, results, ticketId } = sentOut;
    // 1 open and 2 votes over HTTP, 3 votes in process; each sent twice.
    expect(sent).to.have.length(12);
    expect(sent.filter((s) => s.via === 'client')).to.have.length(6);
    for (let i = 0; i < sent.length; i += 2) {
      expect(sent[i + 1]!.messageId, 'the retry with the same token').to.equal(sent[i]!.messageId);
      expect([sent[i]!.replayed, sent[i + 1]!.replayed]).to.deep.equal([false, true]);
    }
    const messageIds = [...new Set(sent.map((s) => s.messageId))];
    expect(messageIds).to.have.length(6);
    expect(results[0]).to.deep.equal({ ticketId });
    const votes = results.slice(1) as { status: string; votes: number; version: number }[];
    expect(votes.map((v) => v.status)).to.deep.equal(Array(5).fill('counted'));
    expect(votes.map((v) => v.votes).sort()).to.deep.equal([1, 2, 3, 4, 5]);
    expect(await inboxCount(messageIds)).to.equal(6);
    expect(await tickets()).to.deep.equal([
      { id: ticketId, title: 'Dark mode', votes: 5, version: 5 },
    ]);
  });

  it('runs each job added to BullMQ again, twice, after a restart: still one effect each', async () => {
    expect(sentOut, 'the previous test ran').to.not.equal(undefined);
    const [worker] = children.filter((c) => c.child.spawnargs.includes('dist/worker.js'));
    worker!.child.kill('SIGTERM');
    expect((await worker!.exited).code, worker!.output()).to.equal(0);

    const redis = testRedis();
    const queue = new Queue('tickets', { connection: redis, prefix });
    try {
      const originals = [...new Set(sentOut.sent.map((s) => s.jobId))];
      const copies: { copyId: string; result: unknown }[] = [];
      for (const jobId of originals) {
        const job = await queue.getJob(jobId);
        const first = job?.returnvalue as { outcome: string; result: unknown } | undefined;
        expect(first?.outcome, `completed job ${jobId}`).to.equal('applied');
        for (const n of [1, 2]) {
          const copyId = `again-${n}-${jobId}`;
          await queue.add(job!.name, job!.data, { jobId: copyId });
          copies.push({ copyId, result: first!.result });
        }
      }
      const restarted = spawnInApp(['dist/worker.js']);
      await restarted.waitForOutput('worker ready');
      for (let i = 0; ; i++) {
        const states = await Promise.all(copies.map((c) => queue.getJobState(c.copyId)));
        if (states.every((s) => s === 'completed')) break;
        if (i === 300) throw new Error(`copies not done: ${states.join(', ')}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      // Each copy ran nothing: the inbox replayed the first delivery's result.
      for (const { copyId, result } of copies) {
        const copy = await queue.getJob(copyId);
        expect(copy!.returnvalue, copyId).to.deep.equal({ outcome: 'duplicate', result });
      }
      const messageIds = [...new Set(sentOut.sent.map((s) => s.messageId))];
      expect(await inboxCount(messageIds)).to.equal(6);
      expect(await tickets()).to.deep.equal([
        { id: sentOut.ticketId, title: 'Dark mode', votes: 5, version: 5 },
      ]);
      restarted.child.kill('SIGTERM');
      expect((await restarted.exited).code, restarted.output()).to.equal(0);
    } finally {
      await queue.close();
      await closeRedis(redis);
    }
  });
});
