/**
 * The nemesis: runs the fault schedule against the campaign's processes. Faults start at their
 * planned offsets and may overlap, except that faults on the same target (one worker, the API,
 * Redis) run one after another, so a kill never lands on a process that is still restarting.
 * Each fault is recorded twice in the history: when it starts and when it heals.
 *
 * On a Redis Cluster the Redis faults act on the cluster's nodes (tools/support/redis-cluster.ts):
 * `redis-restart` kills one shard (a master and its replicas) and brings it back empty,
 * `redis-flush` flushes every master, and `redis-failover` makes a replica take over a master
 * that had acknowledged writes the replica never received. Redis replicates asynchronously, so
 * such writes exist whenever a master dies under load; on loopback the replica is microseconds
 * behind and a plain SIGKILL would almost never catch one. The fault widens the window on
 * purpose: `CLIENT PAUSE WRITE` on the replica postpones the commands of its master link too (a
 * replica's master is a client like any other there; only replicas of this node are exempt), so
 * the stream piles up unapplied in the replica's query buffer while the master goes on
 * answering its clients. SIGKILL the master, and the replica drops that unapplied buffer with the
 * link (Redis discards a lost master's unprocessed input) and is promoted without it. The gap is
 * measured, not assumed: the master's `master_repl_offset` just before the kill against the
 * promoted replica's `second_repl_offset` (where its old master's history ends for it).
 */
import { sql } from 'kysely';
import type { Redis } from 'ioredis';
import type { Db } from '../../src/db/create-db.js';
import type { FaultEvent, HistoryWriter } from './history.js';
import type { ManagedProcess } from './processes.js';
import { sleep } from '../support/child.js';
import { FAULT_KINDS, type FaultKind, type PlannedFault } from './schedule.js';
import { withTimeout } from '../../src/core/with-timeout.js';
import type { RedisCluster } from '../support/redis-cluster.js';

/** What the nemesis acts on. */
export interface FaultTargets {
  api: ManagedProcess;
  workers: ManagedProcess[];
  /** The campaign's private Redis; absent in PostgreSQL-only mode (no Redis fault then). */
  redis?: ManagedProcess;
  /** The campaign's private Redis Cluster, instead of `redis` (`--redis-cluster`). */
  cluster?: RedisCluster;
  /** `application_name` of worker i's PostgreSQL sessions. */
  workerAppName(index: number): string;
  /** The campaign's own connections: for `pg_terminate_backend` and `FLUSHALL`. */
  db: Db;
  /** The single Redis's harness connection (a cluster is flushed node by node instead). */
  redisClient?: Redis;
  /** Requests in flight: an API kill waits (briefly) for some, to land mid-request. */
  inFlight(): number;
}

/** What one `redis-failover` did, with the replication offsets that show what it lost. */
export interface FailoverRecord {
  /** The master killed and the replica promoted in its place (ports). */
  master: number;
  promoted: number;
  /**
   * How long the replica's replication was held back before the kill, ms: the planned hold, or
   * up to 5 s more while no write reached the master.
   */
  heldMs: number;
  /** The master's `master_repl_offset` just before the SIGKILL: what it had acknowledged. */
  masterOffset: number;
  /** The offset the promoted replica had applied (its `second_repl_offset` - 1). */
  replicaOffset: number;
  /**
   * Bytes of the replication stream the master had executed and answered, and the promoted
   * replica never applied: writes acknowledged, then lost (0 when the replica had caught up).
   * The stream holds the writes and, every 10 s, a 14-byte PING.
   */
  lostBytes: number;
  /** Kill to promotion, ms. */
  failoverMs: number;
}

/** Runs a schedule; `done()` resolves when every fault started has healed. */
export class Nemesis {
  /** Faults that healed, by kind. */
  readonly injected: Record<FaultKind, number> = emptyKindCounts();
  /** PostgreSQL backends terminated. */
  backendsTerminated = 0;
  /** Every `redis-failover` that healed, in order. */
  readonly failovers: FailoverRecord[] = [];
  private readonly lanes = new Map<string, Promise<void>>();
  private readonly running: Promise<void>[] = [];
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;

  constructor(
    private readonly targets: FaultTargets,
    private readonly history: HistoryWriter,
  ) {}

  /** Arms every fault of the plan, offsets counted from now. */
  start(plan: readonly PlannedFault[]): void {
    for (const fault of plan) {
      const timer = setTimeout(() => {
        if (this.stopped) return;
        const lane = laneOf(fault);
        const previous = this.lanes.get(lane) ?? Promise.resolve();
        const next = previous.then(() => (this.stopped ? undefined : this.inject(fault)));
        this.lanes.set(lane, next);
        this.running.push(next);
      }, fault.atMs);
      this.timers.push(timer);
    }
  }

  /** Cancels faults not yet started; resolves when the started ones have healed. */
  async finish(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    await Promise.allSettled(this.running);
  }

