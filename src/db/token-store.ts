/**
 * The token store on PostgreSQL, for the PostgreSQL-only mode: the same {@link TokenStore} as
 * the Redis store (src/redis/token-store.ts), with the same transitions and the same answers,
 * over the table `message_tokens` (one row per token) and one PL/pgSQL function per transition,
 * `onceq_token_{issue,accept,settle,rebind,claim,renew,release,complete}` (migrations/
 * 2026_12_01_160000_message_tokens.ts, which says how each one decides). Each method is one
 * round trip and one transaction; times come from PostgreSQL's clock (`clock_timestamp()`), as
 * the Redis store's come from Redis `TIME`.
 *
 * The functions answer `[code, ...payload]` with the Lua scripts' codes, decoded by the one
 * decoder both stores share (core/token-codes.ts): the same results, the same
 * `TokenMismatchError`, the same `ScriptFailed` for an answer no transition gives. Arguments
 * are checked here before any query, with the Redis store's rules and messages, and a
 * malformed token is refused (`TokenMalformed`) without touching the database.
 *
 * Where this store is not Redis:
 * - Expiry. A row past its expiry is a missing key to every function; rows are deleted later
 *   and in batches by {@link deleteExpiredTokens}, which the worker runs periodically.
 * - Outstanding tokens are counted from the rows (live, still `issued`) rather than kept in a
 *   set beside them, so a token stops counting as soon as it leaves `issued` by any transition.
 *   The Redis store takes a token out of the set only at `accept`; one claimed or completed
 *   while still `issued` (only after Redis went back in time) counts there until it expires.
 *   With `maxOutstanding: 0` nothing needs keeping, so turning the bound on later counts every
 *   token already outstanding, not only those issued from then on as in Redis.
 * - Results are kept up to `maxResultBytes` as in Redis, though a row could hold more: the
 *   pipeline then reads the same answers from both stores (`resultInInbox` past the bound).
 *
 * Tokens are secrets: errors from the driver have every token of the call replaced before they
 * leave this module.
 */
import { sql, type RawBuilder } from 'kysely';
import { ErrorCode, InvalidArgumentError, OnceqError, TokenLimitError } from '../core/errors.js';
import { DEFAULT_TOKEN_RESULT_MAX_BYTES } from '../core/defaults.js';
import { DEFAULT_MAX_OUTSTANDING_TOKENS, MAX_ISSUE_COUNT } from '../core/limits.js';
import { generateToken, isTokenState } from '../core/token.js';
import {
  toTokenResult,
  type IssueReply,
  type TokenOp,
  type TokenResults,
} from '../core/token-codes.js';
import type { IssuedToken, TokenSnapshot, TokenStore } from '../core/token-store.js';
import { checkToken, decimalId, nonEmpty, positiveInt } from '../core/token-store.js';
import type { Db } from './create-db.js';
import type { MessageTokenRow } from './database.js';

/** Fresh tokens tried for one slot before a collision is taken for a broken random source. */
const ISSUE_ATTEMPTS = 5;

/** Options of {@link createPgTokenStore}: those of the Redis store but its key prefix. */
export interface PgTokenStoreOptions {
  /**
   * Most outstanding tokens (issued, neither used nor expired) per principal; `issue` past it
   * throws {@link TokenLimitError}. At least {@link MAX_ISSUE_COUNT}, so that any one call fits
   * a principal that holds none; `0` turns the bound off.
   * @defaultValue {@link DEFAULT_MAX_OUTSTANDING_TOKENS}
   */
  maxOutstanding?: number;
  /**
   * Longest result JSON, in bytes, that a done token keeps; a longer one is left to the inbox
   * row, and `claim` answers `done` with `resultInInbox` for it, as the Redis store does with the
   * same bound. `0` keeps no result.
   * @defaultValue {@link DEFAULT_TOKEN_RESULT_MAX_BYTES}
   */
  maxResultBytes?: number;
}

/**
 * Creates the token store over onceq's schema (the migrations must have run). The pool is the
 * caller's: the store never ends it.
 */
