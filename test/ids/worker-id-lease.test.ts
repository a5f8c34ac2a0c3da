/**
 * The worker-id lease and the id service, against the real PostgreSQL. Each test has its own
 * schema; "another process" is a second lease with its own owner (on its own pool where the test
 * is about one process losing PostgreSQL), and a pause is a blocked event loop, a lost
 * connection a TCP relay that goes silent or `pg_terminate_backend`, never a mock. Tests with
 * real child processes and a private Redis are in worker-id-processes.test.ts.
 */
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { expect } from 'chai';
import { sql } from 'kysely';
import {
  ErrorCode,
  IdGeneratorStoppedError,
  OnceqError,
  WorkerIdUnavailableError,
} from '../../src/core/errors.js';
import { decodeSnowflake, encodeSnowflake, snowflakeTimeMs } from '../../src/core/snowflake.js';
import { createDb, type Db } from '../../src/db/create-db.js';
import { migrateDown, migrateToLatest } from '../../src/db/migrate.js';
import {
  createIdService,
  type IdService,
  type IdServiceOptions,
  type WorkerIdReacquiredEvent,
} from '../../src/ids/id-service.js';
import { WORKER_ID_MAX, WORKER_ID_MIN } from '../../src/ids/snowflake-generator.js';
import {
  acquireWorkerId,
  type WorkerIdLease,
  type WorkerIdLeaseOptions,
  type WorkerIdLostEvent,
} from '../../src/ids/worker-id-lease.js';
import { createTestSchema, TEST_DATABASE_URL, type TestSchema } from '../support/env.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function waitUntil(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(5);
  }
}

