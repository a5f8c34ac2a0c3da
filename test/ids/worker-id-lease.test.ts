/**
 * The worker-id lease and the id service, against the real Redis. Each test has its own prefix;
 * "another process" is a second lease with its own owner (on its own connection where the test
 * is about one process losing Redis), and a crash or a pause is a closed connection or a blocked
 * event loop, never a mock.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { Redis } from 'ioredis';
import {
  ErrorCode,
  IdGeneratorStoppedError,
  OnceqError,
  WorkerIdUnavailableError,
} from '../../src/core/errors.js';
import { decodeSnowflake } from '../../src/core/snowflake.js';
import {
  createIdService,
  type IdService,
  type IdServiceOptions,
  type WorkerIdReacquiredEvent,
} from '../../src/ids/id-service.js';
import { WORKER_ID_MAX, WORKER_ID_MIN } from '../../src/ids/snowflake-generator.js';
import {
  acquireWorkerId,
  workerIdScriptResult,
  type WorkerIdLease,
  type WorkerIdLeaseOptions,
  type WorkerIdLostEvent,
} from '../../src/ids/worker-id-lease.js';
import { closeRedis, createRedis } from '../../src/redis/connection.js';
import { workerIdsKey } from '../../src/redis/keys.js';
import { recordWorkerIdEpoch } from '../../src/db/worker-id-epochs.repository.js';
import { freePort } from '../../src/chaos/processes.js';
import {
  createTestSchema,
  deletePrefix,
  TEST_REDIS_URL,
  testRedis,
  uniqueName,
  type TestSchema,
} from '../support/env.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function waitUntil(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(10);
  }
}

async function waitUntilAsync(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(20);
  }
}

/** Closes a connection and waits for its socket to go: QUIT's reply comes before the close. */
async function closeFully(connection: Redis): Promise<void> {
  if (connection.status === 'end') return;
  const ended = new Promise<void>((resolve) => connection.once('end', () => resolve()));
  await closeRedis(connection);
  await ended;
}

