/**
 * The worker-id lease: each process leases a snowflake worker id that no other live process
 * holds, from PostgreSQL (`worker_id_leases`, SQL in db/worker-id-leases.repository.ts), keeps it
 * with a heartbeat, and gives it back at shutdown. PostgreSQL, not Redis: a Redis restart, flush
 * or failover must not take leases away (it used to stop every process from minting for one
 * lease ttl). A lease table with an expiry, not a session advisory lock: an advisory lock dies
 * with its connection, so every dropped connection (a pgbouncer restart, `pg_terminate_backend`)
 * would cost the id at once, and it cannot carry the high-water mark that makes ids rise across
 * holders; a row can, and its expiry is judged on PostgreSQL's clock alone.
 *
 * Validity is judged locally on the monotonic clock, conservatively: a renewal sent at local time
 * `s` makes the lease valid until `s + ttl - safetyMargin`, and PostgreSQL started that ttl after
 * `s`. So a process never counts its lease valid past its expiry in PostgreSQL, whatever the
 * offset between the clocks; a process that cannot renew (PostgreSQL down, connection dropped,
 * the process paused) stops minting before another process can take the id.
 *
 * Uniqueness does not rest on that alone. Each renewal also reserves the next `reserveMs` of
 * timestamps in the row (`reserved_until_ms`), and the generator mints only within the time
 * reserved and confirmed; the next holder mints only from that mark up. So even an id minted by
 * a holder whose lease lapsed a moment earlier is below every id of the next holder.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Kysely } from 'kysely';
import { WorkerIdUnavailableError } from '../core/errors.js';
import { withTimeout } from '../core/with-timeout.js';
import type { Database } from '../db/database.js';
import {
  acquireWorkerIdLease,
  releaseWorkerIdLease,
  renewWorkerIdLease,
} from '../db/worker-id-leases.repository.js';
import { WORKER_ID_MAX, WORKER_ID_MIN } from './snowflake-generator.js';

/** Default of {@link WorkerIdLeaseOptions.ttlMs}. */
export const DEFAULT_WORKER_ID_TTL_MS = 30_000;
/** Upper bound of the default {@link WorkerIdLeaseOptions.safetyMarginMs}. */
export const DEFAULT_WORKER_ID_SAFETY_MARGIN_MS = 1_000;
/** How long `close()` waits for PostgreSQL to confirm the release before leaving it to expiry. */
const CLOSE_TIMEOUT_MS = 2_000;

/** Passed to {@link WorkerIdLeaseOptions.onLost}: another owner holds the id now. */
export interface WorkerIdLostEvent {
  workerId: number;
  owner: string;
}

/** Options of {@link acquireWorkerId}. */
export interface WorkerIdLeaseOptions {
  /** Identifies this lease in its row. @defaultValue `<hostname>:<pid>:<8 random hex>` */
  owner?: string;
  /** Lease lifetime without a heartbeat, on PostgreSQL's clock. @defaultValue 30 s */
  ttlMs?: number;
  /** Interval between renewals. @defaultValue `ttlMs / 3` */
  heartbeatMs?: number;
  /**
   * The lease counts as invalid this long before its (conservative) local expiry, covering a
   * pause between asking `isValid()` and using the id. @defaultValue `min(1 s, ttlMs / 5)`
   */
  safetyMarginMs?: number;
  /**
   * How far ahead of the minting clock each renewal reserves timestamps. Must outlast a
   * heartbeat interval, or minting pauses between renewals. @defaultValue `ttlMs`
   */
  reserveMs?: number;
  /** Highest worker id to lease (tests shrink the range). @defaultValue {@link WORKER_ID_MAX} */
  maxWorkerId?: number;
  /**
   * The minting clock (Unix ms) reservations are made from: the generator's `nowMs()`, which is
   * not below the floor or its last id. @defaultValue `Date.now()`
   */
  clock?: () => number;
  /** Called once when a renewal finds another owner holding the id. */
  onLost?: (event: WorkerIdLostEvent) => void;
  /** Called when a renewal or the release fails (PostgreSQL unreachable); the lease then lapses. */
  onError?: (err: unknown) => void;
}

