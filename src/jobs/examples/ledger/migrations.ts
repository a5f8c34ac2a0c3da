/**
 * The ledger example's migrations, apart from onceq's: their own Kysely migration table
 * (`onceq_ledger_migration`), so the product's history never lists the example's tables. The
 * CLI installs them beside onceq's (`migrate latest`, `start`, `worker --migrate`, `demo`,
 * `bench`, `chaos`); a library user never gets them.
 */
import type { Migration, MigrationResultSet } from 'kysely';
import type { Db } from '../../../db/create-db.js';
import { migrateToLatest, type MigrationSet } from '../../../db/migrate.js';
import * as ledgerTables from './migrations/2026_12_01_160000_ledger_tables.js';

/** The ledger's migrations, imported rather than read from a folder. */
export const LEDGER_MIGRATIONS: MigrationSet = {
  label: 'ledger',
  provider: {
    async getMigrations(): Promise<Record<string, Migration>> {
      return { '2026_12_01_160000_ledger_tables': ledgerTables };
    },
  },
  migrationTableName: 'onceq_ledger_migration',
  migrationLockTableName: 'onceq_ledger_migration_lock',
};

/**
 * onceq's migrations, then the ledger's, in `schema`: what the CLI's commands that run the
 * ledger install. Resolves with both result sets, onceq's first.
 */
export async function migrateWithLedger(
  db: Db,
  schema: string,
): Promise<{ onceq: MigrationResultSet; ledger: MigrationResultSet }> {
  const onceq = await migrateToLatest(db, schema);
  const ledger = await migrateToLatest(db, schema, LEDGER_MIGRATIONS);
  return { onceq, ledger };
}
