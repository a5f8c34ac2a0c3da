/**
 * `onceq keys create|revoke|list`: API keys of the producer API. A new key is printed once, on
 * stdout alone (so `KEY=$(onceq keys create --principal shop)` works); only a hash is stored.
 */
import { loadConfig } from '../config.js';
import { checkDatabase, createDb, type Db } from '../db/create-db.js';
import { insertApiKey, listApiKeys, revokeApiKey } from '../db/api-keys.repository.js';
import { mintApiKey, parseApiKey } from '../core/api-key.js';
import { principalNameProblem } from '../core/principals.js';
import { resolveServices } from './services.js';

/** Options of `keys create`. */
export interface KeysCreateOptions {
  principal: string;
  admin?: boolean;
}

async function withDb<T>(body: (db: Db) => Promise<T>): Promise<T> {
  // Beside a running `onceq start` with no URLs set: its embedded PostgreSQL (services.ts).
  const { config } = await resolveServices(loadConfig());
  const db = createDb({
    url: config.databaseUrl,
    schema: config.databaseSchema,
    poolSize: 1,
    applicationName: 'onceq-keys',
  });
  try {
    await checkDatabase(db, config.databaseUrl);
    return await body(db);
  } finally {
    await db.destroy();
  }
}

/** Creates a key and prints it once. */
export async function runKeysCreate(options: KeysCreateOptions): Promise<number> {
  // Refused before connecting: a bad or reserved name needs no database to be told apart.
  const problem = principalNameProblem(options.principal);
  if (problem !== undefined) {
    process.stderr.write(`onceq keys create: --principal: ${problem}\n`);
    return 1;
  }
  return withDb(async (db) => {
    const minted = mintApiKey();
    await insertApiKey(db, {
      id: minted.id,
      principal: options.principal,
      hash: minted.hash,
      admin: options.admin === true,
    });
    process.stderr.write(
      `created key ${minted.id} for principal ${options.principal}` +
        `${options.admin ? ' (admin)' : ''}; it is shown once, store it now:\n`,
    );
    process.stdout.write(`${minted.key}\n`);
    return 0;
  });
}

/** Revokes a key, named by its id or by the whole key. */
export async function runKeysRevoke(idOrKey: string): Promise<number> {
  const id = parseApiKey(idOrKey)?.id ?? idOrKey;
  if (!/^[0-9a-f]{16}$/.test(id)) {
    process.stderr.write('onceq keys revoke: expected a key id (16 hex characters) or a key\n');
    return 1;
  }
  return withDb(async (db) => {
    const row = await revokeApiKey(db, id);
    if (!row) {
      process.stderr.write(`onceq keys revoke: no key ${id}\n`);
      return 1;
    }
    process.stdout.write(
      `revoked key ${id} of principal ${row.principal} at ${row.revoked_at?.toISOString()}\n`,
    );
    return 0;
  });
}

/** Lists keys (never their secrets). */
export async function runKeysList(options: { all?: boolean; json?: boolean }): Promise<number> {
  return withDb(async (db) => {
    const rows = await listApiKeys(db, { includeRevoked: options.all === true });
    const view = rows.map((r) => ({
      id: r.key_id,
      principal: r.principal,
      admin: r.admin,
      createdAt: r.created_at.toISOString(),
      revokedAt: r.revoked_at ? r.revoked_at.toISOString() : null,
    }));
    if (options.json) {
      for (const v of view) process.stdout.write(`${JSON.stringify(v)}\n`);
      return 0;
    }
    if (view.length === 0) {
      process.stderr.write('no keys; create one with `onceq keys create --principal NAME`\n');
      return 0;
    }
    const header = ['id', 'principal', 'admin', 'created', 'revoked'];
    const table = view.map((v) => [
      v.id,
      v.principal,
      v.admin ? 'yes' : 'no',
      v.createdAt,
      v.revokedAt ?? '-',
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => r[i]!.length)));
    for (const row of [header, ...table]) {
      process.stdout.write(
        `${row
          .map((c, i) => c.padEnd(widths[i]!))
          .join('  ')
          .trimEnd()}\n`,
      );
    }
    return 0;
  });
}