/** A leased worker id. */
export interface WorkerIdLease {
  /** The leased worker id, from {@link WORKER_ID_MIN} to the configured maximum. */
  readonly workerId: number;
  /** The owner string stored in the row. */
  readonly owner: string;
  /** The high-water mark the previous holders left: mint only ids stamped at or after it. */
  readonly floorMs: number;
  /** The time reserved and confirmed for this holder: mint only ids stamped before it. */
  readonly reservedUntilMs: number;
  /**
   * Whether ids may be minted with this worker id now: not lost, not closed, and before the local
   * expiry minus the safety margin. Cheap enough to ask per id.
   */
  isValid(): boolean;
  /**
   * Renews now (the heartbeat calls this); concurrent calls share one round trip. Resolves to
   * `isValid()` afterwards. A PostgreSQL error is passed to `onError`, not thrown.
   */
  renew(): Promise<boolean>;
  /**
   * Stops the heartbeat and releases the id (best effort, bounded in time); idempotent.
   * @param mintedBeforeMs - a time no id minted with this lease is stamped at or after; the next
   * holder starts there. Only pass it once minting has stopped. @defaultValue the reservation
   */
  close(mintedBeforeMs?: number): Promise<void>;
}

interface ResolvedOptions {
  owner: string;
  ttlMs: number;
  heartbeatMs: number;
  safetyMarginMs: number;
  reserveMs: number;
  maxWorkerId: number;
  clock: () => number;
  onLost: ((event: WorkerIdLostEvent) => void) | undefined;
  onError: (err: unknown) => void;
}

