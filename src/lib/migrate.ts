/**
 * onceq's tables for the library: `migrateToLatest` runs onceq's migrations in their schema,
 * and `migrations` hands the same migrations to a team that runs its own Kysely `Migrator`.
 */
import type { MigrationProvider, MigrationResult } from 'kysely';
import { createDb } from '../db/create-db.js';
import { FileMigrationProvider, migrateToLatest as migrateDb } from '../db/migrate.js';
import { resolveMigrateOptions, type MigrateOptions } from './options.js';

/**
 * onceq's own migrations, as a Kysely `MigrationProvider`. Give it a Migrator of its own, with
 * its own `migrationTableName` (say `onceq_migration`) so onceq's names never mix with yours,
 * over a Kysely whose `search_path` is the schema onceq's tables go in.
 */
export const migrations: MigrationProvider = new FileMigrationProvider();

/**
 * Creates the schema when missing and runs every pending onceq migration; resolves with the
 * migrations run (empty when there were none). The database itself must exist. A failed
 * migration rejects with an `OnceqError` of code `migration_failed`.
 */
export async function migrateToLatest(options: MigrateOptions): Promise<MigrationResult[]> {
  const { database, schema } = resolveMigrateOptions(options);
  const db = createDb({
    ...(typeof database === 'string' ? { url: database } : { pool: database }),
    schema,
    poolSize: 1,
    applicationName: 'onceq-migrate',
  });
  try {
    const { results } = await migrateDb(db, schema);
    return results ?? [];
  } finally {
    await db.destroy();
  }
}
