/**
 * The id service a process starts once: a leased worker id and a generator that mints only while
 * the lease is valid. `close()` stops minting first, then releases the worker id.
 */
import type { Redis } from 'ioredis';
import { IdGeneratorStoppedError } from '../core/errors.js';
import { SnowflakeGenerator } from './snowflake-generator.js';
import {
  acquireWorkerId,
  type WorkerIdLease,
  type WorkerIdLeaseOptions,
} from './worker-id-lease.js';

/** Options of {@link createIdService}: the lease's, plus the generator's clock tolerance. */
export interface IdServiceOptions extends WorkerIdLeaseOptions {
  /** See `SnowflakeGeneratorOptions.maxClockSkewWaitMs`. @defaultValue 5 */
  maxClockSkewWaitMs?: number;
}

/** Mints this process's snowflake ids. */
export interface IdService {
  /** The leased worker id stamped into every id. */
  readonly workerId: number;
  /** The lease behind it (for health checks: `lease.isValid()`). */
  readonly lease: WorkerIdLease;
  /**
   * A new id, as a decimal string.
   * @throws IdGeneratorStoppedError when the lease is lost, lapsed or closed.
   * @throws ClockMovedBackwardsError when the clock stepped back too far.
   */
  nextId(): string;
  /** Stops minting and releases the worker id; idempotent. */
  close(): Promise<void>;
}

/**
 * Leases a worker id and returns a generator bound to it.
 * @throws WorkerIdUnavailableError when every worker id is leased: the process must not start.
 */
export async function createIdService(redis: Redis, options: IdServiceOptions): Promise<IdService> {
  const lease = await acquireWorkerId(redis, options);
  let closed = false;
  let generator: SnowflakeGenerator;
  try {
    generator = new SnowflakeGenerator({
      workerId: lease.workerId,
      maxClockSkewWaitMs: options.maxClockSkewWaitMs,
      isLeaseValid: () => !closed && lease.isValid(),
    });
  } catch (err) {
    await lease.close();
    throw err;
  }
  return {
    workerId: lease.workerId,
    lease,
    nextId() {
      if (closed) throw new IdGeneratorStoppedError('the id service is closed');
      return generator.nextId();
    },
    async close() {
      closed = true;
      await lease.close();
    },
  };
}
