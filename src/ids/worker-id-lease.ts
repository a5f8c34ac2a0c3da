/**
 * The worker-id lease: each process leases a snowflake worker id that no other live process
 * holds, from one Redis hash (`workerIdsKey`), keeps it with a heartbeat, and gives it back at
 * shutdown. Three Lua scripts do the transitions; times inside them come from Redis `TIME`.
 *
 * Validity is judged locally on the monotonic clock, conservatively: a renewal sent at local time
 * `s` makes the lease valid until `s + ttl - safetyMargin`, and Redis can only have started that
 * ttl after `s`. So a lease is never considered valid past its expiry in Redis, whatever the
 * offset between this host's clock and Redis's, and a renewal stuck in a Redis outage extends
 * nothing: the lease stays valid only until its local expiry.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import { ErrorCode, OnceqError, WorkerIdUnavailableError } from '../core/errors.js';
import { workerIdsKey } from '../redis/keys.js';
import { runScript } from '../redis/scripts.js';
import { WORKER_ID_MAX, WORKER_ID_MIN } from './snowflake-generator.js';

/** Default of {@link WorkerIdLeaseOptions.ttlMs}. */
export const DEFAULT_WORKER_ID_TTL_MS = 30_000;
/** Upper bound of the default {@link WorkerIdLeaseOptions.safetyMarginMs}. */
export const DEFAULT_WORKER_ID_SAFETY_MARGIN_MS = 1_000;
/** Default of {@link WorkerIdLeaseOptions.releaseCooldownMs}. */
export const DEFAULT_WORKER_ID_RELEASE_COOLDOWN_MS = 1_000;
/** How long `close()` waits for Redis to confirm the release before leaving it to expiry. */
const CLOSE_TIMEOUT_MS = 2_000;

/** Why a lease was lost: its entry was deleted, or another owner holds the id. */
export type WorkerIdLostReason = 'gone' | 'taken';

/** Passed to {@link WorkerIdLeaseOptions.onLost}. */
export interface WorkerIdLostEvent {
  workerId: number;
  prefix: string;
  owner: string;
  reason: WorkerIdLostReason;
}

/** Options of {@link acquireWorkerId}. */
export interface WorkerIdLeaseOptions {
  /** Redis key prefix (`ONCEQ_PREFIX`); processes sharing it share the worker-id space. */
  prefix: string;
  /** Identifies this lease in Redis. @defaultValue `<hostname>:<pid>:<8 random hex>` */
  owner?: string;
  /** Lease lifetime without a heartbeat. @defaultValue 30 s */
  ttlMs?: number;
  /** Interval between renewals. @defaultValue `ttlMs / 3` */
  heartbeatMs?: number;
  /**
   * The lease counts as invalid this long before its (conservative) local expiry, covering a
   * pause between asking `isValid()` and using the id. @defaultValue `min(1 s, ttlMs / 5)`
   */
  safetyMarginMs?: number;
  /**
   * After `close()` the id stays unavailable this long, so a host whose clock runs slightly
   * behind cannot reuse it at once for milliseconds this process already minted in; 0 frees it
   * at once. @defaultValue 1 s
   */
  releaseCooldownMs?: number;
  /** Highest worker id to lease (tests shrink the range). @defaultValue {@link WORKER_ID_MAX} */
  maxWorkerId?: number;
  /** Called once when a renewal finds the id deleted or held by another owner. */
  onLost?: (event: WorkerIdLostEvent) => void;
  /** Called when a renewal or the release fails (Redis unreachable); the lease then lapses. */
  onError?: (err: unknown) => void;
}

/** A leased worker id. */
export interface WorkerIdLease {
  /** The leased worker id, from {@link WORKER_ID_MIN} to the configured maximum. */
  readonly workerId: number;
  /** The owner string stored in Redis. */
  readonly owner: string;
  /** The Redis key prefix. */
  readonly prefix: string;
  /** Expiry in Redis time (Unix ms) confirmed by the last successful acquire or renewal. */
  readonly expiresAtMs: number;
  /**
   * The lifetime of the leases as the Redis this lease came from holds them (see
   * acquire-worker-id-1.lua): its id, and its age in ms when the lease was taken. A new epoch
   * means Redis lost the worker-id hash, restarted or failed over, or the hash never existed.
   */
  readonly epoch: { id: string; ageMs: number };
  /**
   * Whether ids may be minted with this worker id now: not lost, not closed, and before the local
   * expiry minus the safety margin. Cheap enough to ask per id.
   */
  isValid(): boolean;
  /**
   * Renews now (the heartbeat calls this); concurrent calls share one round trip. Resolves to
   * `isValid()` afterwards. A Redis error is passed to `onError`, not thrown.
   */
  renew(): Promise<boolean>;
  /** Stops the heartbeat and releases the id (best effort, bounded in time); idempotent. */
  close(): Promise<void>;
}

