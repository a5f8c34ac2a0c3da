/**
 * The job registry and ONCEQ_JOBS: user job modules loaded beside the ledger jobs, the errors a
 * bad module gets (each naming ONCEQ_JOBS), validation with JSON-pointer paths, `defineJob`'s
 * checks; and end to end, a `onceq worker` child process running a user job that a producer
 * enqueued, committing its effect once.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { expect } from 'chai';
import { Type } from '@sinclair/typebox';
import { sql } from 'kysely';
import { JobRegistry } from '../../src/jobs/registry.js';
import { importJobs, loadRegistry } from '../../src/cli/jobs.js';
import { DEFAULT_QUEUE, defineJob, type JobDefinition } from '../../src/jobs/define-job.js';
import { ledgerJobs } from '../../src/jobs/examples/ledger/index.js';
import {
  ConfigError,
  ErrorCode,
  InvalidArgumentError,
  NonRetryableError,
  ValidationError,
} from '../../src/core/errors.js';
import { createTestStack, type TestStack } from '../support/stack.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';
import { inboxCount, waitFor } from '../support/ledger.js';

const LEDGER_JOB_NAMES = ['account.close', 'account.open', 'account.rename', 'ledger.transfer'];
/** `defineJob` by absolute URL, so a module in a temp dir can import it. */
const DEFINE_JOB_URL = pathToFileURL(
  fileURLToPath(new URL('../../src/jobs/define-job.ts', import.meta.url)),
).href;

/** A job module the tests write: TypeScript, using defineJob, plain JSON schemas. */
const NOTES_MODULE = `
import { defineJob } from ${JSON.stringify(DEFINE_JOB_URL)};

interface NoteData { body: string; tags?: string[] }

/** Inserts one note whose id is the messageId: a redelivery re-inserts the same key. */
export const addNote = defineJob({
  name: 'notes.add',
  queue: 'notes',
  schema: {
    type: 'object',
    properties: {
      body: { type: 'string', minLength: 1 },
      tags: { type: 'array', items: { type: 'string', maxLength: 10 } },
    },
    required: ['body'],
    additionalProperties: false,
  } as never,
  async handle(ctx) {
    const data = ctx.data as NoteData;
    const inserted = await ctx.insertOnce('notes', { id: ctx.messageId, body: data.body });
    return { status: inserted ? 'added' : 'exists', noteId: ctx.messageId };
  },
});

export const archiveNote = defineJob({
  name: 'notes.archive',
  schema: { type: 'object' } as never,
  async handle() {
    return null;
  },
});

/** Not a job: ignored. */
export const VERSION: number = 2;
export function helper(): string {
  return 'not a job';
}
`;

function moduleFile(dir: string, name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** The ConfigError a promise rejects with; fails the test otherwise. */
async function configErrorOf(promise: Promise<unknown>): Promise<ConfigError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected a ConfigError').to.be.instanceOf(ConfigError);
  return err as ConfigError;
}

