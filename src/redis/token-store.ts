/**
 * The token store: the state of each idempotency/message token in Redis, one hash per token
 * (`keys.ts` `tokenKey`), changed only by the Lua scripts `lua/{issue,accept,settle,claim,renew,
 * release,complete,rebind}-1.lua`, one atomic transition each, with times from Redis `TIME`.
 *
 * Redis is the fast path, not the truth: a key that Redis lost is claimable and completable, and
 * the inbox row in PostgreSQL stops a second commit. A key that went back in time (a restored
 * snapshot) is put right with `rebind` from PostgreSQL's acceptance record. See DESIGN.md
 * sections 2 and 3.
 *
 * Hash fields: `state` (issued | accepted | claimed | done), `principal`, `fp` (request
 * fingerprint, in the stored form of `token-fingerprint.ts`), `mid` (messageId, decimal string),
 * `owner`, `lease` (ms epoch), `result` (JSON text), `issuedAt`, `acceptedAt`, `claimedAt`,
 * `doneAt` (ms epoch), `claims` (claims granted), `pending` (ms epoch: end of the accepting
 * request's in-flight window, while it is open).
 *
 * Memory. A done token outlives its message's work by a whole token ttl, one per message, so it
 * is what Redis holds most of: `complete` rewrites it down to `state`, `principal`, `fp`, `mid`,
 * `doneAt` and `result`, the fields later scripts read, and every value is kept within Redis's
 * `hash-max-listpack-value` (64 bytes by default) so that the hash stays a listpack, a third of
 * a hashtable's bytes: the fingerprint in its compact form, a result longer than 64 bytes in
 * 64-byte chunks `r1`, `r2`, … (lua/complete-1.lua), and one longer than `maxResultBytes` left
 * to PostgreSQL's inbox row (a claim then answers `done` with `resultInInbox`). About 300 bytes
 * a done token instead of about 930; test/redis/token-memory.test.ts holds the figure.
 *
 * Outstanding tokens (issued, not yet used, not expired) are bounded per principal: each one costs
 * Redis memory for its whole lifetime, and under `noeviction` a Redis that fills up stops the
 * fleet, so one client asking for tokens it never uses must not be able to fill it. A sorted set
 * per principal (`keys.ts` `outstandingTokensKey`), scored by expiry, counts them: `issue`
 * reserves room in it before the tokens exist (`lua/reserve-1.lua`, which also trims what has
 * expired), and `accept` takes the token out.
 *
 * Why a ZREM beside the accept script, and not in it: the set is one key per principal and the
 * token another key, so on a cluster they are in different slots and no script may touch both.
 * The ZREM is a command of its own, sent once the accept script has answered (sent in the same
 * tick, ioredis 6.0's auto-pipeline answered a script and a plain command sent together after a
 * Redis restart with a reply it could not map: a 500, then an uncaught TypeError; the restore
 * tests in test/producer/redis-restore.test.ts catch it), and unconditionally: every answer of
 * `accept` but an error means the token is no
 * longer unused (`accepted`, `replay`, `reused`, `in_use`), or was never this caller's or has
 * expired (`unknown`: not in this caller's set, or trimmed anyway), so removing it is right in
 * every case. If the ZREM is lost (a connection drop), the entry merely lingers until the token's
 * expiry: the count errs high for at most one ttl, never low.
 * Counting differently (e.g. tokens issued per ttl window) would bound how fast tokens are used,
 * not how many lie unused: a busy client taking one token per request would be refused.
 *
 * Tokens are secrets: they are in the keys, so errors coming back from ioredis (which carry the
 * command's arguments) have the token replaced before they leave this module.
 */
import type { RedisClient } from './connection.js';
import { ErrorCode, InvalidArgumentError, OnceqError, TokenLimitError } from '../core/errors.js';
import { DEFAULT_TOKEN_RESULT_MAX_BYTES } from '../core/defaults.js';
import { DEFAULT_MAX_OUTSTANDING_TOKENS, MAX_ISSUE_COUNT } from '../core/limits.js';
import { generateToken, isTokenState } from '../core/token.js';
import type { IssuedToken, TokenSnapshot, TokenStore } from '../core/token-store.js';
import { checkToken, decimalId, nonEmpty, positiveInt } from '../core/token-store.js';
import { outstandingTokensKey, tokenKey } from './keys.js';
import { runScript } from './scripts.js';
import { fingerprintOf, storedFingerprint } from './token-fingerprint.js';
import {
  toTokenResult,
  type ReserveResult,
  type TokenOp,
  type TokenResults,
} from '../core/token-codes.js';

