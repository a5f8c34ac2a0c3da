/**
 * API keys in PostgreSQL: create, find, revoke, list. Only hashes of secrets are stored; the
 * checking of a presented key lives in core/api-key.ts and http/auth.ts.
 */
import type { Kysely } from 'kysely';
import type { ApiKeyRow, Database } from './database.js';
import { ErrorCode, OnceqError, ValidationError } from '../core/errors.js';
import { principalNameProblem } from '../core/principals.js';

/** What is stored of a new key. */
export interface NewApiKeyRecord {
  id: string;
  principal: string;
  hash: string;
  admin: boolean;
}

/**
 * Stores a new key.
 * @throws ValidationError (path `/principal`) for a malformed principal or one onceq uses itself
 *   (core/principals.ts): such a key would read every message recorded under that name.
 */
export async function insertApiKey(db: Kysely<Database>, key: NewApiKeyRecord): Promise<ApiKeyRow> {
  const problem = principalNameProblem(key.principal);
  if (problem !== undefined) {
    throw new ValidationError(problem, [{ path: '/principal', message: problem }]);
  }
  return withTableCheck(() =>
    db
      .insertInto('api_keys')
      .values({ key_id: key.id, principal: key.principal, key_hash: key.hash, admin: key.admin })
      .returningAll()
      .executeTakeFirstOrThrow(),
  );
}

/** The key with this id, revoked or not. */
export async function findApiKey(db: Kysely<Database>, id: string): Promise<ApiKeyRow | undefined> {
  return db.selectFrom('api_keys').selectAll().where('key_id', '=', id).executeTakeFirst();
}

/** Revokes a key; `undefined` when there is no such key, the row (with its first revocation time) otherwise. */
export async function revokeApiKey(
  db: Kysely<Database>,
  id: string,
): Promise<ApiKeyRow | undefined> {
  return withTableCheck(async () => {
    const revoked = await db
      .updateTable('api_keys')
      .set({ revoked_at: new Date() })
      .where('key_id', '=', id)
      .where('revoked_at', 'is', null)
      .returningAll()
      .executeTakeFirst();
    return revoked ?? findApiKey(db, id);
  });
}

/** Every key, oldest first; revoked keys only when asked. */
export async function listApiKeys(
  db: Kysely<Database>,
  options: { includeRevoked?: boolean; principal?: string } = {},
): Promise<ApiKeyRow[]> {
  return withTableCheck(() => {
    let query = db.selectFrom('api_keys').selectAll().orderBy('created_at').orderBy('key_id');
    if (!options.includeRevoked) query = query.where('revoked_at', 'is', null);
    if (options.principal) query = query.where('principal', '=', options.principal);
    return query.execute();
  });
}

/** A missing table means migrations have not run: say so instead of "relation does not exist". */
async function withTableCheck<T>(body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    if ((err as { code?: string }).code === '42P01') {
      throw new OnceqError(
        ErrorCode.MigrationsPending,
        'the api_keys table does not exist; run `onceq migrate` first',
        { cause: err },
      );
    }
    throw err;
  }
}