  /** Faults whose time has come; the ones not started when `finish()` ran do not count. */
  get total(): number {
    return Object.values(this.injected).reduce((a, b) => a + b, 0);
  }

  private record(fault: PlannedFault, phase: 'start' | 'heal', detail?: string): void {
    this.history.write<FaultEvent>({
      type: 'fault',
      index: fault.index,
      kind: fault.kind,
      phase,
      target: fault.target,
      detail,
    });
  }

  private async inject(fault: PlannedFault): Promise<void> {
    const t = this.targets;
    try {
      switch (fault.kind) {
        case 'kill': {
          const worker = t.workers[fault.target!]!;
          this.record(fault, 'start', `SIGKILL ${worker.name} (pid ${worker.pid})`);
          await worker.signal('SIGKILL');
          await sleep(fault.holdMs);
          await worker.start();
          this.record(fault, 'heal', `${worker.name} restarted (pid ${worker.pid})`);
          break;
        }
        case 'pause': {
          const worker = t.workers[fault.target!]!;
          this.record(fault, 'start', `SIGSTOP ${worker.name} (pid ${worker.pid})`);
          await worker.signal('SIGSTOP');
          await sleep(fault.holdMs);
          await worker.signal('SIGCONT');
          this.record(fault, 'heal', `SIGCONT ${worker.name} after ${fault.holdMs} ms`);
          break;
        }
        case 'pgkill': {
          const name = t.workerAppName(fault.target!);
          this.record(fault, 'start', `pg_terminate_backend(${name})`);
          // In the select list, so it runs only for the rows the WHERE kept (other sessions'
          // backends share this server).
          const result = await sql<{ pid: number; terminated: boolean }>`
            select pid, pg_terminate_backend(pid) as terminated from pg_stat_activity
            where application_name = ${name} and pid <> pg_backend_pid()`.execute(t.db);
          this.backendsTerminated += result.rows.length;
          this.record(fault, 'heal', `terminated ${result.rows.length} backends`);
          break;
        }
        case 'redis-restart': {
          if (t.cluster) {
            await this.restartShard(fault, t.cluster);
            break;
          }
          const redis = needRedis(t.redis, fault.kind);
          this.record(fault, 'start', `SIGKILL redis (pid ${redis.pid})`);
          await redis.signal('SIGKILL');
          await sleep(fault.holdMs);
          await redis.start();
          this.record(fault, 'heal', `redis restarted empty after ${fault.holdMs} ms`);
          break;
        }
        case 'redis-flush': {
          if (t.cluster) {
            const masters = await t.cluster.masters();
            const ports = masters.map((m) => m.port).join(', ');
            this.record(fault, 'start', `FLUSHALL on every master (${ports})`);
            for (const m of masters) {
              await withTimeout(t.cluster.command(m.port, 'FLUSHALL'), 10_000);
            }
            this.record(fault, 'heal', `flushed ${masters.length} masters`);
            break;
          }
          const client = needRedis(t.redisClient, fault.kind);
          this.record(fault, 'start', 'FLUSHALL');
          await withTimeout(client.flushall(), 10_000);
          this.record(fault, 'heal', 'flushed');
          break;
        }
        case 'api-kill': {
          // Land mid-request when there is traffic: wait a little for a request in flight.
          for (let i = 0; i < 20 && t.inFlight() === 0; i++) await sleep(25);
          this.record(
            fault,
            'start',
            `SIGKILL api (pid ${t.api.pid}) with ${t.inFlight()} requests in flight`,
          );
          await t.api.signal('SIGKILL');
          await sleep(fault.holdMs);
          await t.api.start();
          this.record(fault, 'heal', `api restarted (pid ${t.api.pid})`);
          break;
        }
        case 'redis-failover':
          await this.failover(fault, needRedis(t.cluster, fault.kind));
          break;
      }
      this.injected[fault.kind]++;
    } catch (err) {
      this.record(fault, 'heal', `fault failed: ${(err as Error).message}`);
    }
  }

  /** The master a cluster fault acts on: the planned index among the masters now, by port. */
  private async pickMaster(fault: PlannedFault, cluster: RedisCluster): Promise<number> {
    // A fault lands on a settled cluster: the previous failover's old master has rejoined.
    await cluster.waitUntilHealthy();
    const masters = await cluster.masters();
    return masters[(fault.target ?? 0) % masters.length]!.port;
  }

