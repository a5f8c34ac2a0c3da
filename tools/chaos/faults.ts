/**
 * The nemesis: runs the fault schedule against the campaign's processes. Faults start at their
 * planned offsets and may overlap, except that faults on the same target (one worker, the API,
 * Redis) run one after another, so a kill never lands on a process that is still restarting.
 * Each fault is recorded twice in the history: when it starts and when it heals.
 */
import { sql } from 'kysely';
import type { Redis } from 'ioredis';
import type { Db } from '../../src/db/create-db.js';
import type { FaultEvent, HistoryWriter } from './history.js';
import type { ManagedProcess } from './processes.js';
import { sleep } from '../support/child.js';
import type { FaultKind, PlannedFault } from './schedule.js';
import { withTimeout } from '../../src/core/with-timeout.js';

/** What the nemesis acts on. */
export interface FaultTargets {
  api: ManagedProcess;
  workers: ManagedProcess[];
  /** The campaign's private Redis; absent in PostgreSQL-only mode (no Redis fault then). */
  redis?: ManagedProcess;
  /** `application_name` of worker i's PostgreSQL sessions. */
  workerAppName(index: number): string;
  /** The campaign's own connections: for `pg_terminate_backend` and `FLUSHALL`. */
  db: Db;
  redisClient?: Redis;
  /** Requests in flight: an API kill waits (briefly) for some, to land mid-request. */
  inFlight(): number;
}

/** Runs a schedule; `done()` resolves when every fault started has healed. */
export class Nemesis {
  /** Faults that healed, by kind. */
  readonly injected: Record<FaultKind, number> = {
    kill: 0,
    pause: 0,
    pgkill: 0,
    'redis-restart': 0,
    'redis-flush': 0,
    'api-kill': 0,
  };
  /** PostgreSQL backends terminated. */
  backendsTerminated = 0;
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
          const redis = needRedis(t.redis, fault.kind);
          this.record(fault, 'start', `SIGKILL redis (pid ${redis.pid})`);
          await redis.signal('SIGKILL');
          await sleep(fault.holdMs);
          await redis.start();
          this.record(fault, 'heal', `redis restarted empty after ${fault.holdMs} ms`);
          break;
        }
        case 'redis-flush': {
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
      }
      this.injected[fault.kind]++;
    } catch (err) {
      this.record(fault, 'heal', `fault failed: ${(err as Error).message}`);
    }
  }
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
