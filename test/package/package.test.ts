/**
 * onceq as a user gets it: the tarball `npm pack` makes, installed with `npm install` into a
 * plain Node project in a temporary folder outside the repository. There, `import('onceq')` and
 * `require('onceq')` give the same named exports; a script of the project's own (its own table,
 * its own job, written against `onceq` only) gets one effect per message from createProducer and
 * createWorker under repeated enqueues with the same token, against the real Redis and
 * PostgreSQL; and a strict TypeScript file type-checks against the installed `.d.ts`, with a
 * misspelt option and a wrong `ctx.data` field refused, as do the README's library samples. The
 * installed CLI loads an `ONCEQ_JOBS` module that imports from `onceq`. The tarball itself holds
 * no tests, CI scripts or TypeScript sources.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { sql } from 'kysely';
import { createDb } from '../../src/db/create-db.js';
import { closeRedis } from '../../src/redis/connection.js';
import {
  deletePrefix,
  testRedis,
  TEST_DATABASE_URL,
  TEST_REDIS_URL,
  uniqueName,
} from '../support/env.js';
import { ROOT } from '../support/build.js';
import { packOnce, TSC } from '../support/packed.js';

const run = promisify(execFile);

/** Lists the named exports both ways; CommonJS through Node's require(esm). */
const EXPORTS_CJS = `
const required = require('onceq');
import('onceq').then((imported) => {
  console.log(JSON.stringify({
    required: Object.keys(required).sort(),
    imported: Object.keys(imported).sort(),
    same: Object.keys(imported).every((k) => imported[k] === required[k]),
  }));
});
`;

/**
 * The user's script: its own table in its own schema, one job, a producer and a worker. Each of
 * three requests is sent five times with its token, as a client retrying would; the script then
 * waits for the worker and prints what the table holds.
 */
const APP_MJS = `
import pg from 'pg';
import { Type } from '@sinclair/typebox';
import { createProducer, createWorker, defineJob, migrateToLatest } from 'onceq';

const { DATABASE_URL, REDIS_URL, SCHEMA, PREFIX } = process.env;
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 });
await pool.query('create schema if not exists ' + SCHEMA);
await pool.query('create table ' + SCHEMA + '.greetings (id text primary key, name text not null)');
await migrateToLatest({ database: DATABASE_URL, schema: SCHEMA });

const greet = defineJob({
  name: 'greeting.send',
  queue: 'greetings',
  schema: Type.Object({ name: Type.String() }),
  async handle(ctx) {
    const inserted = await ctx.insertOnce('greetings', { id: ctx.messageId, name: ctx.data.name });
    return { inserted };
  },
});

const options = { redis: REDIS_URL, database: DATABASE_URL, schema: SCHEMA, prefix: PREFIX, jobs: [greet] };
const worker = await createWorker({ ...options, concurrency: 4 });
const producer = await createProducer(options);
const answers = [];
for (const name of ['ada', 'grace', 'edsger']) {
  const token = await producer.issueToken();
  for (let i = 0; i < 5; i++) {
    answers.push(await producer.enqueue('greeting.send', { name }, { token }));
  }
}
const messageIds = [...new Set(answers.map((a) => a.messageId))];
for (let i = 0; i < 200; i++) {
  const { rows } = await pool.query(
    'select count(*)::int as n from ' + SCHEMA + '.inbox where message_id = any($1)', [messageIds]);
  if (rows[0].n === messageIds.length) break;
  await new Promise((r) => setTimeout(r, 50));
}
const { rows } = await pool.query('select id, name from ' + SCHEMA + '.greetings order by name');
await producer.close();
await worker.close();
await pool.end();
console.log(JSON.stringify({
  answers: answers.length,
  replayed: answers.filter((a) => a.replayed).length,
  messageIds,
  rows,
}));
`;

/**
 * Strict TypeScript against the installed declarations; each @ts-expect-error must be needed. An
 * ES module (`.mts`), as onceq is: from a CommonJS file, TypeScript would give the user's own
 * TypeBox and Kysely their CommonJS declarations and onceq's imports their ESM ones, and refuse
 * to mix the two.
 */
