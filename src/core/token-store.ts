/**
 * The token store's contract: the state machine of idempotency/message tokens (DESIGN.md
 * sections 2 and 3) as its callers see it, the options of each transition and what it reads
 * back. Two stores implement it with the same transitions and the same answers: Redis
 * (src/redis/token-store.ts, one Lua script per transition) and PostgreSQL (src/db/token-store.ts,
 * one PL/pgSQL function per transition); test/tokens/ runs one contract suite against both.
 * Types only: the results of the transitions are in token-codes.ts beside it.
 *
 * Where the text below says Redis, it describes the Redis store, whose behaviour the PostgreSQL
 * store reproduces: a row past its expiry there is what a key Redis expired or lost is here.
 */
import { isWellFormedToken, type TokenState } from './token.js';
import { ErrorCode, InvalidArgumentError, OnceqError } from './errors.js';
import type {
  AcceptResult,
  ClaimResult,
  CompleteResult,
  RebindResult,
  ReleaseResult,
  RenewResult,
  SettleResult,
} from './token-codes.js';

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
  /** When the unused token expires (the store's clock). */
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
  /** The message id the store was seen to hold for the token (`undefined`: none). */
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
  /** End of the current lease, ms since the epoch (the store's clock). */
  leaseUntil: number | undefined;
  /** The stored result, parsed; `undefined` unless `done` with a result kept in the store. */
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

/**
 * The token state machine. Every method is one atomic transition: one Lua script in Redis
 * (src/redis/token-store.ts), one PL/pgSQL function call in PostgreSQL (src/db/token-store.ts).
 */
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
  /** The token's stored state, or `undefined` when the store holds none (or it has expired). */
  inspect(token: string): Promise<TokenSnapshot | undefined>;
}

// The argument checks both stores make before touching their store, with one set of messages.

/** Throws `TokenMalformed` unless `token` is of the `oqt_` form (the value stays out of it). */
export function checkToken(token: string): void {
  if (!isWellFormedToken(token)) {
    // The value itself stays out of the message: it may be a real token with a typo.
    throw new OnceqError(ErrorCode.TokenMalformed, 'the token is not a well-formed onceq token');
  }
}

/** Throws `InvalidArgumentError` unless `value` is a non-empty string. */
export function nonEmpty(name: string, value: string): void {
  if (typeof value !== 'string' || value === '')
    throw new InvalidArgumentError(`${name} must be a non-empty string`);
}

/** Throws `InvalidArgumentError` unless `value` is a positive integer (milliseconds). */
export function positiveInt(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new InvalidArgumentError(`${name} must be a positive integer number of milliseconds`);
  }
}

/** Throws `InvalidArgumentError` unless `value` is a message id (1 to 20 decimal digits). */
export function decimalId(value: string): void {
  if (typeof value !== 'string' || !/^\d{1,20}$/.test(value)) {
    throw new InvalidArgumentError('messageId must be a decimal string');
  }
}