/** Return codes of the worker-id scripts (src/redis/lua/*-worker-id-1.lua). */
export enum WorkerIdScriptCode {
  Acquired = 1,
  Renewed = 2,
  Released = 3,
  AllLeased = -1,
  Gone = -2,
  HeldByOther = -3,
}

/** A script reply, mapped. */
export type WorkerIdScriptResult =
  | {
      kind: 'acquired';
      workerId: number;
      expiresAtMs: number;
      epoch: { id: string; ageMs: number };
    }
  | { kind: 'renewed'; expiresAtMs: number }
  | { kind: 'released' }
  | { kind: 'not-held'; reason: WorkerIdLostReason };

/**
 * The one place script replies become results or errors (STYLE habit 2).
 * @throws WorkerIdUnavailableError on {@link WorkerIdScriptCode.AllLeased}.
 * @throws OnceqError `script_failed` on a reply no script returns.
 */
export function workerIdScriptResult(
  reply: unknown,
  context: { prefix: string; count: number },
): WorkerIdScriptResult {
  const [code, a, b, c, d] = Array.isArray(reply) ? (reply as unknown[]) : [];
  switch (code) {
    case WorkerIdScriptCode.Acquired:
      if (
        typeof a === 'number' &&
        typeof b === 'number' &&
        typeof c === 'string' &&
        c !== '' &&
        typeof d === 'number' &&
        d >= 0
      ) {
        return { kind: 'acquired', workerId: a, expiresAtMs: b, epoch: { id: c, ageMs: d } };
      }
      break;
    case WorkerIdScriptCode.Renewed:
      if (typeof a === 'number') return { kind: 'renewed', expiresAtMs: a };
      break;
    case WorkerIdScriptCode.Released:
      return { kind: 'released' };
    case WorkerIdScriptCode.AllLeased:
      throw new WorkerIdUnavailableError(context.prefix, context.count);
    case WorkerIdScriptCode.Gone:
      return { kind: 'not-held', reason: 'gone' };
    case WorkerIdScriptCode.HeldByOther:
      return { kind: 'not-held', reason: 'taken' };
  }
  throw new OnceqError(
    ErrorCode.ScriptFailed,
    `unexpected reply from a worker-id script: ${JSON.stringify(reply)}`,
  );
}

interface ResolvedOptions {
  prefix: string;
  owner: string;
  ttlMs: number;
  heartbeatMs: number;
  safetyMarginMs: number;
  releaseCooldownMs: number;
  maxWorkerId: number;
  onLost: ((event: WorkerIdLostEvent) => void) | undefined;
  onError: (err: unknown) => void;
}

