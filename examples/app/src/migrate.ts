/**
 * `npm run migrate`: onceq's tables first (`migrateToLatest`, which also creates the schema),
 * then the app's, with a Kysely Migrator of the app's own. Its migration table has a name of its
 * own, so the app's migrations and onceq's are recorded apart and never mix.
 */
import { Kysely, Migrator, PostgresDialect, type Migration, type MigrationProvider } from 'kysely';
import pg from 'pg';
import { migrateToLatest } from 'onceq';
import { settings } from './settings.js';
import * as tickets from './migrations/2026_12_01_000000_tickets.js';

/** The app's migrations, imported rather than read from a folder: they compile and bundle as code. */
const appMigrations: MigrationProvider = {
  async getMigrations(): Promise<Record<string, Migration>> {
    return { '2026_12_01_000000_tickets': tickets };
  },
};

export async function migrate(): Promise<void> {
  await migrateToLatest({ database: settings.database, schema: settings.schema });
  const db = new Kysely<unknown>({
    dialect: new PostgresDialect({
      pool: new pg.Pool({
        connectionString: settings.database,
        max: 1,
        // Unqualified names resolve in the schema, as they do in onceq's sessions.
        options: `-c search_path=${settings.schema}`,
      }),
    }),
  });
  try {
    const migrator = new Migrator({
      db,
      provider: appMigrations,
      migrationTableName: 'tickets_migration',
      migrationLockTableName: 'tickets_migration_lock',
      migrationTableSchema: settings.schema,
    });
    const { error, results = [] } = await migrator.migrateToLatest();
    for (const r of results) console.log(`${r.migrationName}: ${r.status}`);
    if (error) throw error;
  } finally {
    await db.destroy();
  }
}

await migrate();
