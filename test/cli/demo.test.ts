/**
 * `onceq demo` as a real child process, with a stack of its own (an API child and worker
 * children it kills and replaces): it exits 0 and its report says the invariants hold. Kept
 * short with flags; the run's schema and Redis prefix are removed afterwards.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { createDb } from '../../src/db/create-db.js';
import type { BackendKind } from '../../src/queues/backend.js';
import { closeRedis } from '../../src/redis/connection.js';
import { deletePrefix, testRedis, TEST_DATABASE_URL, uniqueName } from '../support/env.js';
import { spawnWorker, type WorkerChild } from '../support/child.js';

describe('cli: onceq demo', function () {
  this.timeout(120_000);
  const schema = uniqueName('cli_demo');
  const prefix = uniqueName('cli_demo');
  let demo: WorkerChild | undefined;

  const pgPrefix = uniqueName('cli_demo_pg');
  after(async () => {
    await demo?.destroy();
    const redis = testRedis();
    await deletePrefix(redis, prefix);
    await closeRedis(redis);
    const db = createDb({ url: TEST_DATABASE_URL, schema: 'public', poolSize: 1 });
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
    await sql`drop schema if exists ${sql.id(`${schema}_pg`)} cascade`.execute(db);
    await sql`drop schema if exists ${sql.id(pgPrefix)} cascade`.execute(db);
    await db.destroy();
  });

  // PostgreSQL-only mode too: the demo's duplicated jobs must go to the stack's own queues
  // (they once went to a Redis on the default port, where no worker of the stack looked).
  for (const backend of ['redis', 'postgres'] as BackendKind[]) {
    it(`drives repeated requests, duplicated jobs and a killed worker; exits 0 with the invariants held (${backend})`, async () => {
      await demo?.destroy();
      demo = spawnWorker({
        schema: backend === 'redis' ? schema : `${schema}_pg`,
        prefix: backend === 'redis' ? prefix : pgPrefix,
        backend,
        args: [
          'demo',
          '--accounts',
          '5',
          '--transfers',
          '200',
          '--repeat',
          '0.2',
          '--duplicate',
          '0.2',
          '--workers',
          '2',
          '--kills',
          '1',
          '--timeout',
          '90s',
        ],
      });
      const exit = await demo.exited;
      const report = demo.stdout();
      expect(exit.code, demo.output()).to.equal(0);
      expect(report).to.contain('invariants hold: yes');
      expect(report).to.match(/messages accepted\s+205\b/);
      expect(report).to.match(/worker processes killed\s+1\b/);
      expect(report).to.match(/dead letters\s+0\b/);
      expect(report).not.to.contain('FAIL');
      const absorbed = Number(/duplicates absorbed\s+(\d+)/.exec(report)?.[1]);
      expect(absorbed).to.be.greaterThan(0);
    });
  }
});
