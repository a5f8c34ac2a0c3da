/**
 * `onceq bench --partitions` (`npm run bench:partitions`): what partitioning inbox and
 * accepted_messages by day (migration 2026_12_01_180000_partition_by_day) changes at scale.
 *
 * Two throwaway schemas of the test server, dropped after: one migrated to the shape before
 * partitioning, one to the latest. Each is filled to `rows` rows per table (generate_series,
 * spread over `days` UTC days of snowflakes, tokens of the real length in random order), then:
 *
 * - inbox-shaped inserts: the worker's group transaction (`runGroupTransaction`: one multi-row
 *   INSERT ... ON CONFLICT (message_id), the pruning-cutoff check, the result UPDATE, COMMIT) in
 *   groups of 50, two in flight, as group commit runs them; ids above the newest, as minted;
 * - acceptance-shaped inserts: the producer's acceptance writer (`createAcceptanceWriter`: batches
 *   of up to 500, three in flight), fresh random tokens;
 * - token lookups (`findAcceptedByToken`) of existing tokens: the producer's replay path;
 * - pruning one day: the pruner's pass (`createPruner().runOnce()`, no pause between batches),
 *   batched DELETEs in the old shape, DROP of the day's partitions in the new one.
 *
 * Each figure is the median of `rounds` rounds; pruning takes a day per round, oldest first.
 * Last, the old-shape schema is migrated in place to the partitioned shape, and timed.
 */
import { randomBytes } from 'node:crypto';
import { Migrator, sql } from 'kysely';
import { createDb, type Db } from '../../src/db/create-db.js';
import { FileMigrationProvider, migrateToLatest } from '../../src/db/migrate.js';
import { runGroupTransaction, type GroupMember } from '../../src/db/group-transaction.js';
import {
  createAcceptanceWriter,
  findAcceptedByToken,
} from '../../src/db/accepted-messages.repository.js';
import { createPruner } from '../../src/worker/pruner.js';
import { firstSnowflakeAt } from '../../src/core/snowflake.js';
import { PRUNE_MARGIN_MS } from '../../src/core/dead-letter.js';
import {
  DEFAULT_DEDUPE_WINDOW_MS,
  DEFAULT_GROUP_COMMIT_LOCK_TIMEOUT_MS,
} from '../../src/core/defaults.js';
import { generateToken } from '../../src/core/token.js';

const DAY = 86_400_000;
/** The last migration before partitioning: the old shape. */
const BEFORE_PARTITIONING = '2026_12_01_170000_queue_backends';

/** Options of {@link runPartitionsBench}. */
export interface PartitionsBenchOptions {
  /** PostgreSQL to fill (a throwaway schema of it). */
  databaseUrl: string;
  /** Rows per table before measuring. @defaultValue 20,000,000 */
  rows?: number;
  /** Days the rows spread over (one partition each). @defaultValue 10 */
  days?: number;
  /** Rounds per figure. @defaultValue 3 */
  rounds?: number;
  /** Rows inserted per round and shape. @defaultValue 20,000 */
  inserts?: number;
  /** Token lookups per round. @defaultValue 2,000 */
  lookups?: number;
  log?: (line: string) => void;
}

/** One shape's figures (medians). */
export interface ShapeFigures {
  inboxRowsPerSec: number;
  acceptRowsPerSec: number;
  lookupMicros: number;
  /** Seconds to prune one day (rows / days of each table). */
  pruneDaySec: number;
  fillSec: number;
}