export type {
  AcceptResult,
  ClaimResult,
  CompleteResult,
  FoundState,
  RebindResult,
  ReleaseResult,
  RenewResult,
  SettleResult,
} from '../core/token-codes.js';
export { TokenCode } from '../core/token-codes.js';
export type {
  AcceptOptions,
  ClaimOptions,
  CompleteOptions,
  IssueOptions,
  IssuedToken,
  RebindOptions,
  ReleaseOptions,
  RenewOptions,
  TokenSnapshot,
  TokenStore,
} from '../core/token-store.js';

/** Most tokens one `issue` call creates. */
export { MAX_ISSUE_COUNT };
/** Fresh tokens tried before a collision is taken for a broken random source. */
const ISSUE_ATTEMPTS = 5;

/** Options of {@link createTokenStore}. */
export interface TokenStoreOptions {
  /** Key prefix (`ONCEQ_PREFIX`). */
  prefix: string;
  /**
   * Most outstanding tokens (issued, neither used nor expired) per principal; `issue` past it
   * throws {@link TokenLimitError}. At least {@link MAX_ISSUE_COUNT}, so that any one call fits
   * a principal that holds none; `0` turns the bound off (and its bookkeeping: nothing counts the
   * tokens then, so turning it on later counts only tokens issued from then on).
   * @defaultValue {@link DEFAULT_MAX_OUTSTANDING_TOKENS}
   */
  maxOutstanding?: number;
  /**
   * Longest result JSON, in bytes, that a done token keeps in Redis (for a whole token ttl); a
   * longer one is left to PostgreSQL's inbox row, and `claim` answers `done` with
   * `resultInInbox` for it. `0` keeps no result in Redis.
   * @defaultValue {@link DEFAULT_TOKEN_RESULT_MAX_BYTES}
   */
  maxResultBytes?: number;
}

/**
 * Creates the token store over a connection (not closed by the store).
 * Every method throws `OnceqError` with `ErrorCode.TokenMalformed` for a token that is not of
 * the `oqt_` form, before touching Redis.
 */