/** Blocks the whole event loop, as a long GC pause would: no timer can fire. */
function freezeProcess(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** A TCP relay to the test PostgreSQL that can go silent, as a network partition does. */
async function silentableRelay(): Promise<{
  port: number;
  silence(): void;
  close(): Promise<void>;
}> {
  const target = new URL(TEST_DATABASE_URL);
  const sockets = new Set<Socket>();
  let silent = false;
  const server = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname);
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

function expectStrictlyIncreasing(ids: string[]): void {
  for (let i = 1; i < ids.length; i++) {
    if (!(BigInt(ids[i]!) > BigInt(ids[i - 1]!))) {
      expect.fail(`id #${i} ${ids[i]} is not above #${i - 1} ${ids[i - 1]}`);
    }
  }
}

describe('worker-id lease (PostgreSQL)', () => {
  let t: TestSchema;
  let leases: WorkerIdLease[];
  let services: IdService[];
  let cleanups: (() => Promise<void>)[];

  beforeEach(async function () {
    t = await createTestSchema(this.currentTest?.title.slice(0, 12) ?? 'lease', 6);
    leases = [];
    services = [];
    cleanups = [];
  });

  afterEach(async () => {
    await Promise.all([...leases.map((l) => l.close()), ...services.map((s) => s.close())]);
    for (const cleanup of cleanups.reverse()) await cleanup();
    await t.drop();
  });

  async function acquire(
    options: Partial<WorkerIdLeaseOptions> = {},
    db: Db = t.db,
  ): Promise<WorkerIdLease> {
    const lease = await acquireWorkerId(db, options);
    leases.push(lease);
    return lease;
  }

  async function service(options: Partial<IdServiceOptions> = {}, db: Db = t.db) {
    const s = await createIdService(db, options);
    services.push(s);
    return s;
  }

  /** Another pool on the same schema: a process of its own as far as PostgreSQL can tell. */
  function pool(url = TEST_DATABASE_URL, applicationName = 'onceq-test-other'): Db {
    const db = createDb({ url, schema: t.schema, poolSize: 2, applicationName });
    cleanups.push(() => db.destroy());
    return db;
  }

  /** A pool through a relay that can go silent: a process about to lose PostgreSQL. */
  async function cuttablePool(): Promise<{ db: Db; silence(): void }> {
    const relay = await silentableRelay();
    const url = new URL(TEST_DATABASE_URL);
    url.host = `127.0.0.1:${relay.port}`;
    const db = createDb({ url: url.toString(), schema: t.schema, poolSize: 2 });
    // The relay first: its closed sockets fail the hung queries, which frees the pool to end.
    cleanups.push(async () => {
      await relay.close();
      await db.destroy();
    });
    return { db, silence: relay.silence };
  }

  async function row(workerId: number) {
    return t.db
      .selectFrom('worker_id_leases')
      .select(['owner', 'expires_at', 'reserved_until_ms'])
      .where('worker_id', '=', workerId)
      .executeTakeFirstOrThrow();
  }

  /** Forgets the marks the migration set (one second past its run), for tests of the marks. */
  async function clearMarks(): Promise<void> {
    await sql`update worker_id_leases set reserved_until_ms = 0`.execute(t.db);
  }

  async function pgNowMs(): Promise<number> {
    const { rows } = await sql<{ ms: string }>`
      select (extract(epoch from clock_timestamp()) * 1000)::bigint::text as ms`.execute(t.db);
    return Number(rows[0]!.ms);
  }

  it('gives concurrent acquirers on separate pools distinct ids, each recorded under its owner', async () => {
    const pools = Array.from({ length: 5 }, () => pool());
    const all = await Promise.all(
      Array.from({ length: 25 }, (_, i) => acquire({ ttlMs: 60_000 }, pools[i % 5])),
    );
    const ids = all.map((l) => l.workerId);
    expect(new Set(ids).size).to.equal(25);
    const pgNow = await pgNowMs();
    for (const lease of all) {
      expect(lease.workerId).to.be.within(WORKER_ID_MIN, WORKER_ID_MAX);
      expect(lease.isValid()).to.equal(true);
      const stored = await row(lease.workerId);
      expect(stored.owner).to.equal(lease.owner);
      // Expiry on PostgreSQL's clock, one ttl ahead.
      expect(stored.expires_at!.getTime()).to.be.within(pgNow + 50_000, pgNow + 60_000);
      expect(Number(stored.reserved_until_ms)).to.equal(lease.reservedUntilMs);
    }
  });

  it('throws WorkerIdUnavailableError when every id of the range is leased, changing nothing', async () => {
    const held = await Promise.all([1, 2, 3].map(() => acquire({ maxWorkerId: 3 })));
    expect(held.map((l) => l.workerId).sort()).to.deep.equal([1, 2, 3]);
    const before = await Promise.all([1, 2, 3].map(row));
    const error = await acquire({ maxWorkerId: 3 }).catch((err: unknown) => err);
    expect(error).to.be.instanceOf(WorkerIdUnavailableError);
    expect((error as Error).message).to.contain('all 3 worker ids are leased');
    expect(await Promise.all([1, 2, 3].map(row))).to.deep.equal(before);
  });

  it('keeps a lease alive past its ttl through the heartbeat, and reserves time ahead of minting', async () => {
    await clearMarks();
    const lease = await acquire({ maxWorkerId: 1, ttlMs: 300 });
    const firstReserved = lease.reservedUntilMs;
    await sleep(1_000);
    expect(lease.isValid()).to.equal(true);
    const stored = await row(1);
    expect(stored.expires_at!.getTime()).to.be.greaterThan(await pgNowMs());
    // Each renewal moved the high-water mark on, ahead of the clock by the reserve (the ttl).
    expect(lease.reservedUntilMs).to.be.greaterThan(firstReserved + 500);
    expect(lease.reservedUntilMs).to.be.greaterThan(Date.now());
    expect(Number(stored.reserved_until_ms)).to.equal(lease.reservedUntilMs);
    const error = await acquire({ maxWorkerId: 1 }).catch((err: unknown) => err);
    expect(error).to.be.instanceOf(WorkerIdUnavailableError);
  });

  it('survives its connections being terminated (pg_terminate_backend): renewed on new ones', async () => {
    const db = pool(TEST_DATABASE_URL, 'onceq-test-pgkill');
    const errors: unknown[] = [];
    const s = await service({ ttlMs: 900, heartbeatMs: 100, onError: (e) => errors.push(e) }, db);
    let refusals = 0;
    const minted: string[] = [];
    const started = performance.now();
    while (performance.now() - started < 2_000) {
      await sql`select pg_terminate_backend(pid) from pg_stat_activity
        where application_name = 'onceq-test-pgkill' and pid <> pg_backend_pid()`.execute(t.db);
      for (let i = 0; i < 10; i++) {
        try {
          minted.push(s.nextId());
        } catch {
          refusals++;
        }
      }
      await sleep(40);
    }
    expect(refusals, 'ids refused while connections were being killed').to.equal(0);
    expect(s.isReady()).to.equal(true);
    expectStrictlyIncreasing(minted);
    expect((await row(s.workerId)).owner).to.equal(s.lease.owner);
  });

  it('lapses locally before its expiry in PostgreSQL when it cannot renew; the id is then free', async () => {
    const cut = await cuttablePool();
    const errors: unknown[] = [];
    const lost: WorkerIdLostEvent[] = [];
    const a = await acquire(
      {
        maxWorkerId: 1,
        ttlMs: 1_000,
        heartbeatMs: 300,
        onError: (err) => errors.push(err),
        onLost: (e) => lost.push(e),
      },
      cut.db,
    );
    await sleep(400); // one renewal went through
    cut.silence(); // PostgreSQL is gone for this process: renewals now hang
    await waitUntil(() => !a.isValid(), 2_000);
    const invalidAtMs = Date.now();
    const expiresAtMs = (await row(1)).expires_at!.getTime();
    // Stopped minting while PostgreSQL still counted the lease as held: nobody could take it yet.
    expect(invalidAtMs).to.be.below(expiresAtMs);
    const early = await acquire({ maxWorkerId: 1 }).catch((err: unknown) => err);
    expect(early).to.be.instanceOf(WorkerIdUnavailableError);
    expect(lost).to.deep.equal([]); // nobody said it was taken: it lapsed
    await sleep(Math.max(0, expiresAtMs - Date.now()) + 50);
    const b = await acquire({ maxWorkerId: 1 });
    expect(b.workerId).to.equal(1);
    expect((await row(1)).owner).to.equal(b.owner);
    // The taker starts at the mark the lapsed holder reserved.
    expect(b.floorMs).to.equal(a.reservedUntilMs);
  });

  it('marks a lease invalid and calls onLost when its id was taken over while it was paused', async () => {
    const lost: WorkerIdLostEvent[] = [];
    const a = await acquire({
      maxWorkerId: 1,
      ttlMs: 300,
      heartbeatMs: 200,
      onLost: (e) => lost.push(e),
    });
    freezeProcess(450); // a's heartbeat cannot run; its lease expires in PostgreSQL meanwhile
    expect(a.isValid()).to.equal(false);
    const b = await acquire({ maxWorkerId: 1 }); // another process reclaims the expired id
    expect(b.workerId).to.equal(a.workerId);
    expect(b.floorMs).to.equal(a.reservedUntilMs);

    expect(await a.renew()).to.equal(false);
    expect(a.isValid()).to.equal(false);
    expect(lost).to.deep.equal([{ workerId: 1, owner: a.owner }]);
    // The loser's close() must not release the winner's lease or lower its mark.
    await a.close(0);
    const stored = await row(1);
    expect(stored.owner).to.equal(b.owner);
    expect(Number(stored.reserved_until_ms)).to.equal(b.reservedUntilMs);
    expect(b.isValid()).to.equal(true);
  });

  it('renews a lapsed lease that nobody took: no one else can have minted with it', async () => {
    const a = await acquire({ maxWorkerId: 1, ttlMs: 200, heartbeatMs: 150 });
    freezeProcess(300);
    expect(a.isValid()).to.equal(false);
    expect(await a.renew()).to.equal(true);
    expect(a.isValid()).to.equal(true);
    expect((await row(1)).owner).to.equal(a.owner);
  });

  it('close() frees the id and hands on the time really minted up to, never less than the floor', async () => {
    await clearMarks();
    const a = await acquire({ maxWorkerId: 1, ttlMs: 60_000 });
    expect(a.reservedUntilMs).to.be.greaterThan(Date.now() + 50_000);
    const mintedBefore = Date.now() + 1;
    await a.close(mintedBefore);
    expect(a.isValid()).to.equal(false);
    expect(await a.renew()).to.equal(false);
    const stored = await row(1);
    expect(stored.owner).to.equal(null);
    expect(Number(stored.reserved_until_ms)).to.equal(mintedBefore);
    const b = await acquire({ maxWorkerId: 1 });
    expect(b.floorMs).to.equal(mintedBefore);
    // Handing on less than the floor it started from would let the next holder repeat ids.
    await b.close(0);
    expect(Number((await row(1)).reserved_until_ms)).to.equal(b.floorMs);
  });

  it('says that migrations are pending when the lease table does not exist', async () => {
    await sql`drop table worker_id_leases`.execute(t.db);
    const error = await acquire().catch((err: unknown) => err);
    expect(error).to.be.instanceOf(OnceqError);
    expect((error as OnceqError).code).to.equal(ErrorCode.MigrationsPending);
    expect((error as Error).message).to.contain('onceq migrate latest');
  });

  it('does not keep the process alive with its heartbeat timer', async () => {
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    // The pool's idle timer of a released connection is its own (ref'd) timer: have one before.
    await sql`select 1`.execute(t.db);
    await sleep(1); // let mocha arm its own (ref'd) timeout timer for this test first
    const before = timers();
    await acquire({ ttlMs: 60_000 });
    expect(timers()).to.equal(before);
  });

  it('rejects option values that would make the lease unsafe', async () => {
    for (const options of [
      { ttlMs: 300, heartbeatMs: 300 },
      { ttlMs: 300, heartbeatMs: 100, reserveMs: 100 },
      { maxWorkerId: 1023 },
      { maxWorkerId: 0 },
      { ttlMs: 0 },
    ]) {
      const error = await acquire(options).catch((err: unknown) => err);
      expect(error, JSON.stringify(options)).to.be.instanceOf(RangeError);
    }
    const { rows } = await sql<{ n: string }>`
      select count(*)::text as n from worker_id_leases where owner is not null`.execute(t.db);
    expect(rows[0]!.n).to.equal('0');
  });

  describe('createIdService', () => {
    it('mints increasing ids stamped with the leased worker id, within the reserved time', async () => {
      const [s1, s2] = await Promise.all([service(), service()]);
      expect(s1.workerId).to.not.equal(s2.workerId);
      const ids = Array.from({ length: 1000 }, (_, i) => (i % 2 ? s1 : s2).nextId());
      expect(new Set(ids).size).to.equal(1000);
      for (const s of [s1, s2]) {
        const own = ids.filter((id) => decodeSnowflake(id).workerId === s.workerId);
        expect(own.length).to.equal(500);
        expectStrictlyIncreasing(own);
        // Persisted ahead of minting: the row's mark is above every id minted.
        const mark = Number((await row(s.workerId)).reserved_until_ms);
        expect(snowflakeTimeMs(own[own.length - 1]!)).to.be.below(mark);
        expect(snowflakeTimeMs(own[0]!)).to.be.at.least(s.lease.floorMs);
      }
    });

    it('after a takeover, leases another worker id and mints with it at once', async () => {
      const lost: WorkerIdLostEvent[] = [];
      const reacquired: WorkerIdReacquiredEvent[] = [];
      const s = await service({
        ttlMs: 600,
        heartbeatMs: 50,
        onLost: (e) => lost.push(e),
        onReacquired: (e) => reacquired.push(e),
      });
      const first = s.nextId();
      const takenId = s.workerId;
      // Another process now holds the id (as after a pause past the ttl).
      await sql`update worker_id_leases set owner = 'someone-else',
        expires_at = now() + interval '1 minute' where worker_id = ${takenId}`.execute(t.db);
      await s.lease.renew();
      expect(lost).to.deep.equal([{ workerId: takenId, owner: lost[0]?.owner }]);
      await waitUntil(() => s.isReady(), 1_000);
      expect(s.workerId).to.not.equal(takenId);
      expect(reacquired).to.deep.equal([{ previousWorkerId: takenId, workerId: s.workerId }]);
      const next = s.nextId();
      expect(decodeSnowflake(next).workerId).to.equal(s.workerId);
      expect(next).to.not.equal(first);
      expect((await row(s.workerId)).owner).to.equal(s.lease.owner);
      expect((await row(takenId)).owner).to.equal('someone-else');
    });

    it('after a restart with the clock set back an hour, ids keep rising above the persisted mark', async () => {
      const a = await service({ maxWorkerId: 1 });
      const before = Array.from({ length: 3000 }, () => a.nextId());
      const last = before[before.length - 1]!;
      await a.close();
      const mark = Number((await row(1)).reserved_until_ms);
      expect(mark).to.equal(snowflakeTimeMs(last) + 1);

      const hourBack = () => Date.now() - 3_600_000;
      const b = await service({ maxWorkerId: 1, clock: hourBack });
      expect(b.workerId).to.equal(1);
      expect(b.lease.floorMs).to.equal(mark);
      const after = Array.from({ length: 5000 }, () => b.nextId());
      expect(
        BigInt(after[0]!) >=
          BigInt(encodeSnowflake({ timestampMs: mark, workerId: 1, sequence: 0 })),
      ).to.equal(true);
      expectStrictlyIncreasing([...before, ...after]);
      // And the next restart, still an hour behind, goes on above these.
      await b.close();
      const c = await service({ maxWorkerId: 1, clock: hourBack });
      expectStrictlyIncreasing([...after, c.nextId(), c.nextId()]);
    });

    it('stops minting when it cannot renew (PostgreSQL unreachable)', async () => {
      const cut = await cuttablePool();
      const s = await service({ maxWorkerId: 1, ttlMs: 800, heartbeatMs: 200 }, cut.db);
      s.nextId();
      cut.silence();
      await waitUntil(() => !s.isReady(), 2_000);
      expect(() => s.nextId()).to.throw(IdGeneratorStoppedError, /no longer leased/);
    });

    it('keeps trying to lease a replacement while every id is held, and close() stops it', async () => {
      const s = await service({ ttlMs: 600, heartbeatMs: 50, maxWorkerId: WORKER_ID_MIN });
      s.nextId();
      const take = () =>
        sql`update worker_id_leases set owner = 'someone-else',
        expires_at = now() + interval '1 minute' where worker_id = ${WORKER_ID_MIN}`.execute(t.db);
      await take();
      await waitUntil(() => !s.isReady(), 1_000);
      await sleep(300);
      expect(() => s.nextId()).to.throw(IdGeneratorStoppedError, /leasing another/);
      // The other holder goes away: the service takes the id on a later attempt.
      await sql`update worker_id_leases set owner = null, expires_at = null
        where worker_id = ${WORKER_ID_MIN}`.execute(t.db);
      await waitUntil(() => s.isReady(), 8_000);
      expect((await row(WORKER_ID_MIN)).owner).to.equal(s.lease.owner);
      // Taken again; close() during the retries ends promptly and leaves the other's row.
      await take();
      await waitUntil(() => !s.isReady(), 1_000);
      const closing = performance.now();
      await s.close();
      // Promptly: well within the retries' own schedule, with room for a loaded machine.
      expect(performance.now() - closing).to.be.below(3_000);
      expect((await row(WORKER_ID_MIN)).owner).to.equal('someone-else');
    });

    it('close() returns within its bound while a replacement lease hangs on a silent PostgreSQL', async () => {
      const cut = await cuttablePool();
      const s = await createIdService(cut.db, {
        ttlMs: 600,
        heartbeatMs: 200,
        maxWorkerId: WORKER_ID_MIN,
      });
      // Taken by another owner: the renewal loses it, and every replacement attempt finds the
      // only id held, then sleeps and tries again.
      await sql`update worker_id_leases set owner = 'someone-else',
        expires_at = now() + interval '1 minute' where worker_id = ${WORKER_ID_MIN}`.execute(t.db);
      await s.lease.renew();
      expect(s.isReady()).to.equal(false);
      cut.silence(); // the next attempt now waits for an answer that never comes
      await sleep(400);
      const closing = performance.now();
      await s.close();
      expect(performance.now() - closing).to.be.below(4_000);
    });

    it('stops minting at close() and releases the worker id', async () => {
      const s = await service();
      s.nextId();
      await s.close();
      expect(() => s.nextId()).to.throw(IdGeneratorStoppedError);
      expect((await row(s.workerId)).owner).to.equal(null);
    });
  });
});

describe('migration 2026_12_01_140000_worker_id_leases', () => {
  let t: TestSchema;
  beforeEach(async () => {
    t = await createTestSchema('idmigrate', 2);
  });
  afterEach(async () => t.drop());

  it('replaces worker_id_epochs in place with one free row per worker id, marked past its run', async () => {
    // Back to the Redis-lease schema (undoing any later migration first), with an epoch a
    // fleet recorded there.
    const undone: string[] = [];
    while (!undone.includes('2026_12_01_140000_worker_id_leases')) {
      const names = (await migrateDown(t.db, t.schema)).results?.map((r) => r.migrationName);
      if (!names?.length) expect.fail(`never undone; undid ${undone.join(', ')}`);
      undone.push(...names);
    }
    await sql`insert into worker_id_epochs (prefix, epoch) values ('onceq', 'e1')`.execute(t.db);
    const before = Date.now();
    await migrateToLatest(t.db, t.schema);
    const { rows } = await sql<{ n: string; free: string; min: string; max: string }>`
      select count(*)::text as n, count(*) filter (where owner is null)::text as free,
             min(worker_id)::text as min, max(worker_id)::text as max
      from worker_id_leases`.execute(t.db);
    expect(rows[0]).to.deep.equal({ n: '1022', free: '1022', min: '1', max: '1022' });
    // Ids minted under the Redis leases assumed clocks within a second: the marks start past that.
    const marks = await sql<{ m: string }>`
      select min(reserved_until_ms)::text as m from worker_id_leases`.execute(t.db);
    expect(Number(marks.rows[0]!.m)).to.be.at.least(before + 1_000 - 50);
    const { rows: tables } = await sql<{ table_name: string }>`
      select table_name from information_schema.tables
      where table_schema = ${t.schema} and table_name like 'worker_id%'`.execute(t.db);
    expect(tables.map((r) => r.table_name)).to.deep.equal(['worker_id_leases']);
    // The range the generator stamps unchanged, and nothing else.
    const bad = await sql`insert into worker_id_leases (worker_id, reserved_until_ms)
      values (1023, 0)`
      .execute(t.db)
      .catch((err: unknown) => err);
    expect((bad as { code?: string }).code).to.equal('23514');
  });
});
