/**
 * The id service a process starts once: a leased worker id and a generator that mints only while
 * the lease is valid. `close()` stops minting first, then releases the worker id.
 *
 * A lease can be lost for good while the process lives on: Redis restarted without persistence
 * or was flushed (the entry is `gone`), or the process was paused past its ttl and another one
 * took the id (`taken`). The service then leases a new worker id in the background and mints
 * again once it holds one; until then `nextId()` throws {@link IdGeneratorStoppedError}, which
 * callers answer as "unavailable, retry" (the API's 503 with `Retry-After`).
 *
 * After `gone`, every other process of the fleet lost its entry too, but each goes on minting
 * until its own next renewal tells it so, which can take up to a lease ttl. A new lease taken in
 * that time could be an id one of them still uses, so the service mints with it only once a ttl
 * has passed since the loss was seen: by then every lease granted before the data loss has
 * lapsed or been found lost. The same wait follows `taken`: after a data loss, a process whose
 * id another process re-leased first hears `taken`, not `gone`, and cannot tell the two apart.
 *
 * A process that starts after the loss heard nothing, and Redis alone cannot tell it that the
 * fleet's leases were just wiped (an empty hash looks like a first start). The hash carries an
 * epoch, and PostgreSQL remembers the last one per prefix (worker_id_epochs): a lease from an
 * epoch that replaced another is used only once the epoch is a ttl old. The fleet is assumed to
 * share one lease ttl. Without `db` this check is skipped.
 */
import type { Redis } from 'ioredis';
import type { Kysely } from 'kysely';
import type { Database } from '../db/database.js';
import { recordWorkerIdEpoch } from '../db/worker-id-epochs.repository.js';
import { IdGeneratorStoppedError } from '../core/errors.js';
import { withTimeout } from '../core/with-timeout.js';
import { SnowflakeGenerator } from './snowflake-generator.js';
import {
  acquireWorkerId,
  DEFAULT_WORKER_ID_TTL_MS,
  type WorkerIdLease,
  type WorkerIdLeaseOptions,
  type WorkerIdLostEvent,
} from './worker-id-lease.js';

/** Longest pause between two attempts to lease a replacement worker id. */
const MAX_REACQUIRE_BACKOFF_MS = 5_000;
/** How long `close()` waits for a replacement lease being taken. */
const CLOSE_WAIT_MS = 2_000;
/** How long the epoch check may wait for PostgreSQL before assuming a loss (and waiting a ttl). */
const EPOCH_CHECK_TIMEOUT_MS = 5_000;

/** Passed to {@link IdServiceOptions.onReacquired}. */
export interface WorkerIdReacquiredEvent {
  /** The worker id that was lost. */
  previousWorkerId: number;
  /** The worker id now leased. */
  workerId: number;
  /** Monotonic time (`performance.now()`) from which it mints: one lease ttl after the loss. */
  mintsFrom: number;
}

/** Options of {@link createIdService}: the lease's, plus the generator's clock tolerance. */
export interface IdServiceOptions extends WorkerIdLeaseOptions {
  /** See `SnowflakeGeneratorOptions.maxClockSkewWaitMs`. @defaultValue 5 */
  maxClockSkewWaitMs?: number;
  /** Called when a lost worker id has been replaced by a new lease. */
  onReacquired?: (event: WorkerIdReacquiredEvent) => void;
  /**
   * Where the worker-id epoch is remembered, so that a process starting just after Redis lost
   * its data waits out the leases granted before the loss (see the file comment). Every
   * long-lived process should pass it. @defaultValue no check
   */
  db?: Kysely<Database>;
}

/** Mints this process's snowflake ids. */
export interface IdService {
  /** The worker id stamped into the ids minted now (the last one leased). */
  readonly workerId: number;
  /** The current lease (the last one taken, possibly lost while a new one is being leased). */
  readonly lease: WorkerIdLease;
  /** Whether `nextId()` would mint now: a valid lease, past any wait after a loss, not closed. */
  isReady(): boolean;
  /**
   * A new id, as a decimal string.
   * @throws IdGeneratorStoppedError when the lease is lost, lapsed or closed, or a replacement
   * is not usable yet; retry later.
   * @throws ClockMovedBackwardsError when the clock stepped back too far.
   */
  nextId(): string;
  /** Stops minting and releases the worker id; idempotent. */
  close(): Promise<void>;
}

/**
 * Leases a worker id and returns a generator bound to it, which replaces the lease if it is
 * ever lost.
 * @throws WorkerIdUnavailableError when every worker id is leased: the process must not start.
 */
export async function createIdService(redis: Redis, options: IdServiceOptions): Promise<IdService> {
  const service = new LeasedIdService(redis, options);
  await service.start();
  return service;
}

interface Current {
  lease: WorkerIdLease;
  generator: SnowflakeGenerator;
}

class LeasedIdService implements IdService {
  readonly #ttlMs: number;
  readonly #retryMs: number;
  #current: Current | undefined;
  /** Monotonic time before which nothing is minted (one lease ttl after the last loss). */
  #mintsFrom = 0;
  /** Set while the current lease is lost and a replacement is being leased. */
  #replacing: Promise<void> | undefined;
  #closed = false;
  #wake: (() => void) | undefined;
  /** The last id minted with each worker id this service held, for a later lease of it. */
  readonly #lastIds = new Map<number, string>();

