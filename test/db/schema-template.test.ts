/**
 * The test schemas copied from a migrated template (test/support/schema-template.ts) must be
 * what the migrations make: if they drifted, every other suite would test a database no user
 * has. A schema migrated for real and one copied are dumped and compared, with their names
 * taken out; and the copy works (a trigger that embeds its schema's name among the rest).
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { createDb, type Db } from '../../src/db/create-db.js';
import { migrateWithLedger } from '../../src/jobs/examples/ledger/migrations.js';
import { migrationStatus } from '../../src/db/migrate.js';
import { createMigratedSchema, dumpSchema } from '../support/schema-template.js';
import { TEST_DATABASE_URL, uniqueName } from '../support/env.js';

/** The schema-only dump of `schema`, its name replaced by `S`. */
async function shape(schema: string): Promise<string> {
  return (await dumpSchema(TEST_DATABASE_URL, schema, ['--schema-only'])).split(schema).join('S');
}

describe('test support: schemas copied from a migrated template', function () {
  this.timeout(60_000);
  const dbs: { db: Db; schema: string }[] = [];
  const open = (label: string) => {
    const schema = uniqueName(label);
    const db = createDb({ url: TEST_DATABASE_URL, schema, poolSize: 2 });
    dbs.push({ db, schema });
    return { db, schema };
  };
  after(async () => {
    for (const { db, schema } of dbs) {
      await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db);
      await db.destroy();
    }
  });

  it('are the schema the migrations make, object for object, migration history included', async () => {
    const migrated = open('tpl_real');
    await migrateWithLedger(migrated.db, migrated.schema);
    const copied = open('tpl_copy');
    // A copy, not the fallback to migrating (which would compare the migrations with themselves).
    expect(await createMigratedSchema(TEST_DATABASE_URL, copied.db, copied.schema)).to.equal(
      'copied',
    );
    expect(await shape(copied.schema)).to.equal(await shape(migrated.schema));
    const names = async (s: { db: Db; schema: string }) =>
      (await migrationStatus(s.db, s.schema)).map((m) => [m.name, m.executedAt !== undefined]);
    expect(await names(copied)).to.deep.equal(await names(migrated));
    // Row counts of every table the migrations filled (the worker-id slots, for one).
    const counts = async (s: { db: Db; schema: string }) =>
      (
        await sql<{ table_name: string; n: number }>`
          select c.relname as table_name,
                 (xpath('/row/n/text()', query_to_xml(
                   format('select count(*) as n from %I.%I', n.nspname, c.relname), false, true, ''
                 )))[1]::text::int as n
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
          where n.nspname = ${s.schema} and c.relkind = 'r'
          order by 1`.execute(s.db)
      ).rows;
    expect(await counts(copied)).to.deep.equal(await counts(migrated));
  });

  it('are usable on their own: the acceptance trigger of the copy guards the copy', async () => {
    const copied = open('tpl_use');
    await createMigratedSchema(TEST_DATABASE_URL, copied.db, copied.schema);
    const row = (messageId: string) => ({
      message_id: messageId,
      principal: 'p',
      token: 'oqt_same',
      fingerprint: 'f',
      queue: 'ledger',
      job_name: 'account.open',
      data: '{}',
      job_id: `m-${messageId}`,
      options: '{}',
    });
    // The trigger keeps (principal, token) unique across the partitions: a second message with
    // the same token is skipped (as ON CONFLICT DO NOTHING would), by this schema's trigger.
    const first = '253600000000000001';
    await copied.db.insertInto('accepted_messages').values(row(first)).execute();
    await copied.db.insertInto('accepted_messages').values(row('253600000000000002')).execute();
    const stored = await copied.db.selectFrom('accepted_messages').select('message_id').execute();
    expect(stored.map((r) => r.message_id)).to.deep.equal([first]);
    // No function of the copy names the template's schema.
    const fns = await sql<{ src: string }>`
      select p.prosrc as src from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = ${copied.schema}`.execute(copied.db);
    for (const { src } of fns.rows) expect(src).not.to.match(/t_tpl_[0-9a-f]{12}/);
  });
});
