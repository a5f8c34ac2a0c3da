/**
 * `onceq migrate [latest|down|status]`: Kysely migrations; creates the database if missing.
 * `latest` and `status` cover onceq's migrations and then the ledger example's (the CLI's
 * built-in jobs, with a migration table of their own); `down` undoes onceq's most recent only,
 * leaving the example's tables and their data alone.
 */
import { loadConfig } from '../config.js';
import { ensureDatabase, migrateDown, migrateToLatest, migrationStatus } from '../db/migrate.js';
import { createDb, checkDatabase } from '../db/create-db.js';
import { LEDGER_MIGRATIONS } from '../jobs/examples/ledger/migrations.js';
import { resolveServices } from './services.js';

/** Runs one migration action; prints what it did; returns the exit code. */
export async function runMigrate(action: string): Promise<number> {
  if (!['latest', 'down', 'status'].includes(action)) {
    process.stderr.write(
      `onceq migrate: unknown action "${action}"; expected latest, down or status\n`,
    );
    return 1;
  }
  // Beside a running `onceq start` with no URLs set: its embedded PostgreSQL (services.ts).
  const { config } = await resolveServices(loadConfig());
  const created = await ensureDatabase(config.databaseUrl);
  if (created)
    process.stdout.write(`created database ${new URL(config.databaseUrl).pathname.slice(1)}\n`);
  const db = createDb({ url: config.databaseUrl, schema: config.databaseSchema, poolSize: 1 });
  try {
    await checkDatabase(db, config.databaseUrl);
    if (action === 'status') {
      const all = [
        ...(await migrationStatus(db, config.databaseSchema)),
        ...(await migrationStatus(db, config.databaseSchema, LEDGER_MIGRATIONS)),
      ];
      for (const m of all) {
        process.stdout.write(
          `${m.executedAt ? 'applied ' : 'pending '} ${m.name}${m.executedAt ? `  ${m.executedAt.toISOString()}` : ''}\n`,
        );
      }
      return 0;
    }
    const results =
      action === 'latest'
        ? [
            ...((await migrateToLatest(db, config.databaseSchema)).results ?? []),
            ...((await migrateToLatest(db, config.databaseSchema, LEDGER_MIGRATIONS)).results ??
              []),
          ]
        : ((await migrateDown(db, config.databaseSchema)).results ?? []);
    if (!results.length) process.stdout.write('nothing to do\n');
    for (const r of results) {
      process.stdout.write(
        `${r.direction === 'Up' ? 'up  ' : 'down'} ${r.migrationName}: ${r.status}\n`,
      );
    }
    return 0;
  } finally {
    await db.destroy();
  }
}