  constructor(
    private readonly redis: Redis,
    private readonly options: IdServiceOptions,
  ) {
    this.#ttlMs = options.ttlMs ?? DEFAULT_WORKER_ID_TTL_MS;
    this.#retryMs = Math.min(MAX_REACQUIRE_BACKOFF_MS, Math.max(10, Math.floor(this.#ttlMs / 3)));
  }

  async start(): Promise<void> {
    this.#current = await this.#lease();
  }

  get workerId(): number {
    return this.#held().lease.workerId;
  }

  get lease(): WorkerIdLease {
    return this.#held().lease;
  }

  isReady(): boolean {
    return (
      !this.#closed &&
      this.#replacing === undefined &&
      performance.now() >= this.#mintsFrom &&
      this.#current !== undefined &&
      this.#current.lease.isValid()
    );
  }

  nextId(): string {
    if (this.#closed) throw new IdGeneratorStoppedError('the id service is closed');
    const current = this.#held();
    if (this.#replacing) {
      throw new IdGeneratorStoppedError(
        `worker id ${current.lease.workerId} was lost; leasing another one`,
      );
    }
    const waitMs = Math.ceil(this.#mintsFrom - performance.now());
    if (waitMs > 0) {
      throw new IdGeneratorStoppedError(
        `worker-id leases were lost (Redis lost them, or this one lapsed); minting resumes in ` +
          `${waitMs} ms, once no process can still be using a lease granted before the loss`,
      );
    }
    return current.generator.nextId();
  }

  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#wake?.();
    }
    // A replacement stuck on an unreachable Redis must not hold shutdown: a lease it still gets
    // is closed by #replace itself, since the service is closed by then.
    await withTimeout(this.#replacing ?? Promise.resolve(), CLOSE_WAIT_MS).catch(() => undefined);
    await this.#current?.lease.close();
  }

  #held(): Current {
    if (!this.#current) throw new IdGeneratorStoppedError('the id service has not started');
    return this.#current;
  }

  /** Leases a worker id; the generator of an id this service minted with before continues after it. */
  async #lease(): Promise<Current> {
    const lease = await acquireWorkerId(this.redis, {
      ...this.options,
      onLost: (event) => this.#lost(event),
    });
    const leasedAt = performance.now();
    try {
      await this.#waitOutLoss(lease, leasedAt);
      const generator = new SnowflakeGenerator({
        workerId: lease.workerId,
        maxClockSkewWaitMs: this.options.maxClockSkewWaitMs,
        isLeaseValid: () => !this.#closed && lease.isValid(),
        after: this.#lastIds.get(lease.workerId),
      });
      return { lease, generator };
    } catch (err) {
      await lease.close();
      throw err;
    }
  }

  /**
   * Pushes minting back until the lease's epoch is a ttl old when PostgreSQL says the epoch
   * replaced another (Redis lost the hash, restarted or failed over), or cannot say in time.
   */
  async #waitOutLoss(lease: WorkerIdLease, leasedAt: number): Promise<void> {
    const { db } = this.options;
    if (!db) return;
    let afterLoss = true;
    try {
      ({ afterLoss } = await withTimeout(
        recordWorkerIdEpoch(db, lease.prefix, lease.epoch.id),
        EPOCH_CHECK_TIMEOUT_MS,
      ));
    } catch (err) {
      this.options.onError?.(err);
    }
    const waitMs = this.#ttlMs - lease.epoch.ageMs;
    if (afterLoss && waitMs > 0) this.#mintsFrom = Math.max(this.#mintsFrom, leasedAt + waitMs);
  }

  #lost(event: WorkerIdLostEvent): void {
    this.options.onLost?.(event);
    if (this.#closed || this.#replacing) return;
    this.#mintsFrom = Math.max(this.#mintsFrom, performance.now() + this.#ttlMs);
    this.#replacing = this.#replace(event).finally(() => {
      this.#replacing = undefined;
    });
  }

  /** Leases a replacement, retrying (Redis may still be down) until it succeeds or closes. */
  async #replace(event: WorkerIdLostEvent): Promise<void> {
    const lastId = this.#current?.generator.lastId;
    if (lastId !== undefined) this.#lastIds.set(event.workerId, lastId);
    for (let attempt = 0; !this.#closed; attempt++) {
      try {
        const next = await this.#lease();
        if (this.#closed) {
          await next.lease.close();
          return;
        }
        this.#current = next;
        this.options.onReacquired?.({
          previousWorkerId: event.workerId,
          workerId: next.lease.workerId,
          mintsFrom: this.#mintsFrom,
        });
        return;
      } catch (err) {
        this.options.onError?.(err);
        await this.#sleep(Math.min(MAX_REACQUIRE_BACKOFF_MS, this.#retryMs * 2 ** attempt));
      }
    }
  }

  /** Sleeps without keeping the process alive; `close()` cuts it short. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      timer.unref();
      this.#wake = done;
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
    });
  }
}