export function createPgTokenStore(db: Db, options: PgTokenStoreOptions = {}): TokenStore {
  const maxOutstanding = options.maxOutstanding ?? DEFAULT_MAX_OUTSTANDING_TOKENS;
  const maxResultBytes = options.maxResultBytes ?? DEFAULT_TOKEN_RESULT_MAX_BYTES;
  if (!Number.isSafeInteger(maxResultBytes) || maxResultBytes < 0) {
    throw new InvalidArgumentError('maxResultBytes must be an integer of at least 0');
  }
  if (
    !Number.isSafeInteger(maxOutstanding) ||
    (maxOutstanding !== 0 && maxOutstanding < MAX_ISSUE_COUNT)
  ) {
    throw new InvalidArgumentError(
      `maxOutstanding must be 0 (no bound) or an integer of at least ${MAX_ISSUE_COUNT}`,
    );
  }

  async function reply(fn: string, tokens: string[], query: RawBuilder<Reply>): Promise<unknown> {
    try {
      const { rows } = await query.execute(db);
      return rows[0]?.reply;
    } catch (err) {
      throw failed(err, tokens, fn);
    }
  }

  async function run<Op extends TokenOp>(
    op: Op,
    token: string,
    query: RawBuilder<Reply>,
    messageId?: string,
  ): Promise<TokenResults[Op]> {
    return toTokenResult(op, await reply(`onceq_token_${op}`, [token], query), messageId);
  }

  /**
   * One call of `onceq_token_issue`: the tokens written (`undefined` for a collision), or a
   * {@link TokenLimitError} when `bound` is on and the principal has no room for them all.
   */
  async function issueCall(
    principal: string,
    tokens: string[],
    ttlMs: number,
    bound: number,
  ): Promise<(IssuedToken | undefined)[]> {
    const raw = await reply(
      'onceq_token_issue',
      tokens,
      sql<Reply>`select onceq_token_issue(${principal}, ${tokens}, ${ttlMs}, ${bound}) as reply`,
    );
    const { reserve, issued } = (raw ?? {}) as { reserve?: unknown; issued?: unknown };
    if (reserve !== null && reserve !== undefined) {
      const counted = toTokenResult('reserve', reserve);
      if (counted.status === 'over_limit') {
        throw new TokenLimitError({
          limit: bound,
          outstanding: counted.outstanding,
          retryAfterMs: counted.retryAfterMs,
        });
      }
    }
    if (!Array.isArray(issued) || issued.length !== tokens.length) {
      // The reply holds codes and times, never a token, so it is safe to keep for diagnosis.
      throw new OnceqError(
        ErrorCode.ScriptFailed,
        'token function onceq_token_issue gave a reply that is not {reserve, issued}',
        { details: { op: 'issue', reply: raw } },
      );
    }
    return issued.map((one, i) => {
      const r: IssueReply = toTokenResult('issue', one);
      return r.status === 'issued'
        ? { token: tokens[i]!, expiresAt: new Date(r.expiresAt) }
        : undefined;
    });
  }

  return {
    async issue(principal, { ttlMs, count = 1 }) {
      nonEmpty('principal', principal);
      positiveInt('ttlMs', ttlMs);
      if (!Number.isSafeInteger(count) || count < 1 || count > MAX_ISSUE_COUNT) {
        throw new InvalidArgumentError(`count must be an integer from 1 to ${MAX_ISSUE_COUNT}`);
      }
      const taken = new Set<string>();
      const results = await issueCall(
        principal,
        distinctTokens(count, taken),
        ttlMs,
        maxOutstanding,
      );
      // A collision (a live row holds the token): fresh tokens for those slots only, their room
      // counted already by the first call, so no bound this time (as the Redis store keeps the
      // reserved entries for them).
      for (let attempt = 1; attempt < ISSUE_ATTEMPTS && results.includes(undefined); attempt++) {
        const slots = results.flatMap((r, i) => (r === undefined ? [i] : []));
        const retried = await issueCall(principal, distinctTokens(slots.length, taken), ttlMs, 0);
        slots.forEach((slot, k) => (results[slot] = retried[k]));
      }
      if (results.includes(undefined)) {
        // The caller gets none of them, so none may stay outstanding (best effort: what stays
        // counts until it expires).
        const written = results.flatMap((r) => (r ? [r.token] : []));
        await sql`delete from message_tokens
                  where token = any(${written}) and state = 'issued' and principal = ${principal}`
          .execute(db)
          .catch(() => undefined);
        // 192 random bits do not collide; repeated collisions mean the random source is broken.
        throw new OnceqError(
          ErrorCode.ScriptFailed,
          `${ISSUE_ATTEMPTS} fresh tokens in a row collided with existing ones`,
        );
      }
      return results as IssuedToken[];
    },

    async accept(token, { principal, fingerprint, messageId, ttlMs, inFlightMs = 0 }) {
      checkToken(token);
      nonEmpty('principal', principal);
      nonEmpty('fingerprint', fingerprint);
      decimalId(messageId);
      positiveInt('ttlMs', ttlMs);
      if (inFlightMs !== 0) positiveInt('inFlightMs', inFlightMs);
      return run(
        'accept',
        token,
        sql<Reply>`select onceq_token_accept(${token}, ${principal}, ${fingerprint}, ${messageId},
                     ${ttlMs}, ${inFlightMs}) as reply`,
      );
    },

    async settle(token, { messageId, forget = false }) {
      checkToken(token);
      decimalId(messageId);
      return run(
        'settle',
        token,
        sql<Reply>`select onceq_token_settle(${token}, ${messageId}, ${forget}) as reply`,
      );
    },

    async rebind(token, { from, messageId, principal, fingerprint, ttlMs }) {
      checkToken(token);
      if (from !== undefined) decimalId(from);
      decimalId(messageId);
      nonEmpty('principal', principal);
      nonEmpty('fingerprint', fingerprint);
      positiveInt('ttlMs', ttlMs);
      return run(
        'rebind',
        token,
        sql<Reply>`select onceq_token_rebind(${token}, ${from ?? ''}, ${messageId}, ${principal},
                     ${fingerprint}, ${ttlMs}) as reply`,
      );
    },

    async claim(token, { owner, leaseMs, messageId, ttlMs }) {
      checkToken(token);
      nonEmpty('owner', owner);
      positiveInt('leaseMs', leaseMs);
      decimalId(messageId);
      positiveInt('ttlMs', ttlMs);
      return run(
        'claim',
        token,
        sql<Reply>`select onceq_token_claim(${token}, ${owner}, ${leaseMs}, ${messageId},
                     ${ttlMs}) as reply`,
        messageId,
      );
    },

    async renew(token, { owner, leaseMs }) {
      checkToken(token);
      nonEmpty('owner', owner);
      positiveInt('leaseMs', leaseMs);
      return run(
        'renew',
        token,
        sql<Reply>`select onceq_token_renew(${token}, ${owner}, ${leaseMs}) as reply`,
      );
    },

    async release(token, { owner }) {
      checkToken(token);
      nonEmpty('owner', owner);
      return run(
        'release',
        token,
        sql<Reply>`select onceq_token_release(${token}, ${owner}) as reply`,
      );
    },

    async complete(token, { messageId, result, ttlMs }) {
      checkToken(token);
      decimalId(messageId);
      positiveInt('ttlMs', ttlMs);
      const json = JSON.stringify(result) ?? 'null';
      // null keeps no result: the inbox row holds it.
      const kept = Buffer.byteLength(json) <= maxResultBytes ? json : null;
      return run(
        'complete',
        token,
        sql<Reply>`select onceq_token_complete(${token}, ${messageId}, ${kept}, ${ttlMs}) as reply`,
        messageId,
      );
    },

    async inspect(token) {
      checkToken(token);
      let rows: SnapshotRow[];
      try {
        // One reading of the clock for both the expiry and the ttl left.
        ({ rows } = await sql<SnapshotRow>`
          select t.state, t.principal, t.fingerprint, t.bound_message_id, t.owner,
                 t.lease_until_ms, t.result, t.issued_at_ms, t.accepted_at_ms, t.claimed_at_ms,
                 t.done_at_ms, t.claims, t.expires_at_ms - c.now_ms as ttl_ms
          from message_tokens t, (select onceq_clock_ms() as now_ms) c
          where t.token = ${token} and t.expires_at_ms >= c.now_ms`.execute(db));
      } catch (err) {
        throw failed(err, [token], 'inspect');
      }
      return rows[0] && toSnapshot(rows[0]);
    },
  };
}

