/**
 * A real Redis Cluster on loopback, for the tests and the chaos tool: `masters × (1 + replicas)`
 * `redis-server` processes on free ports, joined by `redis-cli --cluster create`, each in a
 * folder of its own under one temporary folder. No persistence (`--save ''`, no AOF): a node
 * keeps only its `nodes.conf`, so a SIGKILLed master restarted on the same port and folder
 * rejoins with its old identity and, its slots now owned by the promoted replica, turns into a
 * replica of it.
 *
 * The topology is always asked of the cluster (CLUSTER NODES, CLUSTER INFO, INFO replication on
 * every live node), never assumed from the start-up order: after a failover the masters are
 * other ports. Every wait is bounded and its error says what did not come up.
 *
 * Processes never outlive the run: `stop()` SIGKILLs every server and removes the folder. On
 * Linux each server is also started through `setpriv --pdeathsig KILL`, so a test process that
 * dies without its after-hooks (a SIGKILL, a crash) takes its servers with it; its temporary
 * folder (`onceq-cluster-*` in the OS temp folder, a few KB) is then left behind. Where
 * `setpriv` is missing (macOS) a server outlives such a crash; a Ctrl-C still reaches it, since
 * the servers share the terminal's process group.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort, sleep, spawnChild, type Child } from './child.js';

/** Where a node listens. */
export interface ClusterNodeAddress {
  readonly host: string;
  readonly port: number;
}

/** Options of {@link startRedisCluster}. */
export interface RedisClusterOptions {
  /** Masters, each owning an equal share of the 16384 slots. @defaultValue 3 */
  masters?: number;
  /** Replicas of each master. @defaultValue 1 */
  replicasPerMaster?: number;
  /**
   * `cluster-node-timeout`: how long a node may be unreachable before it is failed and its
   * replica promoted. @defaultValue 1000
   */
  nodeTimeoutMs?: number;
  /** Bound of the start-up, of `waitForFailover` and of `restartNode`. @defaultValue 30 000 */
  timeoutMs?: number;
}

/** A running cluster; see {@link startRedisCluster}. */
export interface RedisCluster {
  /** Every node, masters and replicas, in start-up order (the roles change over time). */
  readonly nodes: readonly ClusterNodeAddress[];
  /** `127.0.0.1:p1,127.0.0.1:p2,…`: the `REDIS_CLUSTER_NODES` format. */
  readonly nodesSpec: string;
  /** The temporary folder holding one folder per node (`<port>/nodes.conf`). */
  readonly dir: string;
  /** The masters owning slots now, as a live node sees them, by port. */
  masters(): Promise<ClusterNodeAddress[]>;
  /** The replicas of a master now, as a live node sees them, by port. */
  replicasOf(masterPort: number): Promise<ClusterNodeAddress[]>;
  /** The master owning `key`'s slot now (CLUSTER KEYSLOT + CLUSTER SLOTS). */
  slotOwner(key: string): Promise<ClusterNodeAddress & { slot: number }>;
  /**
   * One command on one node, on a short-lived connection that never retries (an admin probe:
   * `INFO replication`, `CLIENT PAUSE`, `FLUSHALL`); the reply as text.
   */
  command(port: number, ...args: (string | number)[]): Promise<string>;
  /** `INFO <section>` of one node, as its `field:value` pairs. */
  info(port: number, section: string): Promise<Map<string, string>>;
  /** The pid of a node's server, `undefined` while it is killed. */
  pid(port: number): number | undefined;
  /** The pids of every server started so far (killed ones included), for leak checks. */
  allPids(): number[];
  /** SIGKILLs a node, whatever its role, and waits for its exit. */
  killNode(port: number): Promise<void>;
  /** SIGKILLs a node that is a master now; refuses a port that is not one. */
  killMaster(port: number): Promise<void>;
  /**
   * Resolves with the replica promoted in place of a master killed by `killMaster` or
   * `killNode`, once it owns the old master's slots in every live node's view and the cluster
   * is healthy again (every live node `cluster_state:ok` with all 16384 slots served).
   */
  waitForFailover(oldMasterPort: number, timeoutMs?: number): Promise<ClusterNodeAddress>;
  /**
   * Starts a killed node again on its port and folder and waits until it has rejoined (as a
   * replica, when its slots were failed over) and the cluster is healthy.
   */
  restartNode(port: number, timeoutMs?: number): Promise<void>;
  /**
   * Waits until every live node reports `cluster_state:ok` with all slots served, every live
   * node sees the same number of masters, and every other live node is a replica with its link
   * to its master up.
   */
  waitUntilHealthy(timeoutMs?: number): Promise<void>;
  /**
   * Resolves once every live node reports `cluster_state:fail` (slots not served: a shard down
   * whole, marked failed by the others after the node timeout).
   */
  waitUntilFailed(timeoutMs?: number): Promise<void>;
  /** SIGKILLs every server and removes the folder. Idempotent: after-hooks call it. */
  stop(): Promise<void>;
}

