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
import type { Redis } from 'ioredis';
import { ErrorCode, InvalidArgumentError, OnceqError, TokenLimitError } from '../core/errors.js';
import { DEFAULT_TOKEN_RESULT_MAX_BYTES } from '../core/defaults.js';
import { DEFAULT_MAX_OUTSTANDING_TOKENS, MAX_ISSUE_COUNT } from '../core/limits.js';
import { generateToken, isTokenState, isWellFormedToken, type TokenState } from '../core/token.js';
import { outstandingTokensKey, tokenKey } from './keys.js';
import { runScript } from './scripts.js';
import { fingerprintOf, storedFingerprint } from './token-fingerprint.js';
import {
  toTokenResult,
  type AcceptResult,
  type ClaimResult,
  type CompleteResult,
  type RebindResult,
  type ReleaseResult,
  type RenewResult,
  type ReserveResult,
  type SettleResult,
  type TokenOp,
  type TokenResults,
} from './token-codes.js';

export type {
  AcceptResult,
  ClaimResult,
  CompleteResult,
  FoundState,
  RebindResult,
  ReleaseResult,
  RenewResult,
  SettleResult,
} from './token-codes.js';
export { TokenCode } from './token-codes.js';

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

/** Options of {@link TokenStore.issue}. */
export interface IssueOptions {
  /** Lifetime of an unused token. */
  ttlMs: number;
  /** How many tokens, 1 to {@link MAX_ISSUE_COUNT}. @defaultValue 1 */
  count?: number;
}

/** A token handed to a principal. */
export interface IssuedToken {
  /** The token, to send as `token` (or the `Idempotency-Key` header) of one enqueue. */
  token: string;
  /** When the unused token expires (Redis clock). */
  expiresAt: Date;
}

/** Options of {@link TokenStore.accept}. */
export interface AcceptOptions {
  /** The caller; a token issued to another principal is `unknown`. */
  principal: string;
  /** Fingerprint of the request; the same token with another fingerprint is `reused`. */
  fingerprint: string;
  /** A freshly minted messageId, kept only if this is the token's first use. */
  messageId: string;
  /** The accepted token's state lives at least this long. */
  ttlMs: number;
  /**
   * Opens an in-flight window of this length on first use: until {@link TokenStore.settle} (or
   * the window's end), the same request again is `in_use` rather than `replay`. The API uses it
   * to answer 409 while the first request is still being answered. @defaultValue 0 (no window)
   */
  inFlightMs?: number;
}

/** Options of {@link TokenStore.claim}. */
export interface ClaimOptions {
  /** Unique per delivery attempt: two attempts of one worker must not share a lease. */
  owner: string;
  /** Lease length; no shorter than BullMQ's job lock. */
  leaseMs: number;
  /** The messageId the job carries; a token bound to another one throws `TokenMismatchError`. */
  messageId: string;
  /** The key lives at least this long (and at least `leaseMs`) after the claim. */
  ttlMs: number;
}

/** Options of {@link TokenStore.rebind}: PostgreSQL's acceptance record of the token. */
export interface RebindOptions {
  /** The message id Redis was seen to hold for the token (`undefined`: none). */
  from: string | undefined;
  /** The message id PostgreSQL recorded for the token. */
  messageId: string;
  principal: string;
  fingerprint: string;
  /** The key lives at least this long after the rebind. */
  ttlMs: number;
}

/** Options of {@link TokenStore.renew}. */
export interface RenewOptions {
  owner: string;
  /** New lease length, from now. */
  leaseMs: number;
}

/** Options of {@link TokenStore.release}. */
export interface ReleaseOptions {
  owner: string;
}

/** Options of {@link TokenStore.complete}. */
export interface CompleteOptions {
  /** The messageId whose effect committed. */
  messageId: string;
  /**
   * The handler's result: stored as JSON (`undefined` is stored as `null`), unless its JSON is
   * longer than `maxResultBytes` (then PostgreSQL's inbox row alone holds it).
   */
  result: unknown;
  /** The `done` marker lives at least this long. */
  ttlMs: number;
}

/** The stored state of a token, as {@link TokenStore.inspect} reads it. */
export interface TokenSnapshot {
  state: TokenState;
  principal: string | undefined;
  fingerprint: string | undefined;
  messageId: string | undefined;
  owner: string | undefined;
  /** End of the current lease, ms since the epoch (Redis clock). */
  leaseUntil: number | undefined;
  /** The stored result, parsed; `undefined` unless `done` with a result kept in Redis. */
  result: unknown;
  issuedAt: number | undefined;
  acceptedAt: number | undefined;
  claimedAt: number | undefined;
  doneAt: number | undefined;
  /** Claims granted so far (takeovers included). */
  claims: number;
  /** Time to live left in ms; `undefined` if the key has no expiry (never made by the scripts). */
  ttlMs: number | undefined;
}