/** Options of {@link deleteExpiredTokens}. */
export interface DeleteExpiredTokensOptions {
  /** Most rows one call deletes: a batch, so that no call holds many row locks for long. */
  limit: number;
}

/**
 * Deletes up to `limit` rows past their expiry (PostgreSQL's clock), oldest first, through the
 * expiry index; resolves to how many it deleted. Expired rows already count as missing to every
 * transition, so this only frees their space: call it periodically, and again at once while it
 * deletes a full batch. Rows a transition holds locked (one writing a fresh token over an
 * expired row) are skipped, not waited for.
 */
export async function deleteExpiredTokens(
  db: Db,
  { limit }: DeleteExpiredTokensOptions,
): Promise<number> {
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new InvalidArgumentError('limit must be a positive integer');
  }
  // The clock in a sub-select: read once, and usable as a bound of the index scan (a volatile
  // call in the WHERE clause itself would be evaluated per row, on a sequential scan).
  const result = await sql`
    delete from message_tokens where token in (
      select token from message_tokens
      where expires_at_ms < (select onceq_clock_ms())
      order by expires_at_ms
      limit ${limit}
      for update skip locked)`.execute(db);
  return Number(result.numAffectedRows ?? 0n);
}

/** What every `onceq_token_*` query selects: the function's JSON reply. */
interface Reply {
  reply: unknown;
}