function resolveOptions(options: WorkerIdLeaseOptions): ResolvedOptions {
  const ttlMs = options.ttlMs ?? DEFAULT_WORKER_ID_TTL_MS;
  const heartbeatMs = options.heartbeatMs ?? Math.floor(ttlMs / 3);
  const safetyMarginMs =
    options.safetyMarginMs ?? Math.min(DEFAULT_WORKER_ID_SAFETY_MARGIN_MS, Math.floor(ttlMs / 5));
  const reserveMs = options.reserveMs ?? ttlMs;
  const maxWorkerId = options.maxWorkerId ?? WORKER_ID_MAX;
  const owner = options.owner ?? `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;

  const int = (name: string, value: number, min: number, max: number): void => {
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new RangeError(`${name} must be an integer from ${min} to ${max}, got ${value}`);
    }
  };
  if (owner.length === 0) throw new RangeError('owner must not be empty');
  int('ttlMs', ttlMs, 10, 3_600_000);
  int('heartbeatMs', heartbeatMs, 1, ttlMs - 1);
  int('safetyMarginMs', safetyMarginMs, 0, ttlMs - heartbeatMs - 1);
  int('reserveMs', reserveMs, heartbeatMs + 1, 3_600_000);
  int('maxWorkerId', maxWorkerId, WORKER_ID_MIN, WORKER_ID_MAX);
  return {
    owner,
    ttlMs,
    heartbeatMs,
    safetyMarginMs,
    reserveMs,
    maxWorkerId,
    clock: options.clock ?? (() => Date.now()),
    onLost: options.onLost,
    onError: options.onError ?? (() => undefined),
  };
}

/**
 * Leases a free worker id and starts its heartbeat (an `unref()`'d timer, so it never keeps the
 * process alive).
 * @throws WorkerIdUnavailableError when every id of the range is held by a live lease.
 */
export async function acquireWorkerId(
  db: Kysely<Database>,
  options: WorkerIdLeaseOptions = {},
): Promise<WorkerIdLease> {
  const o = resolveOptions(options);
  const sentAt = performance.now();
  const row = await acquireWorkerIdLease(db, {
    owner: o.owner,
    ttlMs: o.ttlMs,
    maxWorkerId: o.maxWorkerId,
    clockMs: o.clock(),
    reserveMs: o.reserveMs,
  });
  if (!row) throw new WorkerIdUnavailableError(o.maxWorkerId - WORKER_ID_MIN + 1);
  const lease = new PgWorkerIdLease(db, o, row.workerId, row.floorMs, row.reservedUntilMs, sentAt);
  lease.scheduleHeartbeat();
  return lease;
}

class PgWorkerIdLease implements WorkerIdLease {
  /** Monotonic time (performance.now) until which the lease is surely held in PostgreSQL. */
  #heldUntil: number;
  #reservedUntilMs: number;
  #state: 'held' | 'lost' | 'closed' = 'held';
  #timer: NodeJS.Timeout | undefined;
  #renewing: Promise<boolean> | undefined;
  #closing: Promise<void> | undefined;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly o: ResolvedOptions,
    readonly workerId: number,
    readonly floorMs: number,
    reservedUntilMs: number,
    sentAt: number,
  ) {
    this.#reservedUntilMs = reservedUntilMs;
    this.#heldUntil = sentAt + o.ttlMs;
  }

  get owner(): string {
    return this.o.owner;
  }

  get reservedUntilMs(): number {
    return this.#reservedUntilMs;
  }

  isValid(): boolean {
    return this.#state === 'held' && performance.now() < this.#heldUntil - this.o.safetyMarginMs;
  }

  renew(): Promise<boolean> {
    if (this.#state !== 'held') return Promise.resolve(false);
    // One renewal at a time: during an outage they would otherwise pile up on the pool.
    this.#renewing ??= this.#renewOnce().finally(() => {
      this.#renewing = undefined;
    });
    return this.#renewing;
  }

  async #renewOnce(): Promise<boolean> {
    const sentAt = performance.now();
    let row: { reservedUntilMs: number } | undefined;
    try {
      // Bounded: an answer later than a ttl extends nothing, and a hung one must not hold the
      // next heartbeat. A renewal that commits after the timeout is harmless (still ours).
      row = await withTimeout(
        renewWorkerIdLease(this.db, {
          workerId: this.workerId,
          owner: this.o.owner,
          ttlMs: this.o.ttlMs,
          reserveUntilMs: this.o.clock() + this.o.reserveMs,
        }),
        this.o.ttlMs,
      );
    } catch (err) {
      this.o.onError(err);
      return this.isValid();
    }
    if (this.#state !== 'held') return false;
    if (!row) {
      this.#state = 'lost';
      this.#stopHeartbeat();
      this.o.onLost?.({ workerId: this.workerId, owner: this.o.owner });
      return false;
    }
    this.#reservedUntilMs = Math.max(this.#reservedUntilMs, row.reservedUntilMs);
    this.#heldUntil = Math.max(this.#heldUntil, sentAt + this.o.ttlMs);
    return this.isValid();
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

  close(mintedBeforeMs?: number): Promise<void> {
    this.#closing ??= this.#close(mintedBeforeMs);
    return this.#closing;
  }

  async #close(mintedBeforeMs: number | undefined): Promise<void> {
    const wasHeld = this.#state === 'held';
    this.#state = 'closed';
    this.#stopHeartbeat();
    await this.#renewing?.catch(() => undefined);
    if (!wasHeld) return;
    try {
      // Never below the floor, never above what is reserved: the mark only ever moves within
      // this holder's own range.
      const mark = Math.min(
        this.#reservedUntilMs,
        Math.max(this.floorMs, mintedBeforeMs ?? this.#reservedUntilMs),
      );
      await withTimeout(
        releaseWorkerIdLease(this.db, {
          workerId: this.workerId,
          owner: this.o.owner,
          mintedBeforeMs: mark,
        }),
        CLOSE_TIMEOUT_MS,
      );
    } catch (err) {
      // The lease expires on its own; a failed release only delays the id's reuse.
      this.o.onError(err);
    }
  }
}
