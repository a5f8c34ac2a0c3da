/**
 * The mode guard (`queue_backends`): the first process of a prefix records its mode, every
 * later one of the other mode is refused, also when processes of both modes start at once on a
 * fresh prefix (the insert must return the row another transaction committed meanwhile, or both
 * would pass); and without onceq's migrations the answer is "run them", not a driver error.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { createDb } from '../../src/db/create-db.js';
import { assertQueueBackend } from '../../src/db/queue-backends.repository.js';
import { ConfigError, ErrorCode, OnceqError } from '../../src/core/errors.js';
import {
  createTestSchema,
  TEST_DATABASE_URL,
  uniqueName,
  type TestSchema,
} from '../support/env.js';

describe('db: the mode guard of a prefix', function () {
  this.timeout(60_000);
  let t: TestSchema;
  before(async () => {
    t = await createTestSchema('queue_backends', 20);
  });
  after(async () => {
    await t.drop();
  });

  it('lets one mode through when processes of both start at once on a fresh prefix', async () => {
    for (let round = 0; round < 10; round++) {
      const prefix = uniqueName('race');
      const kinds = Array.from({ length: 16 }, (_, i) => (i % 2 === 0 ? 'redis' : 'postgres'));
      const settled = await Promise.allSettled(
        kinds.map((kind) => assertQueueBackend(t.db, prefix, kind as 'redis' | 'postgres')),
      );
      const { rows } = await sql<{ kind: string }>`
        select kind from queue_backends where prefix = ${prefix}`.execute(t.db);
      expect(rows).to.have.length(1);
      settled.forEach((s, i) => {
        if (kinds[i] === rows[0]!.kind)
          expect(s.status, `${kinds[i]} of round ${round}`).to.equal('fulfilled');
        else {
          expect(s.status, `${kinds[i]} of round ${round}`).to.equal('rejected');
          expect((s as PromiseRejectedResult).reason).to.be.instanceOf(ConfigError);
        }
      });
    }
  });

  it('answers MigrationsPending where onceq has not migrated', async () => {
    const schema = uniqueName('unmigrated');
    const db = createDb({ url: TEST_DATABASE_URL, schema, poolSize: 1 });
    try {
      await sql`create schema ${sql.id(schema)}`.execute(db);
      const err = await assertQueueBackend(db, 'p', 'postgres').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(OnceqError);
      expect((err as OnceqError).code).to.equal(ErrorCode.MigrationsPending);
    } finally {
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
      await db.destroy();
    }
  });
});