export function createTokenStore(redis: RedisClient, options: TokenStoreOptions): TokenStore {
  const { prefix } = options;
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

  async function run<Op extends TokenOp>(
    op: Op,
    token: string,
    args: (string | number)[],
    messageId?: string,
  ): Promise<TokenResults[Op]> {
    let reply: unknown;
    try {
      reply = await runScript(redis, op, [tokenKey(prefix, token)], args);
    } catch (err) {
      throw redacted(err, token, op);
    }
    return toTokenResult(op, reply, messageId);
  }

  /** Counts `tokens` against the principal's bound; throws {@link TokenLimitError} past it. */
  async function reserve(principal: string, ttlMs: number, tokens: string[]): Promise<void> {
    let reply: ReserveResult;
    try {
      reply = toTokenResult(
        'reserve',
        await runScript(
          redis,
          'reserve',
          [outstandingTokensKey(prefix, principal)],
          [maxOutstanding, ttlMs, ...tokens],
        ),
      );
    } catch (err) {
      throw tokens.reduce<unknown>((e, token) => redacted(e, token, 'reserve'), err);
    }
    if (reply.status === 'over_limit') {
      throw new TokenLimitError({
        limit: maxOutstanding,
        outstanding: reply.outstanding,
        retryAfterMs: reply.retryAfterMs,
      });
    }
  }

  /**
   * Issues one token, `reserved` already if the bound is on. A collision (never seen with 192
   * random bits, but the key is refused, not overwritten) replaces the reserved entry with the
   * new token's in one MULTI on the principal's key.
   */
  async function issueOne(
    principal: string,
    ttlMs: number,
    reserved: string,
  ): Promise<IssuedToken> {
    let token = reserved;
    for (let attempt = 0; attempt < ISSUE_ATTEMPTS; attempt++) {
      if (attempt > 0) {
        const next = generateToken();
        if (maxOutstanding > 0) {
          const key = outstandingTokensKey(prefix, principal);
          const score = await redis.zscore(key, token);
          await redis
            .multi()
            .zrem(key, token)
            .zadd(key, score ?? Date.now() + ttlMs, next)
            .exec();
        }
        token = next;
      }
      const reply = await run('issue', token, [principal, ttlMs]);
      if (reply.status === 'issued') return { token, expiresAt: new Date(reply.expiresAt) };
    }
    // 192 random bits do not collide; repeated collisions mean the random source is broken.
    throw new OnceqError(
      ErrorCode.ScriptFailed,
      `${ISSUE_ATTEMPTS} fresh tokens in a row collided with existing ones`,
    );
  }

  return {
    async issue(principal, { ttlMs, count = 1 }) {
      nonEmpty('principal', principal);
      positiveInt('ttlMs', ttlMs);
      if (!Number.isSafeInteger(count) || count < 1 || count > MAX_ISSUE_COUNT) {
        throw new InvalidArgumentError(`count must be an integer from 1 to ${MAX_ISSUE_COUNT}`);
      }
      const tokens = Array.from({ length: count }, () => generateToken());
      if (maxOutstanding > 0) await reserve(principal, ttlMs, tokens);
      try {
        // Sent together, the scripts go out in one round trip, like a pipeline.
        return await Promise.all(tokens.map((token) => issueOne(principal, ttlMs, token)));
      } catch (err) {
        // The caller gets none of these tokens, so none of them is outstanding: give the room
        // back (best effort; what stays counts until it expires).
        if (maxOutstanding > 0) {
          await redis
            .zrem(outstandingTokensKey(prefix, principal), ...tokens)
            .catch(() => undefined);
        }
        throw err;
      }
    },

    async accept(token, { principal, fingerprint, messageId, ttlMs, inFlightMs = 0 }) {
      checkToken(token);
      nonEmpty('principal', principal);
      nonEmpty('fingerprint', fingerprint);
      decimalId(messageId);
      positiveInt('ttlMs', ttlMs);
      if (inFlightMs !== 0) positiveInt('inFlightMs', inFlightMs);
      // Out of the principal's outstanding tokens, whatever the answer: see the module header.
      const result = await run('accept', token, [
        principal,
        storedFingerprint(fingerprint),
        messageId,
        ttlMs,
        inFlightMs,
        fingerprint,
      ]);
      if (maxOutstanding > 0) {
        await redis.zrem(outstandingTokensKey(prefix, principal), token).catch(() => 0);
      }
      return result;
    },

    async settle(token, { messageId, forget = false }) {
      checkToken(token);
      decimalId(messageId);
      return run('settle', token, [messageId, forget ? '1' : '0']);
    },

    async rebind(token, { from, messageId, principal, fingerprint, ttlMs }) {
      checkToken(token);
      if (from !== undefined) decimalId(from);
      decimalId(messageId);
      nonEmpty('principal', principal);
      nonEmpty('fingerprint', fingerprint);
      positiveInt('ttlMs', ttlMs);
      return run('rebind', token, [
        from ?? '',
        messageId,
        principal,
        storedFingerprint(fingerprint),
        ttlMs,
      ]);
    },

    async claim(token, { owner, leaseMs, messageId, ttlMs }) {
      checkToken(token);
      nonEmpty('owner', owner);
      positiveInt('leaseMs', leaseMs);
      decimalId(messageId);
      positiveInt('ttlMs', ttlMs);
      return run('claim', token, [owner, leaseMs, messageId, ttlMs], messageId);
    },

    async renew(token, { owner, leaseMs }) {
      checkToken(token);
      nonEmpty('owner', owner);
      positiveInt('leaseMs', leaseMs);
      return run('renew', token, [owner, leaseMs]);
    },

    async release(token, { owner }) {
      checkToken(token);
      nonEmpty('owner', owner);
      return run('release', token, [owner]);
    },

    async complete(token, { messageId, result, ttlMs }) {
      checkToken(token);
      decimalId(messageId);
      positiveInt('ttlMs', ttlMs);
      const json = JSON.stringify(result) ?? 'null';
      // '' keeps no result: a JSON text is never empty.
      const kept = Buffer.byteLength(json) <= maxResultBytes ? json : '';
      return run('complete', token, [messageId, kept, ttlMs], messageId);
    },

    async inspect(token) {
      checkToken(token);
      const key = tokenKey(prefix, token);
      let replies: [Error | null, unknown][] | null;
      try {
        // As bytes: a long result's chunks are cut at byte offsets, maybe inside a character.
        replies = await redis.multi().hgetallBuffer(key).pttl(key).exec();
      } catch (err) {
        throw redacted(err, token, 'inspect');
      }
      const [[hashErr, hash] = [null, undefined], [ttlErr, pttl] = [null, undefined]] =
        replies ?? [];
      if (hashErr || ttlErr) throw redacted(hashErr ?? ttlErr, token, 'inspect');
      return toSnapshot(hash, pttl);
    },
  };
}