  /** `redis-restart` on a cluster: a whole shard down and back empty, no replica to take over. */
  private async restartShard(fault: PlannedFault, cluster: RedisCluster): Promise<void> {
    const master = await this.pickMaster(fault, cluster);
    const replicas = (await cluster.replicasOf(master)).map((r) => r.port);
    this.record(
      fault,
      'start',
      `SIGKILL shard: replicas ${replicas.join(', ') || 'none'}, then master ${master}`,
    );
    // Replicas first: a replica alive when its master dies would be promoted, keeping the data.
    for (const port of replicas) await cluster.killNode(port);
    await cluster.killNode(master);
    await sleep(fault.holdMs);
    // The master's nodes.conf still gives it its slots: it comes back their owner, empty, and
    // its replicas resynchronize from it (an empty full sync).
    await cluster.restartNode(master);
    for (const port of replicas) await cluster.restartNode(port);
    this.record(
      fault,
      'heal',
      `shard of master ${master} restarted empty after ${fault.holdMs} ms, replicas rejoined`,
    );
  }

  /** `redis-failover`: see the module's header. */
  private async failover(fault: PlannedFault, cluster: RedisCluster): Promise<void> {
    const master = await this.pickMaster(fault, cluster);
    const replica = (await cluster.replicasOf(master))[0]?.port;
    if (replica === undefined) throw new Error(`master ${master} has no replica to promote`);
    const masterInfo = async () =>
      offset(await cluster.info(master, 'replication'), 'master_repl_offset');
    // The pause bounds itself, should the harness die before it lifts it.
    await cluster.command(
      replica,
      'CLIENT',
      'PAUSE',
      fault.holdMs + FAILOVER_WAIT_MS + 15_000,
      'WRITE',
    );
    const pausedAt = Date.now();
    let masterOffset: number;
    let killedAt: number;
    try {
      const applied = await masterInfo();
      this.record(
        fault,
        'start',
        `CLIENT PAUSE WRITE on replica ${replica}, SIGKILL master ${master} ${fault.holdMs} ms later`,
      );
      await sleep(fault.holdMs);
      // Traffic may be down (the API killed, workers paused): wait a little longer for writes
      // that the replica does not have, more than a lone 14-byte PING, so the kill loses some.
      masterOffset = await masterInfo();
      for (
        let waited = 0;
        masterOffset - applied <= 14 && waited < FAILOVER_WAIT_MS;
        waited += 50
      ) {
        await sleep(50);
        masterOffset = await masterInfo();
      }
      killedAt = Date.now();
      await cluster.killMaster(master);
      // Lift the pause only once the replica has seen its link drop: lifted earlier, it would
      // apply the buffered stream after all.
      for (let i = 0; i < 100; i++) {
        const status = (await cluster.info(replica, 'replication')).get('master_link_status');
        if (status === 'down') break;
        await sleep(20);
      }
    } finally {
      await cluster.command(replica, 'CLIENT', 'UNPAUSE').catch(() => undefined);
    }
    let promoted: Awaited<ReturnType<RedisCluster['waitForFailover']>>;
    try {
      promoted = await cluster.waitForFailover(master);
    } catch (err) {
      // No promotion: the old master back, so the drain does not take it for a crash.
      await cluster.restartNode(master).catch(() => undefined);
      throw err;
    }
    const failoverMs = Date.now() - killedAt;
    const replicaOffset =
      offset(await cluster.info(promoted.port, 'replication'), 'second_repl_offset') - 1;
    const lostBytes = Math.max(0, masterOffset - replicaOffset);
    this.failovers.push({
      master,
      promoted: promoted.port,
      heldMs: killedAt - pausedAt,
      masterOffset,
      replicaOffset,
      lostBytes,
      failoverMs,
    });
    // Back as a replica of the promoted node: later failovers have a replica to promote.
    await cluster.restartNode(master);
    this.record(
      fault,
      'heal',
      `replica ${promoted.port} promoted ${failoverMs} ms after the kill at offset ` +
        `${replicaOffset}, master ${master} had acknowledged up to ${masterOffset}: ` +
        `${lostBytes} bytes of acknowledged writes lost; ${master} rejoined as a replica`,
    );
  }
}

/** How much longer than planned a `redis-failover` waits for writes to lose. */
const FAILOVER_WAIT_MS = 5_000;

/** A zero for every fault kind. */
export function emptyKindCounts(): Record<FaultKind, number> {
  return Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>;
}

function offset(info: Map<string, string>, field: string): number {
  const value = Number(info.get(field));
  if (!Number.isSafeInteger(value)) throw new Error(`INFO replication has no ${field}`);
  return value;
}

/**
 * The Redis a Redis fault acts on. The campaign refuses such faults without Redis before it
 * starts (schedule.ts `checkFaultsFor`); one that still gets here fails and is recorded as failed,
 * so the report shows it was not injected.
 */
function needRedis<T>(target: T | undefined, kind: FaultKind): T {
  if (target === undefined) throw new Error(`${kind} needs Redis, and this campaign runs none`);
  return target;
}

function laneOf(fault: PlannedFault): string {
  switch (fault.kind) {
    case 'kill':
    case 'pause':
    case 'pgkill':
      return `worker-${fault.target}`;
    case 'api-kill':
      return 'api';
    default:
      return 'redis';
  }
}