/** What {@link runPartitionsBench} measured. */
export interface PartitionsBenchResult {
  rows: number;
  days: number;
  rounds: number;
  before: ShapeFigures;
  after: ShapeFigures;
  /** Seconds the in-place migration of the old-shape schema took (what was left of its rows). */
  migrateSec: number;
  migratedRows: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const seconds = (fromNs: bigint): number => Number(process.hrtime.bigint() - fromNs) / 1e9;

/** Runs the comparison; resolves to the figures (also logged as a table). */
export async function runPartitionsBench(
  options: PartitionsBenchOptions,
): Promise<PartitionsBenchResult> {
  const rows = options.rows ?? 20_000_000;
  const days = options.days ?? 10;
  const rounds = options.rounds ?? 3;
  const inserts = options.inserts ?? 20_000;
  const lookups = options.lookups ?? 2_000;
  const log = options.log ?? ((line: string) => console.log(line));
  if (rounds + 1 > days) throw new RangeError('days must exceed rounds: each round prunes a day');
  const perDay = Math.ceil(rows / days);
  // Days from tomorrow (UTC): the partitioned schema's legacy partition ends at tomorrow, so
  // every filled day has a partition of its own, as in a table partitioned for a while.
  const firstDayMs = Math.floor(Date.now() / DAY) * DAY + DAY;
  const tag = randomBytes(4).toString('hex');
  const schemas = { before: `bench_parts_old_${tag}`, after: `bench_parts_new_${tag}` };
  const dbs: Db[] = [];
  const open = (schema: string): Db => {
    const db = createDb({
      url: options.databaseUrl,
      schema,
      poolSize: 8,
      applicationName: 'bench',
    });
    dbs.push(db);
    return db;
  };
  try {
    log(`filling ${rows.toLocaleString()} rows a table over ${days} days, ${rounds} rounds`);
    const oldDb = open(schemas.before);
    await sql`create schema ${sql.id(schemas.before)}`.execute(oldDb);
    const migrated = await new Migrator({
      db: oldDb,
      provider: new FileMigrationProvider(),
      migrationTableSchema: schemas.before,
    }).migrateTo(BEFORE_PARTITIONING);
    if (migrated.error) throw migrated.error;
    const newDb = open(schemas.after);
    await migrateToLatest(newDb, schemas.after);
    await sql`select onceq_ensure_partitions(${days + 2}::integer)`.execute(newDb);

    const shapes = [
      { label: 'before', db: oldDb, runs: emptyRuns() },
      { label: 'after', db: newDb, runs: emptyRuns() },
    ];
    const fills: number[] = [];
    for (const shape of shapes) fills.push(await fill(shape.db, shape.label));
    // Rounds alternate between the shapes, so a neighbour's load on the shared machine weighs on
    // both alike.
    for (let r = 0; r < rounds; r++) {
      for (const shape of shapes) await round(shape.db, shape.label, r, shape.runs);
    }
    const [before, after] = shapes.map((shape, i) => figures(shape.runs, fills[i]!)) as [
      ShapeFigures,
      ShapeFigures,
    ];

    const t0 = process.hrtime.bigint();
    const left = await sql<{ n: string }>`
      select ((select count(*) from inbox) + (select count(*) from accepted_messages))::text as n`.execute(
      oldDb,
    );
    await migrateToLatest(oldDb, schemas.before);
    const migrateSec = seconds(t0);
    const migratedRows = Number(left.rows[0]!.n);
    log(`migrated ${migratedRows.toLocaleString()} rows in place in ${migrateSec.toFixed(2)} s`);

    const result = { rows, days, rounds, before, after, migrateSec, migratedRows };
    const row = (name: string, b: number, a: number, unit: string) =>
      log(
        `${name.padEnd(28)} ${b.toFixed(unit === 'rows/s' ? 0 : 2).padStart(10)} ` +
          `${a.toFixed(unit === 'rows/s' ? 0 : 2).padStart(10)}  ${(a / b).toFixed(2)}x  ${unit}`,
      );
    log(`${'figure'.padEnd(28)} ${'before'.padStart(10)} ${'after'.padStart(10)}  ratio`);
    row('inbox insert (group 50)', before.inboxRowsPerSec, after.inboxRowsPerSec, 'rows/s');
    row('acceptance insert (writer)', before.acceptRowsPerSec, after.acceptRowsPerSec, 'rows/s');
    row('token lookup', before.lookupMicros, after.lookupMicros, 'µs');
    row('prune one day', before.pruneDaySec, after.pruneDaySec, 's');
    row('fill', before.fillSec, after.fillSec, 's');
    log(JSON.stringify({ bench: 'partitions', ...result }));
    return result;
  } finally {
    for (const [i, schema] of Object.values(schemas).entries()) {
      const db = dbs[i] ?? dbs[0];
      if (db)
        await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db).catch(() => {});
    }
    await Promise.all(dbs.map((db) => db.destroy()));
  }

  function dayStartId(d: number): bigint {
    return BigInt(firstSnowflakeAt(firstDayMs + d * DAY));
  }

  async function fill(db: Db, label: string): Promise<number> {
    const step = (dayStartId(1) - dayStartId(0)) / BigInt(perDay + inserts * rounds * 2 + 1);
    const t0 = process.hrtime.bigint();
    for (let d = 0; d < days; d++) {
      const base = dayStartId(d);
      // Triggers off for the fill: it is one statement a day, not the acceptances measured.
      await db.transaction().execute(async (trx) => {
        await sql`set local session_replication_role = replica`.execute(trx);
        await sql`
          insert into inbox (message_id, queue, job_name, result)
          select ${base.toString()}::bigint + g * ${step.toString()}::bigint, 'bench', 'bench.job',
                 '{"ok":true}'::jsonb
          from generate_series(0, ${perDay - 1}) g`.execute(trx);
        await sql`
          insert into accepted_messages
            (message_id, principal, token, fingerprint, queue, job_name, data, job_id)
          select id, 'bench', 'oqt_' || substr(md5(id::text) || md5('x' || id::text), 1, 32),
                 'fp', 'bench', 'bench.job', '{"n":1}'::jsonb, 'm-' || id::text
          from (select ${base.toString()}::bigint + g * ${step.toString()}::bigint as id
                from generate_series(0, ${perDay - 1}) g) s`.execute(trx);
      });
    }
    await sql`vacuum analyze inbox`.execute(db);
    await sql`vacuum analyze accepted_messages`.execute(db);
    const fillSec = seconds(t0);
    log(`${label}: filled in ${fillSec.toFixed(1)} s`);
    // New ids continue the last day, above what it holds: the day being written.
    nextIds.set(db, dayStartId(days - 1) + BigInt(perDay) * step);
    return fillSec;
  }

