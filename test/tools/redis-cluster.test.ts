/**
 * The loopback Redis Cluster of tools/support/redis-cluster.ts: one 3+3 cluster for the suite,
 * probed with an ioredis Cluster client, a master SIGKILLed and failed over, and no server left
 * after `stop()`.
 */
import { readFileSync, rmSync } from 'node:fs';
import { expect } from 'chai';
import { Cluster, Redis } from 'ioredis';
import { spawnChild, sleep, type Child } from '../../tools/support/child.js';
import { startRedisCluster, type RedisCluster } from '../../tools/support/redis-cluster.js';

/**
 * Whether a process with this pid runs: signal 0 checks without sending anything, and on Linux a
 * zombie (dead, not yet reaped by whoever adopted it) counts as gone.
 */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // `pid (comm) S …`: the state follows the command name's closing parenthesis.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return process.platform !== 'linux';
  }
}

describe('tools/support/redis-cluster', function () {
  this.timeout(60_000);
  let cluster: RedisCluster | undefined;
  let client: Cluster | undefined;
  let startMs = 0;

  before(async function () {
    const t0 = Date.now();
    cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
    startMs = Date.now() - t0;
    client = new Cluster(
      cluster.nodes.map((n) => ({ host: n.host, port: n.port })),
      { clusterRetryStrategy: (times) => Math.min(100 * times, 1_000) },
    );
    client.on('error', () => undefined);
  });

  after(async function () {
    client?.disconnect();
    await cluster?.stop();
  });

  it('starts 3 masters owning all 16384 slots, each with one replica attached', async function () {
    console.log(`      (cluster start: ${startMs} ms)`);
    const c = cluster!;
    expect(c.nodes).to.have.length(6);
    expect(c.nodesSpec.split(',')).to.deep.equal(c.nodes.map((n) => `127.0.0.1:${n.port}`));
    const masters = await c.masters();
    expect(masters).to.have.length(3);
    const slots = (await client!.cluster('SLOTS')) as [number, number, ...unknown[]][];
    const covered = slots.reduce((sum, [from, to]) => sum + (to - from + 1), 0);
    expect(covered).to.equal(16_384);
    const owners = new Set(slots.map((s) => (s[2] as [string, number])[1]));
    expect([...owners].sort()).to.deep.equal(masters.map((m) => m.port).sort());
    for (const m of masters) {
      const replicas = await c.replicasOf(m.port);
      expect(replicas, `replicas of ${m.port}`).to.have.length(1);
      expect(masters.map((x) => x.port)).not.to.include(replicas[0]!.port);
    }
  });

  it('serves keys of different slots on different masters through an ioredis Cluster client', async function () {
    const c = cluster!;
    const keys = Array.from({ length: 30 }, (_, i) => `probe:${i}`);
    for (const key of keys) await client!.set(key, `value of ${key}`);
    for (const key of keys) expect(await client!.get(key)).to.equal(`value of ${key}`);
    const owners = await Promise.all(keys.map((k) => c.slotOwner(k)));
    expect(new Set(owners.map((o) => o.port)).size, 'masters holding the keys').to.equal(3);
    expect(new Set(owners.map((o) => o.slot)).size).to.be.greaterThan(3);
    // slotOwner names the node that holds the key: it answers GET itself, without MOVED.
    const [first] = owners;
    const direct = new Redis({ host: '127.0.0.1', port: first!.port, lazyConnect: true });
    try {
      expect(await direct.get(keys[0]!)).to.equal(`value of ${keys[0]}`);
    } finally {
      direct.disconnect();
    }
  });

  it('fails over a SIGKILLed master to its replica; a key written with WAIT 1 survives', async function () {
    const c = cluster!;
    const key = 'failover:key';
    const owner = await c.slotOwner(key);
    const [replica] = await c.replicasOf(owner.port);
    // WAIT has no key: in a pipeline beside SET it goes to the key's master, on the same connection.
    const replies = await client!
      .pipeline()
      .set(key, 'before the kill')
      .call('WAIT', 1, 5_000)
      .exec();
    expect(replies?.map(([err, reply]) => err ?? reply)).to.deep.equal(['OK', 1]);

    const pid = c.pid(owner.port)!;
    const t0 = Date.now();
    await c.killMaster(owner.port);
    expect(alive(pid), 'the killed master').to.equal(false);
    const promoted = await c.waitForFailover(owner.port);
    console.log(`      (failover: ${Date.now() - t0} ms)`);
    expect(promoted.port).to.equal(replica!.port);
    expect((await c.masters()).map((m) => m.port)).to.include(replica!.port);
    expect((await c.slotOwner(key)).port).to.equal(replica!.port);
    expect(await client!.get(key)).to.equal('before the kill');
    await client!.set('failover:after', 'written after');
    expect(await client!.get('failover:after')).to.equal('written after');
  });

  it('takes the killed master back as a replica of the promoted one', async function () {
    const c = cluster!;
    const masters = await c.masters();
    const killed = c.nodes.find((n) => c.pid(n.port) === undefined)!;
    await c.restartNode(killed.port);
    expect(c.pid(killed.port)).to.be.a('number');
    expect((await c.masters()).map((m) => m.port)).to.deep.equal(masters.map((m) => m.port));
    // It comes back a master of no slots and turns replica when it hears of the failover: the
    // live nodes' views converge on it within a few gossip rounds, not at once.
    const replicaPorts = async () =>
      (await Promise.all(masters.map((m) => c.replicasOf(m.port)))).flat().map((r) => r.port);
    const deadline = Date.now() + 15_000;
    while (!(await replicaPorts()).includes(killed.port) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(await replicaPorts()).to.include(killed.port);
    for (const m of masters)
      expect(await c.replicasOf(m.port), `replicas of ${m.port}`).to.have.length(1);
  });

  it('refuses to kill a node that is not a master, naming it', async function () {
    const c = cluster!;
    const [master] = await c.masters();
    const [replica] = await c.replicasOf(master!.port);
    let error: Error | undefined;
    await c.killMaster(replica!.port).catch((err: Error) => (error = err));
    expect(error?.message).to.match(new RegExp(`port ${replica!.port} is not a live master`));
    expect(c.pid(replica!.port)).to.be.a('number');
  });

  it('stop() leaves no redis-server running and is idempotent', async function () {
    const c = cluster!;
    const pids = c.allPids();
    expect(pids.length).to.be.at.least(7); // 6 started, 1 restarted
    expect(pids.filter(alive)).to.have.length(6);
    client!.disconnect();
    await c.stop();
    expect(pids.filter(alive)).to.deep.equal([]);
    await c.stop();
  });

  it('refuses a cluster of fewer than 3 masters before starting anything', async function () {
    let error: Error | undefined;
    await startRedisCluster({ masters: 2 }).catch((err: Error) => (error = err));
    expect(error?.message).to.equal(
      'masters must be an integer of at least 3 (a cluster needs 3), not 2',
    );
  });

  describe('a test process that dies without stop()', function () {
    let owner: Child | undefined;
    let dir: string | undefined;
    after(async function () {
      await owner?.destroy();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('takes its servers with it (setpriv --pdeathsig on Linux)', async function () {
      if (process.platform !== 'linux') this.skip();
      owner = spawnChild({
        name: 'cluster-owner',
        command: process.execPath,
        args: ['--import', 'tsx', 'test/fixtures/cluster-owner.ts'],
        env: { PATH: process.env.PATH },
      });
      const line = await owner.waitFor('pids ', 30_000);
      dir = (await owner.waitFor('dir ')).replace(/^dir /, '');
      const pids = line
        .replace(/^pids /, '')
        .split(' ')
        .map(Number);
      expect(pids).to.have.length(3);
      expect(pids.filter(alive)).to.have.length(3);
      await owner.kill();
      for (let i = 0; i < 50 && pids.some(alive); i++) await sleep(20);
      expect(pids.filter(alive), 'servers still running').to.deep.equal([]);
    });
  });
});