/** A TCP relay to the test Redis whose traffic can be dropped from then on. */
async function silentableRelay(): Promise<{
  port: number;
  silence(): void;
  close(): Promise<void>;
}> {
  const target = new URL(TEST_REDIS_URL);
  const sockets = new Set<Socket>();
  let silent = false;
  const server = createServer((client) => {
    const upstream = connect(Number(target.port || 6379), target.hostname);
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      sockets.add(from);
      from.on('data', (chunk) => {
        if (!silent) to.write(chunk);
      });
      from.on('error', () => undefined);
      from.on('close', () => to.destroy());
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    silence: () => (silent = true),
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Blocks the whole event loop, as a long GC pause or a SIGSTOP would: no timer can fire. */
function freezeProcess(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

describe('worker-id lease', () => {
  let redis: Redis;
  let prefix: string;
  let leases: WorkerIdLease[];
  let services: IdService[];
  let extraConnections: Redis[];

  before(async () => {
    redis = testRedis();
    await redis.connect();
  });

  after(async () => {
    await closeFully(redis);
  });

  beforeEach(function () {
    prefix = uniqueName(this.currentTest?.title.slice(0, 20) ?? 'lease');
    leases = [];
    services = [];
    extraConnections = [];
  });

  afterEach(async () => {
    await Promise.all([...leases.map((l) => l.close()), ...services.map((s) => s.close())]);
    await Promise.all(extraConnections.map((c) => closeFully(c)));
    await deletePrefix(redis, prefix);
  });

  async function acquire(
    options: Partial<WorkerIdLeaseOptions> = {},
    connection: Redis = redis,
  ): Promise<WorkerIdLease> {
    const lease = await acquireWorkerId(connection, { prefix, ...options });
    leases.push(lease);
    return lease;
  }

  async function connection(): Promise<Redis> {
    const c = testRedis();
    extraConnections.push(c);
    await c.connect();
    return c;
  }

  async function entry(workerId: number): Promise<{ owner: string; expiresAtMs: number } | null> {
    const value = await redis.hget(workerIdsKey(prefix), String(workerId));
    if (value === null) return null;
    const cut = value.lastIndexOf('|');
    return { owner: value.slice(0, cut), expiresAtMs: Number(value.slice(cut + 1)) };
  }

  async function redisNowMs(): Promise<number> {
    const [s, us] = await redis.time();
    return Number(s) * 1000 + Math.floor(Number(us) / 1000);
  }

  it('gives concurrent acquirers distinct ids, each recorded under its owner', async () => {
    const all = await Promise.all(Array.from({ length: 25 }, () => acquire()));
    const ids = all.map((l) => l.workerId);
    expect(new Set(ids).size).to.equal(25);
    for (const lease of all) {
      expect(lease.workerId).to.be.within(WORKER_ID_MIN, WORKER_ID_MAX);
      expect(lease.isValid()).to.equal(true);
      const stored = await entry(lease.workerId);
      expect(stored?.owner).to.equal(lease.owner);
      expect(stored?.expiresAtMs).to.equal(lease.expiresAtMs);
    }
    // 25 leases and the hash's epoch.
    expect(await redis.hlen(workerIdsKey(prefix))).to.equal(26);
    expect(await redis.hget(workerIdsKey(prefix), 'epoch')).to.match(/^[0-9a-f]{32}\|\d+$/);
  });

  it('throws WorkerIdUnavailableError when every id of the range is leased', async () => {
    const held = await Promise.all([1, 2, 3].map(() => acquire({ maxWorkerId: 3 })));
    expect(held.map((l) => l.workerId).sort()).to.deep.equal([1, 2, 3]);
    let error: unknown;
    try {
      await acquire({ maxWorkerId: 3 });
    } catch (err) {
      error = err;
    }
    expect(error).to.be.instanceOf(WorkerIdUnavailableError);
    expect((error as WorkerIdUnavailableError).code).to.equal(ErrorCode.WorkerIdUnavailable);
    expect((error as Error).message).to.contain(
      `all 3 worker ids are leased under prefix ${prefix}`,
    );
    // The failed attempt changed nobody's lease.
    for (const lease of held) expect((await entry(lease.workerId))?.owner).to.equal(lease.owner);
  });

  it('keeps a lease alive past its ttl through the heartbeat', async () => {
    const lease = await acquire({ maxWorkerId: 1, ttlMs: 300 });
    const firstExpiry = lease.expiresAtMs;
    await sleep(1_000);
    expect(lease.isValid()).to.equal(true);
    expect(lease.expiresAtMs).to.be.greaterThan(firstExpiry + 500);
    expect((await entry(1))?.expiresAtMs).to.be.greaterThan(await redisNowMs());
    let error: unknown;
    await acquire({ maxWorkerId: 1 }).catch((err: unknown) => (error = err));
    expect(error).to.be.instanceOf(WorkerIdUnavailableError);
  });

  it('lets a lease whose renewals fail lapse at its local expiry; the id is then reclaimable', async () => {
    const errors: unknown[] = [];
    const lost: WorkerIdLostEvent[] = [];
    const crashing = await connection();
    const a = await acquire(
      {
        maxWorkerId: 1,
        ttlMs: 400,
        onError: (err) => errors.push(err),
        onLost: (e) => lost.push(e),
      },
      crashing,
    );
    crashing.disconnect(); // Redis is gone for this process: every renewal now fails
    await sleep(150);
    expect(a.isValid()).to.equal(true); // still inside ttl - safety margin
    expect(await entry(1)).to.not.equal(null);
    await sleep(400);
    expect(a.isValid()).to.equal(false); // lapsed locally, without any answer from Redis
    expect(errors.length).to.be.greaterThan(0);
    expect(lost).to.deep.equal([]); // nobody said it was taken: it lapsed

    const b = await acquire({ maxWorkerId: 1 });
    expect(b.workerId).to.equal(1);
    expect((await entry(1))?.owner).to.equal(b.owner);
  });

  it('close() stops the heartbeat and releases the id, after a cool-down', async () => {
    const a = await acquire({ maxWorkerId: 1, releaseCooldownMs: 400 });
    await a.close();
    expect(a.isValid()).to.equal(false);
    expect(await a.renew()).to.equal(false);
    const stored = await entry(1);
    expect(stored?.owner).to.equal(''); // released: nobody's
    let error: unknown;
    await acquire({ maxWorkerId: 1 }).catch((err: unknown) => (error = err));
    expect(error, 'reacquired during the cool-down').to.be.instanceOf(WorkerIdUnavailableError);
    await sleep(450);
    const b = await acquire({ maxWorkerId: 1 });
    expect(b.workerId).to.equal(1);

    const c = await acquire({ maxWorkerId: 2, releaseCooldownMs: 0 });
    expect(c.workerId).to.equal(2);
    await c.close();
    expect(await entry(2)).to.equal(null);
    const d = await acquire({ maxWorkerId: 2 });
    expect(d.workerId).to.equal(2);
  });

  it('marks a lease invalid and calls onLost when its id was taken over while it was paused', async () => {
    const lost: WorkerIdLostEvent[] = [];
    const a = await acquire({
      maxWorkerId: 1,
      ttlMs: 300,
      heartbeatMs: 200,
      onLost: (e) => lost.push(e),
    });
    freezeProcess(450); // a's heartbeat cannot run; its lease expires in Redis meanwhile
    const b = await acquire({ maxWorkerId: 1 }); // another process reclaims the expired id
    expect(b.workerId).to.equal(a.workerId);

    expect(await a.renew()).to.equal(false);
    expect(a.isValid()).to.equal(false);
    expect(lost).to.deep.equal([{ workerId: 1, prefix, owner: a.owner, reason: 'taken' }]);
    // The loser's close() must not release the winner's lease.
    await a.close();
    expect((await entry(1))?.owner).to.equal(b.owner);
    expect(b.isValid()).to.equal(true);
  });

  it('calls onLost with "gone" when its entry was deleted', async () => {
    const lost: WorkerIdLostEvent[] = [];
    const a = await acquire({ onLost: (e) => lost.push(e) });
    await redis.hdel(workerIdsKey(prefix), String(a.workerId));
    expect(await a.renew()).to.equal(false);
    expect(a.isValid()).to.equal(false);
    expect(lost.map((e) => e.reason)).to.deep.equal(['gone']);
  });

  it('renews a lapsed lease that nobody took: no one else can have minted with it', async () => {
    const a = await acquire({ maxWorkerId: 1, ttlMs: 200, heartbeatMs: 150 });
    freezeProcess(300);
    expect(a.isValid()).to.equal(false);
    expect(await a.renew()).to.equal(true);
    expect(a.isValid()).to.equal(true);
    expect((await entry(1))?.owner).to.equal(a.owner);
  });

  it('does not keep the process alive with its heartbeat timer', async () => {
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    await sleep(1); // let mocha arm its own (ref'd) timeout timer for this test first
    const before = timers();
    await acquire({ ttlMs: 60_000 });
    expect(timers()).to.equal(before);
  });

  it('maps script replies in one place and rejects unknown ones', () => {
    const context = { prefix: 'p', count: 3 };
    expect(workerIdScriptResult([1, 7, 99, 'ab12@run1', 250], context)).to.deep.equal({
      kind: 'acquired',
      workerId: 7,
      expiresAtMs: 99,
      epoch: { id: 'ab12@run1', ageMs: 250 },
    });
    expect(workerIdScriptResult([-3], context)).to.deep.equal({
      kind: 'not-held',
      reason: 'taken',
    });
    expect(() => workerIdScriptResult([-1], context)).to.throw(
      WorkerIdUnavailableError,
      /all 3 worker ids/,
    );
    for (const reply of [
      [42],
      'OK',
      null,
      [1, 'x'],
      [1, 7, 99],
      [1, 7, 99, '', 5],
      [1, 7, 99, 'e', -1],
    ]) {
      let error: unknown;
      try {
        workerIdScriptResult(reply, context);
      } catch (err) {
        error = err;
      }
      expect(error, JSON.stringify(reply)).to.be.instanceOf(OnceqError);
      expect((error as OnceqError).code).to.equal(ErrorCode.ScriptFailed);
    }
  });

  it('rejects option values that would make the lease unsafe', async () => {
    for (const options of [
      { ttlMs: 300, heartbeatMs: 300 },
      { maxWorkerId: 1023 },
      { maxWorkerId: 0 },
      { ttlMs: 0 },
    ]) {
      let error: unknown;
      await acquire(options).catch((err: unknown) => (error = err));
      expect(error, JSON.stringify(options)).to.be.instanceOf(RangeError);
    }
    expect(await redis.exists(workerIdsKey(prefix))).to.equal(0);
  });

  describe('createIdService', () => {
    async function service(options: Partial<IdServiceOptions> = {}): Promise<IdService> {
      const s = await createIdService(redis, { prefix, ...options });
      services.push(s);
      return s;
    }

    it('mints increasing ids stamped with the leased worker id', async () => {
      const [s1, s2] = await Promise.all([service(), service()]);
      expect(s1.workerId).to.not.equal(s2.workerId);
      const ids = Array.from({ length: 1000 }, (_, i) => (i % 2 ? s1 : s2).nextId());
      expect(new Set(ids).size).to.equal(1000);
      for (const s of [s1, s2]) {
        const own = ids.filter((id) => decodeSnowflake(id).workerId === s.workerId);
        expect(own.length).to.equal(500);
        for (let i = 1; i < own.length; i++)
          expect(BigInt(own[i]!) > BigInt(own[i - 1]!)).to.equal(true);
      }
    });

    it('stops minting when its worker id is taken over by another owner', async () => {
      const lost: WorkerIdLostEvent[] = [];
      const s = await service({ onLost: (e) => lost.push(e) });
      s.nextId();
      // Another process now holds the id (as after a pause past the ttl).
      await redis.hset(
        workerIdsKey(prefix),
        String(s.workerId),
        `someone-else|${(await redisNowMs()) + 60_000}`,
      );
      const takenId = s.workerId;
      await s.lease.renew();
      expect(lost.map((e) => e.reason)).to.deep.equal(['taken']);
      expect(() => s.nextId()).to.throw(IdGeneratorStoppedError);
      expect((await entry(takenId))?.owner).to.equal('someone-else');
    });

    it('leases another worker id after a takeover and mints with it after one ttl', async () => {
      const ttlMs = 600;
      const reacquired: WorkerIdReacquiredEvent[] = [];
      const s = await service({ ttlMs, heartbeatMs: 50, onReacquired: (e) => reacquired.push(e) });
      const first = s.nextId();
      const takenId = s.workerId;
      await redis.hset(
        workerIdsKey(prefix),
        String(takenId),
        `someone-else|${(await redisNowMs()) + 60_000}`,
      );
      await s.lease.renew();
      const lostAt = performance.now();
      // After a data loss a takeover looks like this too, so it waits as after `gone`.
      expect(() => s.nextId()).to.throw(IdGeneratorStoppedError);
      await waitUntil(() => s.isReady(), 4 * ttlMs);
      expect(performance.now() - lostAt).to.be.at.least(ttlMs - 100);
      expect(s.workerId).to.not.equal(takenId);
      expect(reacquired).to.have.length(1);
      expect(reacquired[0]).to.include({ previousWorkerId: takenId, workerId: s.workerId });
      const next = s.nextId();
      expect(decodeSnowflake(next).workerId).to.equal(s.workerId);
      expect(next).to.not.equal(first);
      expect((await entry(s.workerId))?.owner).to.equal(s.lease.owner);
      expect((await entry(takenId))?.owner).to.equal('someone-else');
    });

    it('after Redis lost the leases, mints nothing for one ttl, then continues above its last id', async () => {
      // One usable id, so the replacement is the same worker id and must not repeat an id.
      const ttlMs = 800;
      const s = await service({ ttlMs, heartbeatMs: 50, maxWorkerId: WORKER_ID_MIN });
      const before = Array.from({ length: 2000 }, () => s.nextId());
      await redis.del(workerIdsKey(prefix));
      const lostAt = performance.now();
      await waitUntil(() => !s.isReady(), 1_000);
      expect(() => s.nextId()).to.throw(IdGeneratorStoppedError, /resumes in|leasing another/);
      // Another process that still believes it holds the id may mint until its own renewal
      // fails: nothing is minted here before a whole ttl has passed since the loss.
      await waitUntil(() => s.isReady(), 3 * ttlMs);
      expect(performance.now() - lostAt).to.be.at.least(ttlMs - 100);
      expect(s.workerId).to.equal(WORKER_ID_MIN);
      const after = s.nextId();
      expect(BigInt(after) > BigInt(before[before.length - 1]!)).to.equal(true);
      expect(await entry(WORKER_ID_MIN)).to.include({ owner: s.lease.owner });
    });

    describe('a process that starts after Redis lost the leases (worker_id_epochs)', () => {
      let t: TestSchema;
      before(async () => {
        t = await createTestSchema('epochs', 4);
      });
      after(async () => t.drop());

      it('records the first epoch of a prefix as no loss; a new epoch as a loss, for every caller', async () => {
        const [a, b] = [uniqueName('epoch'), uniqueName('epoch')];
        // Five processes starting at once on a new prefix all learn "first start".
        const first = await Promise.all(
          Array.from({ length: 5 }, () => recordWorkerIdEpoch(t.db, a, 'e1')),
        );
        expect(first.map((r) => r.afterLoss)).to.deep.equal([false, false, false, false, false]);
        expect(await recordWorkerIdEpoch(t.db, a, 'e2')).to.deep.equal({ afterLoss: true });
        expect(await recordWorkerIdEpoch(t.db, a, 'e2')).to.deep.equal({ afterLoss: true });
        // Prefixes are independent.
        expect(await recordWorkerIdEpoch(t.db, b, 'e2')).to.deep.equal({ afterLoss: false });
      });

      it('mints at once on the first start of a prefix, and after the whole fleet stopped', async () => {
        const s = await service({ db: t.db, ttlMs: 60_000 });
        expect(s.isReady()).to.equal(true);
        s.nextId();
        await s.close();
        // The epoch outlives the leases: a restart of every process is not a loss.
        const again = await service({ db: t.db, ttlMs: 60_000 });
        expect(again.isReady()).to.equal(true);
        again.nextId();
      });

      it('waits one ttl from the loss before minting with a worker id a running process still holds', async () => {
        const ttlMs = 1_500;
        const old = await service({ db: t.db, ttlMs, heartbeatMs: 1_000, maxWorkerId: 1 });
        const minted = old.nextId();
        await redis.del(workerIdsKey(prefix));
        const lostAt = performance.now();
        // A process started now gets the very worker id `old` holds and mints with until its
        // next renewal: both would stamp the same ids.
        const fresh = await service({ db: t.db, ttlMs, heartbeatMs: 500, maxWorkerId: 1 });
        expect(fresh.workerId).to.equal(old.workerId);
        expect(fresh.isReady()).to.equal(false);
        expect(() => fresh.nextId()).to.throw(IdGeneratorStoppedError, /resumes in/);
        // So does any other process of the new epoch, whatever id it leased.
        const other = await service({ db: t.db, ttlMs, heartbeatMs: 500 });
        expect(other.isReady()).to.equal(false);
        await waitUntil(() => fresh.isReady() && other.isReady(), 3 * ttlMs);
        expect(performance.now() - lostAt).to.be.at.least(ttlMs - 100);
        // By then `old` has heard that its id is gone and mints no more.
        expect(() => old.nextId()).to.throw(IdGeneratorStoppedError);
        expect(BigInt(fresh.nextId()) > BigInt(minted)).to.equal(true);
        // A process that starts once the epoch is a ttl old mints at once.
        const later = await service({ db: t.db, ttlMs, heartbeatMs: 500 });
        expect(later.isReady()).to.equal(true);
      });
    });

    describe('a Redis restarted from a snapshot older than the leases', () => {
      // A private redis-server (the shared one is never restarted), saving to a directory of
      // its own; restarted, it loads that snapshot: the epoch field is back, the leases in it
      // have expired, while the process that held them goes on renewing after the restart.
      let dir: string;
      let port: number;
      let server: ChildProcess | undefined;
      let t: TestSchema;

      async function startServer(): Promise<void> {
        server = spawn(
          'redis-server',
          ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', ''],
          { stdio: 'ignore' },
        );
        const probe = createRedis({ url: `redis://127.0.0.1:${port}`, failFast: true });
        try {
          await waitUntilAsync(async () => (await probe.ping().catch(() => '')) === 'PONG', 5_000);
        } finally {
          probe.disconnect();
        }
      }
      async function killServer(): Promise<void> {
        const s = server;
        server = undefined;
        if (!s || s.exitCode !== null) return;
        await new Promise<void>((resolve) => {
          s.once('exit', () => resolve());
          s.kill('SIGKILL');
        });
      }
      async function privateConnection(): Promise<Redis> {
        const c = createRedis({ url: `redis://127.0.0.1:${port}` });
        extraConnections.push(c);
        await c.connect();
        return c;
      }

      before(async () => {
        t = await createTestSchema('restart', 4);
        dir = mkdtempSync(join(tmpdir(), 'onceq-redis-'));
        port = await freePort();
        await startServer();
      });
      after(async () => {
        await killServer();
        rmSync(dir, { recursive: true, force: true });
        await t.drop();
      });

      it('counts the restart as a loss though the hash came back, and waits one ttl', async function () {
        this.timeout(30_000);
        const ttlMs = 3_000;
        const old = await createIdService(await privateConnection(), {
          prefix,
          db: t.db,
          ttlMs,
          heartbeatMs: 2_300,
          maxWorkerId: 1,
        });
        services.push(old);
        expect(old.isReady()).to.equal(true);
        const minted = old.nextId();
        const snapshotAt = performance.now();
        const c = await privateConnection();
        await c.save();
        // The snapshot's lease expires; the live one is renewed at 2.3 s.
        await sleep(ttlMs + 200 - (performance.now() - snapshotAt));
        await killServer();
        await startServer();
        const restartedAt = performance.now();
        // Same hash epoch as before the restart: only the server's run_id tells the two apart.
        const fresh = await createIdService(await privateConnection(), {
          prefix,
          db: t.db,
          ttlMs,
          heartbeatMs: 1_000,
          maxWorkerId: 1,
        });
        services.push(fresh);
        expect(fresh.workerId, 'the id `old` still mints with').to.equal(old.workerId);
        expect(fresh.isReady()).to.equal(false);
        expect(() => fresh.nextId()).to.throw(IdGeneratorStoppedError, /resumes in/);
        await waitUntil(() => fresh.isReady(), 3 * ttlMs);
        expect(performance.now() - restartedAt).to.be.at.least(ttlMs - 1_200);
        // `old` renewed meanwhile, found its id taken, and mints no more.
        expect(() => old.nextId()).to.throw(IdGeneratorStoppedError);
        expect(BigInt(fresh.nextId()) > BigInt(minted)).to.equal(true);
      });
    });

    it('keeps trying to lease a replacement while every id is held, and close() stops it', async () => {
      const s = await service({ ttlMs: 600, heartbeatMs: 50, maxWorkerId: WORKER_ID_MIN });
      s.nextId();
      await redis.hset(
        workerIdsKey(prefix),
        String(WORKER_ID_MIN),
        `someone-else|${(await redisNowMs()) + 60_000}`,
      );
      await waitUntil(() => !s.isReady(), 1_000);
      await sleep(400);
      expect(() => s.nextId()).to.throw(IdGeneratorStoppedError);
      // The other holder goes away: the service takes the id on a later attempt.
      await redis.hdel(workerIdsKey(prefix), String(WORKER_ID_MIN));
      await waitUntil(() => s.isReady(), 8_000);
      expect((await entry(WORKER_ID_MIN))?.owner).to.equal(s.lease.owner);
      // Taken again; close() during the retries ends promptly and leaves the other's entry.
      await redis.hset(
        workerIdsKey(prefix),
        String(WORKER_ID_MIN),
        `someone-else|${(await redisNowMs()) + 60_000}`,
      );
      await waitUntil(() => !s.isReady(), 1_000);
      const closing = performance.now();
      await s.close();
      expect(performance.now() - closing).to.be.below(1_000);
      expect((await entry(WORKER_ID_MIN))?.owner).to.equal('someone-else');
    });

    it('close() returns within its bound while a replacement lease hangs on a silent Redis', async () => {
      // A TCP relay to the real Redis that can go silent, as a network partition does.
      const relay = await silentableRelay();
      const through = createRedis({
        url: `redis://127.0.0.1:${relay.port}`,
        connectionName: 'onceq-test',
      });
      try {
        const s = await createIdService(through, {
          prefix,
          ttlMs: 600,
          heartbeatMs: 200,
          maxWorkerId: WORKER_ID_MIN,
        });
        // Taken by another owner: the renewal loses it, and every replacement attempt finds
        // the only id held (AllLeased), then sleeps and tries again.
        await redis.hset(
          workerIdsKey(prefix),
          String(WORKER_ID_MIN),
          `someone-else|${(await redisNowMs()) + 60_000}`,
        );
        await s.lease.renew();
        expect(s.isReady()).to.equal(false);
        // Now Redis stops answering: the next attempt waits forever in the offline queue.
        relay.silence();
        await sleep(400);
        const closing = performance.now();
        await s.close();
        expect(performance.now() - closing).to.be.below(4_000);
      } finally {
        through.disconnect();
        await relay.close();
      }
    });

    it('stops minting at close() and releases the worker id', async () => {
      const s = await service({ releaseCooldownMs: 0 });
      s.nextId();
      await s.close();
      expect(() => s.nextId()).to.throw(IdGeneratorStoppedError);
      expect(await entry(s.workerId)).to.equal(null);
    });
  });
});
