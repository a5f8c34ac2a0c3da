/**
 * Authentication of the producer API: `Authorization: Bearer <api-key>`, checked in the first
 * hook of every request (before any body is read or any token looked up). The key's id finds
 * its row; the secret's hash is compared in constant time. `request.principal` and
 * `request.admin` carry the result to the routes (Bull Board is admin-only).
 *
 * Rows are cached briefly: a key lookup on every request would double the API's PostgreSQL
 * round trips. A revocation therefore takes effect within {@link AuthOptions.cacheMs}.
 *
 * Authentication runs before the per-principal rate limit (there is no principal yet), so it
 * carries its own limit, per client address, on what a caller without a valid key can cost:
 *
 * - Found rows and unknown ids are cached apart, each in a bounded LRU: a spray of unknown ids
 *   evicts only other unknown ids, never a valid key (so valid callers keep their cache hits).
 * - Failed authentications of well-formed keys (unknown id, revoked, wrong secret) are counted
 *   per client address ({@link clientAddressKey}: IPv4 address or IPv6 /64) in a fixed window.
 *   Past {@link AuthOptions.failureLimit} the address gets 429 with `Retry-After` until its
 *   window ends, before any lookup; so one address costs PostgreSQL at most that many key
 *   lookups per window. Lookups still in flight count against the bound too, so a burst of
 *   concurrent requests cannot slip past it; concurrent lookups of one id share one query.
 * - Missing or malformed credentials cost nothing (no lookup) and are not counted: a client
 *   without a key gets 401 and learns so.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import type { Db } from '../db/create-db.js';
import type { ApiKeyRow } from '../db/database.js';
import { findApiKey } from '../db/api-keys.repository.js';
import { bearerCredential, parseApiKey, secretMatches } from '../core/api-key.js';
import { clientAddressKey } from '../core/client-address.js';
import { isReservedPrincipal } from '../core/principals.js';
import { ErrorCode } from '../core/errors.js';
import { ProblemError, problem, retryAfterSeconds } from './problem.js';

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
/** Default of {@link AuthOptions.maxCachedKeys}: far more keys than a deployment has. */
export const DEFAULT_MAX_CACHED_KEYS = 10_000;
/** Default of {@link AuthOptions.maxCachedUnknownKeys}. */
export const DEFAULT_MAX_CACHED_UNKNOWN_KEYS = 10_000;
/**
 * Default of {@link AuthOptions.maxTrackedAddresses}: client addresses whose failures are
 * counted at once (about 100 bytes each). Past it the least recently failing address is
 * forgotten, which only restarts its count.
 */
export const DEFAULT_MAX_TRACKED_ADDRESSES = 100_000;

/** Options of {@link createAuthenticator}. */
export interface AuthOptions {
  db: Db;
  /** How long a key row (or its absence) is trusted. 0 reads PostgreSQL on every request. */
  cacheMs?: number;
  /** Valid (found) keys cached at most. @defaultValue {@link DEFAULT_MAX_CACHED_KEYS} */
  maxCachedKeys?: number;
  /** Unknown key ids cached at most. @defaultValue {@link DEFAULT_MAX_CACHED_UNKNOWN_KEYS} */
  maxCachedUnknownKeys?: number;
  /**
   * Failed authentications per client address per window before the address gets 429;
   * `false` (or `max: 0`) turns the limit off. Counted in this process.
   * @defaultValue no limit (the API passes `ONCEQ_AUTH_FAILURE_LIMIT`, default 100 a minute)
   */
  failureLimit?: { max: number; windowMs: number } | false;
  /** Client addresses tracked at once. @defaultValue {@link DEFAULT_MAX_TRACKED_ADDRESSES} */
  maxTrackedAddresses?: number;
  /** Told of every failure of a well-formed key (`unauthorized`) and every refusal (`refused`). */
  onFailure?: (result: 'unauthorized' | 'refused') => void;
}

/** The identity a valid key gives. */
export interface Identity {
  principal: string;
  admin: boolean;
}

/**
 * Checks the `Authorization` header of a request from `clientAddress` (the socket's address;
 * without one, failures are not limited); resolves the identity or throws a 401 or 429 problem.
 */
export type Authenticate = (
  header: string | string[] | undefined,
  clientAddress?: string,
) => Promise<Identity>;

const WWW_AUTHENTICATE = 'Bearer realm="onceq"';

/** One client address's failures in its current window. */
interface FailureWindow {
  /** Failed authentications so far. */
  failures: number;
  /** Key lookups of this address in flight (each may become a failure). */
  pending: number;
  /** End of the window, ms since the epoch. */
  resetAt: number;
}