  async function round(db: Db, label: string, r: number, runs: Runs): Promise<void> {
    const nextId = () => {
      const id = nextIds.get(db)! + 1n;
      nextIds.set(db, id);
      return id.toString();
    };
    let t = process.hrtime.bigint();
    const ids = Array.from({ length: inserts }, nextId);
    const groups: string[][] = [];
    for (let i = 0; i < ids.length; i += 50) groups.push(ids.slice(i, i + 50));
    let g = 0;
    await Promise.all(
      [0, 1].map(async () => {
        while (g < groups.length) {
          const members: GroupMember[] = groups[g++]!.map((messageId) => ({
            key: { messageId, queue: 'bench', jobName: 'bench.job' },
            body: async () => ({ ok: true }),
          }));
          const out = await runGroupTransaction(db, members, {
            savepoints: false,
            lockTimeoutMs: DEFAULT_GROUP_COMMIT_LOCK_TIMEOUT_MS,
          });
          if (out.some((o) => o.kind !== 'applied')) throw new Error('a bench group failed');
        }
      }),
    );
    runs.inbox.push(inserts / seconds(t));

    const writer = createAcceptanceWriter(db);
    t = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: inserts }, () => {
        const messageId = nextId();
        return writer.record({
          messageId,
          principal: 'bench',
          token: generateToken(),
          fingerprint: 'fp',
          queue: 'bench',
          jobName: 'bench.job',
          data: { n: 1 },
          jobId: `m-${messageId}`,
          options: {},
        });
      }),
    );
    runs.accept.push(inserts / seconds(t));

    const sample = await sql<{ token: string }>`
      select token from accepted_messages tablesample system (1) limit ${lookups}`.execute(db);
    t = process.hrtime.bigint();
    for (const { token } of sample.rows) {
      if (!(await findAcceptedByToken(db, 'bench', token))) throw new Error('lookup missed');
    }
    runs.lookup.push((seconds(t) * 1e6) / Math.max(1, sample.rows.length));

    // Prune day r: the pruner's pass at the moment day r + 1 starts to fall out of the window.
    const nowMs = firstDayMs + (r + 1) * DAY + DEFAULT_DEDUPE_WINDOW_MS + PRUNE_MARGIN_MS;
    const pruner = createPruner({ db, now: () => nowMs, pauseMs: 0 });
    t = process.hrtime.bigint();
    const report = await pruner.runOnce();
    runs.prune.push(seconds(t));
    await pruner.close();
    log(
      `${label} round ${r + 1}: inbox ${runs.inbox[r]!.toFixed(0)}/s, accept ` +
        `${runs.accept[r]!.toFixed(0)}/s, lookup ${runs.lookup[r]!.toFixed(0)} µs, prune ` +
        `${runs.prune[r]!.toFixed(2)} s (${JSON.stringify(report)})`,
    );
  }
}

interface Runs {
  inbox: number[];
  accept: number[];
  lookup: number[];
  prune: number[];
}

const nextIds = new Map<Db, bigint>();

function emptyRuns(): Runs {
  return { inbox: [], accept: [], lookup: [], prune: [] };
}

function figures(runs: Runs, fillSec: number): ShapeFigures {
  return {
    inboxRowsPerSec: median(runs.inbox),
    acceptRowsPerSec: median(runs.accept),
    lookupMicros: median(runs.lookup),
    pruneDaySec: median(runs.prune),
    fillSec,
  };
}

/** `onceq bench --partitions`: parses the CLI's strings and runs {@link runPartitionsBench}. */
export async function runPartitionsBenchCommand(opts: {
  rows?: string;
  days?: string;
  rounds?: string;
  inserts?: string;
}): Promise<void> {
  const int = (name: string, value: string | undefined): number | undefined => {
    if (value === undefined) return undefined;
    const n = Number(value.replace(/_/g, ''));
    if (!Number.isInteger(n) || n < 1)
      throw new RangeError(`--${name} must be a positive integer, got ${value}`);
    return n;
  };
  await runPartitionsBench({
    databaseUrl:
      process.env.DATABASE_URL ??
      process.env.TEST_DATABASE_URL ??
      'postgres://postgres@127.0.0.1:5432/onceq_test',
    rows: int('rows', opts.rows),
    days: int('days', opts.days),
    rounds: int('rounds', opts.rounds),
    inserts: int('inserts', opts.inserts),
  });
}