const TYPES_TS = `
import { Type } from '@sinclair/typebox';
import type { Generated } from 'kysely';
import {
  ConfigError,
  createProducer,
  createWorker,
  defineJob,
  migrateToLatest,
  migrations,
  type EnqueueResult,
  type JobContext,
  type JobDefinition,
  type Producer,
  type ProducerOptions,
  type Worker,
  type WorkerOptions,
} from 'onceq';
import type { MigrationProvider } from 'kysely';

interface AppDatabase {
  notes: { id: string; body: string; version: Generated<number> };
}

const Note = Type.Object({ body: Type.String(), tags: Type.Array(Type.String()) });

export const addNote = defineJob<AppDatabase>()({
  name: 'note.add',
  schema: Note,
  async handle(ctx) {
    const body: string = ctx.data.body;
    const tags: string[] = ctx.data.tags;
    // @ts-expect-error: the schema has no such field
    void ctx.data.bdy;
    const inserted = await ctx.insertOnce('notes', { id: ctx.messageId, body });
    // @ts-expect-error: not one of the app's tables
    await ctx.insertOnce('nots', { id: ctx.messageId, body });
    // @ts-expect-error: not a column of notes
    await ctx.updateVersioned('notes', ctx.messageId, 1, { bdy: 'x' });
    const row = await ctx.trx.selectFrom('notes').select(['body', 'version']).executeTakeFirst();
    const version: number | undefined = row?.version;
    return { inserted, tags: tags.length, version };
  },
});

const untyped: JobDefinition = addNote;
const context = (ctx: JobContext<{ n: number }>) => ctx.data.n + 1;

const options: WorkerOptions = {
  redis: 'redis://127.0.0.1:6379',
  database: 'postgres://postgres@127.0.0.1:5432/app',
  jobs: [addNote, untyped],
  concurrency: 4,
  reconciler: false,
  outbox: { intervalMs: 500 },
};

export async function main(): Promise<EnqueueResult> {
  const provider: MigrationProvider = migrations;
  await migrateToLatest({ database: options.database, schema: 'app' });
  const worker: Worker = await createWorker(options);
  await createWorker({
    redis: 'redis://127.0.0.1:6379',
    database: 'postgres://postgres@127.0.0.1:5432/app',
    jobs: [addNote],
    // @ts-expect-error: a misspelt option does not compile
    concurency: 4,
  });
  const producerOptions: ProducerOptions = { ...options, jobs: [addNote] };
  // @ts-expect-error: a worker option is not a producer option
  const wrong: ProducerOptions = { redis: 'redis://x', database: 'postgres://x', jobs: [], concurrency: 2 };
  const producer: Producer = await createProducer(producerOptions);
  // @ts-expect-error: a misspelt enqueue option does not compile
  await producer.enqueue('note.add', { body: 'x', tags: [] }, { tokn: 't' });
  const result = await producer.enqueue('note.add', { body: 'x', tags: [] }, { token: 't' });
  // Given its jobs as a literal, a producer knows their names and data types.
  const typed = await createProducer({ redis: options.redis, database: options.database, jobs: [addNote] });
  await typed.enqueue('note.add', { body: 'y', tags: ['a'] });
  // @ts-expect-error: not a job of this producer
  await typed.enqueue('note.ad', { body: 'y', tags: [] });
  // @ts-expect-error: the wrong data for note.add
  await typed.enqueue('note.add', { body: 1, tags: [] });
  await typed.close();
  const id: string = result.messageId;
  await Promise.all([producer.close(), worker.close()]);
  void [provider, wrong, context, id, ConfigError];
  return result;
}
`;

/** A job module for the CLI's ONCEQ_JOBS, written against the package like any user code. */
const JOBS_MJS = `
import { Type } from '@sinclair/typebox';
import { defineJob } from 'onceq';

export const note = defineJob({
  name: 'cli.note',
  queue: 'cli-notes',
  schema: Type.Object({ body: Type.String() }, { additionalProperties: false }),
  async handle(ctx) {
    return { inserted: await ctx.insertOnce('cli_notes', { id: ctx.messageId, body: ctx.data.body }) };
  },
});
`;

