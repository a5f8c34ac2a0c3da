/**
 * Migrations: Kysely's Migrator over the files in `migrations/`. Creates the database (and the
 * schema) when missing, so `onceq migrate latest` works on a fresh server.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  Migrator,
  sql,
  type Migration,
  type MigrationProvider,
  type MigrationInfo,
  type MigrationResultSet,
} from 'kysely';
import pg from 'pg';
import type { Db } from './create-db.js';
import { describeDatabaseFailure } from './create-db.js';
import { ErrorCode, OnceqError, ServiceUnreachableError } from '../core/errors.js';

/**
 * `migrations/` beside `src/` both when running from source (tsx) and from `dist/`, since the
 * build keeps the same relative layout.
 */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));

/** Loads `YYYY_MM_DD_HHMMSS_name.{ts,js}` files; the name without extension is the migration's. */
export class FileMigrationProvider implements MigrationProvider {
  constructor(private readonly dir: string = MIGRATIONS_DIR) {}

  async getMigrations(): Promise<Record<string, Migration>> {
    const files = (await fs.readdir(this.dir))
      .filter((f) => /\.(ts|js)$/.test(f) && !f.endsWith('.d.ts'))
      .sort();
    const migrations: Record<string, Migration> = {};
    for (const file of files) {
      const name = file.replace(/\.(ts|js)$/, '');
      if (migrations[name]) continue;
      const mod = (await import(pathToFileURL(path.join(this.dir, file)).href)) as Migration;
      migrations[name] = { up: mod.up, down: mod.down };
    }
    return migrations;
  }
}

/**
 * A history of migrations of its own: a provider and the Kysely tables that record it. onceq's
 * is {@link ONCEQ_MIGRATIONS}; the CLI's ledger example has another, so the two never mix.
 */
export interface MigrationSet {
  /** Names the set in messages, e.g. `ledger`. */
  label: string;
  provider: MigrationProvider;
  /** @defaultValue Kysely's `kysely_migration` */
  migrationTableName?: string;
  /** @defaultValue Kysely's `kysely_migration_lock` */
  migrationLockTableName?: string;
}

/** onceq's own migrations, the files of `migrations/`, recorded in Kysely's default tables. */
export const ONCEQ_MIGRATIONS: MigrationSet = {
  label: 'onceq',
  provider: new FileMigrationProvider(),
};

function migrator(db: Db, schema: string, set: MigrationSet): Migrator {
  // Name the schema of Kysely's bookkeeping tables: left unnamed, the Migrator's existence check
  // would find another schema's `kysely_migration` and skip creating its own.
  return new Migrator({
    db,
    provider: set.provider,
    migrationTableSchema: schema,
    ...(set.migrationTableName ? { migrationTableName: set.migrationTableName } : {}),
    ...(set.migrationLockTableName ? { migrationLockTableName: set.migrationLockTableName } : {}),
  });
}

function check(resultSet: MigrationResultSet): MigrationResultSet {
  if (resultSet.error) {
    const failed = resultSet.results?.find((r) => r.status === 'Error');
    throw new OnceqError(
      ErrorCode.MigrationFailed,
      `migration ${failed?.migrationName ?? '(unknown)'} failed: ${String((resultSet.error as Error).message ?? resultSet.error)}`,
      { cause: resultSet.error },
    );
  }
  return resultSet;
}

/**
 * Kysely's Migrator finds its own bookkeeping tables by listing the tables of every schema of
 * the database. When another schema is dropped meanwhile (another service's, a test's), that
 * listing fails naming the other schema or one of its tables, though nothing of ours is wrong
 * and nothing ran: such a run is tried again, a few times over a few seconds. Throws (coded) when
 * the run failed.
 */
export async function runMigrator(
  schema: string,
  run: () => Promise<MigrationResultSet>,
): Promise<MigrationResultSet> {
  for (let attempt = 1; ; attempt++) {
    const resultSet = await run();
    const othersVanished =
      !resultSet.results?.length && anotherSchemaVanished(schema, resultSet.error);
    if (!othersVanished || attempt >= 8) return check(resultSet);
    // Dropping schemas comes in bursts (a test suite's teardown): let it pass.
    await new Promise((resolve) => setTimeout(resolve, 20 * 2 ** attempt));
  }
}

/** Creates the schema if missing and runs every pending migration of `set` (onceq's). */
export async function migrateToLatest(
  db: Db,
  schema: string,
  set: MigrationSet = ONCEQ_MIGRATIONS,
): Promise<MigrationResultSet> {
  await sql`create schema if not exists ${sql.id(schema)}`.execute(db);
  return runMigrator(schema, () => migrator(db, schema, set).migrateToLatest());
}

/** Undoes the most recent migration of `set` (onceq's). */
export async function migrateDown(
  db: Db,
  schema: string,
  set: MigrationSet = ONCEQ_MIGRATIONS,
): Promise<MigrationResultSet> {
  return runMigrator(schema, () => migrator(db, schema, set).migrateDown());
}

/**
 * Whether `error` is the listing of every schema's tables failing on another schema dropped
 * meanwhile: the schema, a table, or a table's column gone between the listing's steps.
 */
function anotherSchemaVanished(schema: string, error: unknown): boolean {
  const err = error as { code?: string; message?: string } | undefined;
  return (
    (err?.code === '3F000' || err?.code === '42P01' || err?.code === '42703') &&
    !String(err.message).includes(`"${schema}"`) &&
    !String(err.message).includes(`${schema}.`)
  );
}

/** Every known migration of `set` (onceq's) with the time it ran, or `undefined` when pending. */
export async function migrationStatus(
  db: Db,
  schema: string,
  set: MigrationSet = ONCEQ_MIGRATIONS,
): Promise<{ name: string; executedAt?: Date }[]> {
  // The same listing as a migration run's, tried again the same way (see runMigrator).
  const list = async (attempt: number): Promise<readonly MigrationInfo[]> => {
    try {
      return await migrator(db, schema, set).getMigrations();
    } catch (err) {
      if (attempt >= 8 || !anotherSchemaVanished(schema, err)) throw err;
      await new Promise((r) => setTimeout(r, 100 * attempt));
      return list(attempt + 1);
    }
  };
  const all = await list(1);
  return all.map((m) => ({ name: m.name, executedAt: m.executedAt }));
}

/**
 * Creates the database named in `url` when it does not exist, connecting to the server's
 * `postgres` database to do it. A server that is down is reported as unreachable.
 */
export async function ensureDatabase(url: string): Promise<boolean> {
  const target = new URL(url);
  const dbName = decodeURIComponent(target.pathname.replace(/^\//, '')) || 'postgres';
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  try {
    await client.connect();
  } catch (err) {
    throw new ServiceUnreachableError(describeDatabaseFailure(err, url), err);
  }
  try {
    const found = await client.query('select 1 from pg_database where datname = $1', [dbName]);
    if (found.rowCount) return false;
    try {
      await client.query(`create database ${pg.escapeIdentifier(dbName)}`);
    } catch (err) {
      // Two processes racing to create it: the loser sees duplicate_database (42P04) when the
      // winner committed before its check, or a unique violation (23505) on pg_database's name
      // index when both got past the check at once. Either way the database is there.
      const code = (err as { code?: string }).code;
      if (code !== '42P04' && code !== '23505') throw err;
      return false;
    }
    return true;
  } finally {
    await client.end();
  }
}