/** `cluster-node-timeout` of {@link startRedisCluster}. */
export const DEFAULT_CLUSTER_NODE_TIMEOUT_MS = 1_000;
/** Bound of each wait of {@link startRedisCluster}'s cluster. */
export const DEFAULT_CLUSTER_TIMEOUT_MS = 30_000;
const HOST = '127.0.0.1';
const SLOTS = 16_384;

/** One line of CLUSTER NODES. */
interface NodeLine {
  id: string;
  port: number;
  flags: string[];
  masterId: string | undefined;
  linkConnected: boolean;
  slots: string[];
}

function parseClusterNodes(text: string): NodeLine[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const [id, address, flags, master, , , , link, ...slots] = line.trim().split(' ');
      // ip:port@cport[,hostname]
      const port = Number(/:(\d+)@/.exec(address ?? '')?.[1]);
      return {
        id: id!,
        port,
        flags: (flags ?? '').split(','),
        masterId: master === '-' ? undefined : master,
        linkConnected: link === 'connected',
        // Slots being migrated ([slot->-id]) are not owned yet.
        slots: slots.filter((s) => !s.startsWith('[')),
      };
    });
}

const failed = (n: NodeLine) => n.flags.includes('fail') || n.flags.includes('fail?');

/** `field:value` lines of CLUSTER INFO and INFO. */
function parseInfo(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const at = line.indexOf(':');
    if (at > 0) fields.set(line.slice(0, at), line.slice(at + 1).trim());
  }
  return fields;
}

function ownsSlot(ranges: string[], slot: number): boolean {
  return ranges.some((range) => {
    const [from, to = from] = range.split('-').map(Number);
    return slot >= from! && slot <= to!;
  });
}