/** The TypeScript blocks of one README section, in order. */
function readmeBlocks(section: string): string[] {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf(`\n## ${section}\n`);
  expect(start, `README section ${section}`).to.be.greaterThan(-1);
  const end = readme.indexOf('\n## ', start + 1);
  const text = readme.slice(start, end === -1 ? undefined : end);
  return [...text.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

/** tsc, strict, over the given files of the project, by the repository's compiler. */
async function typeCheck(cwd: string, files: string[]): Promise<string> {
  const flags = ['--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext'];
  const resolution = ['--moduleResolution', 'nodenext', '--types', 'node'];
  const result = await run(process.execPath, [TSC, ...flags, ...resolution, ...files], {
    cwd,
    timeout: 60_000,
  }).catch((err: { stdout?: string; stderr?: string }) => {
    throw new Error(`tsc refused ${files.join(', ')}:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  });
  return result.stdout;
}

describe('package: onceq installed from its tarball into a project outside the repo', function () {
  this.timeout(90_000);
  const schema = uniqueName('pkg');
  const prefix = uniqueName('pkg');
  let dir: string;
  let project: string;
  let packed: { path: string }[];

  before(async function () {
    this.timeout(150_000);
    const tarball = await packOnce();
    packed = tarball.files;
    dir = mkdtempSync(path.join(tmpdir(), 'onceq-package-'));
    project = path.join(dir, 'app');
    await run('mkdir', [project]);
    writeFileSync(
      path.join(project, 'package.json'),
      JSON.stringify({ name: 'onceq-user', private: true, version: '1.0.0' }),
    );
    // What a user installs: onceq, and what their own code imports (pg, TypeBox, Kysely's types,
    // Node's types); onceq brings the rest.
    await run(
      'npm',
      [
        'install',
        '--no-audit',
        '--no-fund',
        '--no-save',
        tarball.tarball,
        'pg',
        '@types/pg',
        '@types/node@20',
        '@sinclair/typebox',
        'kysely',
      ],
      { cwd: project, timeout: 120_000 },
    );
  });

  after(async () => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    const db = createDb({ url: TEST_DATABASE_URL });
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
    await db.destroy();
    const redis = testRedis();
    await deletePrefix(redis, prefix);
    await closeRedis(redis);
  });

  it('holds only what a user runs: no tests, CI scripts, tools or TypeScript sources', () => {
    const paths = packed.map((f) => f.path);
    expect(paths).to.include.members(['package.json', 'README.md', 'LICENSE', 'bin/onceq.js']);
    expect(paths).to.include.members(['dist/src/index.js', 'dist/src/index.d.ts']);
    expect(paths.some((p) => p.startsWith('dist/migrations/') && p.endsWith('.js'))).to.equal(true);
    const outside = paths.filter(
      (p) =>
        !['package.json', 'README.md', 'LICENSE', 'bin/onceq.js'].includes(p) &&
        !p.startsWith('dist/src/') &&
        !p.startsWith('dist/migrations/'),
    );
    expect(outside).to.deep.equal([]);
    expect(paths.filter((p) => /(^|\/)(test|\.ci|tools)\//.test(p))).to.deep.equal([]);
    // The repository's tools (tools/, compiled to dist/tools) are not the product, nor any of
    // their old homes under src/.
    expect(
      paths.filter((p) =>
        /^dist\/src\/(chaos|bench|demo)\/|^dist\/src\/cli\/(chaos|demo)\./.test(p),
      ),
    ).to.deep.equal([]);
    expect(paths.filter((p) => p.endsWith('.ts') && !p.endsWith('.d.ts'))).to.deep.equal([]);
  });

  it('import() and require() give the same named exports', async () => {
    writeFileSync(path.join(project, 'exports.cjs'), EXPORTS_CJS);
    const { stdout, stderr } = await run(process.execPath, ['exports.cjs'], {
      cwd: project,
      timeout: 20_000,
    });
    const seen = JSON.parse(stdout) as { required: string[]; imported: string[]; same: boolean };
    expect(seen.required).to.deep.equal(seen.imported);
    expect(seen.same).to.equal(true);
    expect(seen.imported).to.include.members([
      'createProducer',
      'createWorker',
      'defineJob',
      'migrateToLatest',
      'migrations',
      'ConfigError',
      'OnceqError',
    ]);
    expect(stderr).to.equal('');
  });

  it("a user's script gets one effect per message under repeated enqueues with the same token", async () => {
    writeFileSync(path.join(project, 'app.mjs'), APP_MJS);
    // The script must end on its own: everything it opened is closed.
    const { stdout } = await run(process.execPath, ['app.mjs'], {
      cwd: project,
      timeout: 40_000,
      env: {
        PATH: process.env.PATH ?? '',
        DATABASE_URL: TEST_DATABASE_URL,
        REDIS_URL: TEST_REDIS_URL,
        SCHEMA: schema,
        PREFIX: prefix,
      },
    });
    const result = JSON.parse(stdout) as {
      answers: number;
      replayed: number;
      messageIds: string[];
      rows: { id: string; name: string }[];
    };
    expect(result.answers).to.equal(15);
    expect(result.replayed).to.equal(12);
    expect(result.messageIds).to.have.length(3);
    expect(result.rows.map((r) => r.name)).to.deep.equal(['ada', 'edsger', 'grace']);
    expect(result.rows.map((r) => r.id).sort()).to.deep.equal([...result.messageIds].sort());
  });

  it('a strict TypeScript file type-checks against the installed declarations', async () => {
    writeFileSync(path.join(project, 'types.mts'), TYPES_TS);
    expect(await typeCheck(project, ['types.mts'])).to.equal('');
    // The project has no copy of onceq's sources: the check ran on the .d.ts alone.
    expect(readdirSync(path.join(project, 'node_modules', 'onceq'))).to.not.include('src');
  });

  it('the installed CLI runs ONCEQ_JOBS modules that import from onceq', async () => {
    writeFileSync(path.join(project, 'jobs.mjs'), JOBS_MJS);
    const env = {
      PATH: process.env.PATH ?? '',
      DATABASE_URL: TEST_DATABASE_URL,
      REDIS_URL: TEST_REDIS_URL,
      ONCEQ_DB_SCHEMA: schema,
      ONCEQ_PREFIX: prefix,
      ONCEQ_JOBS: 'jobs.mjs',
      ONCEQ_QUEUES: 'cli-notes',
      LOG_LEVEL: 'warn',
    };
    const bin = path.join('node_modules', 'onceq', 'bin', 'onceq.js');
    const onceq = (...args: string[]) =>
      run(process.execPath, [bin, ...args], { cwd: project, env, timeout: 30_000 });
    await onceq('migrate', 'latest');
    const db = createDb({ url: TEST_DATABASE_URL, schema });
    try {
      await sql`create table if not exists cli_notes (id text primary key, body text not null)`.execute(
        db,
      );
      const sent: { messageId: string }[] = [];
      for (let i = 0; i < 2; i++) {
        const { stdout } = await onceq('enqueue', 'cli.note', '--data', '{"body":"hi"}');
        sent.push(JSON.parse(stdout) as { messageId: string });
      }
      const worker = execFile(process.execPath, [bin, 'worker'], { cwd: project, env });
      try {
        const ids = sent.map((s) => s.messageId);
        for (let i = 0; i < 200; i++) {
          const rows = await db
            .selectFrom('inbox')
            .select('message_id')
            .where('message_id', 'in', ids)
            .execute();
          if (rows.length === ids.length) break;
          await new Promise((r) => setTimeout(r, 50));
        }
        const { rows } = await sql<{ id: string }>`select id from cli_notes order by id`.execute(
          db,
        );
        expect(rows.map((r) => r.id)).to.deep.equal([...ids].sort());
      } finally {
        const exited = new Promise((resolve) => worker.once('exit', resolve));
        worker.kill('SIGTERM');
        expect(await exited).to.equal(0);
      }
    } finally {
      await db.destroy();
    }
  });

  it("the README's TypeScript for the library compiles against the installed declarations", async () => {
    const [jobs, worker] = readmeBlocks('Writing your own jobs');
    const [producer] = readmeBlocks('Enqueueing from TypeScript');
    expect(jobs).to.contain("from 'onceq'");
    expect(producer).to.contain("from 'onceq'");
    // An ES module folder of the project, as the README's `./jobs/orders.js` imports assume.
    const readme = path.join(project, 'readme');
    mkdirSync(path.join(readme, 'jobs'), { recursive: true });
    writeFileSync(path.join(readme, 'package.json'), JSON.stringify({ type: 'module' }));
    writeFileSync(path.join(readme, 'jobs', 'orders.ts'), jobs!);
    writeFileSync(path.join(readme, 'worker.ts'), `${worker!}\nexport {};\n`);
    writeFileSync(path.join(readme, 'producer.ts'), `${producer!}\nexport {};\n`);
    const files = ['jobs/orders.ts', 'worker.ts', 'producer.ts'];
    expect(await typeCheck(readme, files)).to.equal('');
  });
});