function toSnapshot(hash: unknown, pttl: unknown): TokenSnapshot | undefined {
  if (typeof hash !== 'object' || hash === null) return undefined;
  const raw = hash as Record<string, Buffer | undefined>;
  if (Object.keys(raw).length === 0) return undefined;
  const h: Record<string, string | undefined> = {};
  for (const [field, value] of Object.entries(raw)) h[field] = value?.toString('utf8');
  // A long result is kept in chunks r1, r2, … (lua/complete-1.lua).
  if (h.result === undefined && raw.r1 !== undefined) {
    const chunks: Buffer[] = [];
    for (let i = 1; raw[`r${i}`] !== undefined; i++) chunks.push(raw[`r${i}`]!);
    h.result = Buffer.concat(chunks).toString('utf8');
  }
  if (!isTokenState(h.state)) {
    throw new OnceqError(ErrorCode.ScriptFailed, 'a token hash has no valid state', {
      details: { state: h.state },
    });
  }
  const num = (value: string | undefined): number | undefined =>
    value === undefined || value === '' ? undefined : Number(value);
  let result: unknown;
  if (h.result !== undefined) {
    try {
      result = JSON.parse(h.result) as unknown;
    } catch (cause) {
      throw new OnceqError(ErrorCode.ScriptFailed, 'a token hash holds a result that is not JSON', {
        cause,
      });
    }
  }
  return {
    state: h.state,
    principal: h.principal,
    fingerprint: h.fp === undefined ? undefined : fingerprintOf(h.fp),
    messageId: h.mid,
    owner: h.owner,
    leaseUntil: num(h.lease),
    result,
    issuedAt: num(h.issuedAt),
    acceptedAt: num(h.acceptedAt),
    claimedAt: num(h.claimedAt),
    doneAt: num(h.doneAt),
    claims: num(h.claims) ?? 0,
    ttlMs: typeof pttl === 'number' && pttl >= 0 ? pttl : undefined,
  };
}

/**
 * ioredis attaches `command: {name, args}` to errors, and the key in the args holds the token.
 * Replace it there and in the message; turn a script error into `ScriptFailed`, keeping the
 * cause. Connection errors keep their class so that callers can still tell them apart.
 */
function redacted(err: unknown, token: string, op: string): unknown {
  if (!(err instanceof Error)) return err;
  const hide = (s: string): string => s.split(token).join('oqt_<redacted>');
  err.message = hide(err.message);
  if (err.stack) err.stack = hide(err.stack);
  const command = (err as { command?: { args?: unknown } }).command;
  if (command && Array.isArray(command.args)) {
    command.args = command.args.map((a: unknown) => (typeof a === 'string' ? hide(a) : a));
  }
  if (err.name === 'ReplyError') {
    return new OnceqError(ErrorCode.ScriptFailed, `token script ${op} failed: ${err.message}`, {
      cause: err,
    });
  }
  return err;
}
