/**
 * The return codes of the token transitions and the one function that turns a raw reply into a
 * typed result or an error, after BullMQ's `ErrorCode` and `finishedErrors()`. Both token stores
 * reply in this form, `[code, ...payload]`: the Redis store's Lua scripts
 * (`src/redis/lua/issue-1.lua` … `rebind-1.lua`) and the PostgreSQL store's PL/pgSQL functions
 * (`onceq_token_issue` … `onceq_token_rebind`, migrations/2026_12_01_160000_message_tokens.ts),
 * so that one decoder gives both the same answers. Nothing else compares a transition's
 * integers: a new code is added here, in the script header and the function, and in the result
 * type of its transition, together. Pure: no I/O.
 */
import { ErrorCode, OnceqError, TokenMismatchError } from './errors.js';
import { isTokenState, type TokenState } from './token.js';

/** First element of every token script reply. Positive: the transition happened or was found done. */
export enum TokenCode {
  Issued = 1,
  Accepted = 2,
  Replay = 3,
  Claimed = 4,
  Done = 5,
  Renewed = 6,
  Released = 7,
  Completed = 8,
  AlreadyDone = 9,
  Settled = 10,
  Rebound = 11,
  Reserved = 12,
  Collision = -1,
  Unknown = -2,
  Reused = -3,
  Busy = -4,
  Mismatch = -5,
  Lost = -6,
  NotOwner = -7,
  InUse = -8,
  Moved = -9,
  OverLimit = -10,
}

/** The state a refusal found: a {@link TokenState}, or `missing` when the key does not exist. */
export type FoundState = TokenState | 'missing';

/** Reply of `issue`: internal to the store, which regenerates the token on a collision. */
export type IssueReply = { status: 'issued'; expiresAt: number } | { status: 'collision' };

/** Result of `reserve` (counting new tokens against their principal's bound; `lua/reserve-1.lua`). */
export type ReserveResult =
  /** Counted: `outstanding` tokens now, the new ones expiring at `expiresAt` (that key's clock). */
  | { status: 'reserved'; outstanding: number; expiresAt: number }
  /** Nothing counted: the bound is reached; room in `retryAfterMs` at the latest. */
  | { status: 'over_limit'; outstanding: number; retryAfterMs: number };

/** Result of `accept`. */
export type AcceptResult =
  /** First use: the token is now bound to this request and this `messageId`. */
  | { status: 'accepted'; messageId: string }
  /** The same request (fingerprint) again: the `messageId` of the first acceptance. */
  | { status: 'replay'; messageId: string; state: TokenState }
  /**
   * The token was used for a different request, as far as Redis remembers; nothing changed.
   * `storedMessageId` is the message id Redis holds for it, if any. Redis may have gone back in
   * time: PostgreSQL's acceptance record decides (see {@link RebindResult}).
   */
  | { status: 'reused'; storedMessageId: string | undefined }
  /** Never issued, expired, or issued to another principal: deliberately indistinguishable. */
  | { status: 'unknown' }
  /**
   * The same request again while the first one is still in flight (not yet answered): there is
   * no first answer to replay yet. `pendingUntil` is when the window ends at the latest (ms since
   * the epoch, the store's clock). Only given when `accept` was asked to open a window.
   */
  | { status: 'in_use'; pendingUntil: number };

/** Result of `settle`. */
export type SettleResult = { status: 'settled' };

/** Result of `rebind`. */
export type RebindResult =
  /** Redis now holds PostgreSQL's record for the token; `state` is the token's state after. */
  | { status: 'rebound'; state: TokenState }
  /**
   * Redis no longer holds what the caller saw (another rebind or a claim came first, or the key
   * is gone); nothing was written. `storedMessageId` is what it holds now, if anything.
   */
  | { status: 'moved'; storedMessageId: string | undefined };

