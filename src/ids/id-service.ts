/**
 * The id service a process starts once: a worker id leased from PostgreSQL and a generator that
 * mints only while the lease is valid and only within the time it reserved. `close()` stops
 * minting first, then releases the worker id, handing on the time it really minted up to.
 *
 * A Redis data loss touches none of this. A lease can still be lost while the process lives on:
 * it was paused (or cut off from PostgreSQL) past its ttl and another process took the id. The
 * service then leases another worker id in the background and mints again as soon as it holds
 * one; until then `nextId()` throws {@link IdGeneratorStoppedError}, which callers answer as
 * "unavailable, retry" (the API's 503 with `Retry-After`). No waiting period follows a loss: the
 * new worker id's floor is above every id minted under it before, whoever minted them.
 */
import type { Kysely } from 'kysely';
import type { Database } from '../db/database.js';
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

/** Passed to {@link IdServiceOptions.onReacquired}. */
export interface WorkerIdReacquiredEvent {
  /** The worker id that was lost. */
  previousWorkerId: number;
  /** The worker id now leased. */
  workerId: number;
}

/** Options of {@link createIdService}: the lease's, plus the clock ids are stamped from. */
export interface IdServiceOptions extends WorkerIdLeaseOptions {
  /** The wall clock, Unix ms (tests step it back). @defaultValue `Date.now()` */
  clock?: () => number;
  /** Called when a lost worker id has been replaced by a new lease. */
  onReacquired?: (event: WorkerIdReacquiredEvent) => void;
}

/** Mints this process's snowflake ids. */
export interface IdService {
  /** The worker id stamped into the ids minted now (the last one leased). */
  readonly workerId: number;
  /** The current lease (the last one taken, possibly lost while a new one is being leased). */
  readonly lease: WorkerIdLease;
  /** Whether `nextId()` would mint now: a valid lease with reserved time left, not closed. */
  isReady(): boolean;
  /**
   * A new id, as a decimal string.
   * @throws IdGeneratorStoppedError when the lease is lost, lapsed or closed, its reserved time
   * is used up, or a replacement is not leased yet; retry later.
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
export async function createIdService(
  db: Kysely<Database>,
  options: IdServiceOptions = {},
): Promise<IdService> {
  const service = new LeasedIdService(db, options);
  await service.start();
  return service;
}

interface Current {
  lease: WorkerIdLease;
  generator: SnowflakeGenerator;
}

class LeasedIdService implements IdService {
  readonly #retryMs: number;
  readonly #clock: () => number;
  #current: Current | undefined;
  /** Set while the current lease is lost and a replacement is being leased. */
  #replacing: Promise<void> | undefined;
  #closed = false;
  #wake: (() => void) | undefined;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly options: IdServiceOptions,
  ) {
    const ttlMs = options.ttlMs ?? DEFAULT_WORKER_ID_TTL_MS;
    this.#retryMs = Math.min(MAX_REACQUIRE_BACKOFF_MS, Math.max(10, Math.floor(ttlMs / 3)));
    this.#clock = options.clock ?? (() => Date.now());
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
    const current = this.#current;
    return (
      !this.#closed &&
      this.#replacing === undefined &&
      current !== undefined &&
      current.lease.isValid() &&
      current.generator.nowMs() < current.lease.reservedUntilMs
    );
  }

  nextId(): string {
    if (this.#closed) throw new IdGeneratorStoppedError('the id service is closed');
    const current = this.#held();
    if (this.#replacing) {
      throw new IdGeneratorStoppedError(
        `worker id ${current.lease.workerId} was taken by another process while this one could ` +
          'not renew it; leasing another',
      );
    }
    return current.generator.nextId();
  }

  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#wake?.();
    }
    // A replacement stuck on an unreachable PostgreSQL must not hold shutdown: a lease it still
    // gets is closed by #replace itself, since the service is closed by then.
    await withTimeout(this.#replacing ?? Promise.resolve(), CLOSE_WAIT_MS).catch(() => undefined);
    const current = this.#current;
    // Minting has stopped (closed): the next holder may start right after the last id.
    await current?.lease.close(current.generator.mintedBeforeMs());
  }

  #held(): Current {
    if (!this.#current) throw new IdGeneratorStoppedError('the id service has not started');
    return this.#current;
  }

  async #lease(): Promise<Current> {
    // The lease asks its generator's clock, and the generator is built from the lease.
    const minting: { generator?: SnowflakeGenerator } = {};
    const lease = await acquireWorkerId(this.db, {
      ...this.options,
      // Reservations run ahead of the generator's clock, which is never below its floor.
      clock: () => minting.generator?.nowMs() ?? this.#clock(),
      onLost: (event) => this.#lost(event),
    });
    const generator = new SnowflakeGenerator({
      workerId: lease.workerId,
      clock: this.#clock,
      floorMs: lease.floorMs,
      ceilingMs: () => lease.reservedUntilMs,
      isLeaseValid: () => !this.#closed && lease.isValid(),
    });
    minting.generator = generator;
    return { lease, generator };
  }

  #lost(event: WorkerIdLostEvent): void {
    this.options.onLost?.(event);
    if (this.#closed || this.#replacing) return;
    this.#replacing = this.#replace(event).finally(() => {
      this.#replacing = undefined;
    });
  }

  /** Leases a replacement, retrying (PostgreSQL may still be down) until it succeeds or closes. */
  async #replace(event: WorkerIdLostEvent): Promise<void> {
    for (let attempt = 0; !this.#closed; attempt++) {
      try {
        const next = await this.#lease();
        if (this.#closed) {
          await next.lease.close(next.generator.mintedBeforeMs());
          return;
        }
        this.#current = next;
        this.options.onReacquired?.({
          previousWorkerId: event.workerId,
          workerId: next.lease.workerId,
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