type SnapshotRow = Omit<MessageTokenRow, 'token' | 'expires_at_ms'> & { ttl_ms: string };

function toSnapshot(row: SnapshotRow): TokenSnapshot {
  if (!isTokenState(row.state)) {
    throw new OnceqError(ErrorCode.ScriptFailed, 'a token row has no valid state', {
      details: { state: row.state },
    });
  }
  const num = (value: string | null): number | undefined =>
    value === null ? undefined : Number(value);
  let result: unknown;
  if (row.result !== null) {
    try {
      result = JSON.parse(row.result) as unknown;
    } catch (cause) {
      throw new OnceqError(ErrorCode.ScriptFailed, 'a token row holds a result that is not JSON', {
        cause,
      });
    }
  }
  return {
    state: row.state,
    principal: row.principal ?? undefined,
    fingerprint: row.fingerprint ?? undefined,
    messageId: row.bound_message_id ?? undefined,
    owner: row.owner ?? undefined,
    leaseUntil: num(row.lease_until_ms),
    result,
    issuedAt: num(row.issued_at_ms),
    acceptedAt: num(row.accepted_at_ms),
    claimedAt: num(row.claimed_at_ms),
    doneAt: num(row.done_at_ms),
    claims: row.claims,
    ttlMs: Math.max(0, Number(row.ttl_ms)),
  };
}

/** `count` fresh tokens, distinct from each other and from `taken`. */
function distinctTokens(count: number, taken: Set<string>): string[] {
  const tokens: string[] = [];
  while (tokens.length < count) {
    const token = generateToken();
    if (!taken.has(token)) {
      taken.add(token);
      tokens.push(token);
    }
  }
  return tokens;
}

/** SQLSTATE classes of a function that ran and failed on what it was given or found. */
const FUNCTION_FAILURE_CLASSES = ['22', '23', '2F', '39', '42', 'P0'];

/**
 * The driver's error with every token of the call replaced (in the message, the stack and the
 * server's fields: `detail`, `where`, …). A missing table or function means the migrations have
 * not run (`MigrationsPending`); a failure of the function itself becomes `ScriptFailed`, keeping
 * the cause, as a Lua error does in the Redis store. Connection errors, timeouts and cancels
 * keep their class, so that callers can still tell them apart.
 */
function failed(err: unknown, tokens: string[], fn: string): unknown {
  if (!(err instanceof Error)) return err;
  const hide = (s: string): string =>
    tokens.reduce((text, token) => text.split(token).join('oqt_<redacted>'), s);
  const fields = err as unknown as Record<string, unknown>;
  for (const [field, value] of Object.entries(fields)) {
    if (typeof value === 'string') fields[field] = hide(value);
  }
  err.message = hide(err.message);
  if (err.stack) err.stack = hide(err.stack);
  const code = typeof fields.code === 'string' ? fields.code : '';
  if (code === '42P01' || code === '42883') {
    return new OnceqError(
      ErrorCode.MigrationsPending,
      'the message_tokens table or its functions do not exist; run `onceq migrate latest` first',
      { cause: err },
    );
  }
  if (/^[0-9A-Z]{5}$/.test(code) && FUNCTION_FAILURE_CLASSES.includes(code.slice(0, 2))) {
    return new OnceqError(ErrorCode.ScriptFailed, `token function ${fn} failed: ${err.message}`, {
      cause: err,
    });
  }
  return err;
}
