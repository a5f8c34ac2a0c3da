/**
 * The chaos campaign's randomness: a seeded PRNG and the fault schedule. Pure: no I/O, no clock,
 * no `Math.random`. The same seed and options always give the same schedule, so a failing
 * campaign can be re-run with the faults landing in the same order at the same offsets (the
 * processes' own timing still varies, as it does in Jepsen).
 */
import type { BackendKind } from '../../src/queues/backend.js';

/** Every fault the nemesis knows. */
export const FAULT_KINDS = [
  /** SIGKILL a worker, then start a new one. */
  'kill',
  /** SIGSTOP a worker past its lease, then SIGCONT it (a zombie). */
  'pause',
  /** `pg_terminate_backend` on every PostgreSQL backend of a worker. */
  'pgkill',
  /**
   * SIGKILL the campaign's private Redis (it keeps nothing on disk), then start it again. On a
   * cluster: one shard, a master and its replicas together, so no replica can take over and the
   * shard comes back empty (its slots, and with the default `cluster-require-full-coverage` the
   * whole cluster, refuse commands meanwhile).
   */
  'redis-restart',
  /** FLUSHALL on the campaign's private Redis; on a cluster on every master (replicas follow). */
  'redis-flush',
  /** SIGKILL the API while requests are in flight, then start it again. */
  'api-kill',
  /**
   * Cluster only: SIGKILL a master while its replica's replication is held back (`CLIENT PAUSE
   * WRITE` on the replica), so the replica promoted in its place lacks writes the master had
   * acknowledged: Redis goes back in time. The old master then rejoins as a replica.
   */
  'redis-failover',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/**
 * The faults that act on Redis. PostgreSQL-only mode has no Redis to restart or flush: its
 * queues and tokens live in the database, which `pgkill` already cuts the workers off from.
 */
export const REDIS_FAULT_KINDS: readonly FaultKind[] = [
  'redis-restart',
  'redis-flush',
  'redis-failover',
];

/** The faults that need a Redis Cluster: a single server has no replica to promote. */
export const CLUSTER_FAULT_KINDS: readonly FaultKind[] = ['redis-failover'];

/**
 * The faults that make sense against a backend: every kind on a Redis Cluster, all but the
 * cluster's on a single Redis, none of Redis's without Redis.
 */
export function faultKindsFor(backend: BackendKind, cluster = false): FaultKind[] {
  return FAULT_KINDS.filter((k) =>
    backend === 'postgres'
      ? !REDIS_FAULT_KINDS.includes(k)
      : cluster || !CLUSTER_FAULT_KINDS.includes(k),
  );
}

/** True for one of {@link FAULT_KINDS}. */
export function isFaultKind(value: string): value is FaultKind {
  return (FAULT_KINDS as readonly string[]).includes(value);
}

/** A seeded PRNG (mulberry32) with the helpers the campaign needs. */
export interface Random {
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [min, max], both included. */
  int(min: number, max: number): number;
  /** True with probability `p`. */
  chance(p: number): boolean;
  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T;
  /** A shuffled copy (Fisher-Yates). */
  shuffle<T>(items: readonly T[]): T[];
}

/** A PRNG whose whole output is fixed by `seed` (any 32-bit integer). */
export function createRandom(seed: number): Random {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  const int = (min: number, max: number): number => min + Math.floor(next() * (max - min + 1));
  return {
    next,
    int,
    chance: (p) => next() < p,
    pick: (items) => {
      if (items.length === 0) throw new RangeError('pick from an empty list');
      return items[int(0, items.length - 1)]!;
    },
    shuffle: (items) => {
      const copy = [...items];
      for (let i = copy.length - 1; i > 0; i--) {
        const j = int(0, i);
        [copy[i], copy[j]] = [copy[j]!, copy[i]!];
      }
      return copy;
    },
  };
}

/** Derives an independent stream from a seed, so the schedule and the workload never share one. */
export function deriveSeed(seed: number, stream: string): number {
  let h = (seed ^ 0x811c9dc5) >>> 0;
  for (let i = 0; i < stream.length; i++) {
    h ^= stream.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** One planned fault. */
export interface PlannedFault {
  /** Position in the schedule, from 0. */
  index: number;
  /** Offset from the start of the campaign, ms. The nemesis starts the fault no earlier. */
  atMs: number;
  kind: FaultKind;
  /**
   * Worker index (0-based) for `kill`, `pause` and `pgkill`; on a cluster, for `redis-restart`
   * and `redis-failover`, the index of the master acted on among the masters at the time of the
   * fault, sorted by port (the masters change with every failover).
   */
  target?: number;
  /**
   * How long the fault lasts before it heals: the pause length, the downtime of a killed
   * process or of Redis, for `redis-failover` how long the replica is held back before its master
   * is killed; 0 for instantaneous faults (`pgkill`, `redis-flush`).
   */
  holdMs: number;
}

/** Options of {@link planFaults}. */
export interface FaultPlanOptions {
  seed: number;
  /** Length of the campaign's workload phase, ms. */
  durationMs: number;
  /** The kinds to inject; each appears at least {@link FaultPlanOptions.minPerKind} times. */
  faults: readonly FaultKind[];
  /** Number of workers (targets of worker faults). */
  workers: number;
  /** The workers' lock duration: a pause lasts longer than the lease plus a stall check. */
  lockDurationMs: number;
  /**
   * Masters of the campaign's Redis Cluster (targets of `redis-restart` and `redis-failover`);
   * unset for a single Redis, whose schedules then stay what they were.
   */
  clusterMasters?: number;
  /** Mean gap between two faults, ms; shrunk when needed to fit every kind. @defaultValue 5000 */
  intervalMs?: number;
  /** @defaultValue 2 */
  minPerKind?: number;
  /** No fault starts before this offset (the workload warms up). @defaultValue 3000 */
  quietStartMs?: number;
  /** No fault starts in the last this-many ms of the workload. @defaultValue 4000 */
  quietEndMs?: number;
}

/** Default of {@link FaultPlanOptions.intervalMs}. */
export const DEFAULT_FAULT_INTERVAL_MS = 5_000;

/**
 * The fault schedule: evenly spaced slots with jitter, kinds dealt from a shuffled deck holding
 * each kind equally often (so every kind gets its share whatever the seed), targets and hold
 * times drawn from the seeded PRNG.
 */
export function planFaults(options: FaultPlanOptions): PlannedFault[] {
  const kinds = [...new Set(options.faults)];
  if (kinds.length === 0) return [];
  const random = createRandom(deriveSeed(options.seed, 'faults'));
  const minPerKind = options.minPerKind ?? 2;
  const quietStart = options.quietStartMs ?? 3_000;
  const quietEnd = options.quietEndMs ?? 4_000;
  const window = Math.max(0, options.durationMs - quietStart - quietEnd);
  const wanted = kinds.length * minPerKind;
  const interval = Math.min(
    options.intervalMs ?? DEFAULT_FAULT_INTERVAL_MS,
    wanted > 0 ? window / wanted : Infinity,
  );
  const count = Math.max(wanted, interval > 0 ? Math.floor(window / interval) : wanted);
  const slot = window / count;

  // Deal from decks of all kinds, reshuffled per deck: counts differ by at most one.
  const deck: FaultKind[] = [];
  while (deck.length < count) deck.push(...random.shuffle(kinds));
  deck.length = count;

  const lock = options.lockDurationMs;
  const plan: PlannedFault[] = [];
  for (let i = 0; i < count; i++) {
    const kind = deck[i]!;
    const atMs = Math.round(quietStart + i * slot + random.next() * slot * 0.5);
    const fault: PlannedFault = { index: i, atMs, kind, holdMs: 0 };
    switch (kind) {
      case 'kill':
        fault.target = random.int(0, options.workers - 1);
        fault.holdMs = random.int(100, 1_500);
        break;
      case 'pause':
        fault.target = random.int(0, options.workers - 1);
        // Past the lease and BullMQ's next stall check (which runs every lock duration), so
        // the job is taken over while the zombie sleeps.
        fault.holdMs = Math.round(lock * (2.2 + random.next()));
        break;
      case 'pgkill':
        fault.target = random.int(0, options.workers - 1);
        break;
      case 'redis-restart':
        if (options.clusterMasters !== undefined) {
          fault.target = random.int(0, options.clusterMasters - 1);
        }
        fault.holdMs = random.int(200, 2_000);
        break;
      case 'redis-failover':
        fault.target = random.int(0, Math.max(1, options.clusterMasters ?? 3) - 1);
        // Long enough for the workload's writes to pile up on the master, short of the
        // replica's validity bound (it must still be allowed to take over).
        fault.holdMs = random.int(300, 1_500);
        break;
      case 'redis-flush':
        break;
      case 'api-kill':
        fault.holdMs = random.int(100, 1_500);
        break;
    }
    plan.push(fault);
  }
  return plan;
}

/**
 * Parses `--faults kill,pause,…`; `all` means every kind that applies to `backend`. Throws on an
 * unknown kind, and on a kind the backend has nothing to inject it into (a Redis fault without
 * Redis): a campaign that silently skipped a fault asked for would report a weaker run as valid.
 */
export function parseFaultList(
  text: string,
  backend: BackendKind = 'redis',
  cluster = false,
): FaultKind[] {
  const items = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (items.length === 1 && items[0] === 'all') return faultKindsFor(backend, cluster);
  if (items.length === 1 && items[0] === 'none') return [];
  const unknown = items.filter((k) => !isFaultKind(k));
  if (unknown.length > 0) {
    throw new RangeError(
      `unknown fault kind ${unknown.join(', ')} (known: ${FAULT_KINDS.join(', ')}, all, none)`,
    );
  }
  const kinds = [...new Set(items as FaultKind[])];
  checkFaultsFor(backend, kinds, cluster);
  return kinds;
}

/** Throws when a kind has nothing to act on with this backend (see {@link faultKindsFor}). */
export function checkFaultsFor(
  backend: BackendKind,
  kinds: readonly FaultKind[],
  cluster = false,
): void {
  const allowed = faultKindsFor(backend, cluster);
  const refused = kinds.filter((k) => !allowed.includes(k));
  if (refused.length === 0) return;
  if (backend === 'postgres') {
    throw new RangeError(
      `fault kind ${refused.join(', ')} needs Redis, and the ${backend} backend has none ` +
        `(faults for ${backend}: ${allowed.join(', ')})`,
    );
  }
  throw new RangeError(
    `fault kind ${refused.join(', ')} needs a Redis Cluster (--redis-cluster), and this campaign ` +
      `runs a single redis-server (faults for it: ${allowed.join(', ')})`,
  );
}