/** One command on a short-lived connection that never retries: an admin probe. */
async function ask(port: number, ...args: (string | number)[]): Promise<string> {
  const redis = new Redis({
    host: HOST,
    port,
    lazyConnect: true,
    connectTimeout: 1_000,
    commandTimeout: 2_000,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    const [command, ...rest] = args;
    return String(await redis.call(String(command), ...rest));
  } finally {
    redis.disconnect();
  }
}

/** Whether `setpriv --pdeathsig` can tie a server's life to this process (Linux). */
function hasSetpriv(): boolean {
  const probe = spawnSync('setpriv', ['--help'], { encoding: 'utf8' });
  return probe.status === 0 && probe.stdout.includes('--pdeathsig');
}

/** Distinct free ports: a node's port and its cluster-bus port each. */
async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

/**
 * Starts a Redis Cluster of `masters × (1 + replicasPerMaster)` nodes on loopback and resolves
 * once it is healthy: every node `cluster_state:ok`, all 16384 slots covered by the masters,
 * every replica attached. Needs `redis-server` and `redis-cli` (7.0 or later) on the PATH.
 * Call `stop()` in an after-hook, also when this rejects is not needed: a failed start stops
 * what it started.
 */
export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisCluster> {
  const {
    masters = 3,
    replicasPerMaster = 1,
    nodeTimeoutMs = DEFAULT_CLUSTER_NODE_TIMEOUT_MS,
    timeoutMs = DEFAULT_CLUSTER_TIMEOUT_MS,
  } = options;
  if (!Number.isInteger(masters) || masters < 3) {
    throw new Error(`masters must be an integer of at least 3 (a cluster needs 3), not ${masters}`);
  }
  if (!Number.isInteger(replicasPerMaster) || replicasPerMaster < 0) {
    throw new Error(`replicasPerMaster must be a non-negative integer, not ${replicasPerMaster}`);
  }
  const count = masters * (1 + replicasPerMaster);
  const allPorts = await freePorts(2 * count);
  const ports = allPorts.slice(0, count);
  const busPort = new Map(ports.map((p, i) => [p, allPorts[count + i]!]));
  const dir = mkdtempSync(join(tmpdir(), 'onceq-cluster-'));
  const setpriv = hasSetpriv();
  const servers = new Map<number, Child>();
  const pids: number[] = [];
  // The slots a master owned when it was killed: what its promoted replica must own.
  const slotsAtKill = new Map<number, string[]>();
  let stopped = false;

  function startNode(port: number): void {
    const nodeDir = join(dir, String(port));
    mkdirSync(nodeDir, { recursive: true });
    const server = [
      'redis-server',
      '--port',
      String(port),
      '--cluster-port',
      String(busPort.get(port)),
      '--bind',
      HOST,
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      join(nodeDir, 'nodes.conf'),
      '--cluster-node-timeout',
      String(nodeTimeoutMs),
      '--save',
      '',
      '--appendonly',
      'no',
      // A replica's first sync starts at once, not after the default 5 s spent waiting for
      // more replicas to share the transfer: start-up and a rejoin take a second, not six.
      '--repl-diskless-sync-delay',
      '0',
      '--dir',
      nodeDir,
    ];
    const child = spawnChild({
      name: `redis-server :${port}`,
      command: setpriv ? 'setpriv' : server[0]!,
      // setpriv execs the server: the pid is the server's.
      args: setpriv ? ['--pdeathsig', 'KILL', ...server] : server.slice(1),
      env: { PATH: process.env.PATH },
      keepChars: 20_000,
    });
    servers.set(port, child);
    if (child.process.pid !== undefined) pids.push(child.process.pid);
  }

  const live = () => ports.filter((p) => servers.get(p)?.running());

  /** A live node's view of the cluster, from the first live node that answers. */
  async function view(): Promise<NodeLine[]> {
    let last: unknown;
    for (const port of live()) {
      try {
        return parseClusterNodes(await ask(port, 'CLUSTER', 'NODES'));
      } catch (err) {
        last = err;
      }
    }
    throw new Error(`no node of the cluster answers CLUSTER NODES`, { cause: last });
  }

  /** Why the cluster is not healthy yet, or `undefined` when it is. */
  async function unhealthy(): Promise<string | undefined> {
    const up = live();
    const roles = { masters: 0, replicas: 0 };
    for (const port of up) {
      const info = parseInfo(await ask(port, 'CLUSTER', 'INFO'));
      if (info.get('cluster_state') !== 'ok') {
        return `node ${port} reports cluster_state:${info.get('cluster_state')}`;
      }
      const served = Number(info.get('cluster_slots_ok'));
      if (served !== SLOTS) return `node ${port} sees ${served} of ${SLOTS} slots served`;
      const nodes = parseClusterNodes(await ask(port, 'CLUSTER', 'NODES'));
      const owning = nodes.filter((n) => n.flags.includes('master') && n.slots.length > 0);
      if (owning.length !== masters) {
        return `node ${port} sees ${owning.length} masters owning slots, not ${masters}`;
      }
      const stale = nodes.filter((n) => up.includes(n.port) && failed(n));
      if (stale.length > 0) {
        return `node ${port} still flags live node ${stale[0]!.port} as ${stale[0]!.flags.join(',')}`;
      }
      // Every live node but the masters is a replica of one, in this node's view too: a
      // replica's role reaches the other nodes by gossip, a moment after its own link is up.
      const attached = nodes.filter(
        (n) => up.includes(n.port) && n.masterId !== undefined && !failed(n),
      ).length;
      if (attached !== up.length - masters) {
        return `node ${port} sees ${attached} live replicas attached, not ${up.length - masters}`;
      }
      const me = nodes.find((n) => n.flags.includes('myself'));
      if (me?.flags.includes('master')) {
        roles.masters++;
        continue;
      }
      const replication = parseInfo(await ask(port, 'INFO', 'replication'));
      if (replication.get('master_link_status') !== 'up') {
        return `replica ${port} has master_link_status:${replication.get('master_link_status')}`;
      }
      roles.replicas++;
    }
    if (roles.masters !== masters) {
      return `${roles.masters} live nodes are masters, not ${masters}`;
    }
    return undefined;
  }

  /** Polls `check` until it returns `undefined`; throws with its last reason at the bound. */
  async function waitFor(
    what: string,
    bound: number,
    check: () => Promise<string | undefined>,
  ): Promise<void> {
    const deadline = Date.now() + bound;
    let reason: string | undefined;
    for (;;) {
      const dead = ports.filter((p) => servers.get(p) && !servers.get(p)!.running());
      for (const port of dead) {
        const child = servers.get(port)!;
        if (child.spawnError()) {
          throw new Error(
            `redis-server :${port} could not start (${child.spawnError()!.code ?? child.spawnError()!.message}); is Redis installed?`,
          );
        }
      }
      try {
        reason = await check();
      } catch (err) {
        reason = (err as Error).message;
      }
      if (reason === undefined) return;
      if (Date.now() > deadline) {
        throw new Error(
          `the Redis Cluster on ${nodesSpec} did not ${what} within ${bound} ms: ${reason}`,
        );
      }
      await sleep(100);
    }
  }

  async function killNode(port: number): Promise<void> {
    const child = servers.get(port);
    if (!child) throw new Error(`port ${port} is not a node of this cluster (${nodesSpec})`);
    if (!child.running()) return;
    const me = (await view().catch(() => [])).find((n) => n.port === port);
    if (me?.flags.includes('master') && me.slots.length > 0) slotsAtKill.set(port, me.slots);
    await child.kill();
  }

  async function stop(): Promise<void> {
    stopped = true;
    await Promise.all([...servers.values()].map((s) => s.destroy()));
    rmSync(dir, { recursive: true, force: true });
  }

  const nodes = ports.map((port) => ({ host: HOST, port }));
  const nodesSpec = nodes.map((n) => `${n.host}:${n.port}`).join(',');
  const address = (port: number): ClusterNodeAddress => ({ host: HOST, port });

  try {
    for (const port of ports) startNode(port);
    await waitFor('start every redis-server', timeoutMs, async () => {
      for (const port of ports) {
        const child = servers.get(port)!;
        if (!child.running()) return `redis-server :${port} exited; it wrote:\n${child.tail()}`;
        if ((await ask(port, 'PING').catch(() => '')) !== 'PONG')
          return `node ${port} does not answer PING`;
      }
      return undefined;
    });
    const create = spawnChild({
      name: 'redis-cli --cluster create',
      command: 'redis-cli',
      args: [
        '--cluster',
        'create',
        ...nodes.map((n) => `${n.host}:${n.port}`),
        '--cluster-replicas',
        String(replicasPerMaster),
        '--cluster-yes',
      ],
      env: { PATH: process.env.PATH },
    });
    const created = await create.exited;
    if (
      create.spawnError() ||
      created.code !== 0 ||
      !create.output().includes('[OK] All 16384 slots covered')
    ) {
      throw new Error(
        `redis-cli --cluster create failed (${create.spawnError()?.code ?? created.signal ?? `code ${created.code}`}); it wrote:\n${create.tail()}`,
      );
    }
    await waitFor('become healthy after redis-cli --cluster create', timeoutMs, unhealthy);
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    nodes,
    nodesSpec,
    dir,
    async masters() {
      const seen = await view();
      return seen
        .filter((n) => n.flags.includes('master') && !failed(n) && n.slots.length > 0)
        .map((n) => address(n.port))
        .sort((a, b) => a.port - b.port);
    },
    async replicasOf(masterPort) {
      const seen = await view();
      const master = seen.find((n) => n.port === masterPort);
      if (!master)
        throw new Error(`port ${masterPort} is not a node of this cluster (${nodesSpec})`);
      return seen
        .filter((n) => n.masterId === master.id && !failed(n))
        .map((n) => address(n.port))
        .sort((a, b) => a.port - b.port);
    },
    async slotOwner(key) {
      const port = live()[0];
      if (port === undefined) throw new Error('no node of the cluster is running');
      const slot = Number(await ask(port, 'CLUSTER', 'KEYSLOT', key));
      const owner = (await view()).find(
        (n) => n.flags.includes('master') && !failed(n) && ownsSlot(n.slots, slot),
      );
      if (!owner) throw new Error(`no live master owns slot ${slot} (key ${key})`);
      return { ...address(owner.port), slot };
    },
    command: (port, ...args) => ask(port, ...args),
    info: async (port, section) => parseInfo(await ask(port, 'INFO', section)),
    pid: (port) => (servers.get(port)?.running() ? servers.get(port)!.process.pid : undefined),
    allPids: () => [...pids],
    killNode,
    async killMaster(port) {
      const me = (await view()).find((n) => n.port === port);
      if (!me?.flags.includes('master') || me.slots.length === 0 || failed(me)) {
        throw new Error(
          `port ${port} is not a live master of this cluster (${me ? me.flags.join(',') : 'not a node'})`,
        );
      }
      await killNode(port);
    },
    async waitForFailover(oldMasterPort, bound = timeoutMs) {
      const slots = slotsAtKill.get(oldMasterPort);
      if (!slots) {
        throw new Error(`port ${oldMasterPort} is not a master this cluster has killed`);
      }
      const slot = Number(slots[0]!.split('-')[0]);
      let promoted: number | undefined;
      await waitFor(`fail over master ${oldMasterPort}`, bound, async () => {
        promoted = undefined;
        for (const port of live()) {
          const owner = parseClusterNodes(await ask(port, 'CLUSTER', 'NODES')).find(
            (n) => n.flags.includes('master') && !failed(n) && ownsSlot(n.slots, slot),
          );
          if (!owner || owner.port === oldMasterPort) {
            return `node ${port} sees slot ${slot} still owned by the killed master ${oldMasterPort}`;
          }
          if (promoted !== undefined && owner.port !== promoted) {
            return `nodes disagree on the owner of slot ${slot} (${promoted}, ${owner.port})`;
          }
          promoted = owner.port;
        }
        return unhealthy();
      });
      return address(promoted!);
    },
    async restartNode(port, bound = timeoutMs) {
      if (stopped) throw new Error('the cluster is stopped');
      const child = servers.get(port);
      if (!child) throw new Error(`port ${port} is not a node of this cluster (${nodesSpec})`);
      if (child.running()) throw new Error(`node ${port} is running; kill it first`);
      startNode(port);
      await waitFor(`take node ${port} back`, bound, unhealthy);
      slotsAtKill.delete(port);
    },
    waitUntilHealthy: (bound = timeoutMs) => waitFor('become healthy', bound, unhealthy),
    waitUntilFailed: (bound = timeoutMs) =>
      waitFor('report cluster_state:fail on every live node', bound, async () => {
        for (const port of live()) {
          const info = parseInfo(await ask(port, 'CLUSTER', 'INFO'));
          const state = info.get('cluster_state');
          if (state !== 'fail') return `node ${port} reports cluster_state:${state}`;
        }
        return undefined;
      }),
    stop,
  };
}