/** Result of `claim`. A token bound to another message throws {@link TokenMismatchError}. */
export type ClaimResult =
  /** This owner holds the message until `leaseUntil` (ms since the epoch, the store's clock). */
  | { status: 'claimed'; leaseUntil: number }
  /** The message was applied already; `result` is the stored result (parsed JSON). */
  | { status: 'done'; result: unknown }
  /**
   * The message was applied already, but its result was too large to keep in Redis
   * (the token store's `maxResultBytes`): PostgreSQL's inbox row holds it.
   */
  | { status: 'done'; resultInInbox: true }
  /** Another owner holds a live lease until `leaseUntil` (ms since the epoch, the store's clock). */
  | { status: 'busy'; leaseUntil: number; owner: string };

/** Result of `renew`. */
export type RenewResult =
  | { status: 'renewed'; leaseUntil: number }
  /** The claim is no longer this owner's: `owner` is the current holder, if any. */
  | { status: 'lost'; state: FoundState; owner: string | undefined };

/** Result of `release`. */
export type ReleaseResult =
  { status: 'released' } | { status: 'not_owner'; state: FoundState; owner: string | undefined };

/** Result of `complete`. A token bound to another message throws {@link TokenMismatchError}. */
export type CompleteResult =
  | { status: 'completed' }
  /** It was done already: the first completion's result (parsed JSON), which stays. */
  | { status: 'already_done'; result: unknown }
  /** It was done already, with a result too large for Redis: PostgreSQL's inbox row holds it. */
  | { status: 'already_done'; resultInInbox: true };

/** The typed result of each token script. */
export interface TokenResults {
  issue: IssueReply;
  reserve: ReserveResult;
  accept: AcceptResult;
  claim: ClaimResult;
  renew: RenewResult;
  release: ReleaseResult;
  complete: CompleteResult;
  settle: SettleResult;
  rebind: RebindResult;
}

/** A token transition, named as its script (`claim` → `lua/claim-1.lua`). */
export type TokenOp = keyof TokenResults;

/** Codes each script may return; anything else is a broken script or a garbled reply. */
const CODES_OF: { readonly [Op in TokenOp]: readonly TokenCode[] } = {
  issue: [TokenCode.Issued, TokenCode.Collision],
  reserve: [TokenCode.Reserved, TokenCode.OverLimit],
  accept: [
    TokenCode.Accepted,
    TokenCode.Replay,
    TokenCode.Unknown,
    TokenCode.Reused,
    TokenCode.InUse,
  ],
  claim: [TokenCode.Claimed, TokenCode.Done, TokenCode.Busy, TokenCode.Mismatch],
  renew: [TokenCode.Renewed, TokenCode.Lost],
  release: [TokenCode.Released, TokenCode.NotOwner],
  complete: [TokenCode.Completed, TokenCode.AlreadyDone, TokenCode.Mismatch],
  settle: [TokenCode.Settled],
  rebind: [TokenCode.Rebound, TokenCode.Moved],
};

/**
 * Turns the raw reply of token script `op` into its typed result.
 *
 * @param op - The script that replied.
 * @param reply - The reply as ioredis returns it: `[code, ...payload]`.
 * @param messageId - The `messageId` the caller passed (claim, complete), for the mismatch error.
 * @throws {@link TokenMismatchError} on MISMATCH: the token is bound to another message.
 * @throws {@link OnceqError} with `ErrorCode.ScriptFailed` when the reply is not one that `op`
 *   can give (unknown code, missing or mistyped payload, stored result that is not JSON).
 */
export function toTokenResult<Op extends TokenOp>(
  op: Op,
  reply: unknown,
  messageId?: string,
): TokenResults[Op] {
  return decode(op, reply, messageId) as TokenResults[Op];
}

