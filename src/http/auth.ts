/**
 * Authentication of the producer API: `Authorization: Bearer <api-key>`, checked in the first
 * hook of every request (before any body is read or any token looked up). The key's id finds
 * its row; the secret's hash is compared in constant time. `request.principal` and
 * `request.admin` carry the result to the routes (Bull Board, in a later issue, is admin-only).
 *
 * Rows are cached briefly: a key lookup on every request would double the API's PostgreSQL
 * round trips. A revocation therefore takes effect within {@link AuthOptions.cacheMs}.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Db } from '../db/create-db.js';
import type { ApiKeyRow } from '../db/database.js';
import { findApiKey } from '../db/api-keys.repository.js';
import { bearerCredential, parseApiKey, secretMatches } from '../core/api-key.js';
import { ErrorCode } from '../core/errors.js';
import { ProblemError, problem } from './problem.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated caller; empty on public routes. */
    principal: string;
    /** True when the caller's key was created with `--admin`. */
    admin: boolean;
  }
}

/** Default of {@link AuthOptions.cacheMs}. */
export const DEFAULT_KEY_CACHE_MS = 5_000;
/** Cached rows at most; the cache is cleared when full (keys are few; this bounds a key spray). */
const MAX_CACHED_KEYS = 10_000;

/** Options of {@link createAuthenticator}. */
export interface AuthOptions {
  db: Db;
  /** How long a key row (or its absence) is trusted. 0 reads PostgreSQL on every request. */
  cacheMs?: number;
}

/** The identity a valid key gives. */
export interface Identity {
  principal: string;
  admin: boolean;
}

const WWW_AUTHENTICATE = 'Bearer realm="onceq"';

/** Checks the `Authorization` header; resolves the identity or throws a 401 problem. */
export function createAuthenticator(options: AuthOptions) {
  const cacheMs = options.cacheMs ?? DEFAULT_KEY_CACHE_MS;
  const cache = new Map<string, { row: ApiKeyRow | undefined; at: number }>();

  async function row(id: string): Promise<ApiKeyRow | undefined> {
    const now = Date.now();
    const hit = cache.get(id);
    if (hit && now - hit.at < cacheMs) return hit.row;
    const found = await findApiKey(options.db, id);
    if (cacheMs > 0) {
      if (cache.size >= MAX_CACHED_KEYS) cache.clear();
      cache.set(id, { row: found, at: now });
    }
    return found;
  }

  return async function authenticate(header: string | string[] | undefined): Promise<Identity> {
    const credential = bearerCredential(header);
    if (credential === undefined) {
      throw unauthorized('missing credentials: send Authorization: Bearer <api-key>');
    }
    const parsed = parseApiKey(credential);
    const found = parsed && (await row(parsed.id));
    // One answer for a malformed, unknown, revoked or wrong key: which one is nobody's business.
    if (
      !parsed ||
      !found ||
      found.revoked_at !== null ||
      !secretMatches(parsed.secret, found.key_hash)
    ) {
      throw unauthorized('the API key is not valid');
    }
    return { principal: found.principal, admin: found.admin };
  };
}

function unauthorized(detail: string): ProblemError {
  return new ProblemError(problem(ErrorCode.Unauthorized, detail), {
    'www-authenticate': WWW_AUTHENTICATE,
  });
}

/** A preHandler for admin-only routes (Bull Board): 403 for a valid non-admin key. */
export async function requireAdmin(request: FastifyRequest, _reply: FastifyReply): Promise<void> {
  if (!request.admin) {
    throw new ProblemError(problem(ErrorCode.Forbidden, 'this route needs an admin API key'));
  }
}