function resolveOptions(options: WorkerIdLeaseOptions): ResolvedOptions {
  const ttlMs = options.ttlMs ?? DEFAULT_WORKER_ID_TTL_MS;
  const heartbeatMs = options.heartbeatMs ?? Math.floor(ttlMs / 3);
  const safetyMarginMs =
    options.safetyMarginMs ?? Math.min(DEFAULT_WORKER_ID_SAFETY_MARGIN_MS, Math.floor(ttlMs / 5));
  const releaseCooldownMs = options.releaseCooldownMs ?? DEFAULT_WORKER_ID_RELEASE_COOLDOWN_MS;
  const maxWorkerId = options.maxWorkerId ?? WORKER_ID_MAX;
  const owner = options.owner ?? `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;

  const int = (name: string, value: number, min: number, max: number): void => {
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new RangeError(`${name} must be an integer from ${min} to ${max}, got ${value}`);
    }
  };
  if (!options.prefix) throw new RangeError('prefix must not be empty');
  if (owner.length === 0) throw new RangeError('owner must not be empty');
  int('ttlMs', ttlMs, 10, 3_600_000);
  int('heartbeatMs', heartbeatMs, 1, ttlMs - 1);
  int('safetyMarginMs', safetyMarginMs, 0, ttlMs - heartbeatMs - 1);
  int('releaseCooldownMs', releaseCooldownMs, 0, 3_600_000);
  int('maxWorkerId', maxWorkerId, WORKER_ID_MIN, WORKER_ID_MAX);
  return {
    prefix: options.prefix,
    owner,
    ttlMs,
    heartbeatMs,
    safetyMarginMs,
    releaseCooldownMs,
    maxWorkerId,
    onLost: options.onLost,
    onError: options.onError ?? (() => undefined),
  };
}

/**
 * Leases a free worker id, scanning from a random one, and starts its heartbeat (an `unref()`'d
 * timer, so it never keeps the process alive).
 * @throws WorkerIdUnavailableError when every id of the range is held by a live lease.
 */
export async function acquireWorkerId(
  redis: Redis,
  options: WorkerIdLeaseOptions,
): Promise<WorkerIdLease> {
  const o = resolveOptions(options);
  const sentAt = performance.now();
  const reply = await runScript(
    redis,
    'acquire-worker-id',
    [workerIdsKey(o.prefix)],
    [
      o.owner,
      o.ttlMs,
      WORKER_ID_MIN,
      o.maxWorkerId,
      randomInt(WORKER_ID_MIN, o.maxWorkerId + 1),
      randomBytes(16).toString('hex'),
    ],
  );
  const result = workerIdScriptResult(reply, { prefix: o.prefix, count: idCount(o) });
  if (result.kind !== 'acquired') {
    throw new OnceqError(ErrorCode.ScriptFailed, `acquire-worker-id answered ${result.kind}`);
  }
  const lease = new RedisWorkerIdLease(
    redis,
    o,
    result.workerId,
    result.expiresAtMs,
    result.epoch,
    sentAt,
  );
  lease.scheduleHeartbeat();
  return lease;
}

function idCount(o: ResolvedOptions): number {
  return o.maxWorkerId - WORKER_ID_MIN + 1;
}

class RedisWorkerIdLease implements WorkerIdLease {
  readonly workerId: number;
  #expiresAtMs: number;
  /** Monotonic time (performance.now) until which the lease is surely held in Redis. */
  #heldUntil: number;
  #state: 'held' | 'lost' | 'closed' = 'held';
  #timer: NodeJS.Timeout | undefined;
  #renewing: Promise<boolean> | undefined;
  #closing: Promise<void> | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly o: ResolvedOptions,
    workerId: number,
    expiresAtMs: number,
    readonly epoch: { id: string; ageMs: number },
    sentAt: number,
  ) {
    this.workerId = workerId;
    this.#expiresAtMs = expiresAtMs;
    this.#heldUntil = sentAt + o.ttlMs;
  }

  get owner(): string {
    return this.o.owner;
  }

  get prefix(): string {
    return this.o.prefix;
  }

  get expiresAtMs(): number {
    return this.#expiresAtMs;
  }

  isValid(): boolean {
    return this.#state === 'held' && performance.now() < this.#heldUntil - this.o.safetyMarginMs;
  }

  renew(): Promise<boolean> {
    if (this.#state !== 'held') return Promise.resolve(false);
    // One renewal at a time: during an outage they would otherwise pile up in the offline queue.
    this.#renewing ??= this.#renewOnce().finally(() => {
      this.#renewing = undefined;
    });
    return this.#renewing;
  }

  async #renewOnce(): Promise<boolean> {
    const sentAt = performance.now();
    let reply: unknown;
    try {
      reply = await runScript(
        this.redis,
        'renew-worker-id',
        [workerIdsKey(this.o.prefix)],
        [this.workerId, this.o.owner, this.o.ttlMs],
      );
    } catch (err) {
      this.o.onError(err);
      return this.isValid();
    }
    if (this.#state !== 'held') return false;
    const result = workerIdScriptResult(reply, { prefix: this.o.prefix, count: idCount(this.o) });
    if (result.kind === 'renewed') {
      this.#expiresAtMs = result.expiresAtMs;
      this.#heldUntil = Math.max(this.#heldUntil, sentAt + this.o.ttlMs);
      return this.isValid();
    }
    if (result.kind === 'not-held') {
      this.#state = 'lost';
      this.#stopHeartbeat();
      this.o.onLost?.({
        workerId: this.workerId,
        prefix: this.o.prefix,
        owner: this.o.owner,
        reason: result.reason,
      });
      return false;
    }
    throw new OnceqError(ErrorCode.ScriptFailed, `renew-worker-id answered ${result.kind}`);
  }

  /** Arms the next heartbeat; each one waits for the previous renewal to finish. */
  scheduleHeartbeat(): void {
    if (this.#state !== 'held') return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.renew()
        .catch((err: unknown) => this.o.onError(err))
        .finally(() => this.scheduleHeartbeat());
    }, this.o.heartbeatMs);
    this.#timer.unref();
  }

  #stopHeartbeat(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const wasHeld = this.#state === 'held';
    this.#state = 'closed';
    this.#stopHeartbeat();
    await this.#renewing?.catch(() => undefined);
    if (!wasHeld) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      const reply = await Promise.race([
        runScript(
          this.redis,
          'release-worker-id',
          [workerIdsKey(this.o.prefix)],
          [this.workerId, this.o.owner, this.o.releaseCooldownMs],
        ),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new Error(
                  `releasing worker id ${this.workerId}: no answer in ${CLOSE_TIMEOUT_MS} ms`,
                ),
              ),
            CLOSE_TIMEOUT_MS,
          );
          timer.unref();
        }),
      ]);
      // Released, or already not ours (deleted, or taken after a lapse): nothing left to give back.
      workerIdScriptResult(reply, { prefix: this.o.prefix, count: idCount(this.o) });
    } catch (err) {
      // The lease expires on its own; a failed release only delays the id's reuse.
      this.o.onError(err);
    } finally {
      clearTimeout(timer);
    }
  }
}