/** The token state machine. Every method is one atomic Redis script (or one MULTI for inspect). */
export interface TokenStore {
  /**
   * Issues `count` fresh tokens bound to `principal`, in state `issued`, counted against the
   * principal's outstanding tokens (all or none: a refused call issues nothing).
   * @throws TokenLimitError when the principal would hold more than `maxOutstanding`.
   * @throws InvalidArgumentError on a bad principal, ttl or count.
   */
  issue(principal: string, options: IssueOptions): Promise<IssuedToken[]>;
  /**
   * Binds the token to a request: `accepted` on first use, `replay` for the same fingerprint
   * again (the first `messageId`), `reused` for another fingerprint, `unknown` when the token was
   * never issued, has expired, or is another principal's; `in_use` for the same request while
   * the first one's in-flight window is open (see {@link AcceptOptions.inFlightMs}). Extends the
   * TTL to at least `ttlMs` on first use. The token no longer counts as outstanding after it.
   */
  accept(token: string, options: AcceptOptions): Promise<AcceptResult>;
  /**
   * Closes the in-flight window `accept` opened for `messageId` (the first request has been
   * answered or has failed); a missing key or another message's token is left alone. With
   * `forget`, deletes the token's state instead (same condition): PostgreSQL holds another
   * request as the token's first acceptance, and replays must be answered from there.
   */
  settle(token: string, options: { messageId: string; forget?: boolean }): Promise<SettleResult>;
  /**
   * Writes PostgreSQL's acceptance record (message id, principal, fingerprint) over the token's
   * state, if Redis still holds message id `from` for it: Redis went back in time and disagrees
   * with the record. A different message id drops the claim and result Redis held for the old
   * one (state `accepted`); the same id keeps the state and fills in the fingerprint. `moved`
   * when Redis holds something else by now (or nothing): nothing written.
   */
  rebind(token: string, options: RebindOptions): Promise<RebindResult>;
  /**
   * Takes the lease on the message: `claimed` (also when the key is missing, an expired lease is
   * taken over, or this owner claims again), `done` with the stored result (or `resultInInbox`
   * when it was too large for Redis), or `busy` until the other owner's lease ends.
   * @throws TokenMismatchError when the token is bound to another messageId.
   */
  claim(token: string, options: ClaimOptions): Promise<ClaimResult>;
  /** Extends this owner's lease; `lost` when the claim is no longer this owner's. */
  renew(token: string, options: RenewOptions): Promise<RenewResult>;
  /** Gives this owner's claim back (state `accepted`); `not_owner` otherwise. */
  release(token: string, options: ReleaseOptions): Promise<ReleaseResult>;
  /**
   * Marks the message `done` with its result, whoever holds the lease (the PostgreSQL commit is
   * the truth), recreating the key if Redis lost it; `already_done` keeps the first result.
   * @throws TokenMismatchError when the token is bound to another messageId.
   */
  complete(token: string, options: CompleteOptions): Promise<CompleteResult>;
  /** The token's stored state, or `undefined` when Redis has no such key. */
  inspect(token: string): Promise<TokenSnapshot | undefined>;
}

/**
 * Creates the token store over a connection (not closed by the store).
 * Every method throws `OnceqError` with `ErrorCode.TokenMalformed` for a token that is not of
 * the `oqt_` form, before touching Redis.
 */
export function createTokenStore(redis: Redis, options: TokenStoreOptions): TokenStore {
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

function checkToken(token: string): void {
  if (!isWellFormedToken(token)) {
    // The value itself stays out of the message: it may be a real token with a typo.
    throw new OnceqError(ErrorCode.TokenMalformed, 'the token is not a well-formed onceq token');
  }
}

function nonEmpty(name: string, value: string): void {
  if (typeof value !== 'string' || value === '')
    throw new InvalidArgumentError(`${name} must be a non-empty string`);
}

function positiveInt(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new InvalidArgumentError(`${name} must be a positive integer number of milliseconds`);
  }
}

function decimalId(value: string): void {
  if (typeof value !== 'string' || !/^\d{1,20}$/.test(value)) {
    throw new InvalidArgumentError('messageId must be a decimal string');
  }
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