function decode(op: TokenOp, reply: unknown, messageId: string | undefined): TokenResults[TokenOp] {
  const fail = (why: string): never => {
    // The reply never holds the token itself, so it is safe to keep for diagnosis.
    throw new OnceqError(ErrorCode.ScriptFailed, `token script ${op} gave ${why}`, {
      details: { op, reply },
    });
  };
  if (!Array.isArray(reply) || reply.length === 0) return fail('a reply that is not [code, ...]');
  const [code, ...payload] = reply as unknown[];
  if (typeof code !== 'number' || !CODES_OF[op].includes(code)) {
    return fail(`an unexpected code ${String(code)}`);
  }

  const int = (i: number): number => {
    const value = payload[i];
    return typeof value === 'number' && Number.isSafeInteger(value)
      ? value
      : fail(`a payload without an integer at ${i + 1}`);
  };
  const str = (i: number): string => {
    const value = payload[i];
    return typeof value === 'string' ? value : fail(`a payload without a string at ${i + 1}`);
  };
  const decimal = (i: number): string => {
    const value = str(i);
    return /^\d{1,20}$/.test(value) ? value : fail(`a messageId that is not decimal`);
  };
  const state = (i: number): TokenState => {
    const value = str(i);
    return isTokenState(value) ? value : fail(`an unknown state`);
  };
  /** A message id or nothing: the scripts answer '' when the hash holds none. */
  const maybeDecimal = (i: number): string | undefined =>
    payload[i] === undefined || payload[i] === '' ? undefined : decimal(i);
  const found = (i: number): FoundState => (str(i) === 'missing' ? 'missing' : state(i));
  const holder = (i: number): string | undefined => str(i) || undefined;
  const json = (i: number): unknown => {
    try {
      return JSON.parse(str(i)) as unknown;
    } catch (err) {
      if (err instanceof OnceqError) throw err;
      return fail('a stored result that is not JSON');
    }
  };

  switch (code as TokenCode) {
    case TokenCode.Issued:
      return { status: 'issued', expiresAt: int(0) };
    case TokenCode.Collision:
      return { status: 'collision' };
    case TokenCode.Reserved:
      return { status: 'reserved', outstanding: int(0), expiresAt: int(1) };
    case TokenCode.OverLimit:
      return { status: 'over_limit', retryAfterMs: int(0), outstanding: int(1) };
    case TokenCode.Accepted:
      return { status: 'accepted', messageId: decimal(0) };
    case TokenCode.Replay:
      return { status: 'replay', messageId: decimal(0), state: state(1) };
    case TokenCode.Unknown:
      return { status: 'unknown' };
    case TokenCode.Reused:
      return { status: 'reused', storedMessageId: maybeDecimal(0) };
    case TokenCode.InUse:
      return { status: 'in_use', pendingUntil: int(0) };
    case TokenCode.Settled:
      return { status: 'settled' };
    case TokenCode.Rebound:
      return { status: 'rebound', state: state(0) };
    case TokenCode.Moved:
      return { status: 'moved', storedMessageId: maybeDecimal(0) };
    case TokenCode.Claimed:
      return { status: 'claimed', leaseUntil: int(0) };
    case TokenCode.Done:
      // nil (null here) in place of the result: none is kept in Redis (lua/complete-1.lua).
      return payload.length === 1 && payload[0] === null
        ? { status: 'done', resultInInbox: true }
        : { status: 'done', result: json(0) };
    case TokenCode.Busy:
      return { status: 'busy', leaseUntil: int(0), owner: str(1) };
    case TokenCode.Mismatch:
      throw new TokenMismatchError(messageId ?? '(unknown)', decimal(0));
    case TokenCode.Renewed:
      return { status: 'renewed', leaseUntil: int(0) };
    case TokenCode.Lost:
      return { status: 'lost', state: found(0), owner: holder(1) };
    case TokenCode.Released:
      return { status: 'released' };
    case TokenCode.NotOwner:
      return { status: 'not_owner', state: found(0), owner: holder(1) };
    case TokenCode.Completed:
      return { status: 'completed' };
    case TokenCode.AlreadyDone:
      return payload.length === 1 && payload[0] === null
        ? { status: 'already_done', resultInInbox: true }
        : { status: 'already_done', result: json(0) };
  }
}