/** Creates the authenticator. */
export function createAuthenticator(options: AuthOptions): Authenticate {
  const cacheMs = options.cacheMs ?? DEFAULT_KEY_CACHE_MS;
  const known =
    cacheMs > 0
      ? new LRUCache<string, ApiKeyRow>({
          max: options.maxCachedKeys ?? DEFAULT_MAX_CACHED_KEYS,
          ttl: cacheMs,
        })
      : undefined;
  const unknown =
    cacheMs > 0
      ? new LRUCache<string, true>({
          max: options.maxCachedUnknownKeys ?? DEFAULT_MAX_CACHED_UNKNOWN_KEYS,
          ttl: cacheMs,
        })
      : undefined;
  const lookups = new Map<string, Promise<ApiKeyRow | undefined>>();
  const limit = options.failureLimit && options.failureLimit.max > 0 ? options.failureLimit : null;
  const windows = new LRUCache<string, FailureWindow>({
    max: options.maxTrackedAddresses ?? DEFAULT_MAX_TRACKED_ADDRESSES,
  });

  /** The address's current window (a fresh one once the last has ended), if it is tracked. */
  function windowOf(client: string, now: number): FailureWindow | undefined {
    const w = windows.get(client);
    if (w && w.resetAt <= now) {
      w.failures = 0;
      w.resetAt = now + limit!.windowMs;
    }
    return w;
  }

  function tooMany(w: FailureWindow, now: number): ProblemError {
    options.onFailure?.('refused');
    return new ProblemError(
      problem(
        ErrorCode.AuthFailuresExceeded,
        `too many failed authentications from this address (${limit!.max} per ` +
          `${limit!.windowMs / 1000} s); check the API key, and retry after the Retry-After delay`,
      ),
      { 'retry-after': `${retryAfterSeconds(w.resetAt - now)}` },
    );
  }

  /** The row of key `id` from the caches, or `miss` when PostgreSQL must be asked. */
  function cached(id: string): ApiKeyRow | undefined | 'miss' {
    const row = known?.get(id);
    if (row) return row;
    return unknown?.get(id) ? undefined : 'miss';
  }

  /** One query per id at a time, however many requests ask for it. */
  function lookup(id: string): Promise<ApiKeyRow | undefined> {
    let pending = lookups.get(id);
    if (!pending) {
      pending = findApiKey(options.db, id)
        .then((row) => {
          if (row) known?.set(id, row);
          else unknown?.set(id, true);
          return row;
        })
        .finally(() => lookups.delete(id));
      lookups.set(id, pending);
    }
    return pending;
  }

  return async function authenticate(header, clientAddress) {
    const now = Date.now();
    const client = limit && clientAddress !== undefined ? clientAddressKey(clientAddress) : null;
    const w = client === null ? undefined : windowOf(client, now);

    const credential = bearerCredential(header);
    if (credential === undefined) {
      throw unauthorized('missing credentials: send Authorization: Bearer <api-key>');
    }
    const parsed = parseApiKey(credential);
    if (!parsed) throw unauthorized('the API key is not valid');

    let found = cached(parsed.id);
    // Past the bound, an address gets no further lookup and no further guess; but a key already
    // known and presented with its secret costs nothing to check and goes through. Behind a
    // proxy every client shares one address, and one client's stale key must not lock out the
    // others.
    if (w && w.failures >= limit!.max && !isValid(found, parsed.secret)) throw tooMany(w, now);
    if (found === 'miss') {
      if (client === null || lookups.has(parsed.id)) {
        found = await lookup(parsed.id);
      } else {
        let tracked = w;
        if (!tracked) {
          tracked = { failures: 0, pending: 0, resetAt: now + limit!.windowMs };
          windows.set(client, tracked);
        }
        if (tracked.failures + tracked.pending >= limit!.max) throw tooMany(tracked, now);
        tracked.pending++;
        try {
          found = await lookup(parsed.id);
        } finally {
          tracked.pending--;
        }
      }
    }
    // One answer for an unknown, revoked or wrong key: which one is nobody's business.
    if (!isValid(found, parsed.secret)) {
      if (client !== null) recordFailure(client);
      options.onFailure?.('unauthorized');
      throw unauthorized('the API key is not valid');
    }
    return { principal: found.principal, admin: found.admin };
  };

  function isValid(row: ApiKeyRow | undefined | 'miss', secret: string): row is ApiKeyRow {
    return (
      row !== undefined &&
      row !== 'miss' &&
      row.revoked_at === null &&
      // A key made for one of onceq's own principals before they were refused at creation
      // would read every message recorded under it: it authenticates as nothing.
      !isReservedPrincipal(row.principal) &&
      secretMatches(secret, row.key_hash)
    );
  }

  function recordFailure(client: string): void {
    const now = Date.now();
    const w = windowOf(client, now);
    if (w) w.failures++;
    else windows.set(client, { failures: 1, pending: 0, resetAt: now + limit!.windowMs });
  }
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