describe('jobs: registry and ONCEQ_JOBS', function () {
  this.timeout(60_000);
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'onceq-jobs-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  describe('loadRegistry', () => {
    it('without ONCEQ_JOBS holds the four ledger jobs on the ledger queue', async () => {
      const registry = await loadRegistry(undefined);
      expect(registry.names()).to.deep.equal(LEDGER_JOB_NAMES);
      expect(registry.queues()).to.deep.equal(['ledger']);
    });

    it('adds the jobs a TypeScript module exports beside the ledger jobs', async () => {
      const file = moduleFile(dir, 'notes.ts', NOTES_MODULE);
      const registry = await loadRegistry(file);
      expect(registry.names()).to.deep.equal(
        [...LEDGER_JOB_NAMES, 'notes.add', 'notes.archive'].sort(),
      );
      expect(registry.get('notes.add').queue).to.equal('notes');
      // No queue named: the default one.
      expect(registry.get('notes.archive').queue).to.equal(DEFAULT_QUEUE);
      expect(registry.queues()).to.deep.equal(['default', 'ledger', 'notes'].sort());
      // The loaded jobs validate with their own schemas.
      expect(() => registry.validate('notes.add', { body: 'hi', tags: ['a'] })).not.to.throw();
      expect(() => registry.validate('notes.add', { body: '' })).to.throw(ValidationError);
    });

    it('finds jobs in a default export and in exported arrays, each once', async () => {
      const file = moduleFile(
        dir,
        'arrays.mjs',
        `import { defineJob } from ${JSON.stringify(DEFINE_JOB_URL)};
         const schema = { type: 'object' };
         const a = defineJob({ name: 'pack.a', schema, handle: async () => 1 });
         const b = defineJob({ name: 'pack.b', schema, handle: async () => 2 });
         export const jobs = [a, b];
         export { a };
         export default [a, b, { nested: 'not a job' }];`,
      );
      const jobs = await importJobs(file);
      expect(jobs.map((j) => j.name).sort()).to.deep.equal(['pack.a', 'pack.b']);
      expect((await loadRegistry(file)).names()).to.include.members(['pack.a', 'pack.b']);
    });

    it('accepts plain objects shaped like job definitions, checked as defineJob would', async () => {
      const file = moduleFile(
        dir,
        'plain.mjs',
        `export const plain = {
           name: 'plain.job',
           schema: { type: 'object', required: ['n'] },
           async handle(ctx) { return ctx.data.n; },
         };`,
      );
      const registry = await loadRegistry(file);
      const job = registry.get('plain.job');
      // Without a queue it gets the default, as defineJob gives it: never an `undefined` queue.
      expect(job.queue).to.equal(DEFAULT_QUEUE);
      expect(registry.queues()).to.deep.equal(['default', 'ledger']);
      expect(Object.isFrozen(job)).to.equal(true);
      expect(() => registry.validate('plain.job', {})).to.throw(ValidationError);
    });

    it('a module that exports no job: a ConfigError naming ONCEQ_JOBS and the path', async () => {
      const file = moduleFile(
        dir,
        'empty.mjs',
        `export const answer = 42; export function notAJob() {} export default { name: 'x' };`,
      );
      const err = await configErrorOf(loadRegistry(file));
      expect(err.code).to.equal(ErrorCode.ConfigInvalid);
      expect(err.details).to.deep.equal([
        `ONCEQ_JOBS=${file}: the module exports no job definitions (use defineJob)`,
      ]);
    });

    it('a missing file: a ConfigError naming ONCEQ_JOBS, the path, and that it cannot load', async () => {
      const file = path.join(dir, 'does-not-exist.mjs');
      const err = await configErrorOf(loadRegistry(file));
      expect(err.details).to.have.length(1);
      expect(err.details[0]).to.match(
        new RegExp(`^ONCEQ_JOBS=${escapeRegExp(file)}: cannot load the module: `),
      );
      expect(err.details[0]).to.contain('Cannot find module');
      expect(err.cause).to.be.instanceOf(Error);
    });

    it('a module that does not compile: one line, naming ONCEQ_JOBS', async () => {
      const file = moduleFile(dir, 'broken.ts', 'export const job = {\n  name: "x",,\n};\n');
      const err = await configErrorOf(loadRegistry(file));
      expect(err.details).to.have.length(1);
      expect(err.details[0]).to.contain(`ONCEQ_JOBS=${file}: cannot load the module`);
      expect(err.details[0]).not.to.contain('\n');
    });

    it('a relative path is resolved against the working directory', async () => {
      const file = moduleFile(dir, 'relative.ts', NOTES_MODULE);
      const relative = path.relative(process.cwd(), file);
      expect(path.isAbsolute(relative)).to.equal(false);
      expect((await loadRegistry(relative)).names()).to.include('notes.add');
    });

    it('a job named like a ledger job: a ConfigError naming ONCEQ_JOBS and the job', async () => {
      const file = moduleFile(
        dir,
        'dup-ledger.mjs',
        `import { defineJob } from ${JSON.stringify(DEFINE_JOB_URL)};
         export const mine = defineJob({
           name: 'ledger.transfer', schema: { type: 'object' }, handle: async () => null,
         });`,
      );
      const err = await configErrorOf(loadRegistry(file));
      expect(err.details).to.have.length(1);
      expect(err.details[0]).to.match(
        new RegExp(`^ONCEQ_JOBS=${escapeRegExp(file)}: job ledger\\.transfer is defined twice`),
      );
    });

    it('two jobs of the module with one name: an error, not a silent winner', async () => {
      const file = moduleFile(
        dir,
        'dup-self.mjs',
        `import { defineJob } from ${JSON.stringify(DEFINE_JOB_URL)};
         const schema = { type: 'object' };
         export const one = defineJob({ name: 'same.name', schema, handle: async () => 1 });
         export const two = defineJob({ name: 'same.name', schema, handle: async () => 2 });`,
      );
      const err = await configErrorOf(loadRegistry(file));
      expect(err.details).to.have.length(1);
      expect(err.details[0])
        .to.contain('ONCEQ_JOBS=')
        .and.contain('job same.name is defined twice');
    });

    it('reports every bad definition of a module at once: names, queues, schemas', async () => {
      const file = moduleFile(
        dir,
        'bad-defs.mjs',
        `const handle = async () => null;
         export const a = { name: 'Bad Name!', schema: { type: 'object' }, handle };
         export const b = { name: 'ok.job', queue: 'a:b', schema: { type: 'object' }, handle };
         export const c = { name: 'bad.schema', schema: { type: 'no-such-type' }, handle };`,
      );
      // Names and queues are checked as the module is imported: both reported, one line each.
      const err = await configErrorOf(loadRegistry(file));
      expect(err.details).to.have.length(2);
      expect(err.details[0]).to.contain(`ONCEQ_JOBS=${file}`).and.contain('"Bad Name!"');
      expect(err.details[1])
        .to.contain(`ONCEQ_JOBS=${file}`)
        .and.contain('ok.job')
        .and.contain('"a:b"');

      // A schema Ajv cannot compile is refused when the job is registered.
      const schemaOnly = moduleFile(
        dir,
        'bad-schema.mjs',
        `export const c = {
           name: 'bad.schema', schema: { type: 'no-such-type' }, handle: async () => null,
         };`,
      );
      const schemaErr = await configErrorOf(loadRegistry(schemaOnly));
      expect(schemaErr.details).to.have.length(1);
      expect(schemaErr.details[0]).to.contain('ONCEQ_JOBS=').and.contain('job bad.schema:');
    });
  });

  describe('JobRegistry', () => {
    const Nested = Type.Object(
      {
        orderId: Type.String({ pattern: '^[0-9]+$' }),
        lines: Type.Array(Type.Object({ sku: Type.String(), qty: Type.Integer({ minimum: 1 }) }), {
          minItems: 1,
        }),
        address: Type.Object({ city: Type.String(), zip: Type.String({ minLength: 5 }) }),
      },
      { additionalProperties: false },
    );
    const order = defineJob({
      name: 'order.place',
      queue: 'orders',
      schema: Nested,
      handle: async () => null,
    });
    const registry = new JobRegistry([...ledgerJobs, order]);

    /** The field errors `validate` throws for `data`. */
    function fieldErrors(name: string, data: unknown) {
      try {
        registry.validate(name, data);
      } catch (err) {
        expect(err).to.be.instanceOf(ValidationError);
        expect(err).to.be.instanceOf(NonRetryableError);
        expect((err as ValidationError).code).to.equal(ErrorCode.ValidationFailed);
        return err as ValidationError;
      }
      expect.fail(`${name} accepted ${JSON.stringify(data)}`);
    }

    it('accepts valid data', () => {
      expect(() =>
        registry.validate('ledger.transfer', { fromId: '1', toId: '2', amount: 5 }),
      ).not.to.throw();
      expect(() =>
        registry.validate('order.place', {
          orderId: '7',
          lines: [{ sku: 'a', qty: 1 }],
          address: { city: 'Oslo', zip: '01234' },
        }),
      ).not.to.throw();
    });

    it('reports every failing field of the ledger transfer with a JSON pointer', () => {
      const err = fieldErrors('ledger.transfer', { fromId: 5, amount: 0, memo: 'x' });
      expect(err.details.map((f) => f.path).sort()).to.deep.equal(
        ['/amount', '/fromId', '/memo', '/toId'].sort(),
      );
      const byPath = new Map(err.details.map((f) => [f.path, f.message]));
      expect(byPath.get('/toId')).to.contain("required property 'toId'");
      expect(byPath.get('/fromId')).to.equal('must be string');
      expect(byPath.get('/amount')).to.equal('must be >= 1');
      expect(byPath.get('/memo')).to.equal('must NOT have additional properties');
      // The message lists them too, for logs and dead letters.
      for (const p of ['/toId', '/fromId', '/amount', '/memo']) expect(err.message).to.contain(p);
      expect(err.message).to.match(/^invalid data for job ledger\.transfer: /);
    });

    it('points into nested objects and arrays', () => {
      const err = fieldErrors('order.place', {
        orderId: 'A1',
        lines: [{ sku: 'a', qty: 1 }, { sku: 3, qty: 0 }, { qty: 2 }],
        address: { zip: '12' },
      });
      expect(err.details.map((f) => f.path).sort()).to.deep.equal(
        [
          '/orderId',
          '/lines/1/sku',
          '/lines/1/qty',
          '/lines/2/sku',
          '/address/city',
          '/address/zip',
        ].sort(),
      );
    });

    it('reports a wrong top-level type at the root pointer ""', () => {
      const err = fieldErrors('ledger.transfer', 'not an object');
      expect(err.details).to.deep.equal([{ path: '', message: 'must be object' }]);
      expect(err.message).to.contain('/ must be object');
    });

    it('escapes "/" and "~" in property names (RFC 6901)', () => {
      const odd = new JobRegistry([
        defineJob({
          name: 'odd.keys',
          schema: Type.Object(
            { 'a/b': Type.String(), 'c~d': Type.String() },
            { additionalProperties: false },
          ),
          handle: async () => null,
        }),
      ]);
      let details: { path: string }[] = [];
      try {
        odd.validate('odd.keys', { 'x/y': 1 });
      } catch (err) {
        details = (err as ValidationError).details;
      }
      expect(details.map((d) => d.path).sort()).to.deep.equal(['/a~1b', '/c~0d', '/x~1y']);
    });

    it('treats an unknown job name as non-retryable, listing the known ones', () => {
      let err: unknown;
      try {
        registry.validate('no.such.job', {});
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(NonRetryableError);
      expect((err as NonRetryableError).code).to.equal(ErrorCode.UnknownJob);
      expect((err as NonRetryableError).details).to.deep.equal({ known: registry.names() });
      expect(registry.find('no.such.job')).to.equal(undefined);
    });

    it('refuses a second job with the same name', () => {
      const again = defineJob({
        name: 'order.place',
        schema: Type.Object({}),
        handle: async () => 1,
      });
      expect(() => new JobRegistry([order, again])).to.throw(
        InvalidArgumentError,
        /order\.place is registered twice/,
      );
      expect(() => registry.register(ledgerJobs[0])).to.throw(
        InvalidArgumentError,
        /registered twice/,
      );
    });

    it('lists names and queues sorted and unique', () => {
      expect(registry.names()).to.deep.equal([...LEDGER_JOB_NAMES, 'order.place'].sort());
      expect(registry.queues()).to.deep.equal(['ledger', 'orders']);
    });
  });

  describe('defineJob', () => {
    const schema = Type.Object({});
    const handle = async () => null;

    for (const name of ['', 'Bad Name', '1abc', 'a..b', 'a.', '.a', 'a:b', 'a/b', 'ä.b', 'a.1b']) {
      it(`rejects the name ${JSON.stringify(name)}`, () => {
        expect(() => defineJob({ name, schema, handle })).to.throw(
          InvalidArgumentError,
          /job name/,
        );
      });
    }

    it('accepts dotted identifiers', () => {
      for (const name of ['a', 'ledger.transfer', 'email-send.v2_x', 'Billing.Invoice']) {
        expect(defineJob({ name, schema, handle }).name).to.equal(name);
      }
    });

    it('rejects a queue name BullMQ or a Redis key cannot take, and a missing handler', () => {
      expect(() => defineJob({ name: 'a.b', queue: 'x:y', schema, handle })).to.throw(
        InvalidArgumentError,
        /queue "x:y"/,
      );
      expect(() => defineJob({ name: 'a.b', queue: '', schema, handle })).to.throw(
        InvalidArgumentError,
        /queue/,
      );
      expect(() =>
        defineJob({ name: 'a.b', schema, handle: 'nope' as unknown as typeof handle }),
      ).to.throw(InvalidArgumentError, /handle must be a function/);
    });

    it('returns a frozen definition on the default queue unless told otherwise', () => {
      const job: JobDefinition = defineJob({ name: 'a.b', schema, handle });
      expect(job).to.include({ name: 'a.b', queue: DEFAULT_QUEUE, schema, handle });
      expect(Object.isFrozen(job)).to.equal(true);
      expect(defineJob({ name: 'a.b', queue: 'q-1', schema, handle }).queue).to.equal('q-1');
    });
  });

  describe('end to end: onceq worker with ONCEQ_JOBS', () => {
    let stack: TestStack;
    let jobsFile: string;
    const children: WorkerChild[] = [];
    before(async () => {
      jobsFile = moduleFile(dir, 'e2e-notes.ts', NOTES_MODULE);
      // The producer side registers the same job, from the same module.
      const { addNote } = (await import(pathToFileURL(jobsFile).href)) as {
        addNote: JobDefinition;
      };
      stack = await createTestStack('user_jobs', { jobs: [addNote] });
      await sql`create table notes (id bigint primary key, body text not null)`.execute(stack.db);
    });
    after(async () => {
      await Promise.all(children.splice(0).map((c) => c.destroy()));
      await stack.close();
    });

    const spawn = (env: Record<string, string>) => {
      const child = spawnWorker({ schema: stack.schema, prefix: stack.prefix, env });
      children.push(child);
      return child;
    };

    it('processes a user job enqueued by the producer, committing its effect once', async () => {
      const worker = spawn({ ONCEQ_JOBS: jobsFile });
      await worker.waitForOutput('worker started');
      // It consumes the user job's queue as well as the ledger's.
      expect(worker.stdout()).to.match(/"queues":\[[^\]]*"notes"/);
      expect(worker.stdout()).to.match(/"queues":\[[^\]]*"ledger"/);

      const sent = await stack.producer.enqueue('notes.add', { body: 'hello' });
      expect(sent.queue).to.equal('notes');
      const account = await stack.producer.enqueue('account.open', {
        owner: 'u',
        openingBalance: 5,
      });
      await waitFor('both messages applied', async () => (await inboxCount(stack.db)) === 2);

      const notes = await sql<{
        id: string;
        body: string;
      }>`select id::text, body from notes`.execute(stack.db);
      expect(notes.rows).to.deep.equal([{ id: sent.messageId, body: 'hello' }]);
      const inbox = await stack.db
        .selectFrom('inbox')
        .select(['message_id', 'queue', 'job_name', 'result'])
        .where('message_id', '=', sent.messageId)
        .executeTakeFirstOrThrow();
      expect(inbox).to.deep.equal({
        message_id: sent.messageId,
        queue: 'notes',
        job_name: 'notes.add',
        result: { status: 'added', noteId: sent.messageId },
      });
      const opened = await stack.db
        .selectFrom('accounts')
        .select('id')
        .where('id', '=', account.messageId)
        .execute();
      expect(opened).to.have.length(1);

      // The same message again, as a second BullMQ job (a duplicate delivery): no second effect.
      const queue = stack.producer.queue('notes');
      const original = await queue.getJob(sent.jobId);
      await queue.add('notes.add', original!.data, { jobId: 'dup-note' });
      const duplicate = await waitFor('duplicate completed', async () => {
        // finishedOn and returnvalue are written together: this object is the finished job, where
        // isCompleted() would ask Redis again after the object was read (maybe while active).
        const job = await queue.getJob('dup-note');
        return job?.finishedOn ? job : undefined;
      });
      expect(duplicate.returnvalue).to.deep.equal({
        outcome: 'duplicate',
        result: { status: 'added', noteId: sent.messageId },
      });
      // And the producer replays the same token's request without a new message.
      const replay = await stack.producer.enqueue(
        'notes.add',
        { body: 'hello' },
        { token: sent.token },
      );
      expect(replay).to.include({ messageId: sent.messageId, replayed: true });
      const count = await sql<{ n: string }>`select count(*)::text as n from notes`.execute(
        stack.db,
      );
      expect(count.rows[0]!.n).to.equal('1');
      expect(await inboxCount(stack.db)).to.equal(2);

      worker.child.kill('SIGTERM');
      expect((await worker.exited).code, worker.output()).to.equal(0);
    });

    it('a worker whose ONCEQ_JOBS is missing or clashes exits 1 with one line, no stack', async () => {
      const missing = path.join(dir, 'nowhere.ts');
      const clash = moduleFile(
        dir,
        'clash.mjs',
        `import { defineJob } from ${JSON.stringify(DEFINE_JOB_URL)};
         export const j = defineJob({ name: 'account.open', schema: { type: 'object' }, handle: async () => 1 });`,
      );
      const runs = [spawn({ ONCEQ_JOBS: missing }), spawn({ ONCEQ_JOBS: clash })];
      const exits = await Promise.all(runs.map((r) => r.exited));
      for (const [i, run] of runs.entries()) {
        expect(exits[i]!.code, run.output()).to.equal(1);
        const lines = run
          .stderr()
          .split('\n')
          .filter((l) => l.trim());
        expect(lines[0]).to.equal('onceq: invalid configuration:');
        expect(lines, run.stderr()).to.have.length(2);
        expect(run.stderr()).not.to.match(/^\s+at /m);
      }
      expect(runs[0]!.stderr()).to.contain(`ONCEQ_JOBS=${missing}: cannot load the module`);
      expect(runs[1]!.stderr()).to.contain(
        `ONCEQ_JOBS=${clash}: job account.open is defined twice`,
      );
    });
  });
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
