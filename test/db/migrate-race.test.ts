/**
 * Kysely's Migrator lists the tables of every schema to find its own. Schemas dropped by someone
 * else while it runs (another service's, a test's) must not fail our migration: the run is tried
 * again. Real PostgreSQL; the other schemas are dropped from another connection while ours
 * migrates.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { createDb } from '../../src/db/create-db.js';
import { migrateToLatest } from '../../src/db/migrate.js';
import { TEST_DATABASE_URL, uniqueName } from '../support/env.js';

describe('db: migrations beside schemas being dropped', function () {
  this.timeout(120_000);
  const db = createDb({ url: TEST_DATABASE_URL, poolSize: 8 });
  const mine: string[] = [];
  after(async () => {
    for (const schema of mine)
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
    await db.destroy();
  });

  it('migrates every time while other schemas (with tables) vanish under the table listing', async () => {
    for (let round = 0; round < 6; round++) {
      const others = Array.from({ length: 12 }, () => uniqueName('vanishing'));
      for (const other of others) {
        await sql`create schema ${sql.id(other)}`.execute(db);
        for (let i = 0; i < 8; i++) {
          await sql`create table ${sql.id(other, `t${i}`)} (id int, a text, b text)`.execute(db);
        }
      }
      const schema = uniqueName('migrace');
      mine.push(schema);
      const drops = (async () => {
        for (const other of others) {
          await sql`drop schema ${sql.id(other)} cascade`.execute(db);
          await new Promise((r) => setTimeout(r, 2));
        }
      })();
      const own = createDb({ url: TEST_DATABASE_URL, schema, poolSize: 2 });
      try {
        const [result] = await Promise.all([migrateToLatest(own, schema), drops]);
        expect(result.error).to.equal(undefined);
        expect(result.results?.every((r) => r.status === 'Success')).to.equal(true);
      } finally {
        await own.destroy();
      }
    }
  });
});
