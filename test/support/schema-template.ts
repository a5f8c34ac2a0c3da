/**
 * Test schemas made by copying one migrated schema instead of running every migration again:
 * the first call of a test process runs the real migrations (onceq's and the ledger's) once into
 * a template schema, dumps it with `pg_dump` (tables, functions, triggers, partitions and the
 * rows the migrations wrote, the migration tables included), drops it, and from then on each new
 * schema is that dump with the template's name replaced, run as one statement list (one implicit
 * transaction, so a schema is there whole or not at all). About half the time of migrating on
 * this machine, for the hundreds of schemas a run makes.
 *
 * The template's name is unique (`t_tpl_` and random hex), so replacing it in the text touches
 * nothing else; the trigger that embeds its schema's name gets the new one with the rest. When
 * `pg_dump` is missing or fails, every schema is migrated as before (said once on stderr).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import pg from 'pg';
import { sql } from 'kysely';
import type { Db } from '../../src/db/create-db.js';
import { createDb } from '../../src/db/create-db.js';
import { migrateWithLedger } from '../../src/jobs/examples/ledger/migrations.js';

const run = promisify(execFile);

interface Template {
  /** The template schema's name, as it appears in `script`. */
  name: string;
  /** The statements that make the template schema, `\` meta-commands taken out. */
  script: string;
}

/**
 * The template of the current UTC day: the migrations create the day partitions of the day they
 * run and a few ahead, so a run that goes past midnight makes a new one, as migrating would.
 */
let template: { day: string; made: Promise<Template | undefined> } | undefined;

/**
 * Migrates `schema` (which must not exist yet) the fast way when it can (see the module);
 * resolves with `copied` when it was copied from the template, `migrated` when it fell back.
 */
export async function createMigratedSchema(
  url: string,
  db: Db,
  schema: string,
): Promise<'copied' | 'migrated'> {
  const day = new Date().toISOString().slice(0, 10);
  if (template?.day !== day) template = { day, made: makeTemplate(url) };
  const made = await template.made;
  if (!made) {
    await migrateWithLedger(db, schema);
    return 'migrated';
  }
  const client = new pg.Client({ connectionString: url, application_name: 'onceq-test' });
  await client.connect();
  try {
    await client.query(made.script.split(made.name).join(schema));
  } finally {
    await client.end();
  }
  return 'copied';
}

async function makeTemplate(url: string): Promise<Template | undefined> {
  const name = `t_tpl_${randomBytes(6).toString('hex')}`;
  const db = createDb({ url, schema: name, poolSize: 1, applicationName: 'onceq-test' });
  try {
    await migrateWithLedger(db, name);
    const ddl = await dumpSchema(url, name, ['--schema-only']);
    const rows = await dumpSchema(url, name, [
      '--data-only',
      '--inserts',
      '--rows-per-insert=1000',
    ]);
    return { name, script: `${ddl}\n${rows}` };
  } catch (err) {
    process.stderr.write(
      `test schemas: migrating each one (no template: ${(err as Error).message.split('\n')[0]})\n`,
    );
    return undefined;
  } finally {
    await sql`drop schema if exists ${sql.id(name)} cascade`.execute(db);
    await db.destroy();
  }
}

/**
 * `pg_dump` of one schema (no owners, no privileges), psql's `\` meta-commands taken out (pg_dump
 * 15.14 and later fence their output with `\restrict`). pg_dump lists the whole catalog, so
 * another schema dropped meanwhile (a test tearing down in another process) can fail it naming
 * that schema or one of its objects: such a dump is tried again, a few times.
 */
export async function dumpSchema(url: string, schema: string, args: string[]): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      const { stdout } = await run(
        'pg_dump',
        [...args, '--schema', schema, '--no-owner', '--no-privileges', url],
        { maxBuffer: 64 * 1024 * 1024 },
      );
      return stdout
        .split('\n')
        .filter((line) => !line.startsWith('\\'))
        .join('\n');
    } catch (err) {
      const said = String((err as { stderr?: string }).stderr ?? (err as Error).message);
      if (attempt >= 8 || !/does not exist/.test(said) || said.includes(schema)) throw err;
      await new Promise((r) => setTimeout(r, 50 * attempt));
    }
  }
}
