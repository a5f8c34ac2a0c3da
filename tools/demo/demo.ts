/**
 * `onceq demo`: drives the ledger example through the HTTP API the way real traffic breaks
 * things, then checks that every accepted message changed PostgreSQL exactly once.
 *
 * 1. opens accounts, then sends a stream of transfers (each with its own token);
 * 2. repeats a share of the requests with the same Idempotency-Key and body (a client retrying
 *    after a timeout): each must answer with the first answer's messageId;
 * 3. duplicates a share of the jobs in BullMQ (the same message under a second job id, as a
 *    producer enqueueing twice would): each extra delivery must be absorbed;
 * 4. SIGKILLs worker processes mid-stream and starts new ones;
 * 5. waits until every accepted message is applied or dead-lettered, and checks the ledger
 *    invariants (DESIGN.md section 7) over the demo's accounts.
 *
 * Without `--url` it runs a stack of its own: `onceq api` and `onceq worker` children against
 * REDIS_URL and DATABASE_URL, with an API key minted for the run and revoked after it. With
 * `--url` it drives that API (with `--key`), and still starts and kills worker children of its
 * own against REDIS_URL and DATABASE_URL, which must be the stack's.
 */
import { randomInt } from 'node:crypto';
import type { Queue } from 'bullmq';
import { sql } from 'kysely';
import cliProgress from 'cli-progress';
import type { Config } from '../../src/config.js';
import type { Db } from '../../src/db/create-db.js';
import { checkDatabase, createDb } from '../../src/db/create-db.js';
import { ensureDatabase } from '../../src/db/migrate.js';
import { migrateWithLedger } from '../../src/jobs/examples/ledger/migrations.js';
import { insertApiKey, revokeApiKey } from '../../src/db/api-keys.repository.js';
import { mintApiKey } from '../../src/core/api-key.js';
import { messageJobOptions } from '../../src/queues/message-job-options.js';
import {
  checkRedis,
  closeRedis,
  createRedisClient,
  describeRedis,
  type RedisClient,
} from '../../src/redis/connection.js';
import { createBackend } from '../../src/lib/connections.js';
import { spawnChild, type Child } from '../support/child.js';
import { checkLedgerInvariants, readLedgerRows } from '../support/ledger-invariants.js';
import { createDemoClient } from './client.js';

/** The ledger's queue (src/jobs/examples/ledger). */
const LEDGER_QUEUE = 'ledger';
/** Opening balance of each demo account, in minor units. */
export const OPENING_BALANCE = 1_000;
/** Largest transfer: big enough that some transfers are refused for want of funds. */
export const MAX_AMOUNT = 400;
/** How long a child may take to start (tsx compiles on the fly on a slow machine). */
const CHILD_START_MS = 60_000;

/** Options of {@link runDemo}. */
export interface DemoOptions {
  /** The API to drive; unset: the demo starts its own. */
  url?: string;
  /** API key for `url`. */
  key?: string;
  /** @defaultValue 10 */
  accounts?: number;
  /** @defaultValue 1000 */
  transfers?: number;
  /** Share of requests sent twice with the same Idempotency-Key. @defaultValue 0.1 */
  repeatShare?: number;
  /** Share of jobs added to BullMQ a second time under another job id. @defaultValue 0.1 */
  duplicateShare?: number;
  /** Worker processes started by the demo. @defaultValue 2 */
  workers?: number;
  /** Worker processes killed (SIGKILL) and replaced during the run. @defaultValue 2 */
  kills?: number;
  /** Requests in flight. @defaultValue 16 */
  concurrency?: number;
  /** Lock duration (and claim lease) of the demo's workers: how soon a crash is recovered. */
  lockDuration?: string;
  /** Bound on waiting for every message to settle. @defaultValue 120 s */
  settleTimeoutMs?: number;
  /** Show progress bars on stderr. @defaultValue stderr is a terminal */
  progress?: boolean;
  /** Where the report goes. @defaultValue stdout */
  out?: (text: string) => void;
}

/** What the demo found. */
export interface DemoReport {
  requests: number;
  accepted: number;
  repeatedRequests: number;
  duplicateJobs: number;
  workerKills: number;
  deliveries: number;
  duplicatesAbsorbed: number;
  effectsCommitted: number;
  applied: number;
  rejected: number;
  deadLetters: number;
  /** Answers the client waited out as their `Retry-After` said, by status (503, 429, 409). */
  waitedOut: Record<number, number>;
  /** Requests that got no answer (the API restarting) and were sent again with the same key. */
  unanswered: number;
  /** Each invariant with whether it held. */
  invariants: { name: string; holds: boolean; detail?: string }[];
  invariantsHold: boolean;
}

interface Sent {
  messageId: string;
  jobId: string;
  name: string;
  token: string;
  data: unknown;
}

/** Runs the demo; resolves with its report (the caller decides the exit code). */
export async function runDemo(config: Config, options: DemoOptions = {}): Promise<DemoReport> {
  const o = {
    accounts: Math.max(2, options.accounts ?? 10),
    transfers: Math.max(0, options.transfers ?? 1_000),
    repeatShare: options.repeatShare ?? 0.1,
    duplicateShare: options.duplicateShare ?? 0.1,
    workers: Math.max(1, options.workers ?? 2),
    kills: Math.max(0, options.kills ?? 2),
    concurrency: Math.max(1, options.concurrency ?? 16),
    lockDuration: options.lockDuration ?? '2s',
    settleTimeoutMs: options.settleTimeoutMs ?? 120_000,
    progress: options.progress ?? process.stderr.isTTY === true,
  };
  const out = options.out ?? ((text: string) => process.stdout.write(text));
  const say = (text: string) => {
    if (o.progress) process.stderr.write(`${text}\n`);
  };
  const ownStack = options.url === undefined;
  if (!ownStack && !options.key) {
    throw new Error('onceq demo --url needs an API key: --key or ONCEQ_API_KEY');
  }
  if (ownStack) await ensureDatabase(config.databaseUrl);
  const db = createDb({
    url: config.databaseUrl,
    schema: config.databaseSchema,
    poolSize: 4,
    applicationName: 'onceq-demo',
  });
  // The stack's own queues, in the mode its processes run in: a Redis, a cluster, or PostgreSQL.
  const target = config.redisClusterNodes ?? config.redisUrl;
  const redis: RedisClient | undefined =
    target === undefined ? undefined : createRedisClient(target, { connectionName: 'onceq-demo' });
  const backend = createBackend({
    redis,
    database: config.databaseUrl,
    prefix: config.prefix,
    schema: config.databaseSchema,
    poolSize: 4,
  });
  const children = new Set<Child>();
  let queue: Queue | undefined;
  let mintedKeyId: string | undefined;
  try {
    if (redis) await checkRedis(redis, config.redisUrl ?? describeRedis(redis));
    await checkDatabase(db, config.databaseUrl);
    queue = backend.newQueue(LEDGER_QUEUE);
    queue.on('error', () => undefined);

    // The stack: an API (unless given one) and the workers that the demo will kill.
    let url = options.url?.replace(/\/+$/, '');
    let key = options.key;
    if (ownStack) {
      await migrateWithLedger(db, config.databaseSchema);
      const minted = mintApiKey();
      await insertApiKey(db, { id: minted.id, principal: 'demo', hash: minted.hash, admin: false });
      mintedKeyId = minted.id;
      key = minted.key;
      const api = spawnOnceq('api', ['api'], {
        PORT: '0',
        ONCEQ_HOST: '127.0.0.1',
        LOG_LEVEL: 'info',
        ONCEQ_METRICS_PORT: undefined,
      });
      children.add(api);
      const line = await api.waitFor('"api listening"', CHILD_START_MS);
      url = (JSON.parse(line) as { address: string }).address;
    }
    const startWorker = () => {
      const worker = spawnOnceq('worker', ['worker'], {
        LOG_LEVEL: 'info',
        ONCEQ_LOCK_DURATION: o.lockDuration,
        // Several workers on one machine: a fixed metrics port would collide.
        ONCEQ_METRICS_PORT: undefined,
      });
      children.add(worker);
      return worker;
    };
    const workers: Child[] = [];
    for (let i = 0; i < o.workers; i++) workers.push(startWorker());
    await Promise.all(workers.map((w) => w.waitFor('"worker started"', CHILD_START_MS)));
    say(`demo: API at ${url}, ${o.workers} worker process(es)`);

    const client = createDemoClient(url!, key!, {
      onWait: (status, waitMs, path) =>
        say(`demo: ${path} answered ${status}; sending it again in ${waitMs} ms`),
    });
    const sent: Sent[] = [];
    const counts = { requests: 0, repeated: 0, duplicateJobs: 0, kills: 0 };
    const violations: string[] = [];

    // Accounts first: transfers need them to exist.
    const accountIds: string[] = [];
    for (let i = 0; i < o.accounts; i++) {
      const data = { owner: `demo-${i}`, openingBalance: OPENING_BALANCE };
      const token = await client.token();
      const answer = await client.enqueue(token, 'account.open', data);
      counts.requests++;
      sent.push({ ...answer, name: 'account.open', token, data });
      accountIds.push(answer.messageId);
    }
    await waitUntil(
      'the accounts to be opened',
      async () => (await countRows(db, 'accounts', 'id', accountIds)) === accountIds.length,
      o.settleTimeoutMs,
    );

    const bar = o.progress
      ? new cliProgress.SingleBar(
          { format: 'transfers {bar} {value}/{total} | kills {kills}', hideCursor: true },
          cliProgress.Presets.shades_classic,
        )
      : undefined;
    bar?.start(o.transfers, 0, { kills: 0 });
    const killAt = new Set(
      Array.from({ length: o.kills }, (_, k) =>
        Math.floor((o.transfers * (k + 1)) / (o.kills + 1)),
      ),
    );
    let next = 0;
    let done = 0;
    let killing = Promise.resolve();
    const sender = async () => {
      for (;;) {
        const i = next++;
        if (i >= o.transfers) return;
        if (killAt.has(i)) {
          killAt.delete(i);
          // A crash mid-stream: the victim's deliveries in flight are recovered by the others
          // (or by its replacement) once their locks run out.
          const victim = workers.shift()!;
          killing = killing.then(async () => {
            await victim.kill();
            children.delete(victim);
            counts.kills++;
            workers.push(startWorker());
          });
        }
        const [a, b] = pickTwo(accountIds);
        const data = { fromId: a, toId: b, amount: randomInt(1, MAX_AMOUNT + 1) };
        const token = await client.token();
        const answer = await client.enqueue(token, 'ledger.transfer', data);
        counts.requests++;
        const entry = { ...answer, name: 'ledger.transfer', token, data };
        sent.push(entry);
        if (Math.random() < o.repeatShare) {
          // The same request again: the first answer comes back, no second message.
          const again = await client.enqueue(token, 'ledger.transfer', data);
          counts.requests++;
          counts.repeated++;
          if (again.messageId !== answer.messageId || !again.replayed) {
            violations.push(
              `repeated request answered ${again.messageId}, not ${answer.messageId}`,
            );
          }
        }
        if (Math.random() < o.duplicateShare) {
          // The same message under a second job id: a second delivery the worker must absorb.
          await queue!.add(
            entry.name,
            { messageId: entry.messageId, token: entry.token, data: entry.data },
            { ...messageJobOptions(entry.messageId), jobId: `${entry.jobId}-dup` },
          );
          counts.duplicateJobs++;
        }
        bar?.update(++done, { kills: counts.kills });
      }
    };
    await Promise.all(Array.from({ length: o.concurrency }, sender));
    await killing;
    bar?.update(done, { kills: counts.kills });
    bar?.stop();

    // Settle: every accepted message applied or dead-lettered, every duplicate job finished.
    const messageIds = sent.map((s) => s.messageId);
    const dupJobIds = sent.map((s) => `${s.jobId}-dup`);
    const settleBar = o.progress
      ? new cliProgress.SingleBar(
          { format: 'settling  {bar} {value}/{total} messages', hideCursor: true },
          cliProgress.Presets.shades_classic,
        )
      : undefined;
    settleBar?.start(messageIds.length, 0);
    await waitUntil(
      'every accepted message to be applied or dead-lettered',
      async () => {
        const settled = await countSettled(db, messageIds);
        settleBar?.update(settled);
        if (settled < messageIds.length) return false;
        const states = await Promise.all(dupJobIds.map((id) => queue!.getJobState(id)));
        return states.every((s) => s === 'completed' || s === 'failed' || s === 'unknown');
      },
      o.settleTimeoutMs,
    );
    settleBar?.stop();

    const report = await buildReport(db, queue, sent, accountIds, counts, violations, {
      waitedOut: { ...client.waited },
      unanswered: client.unanswered,
    });
    out(formatReport(report));
    return report;
  } finally {
    await Promise.all([...children].map((c) => c.stop(15_000)));
    await queue?.close();
    await backend.close();
    if (mintedKeyId) await revokeApiKey(db, mintedKeyId).catch(() => undefined);
    if (redis) await closeRedis(redis);
    await db.destroy();
  }
}

function pickTwo(ids: string[]): [string, string] {
  const a = randomInt(ids.length);
  let b = randomInt(ids.length - 1);
  if (b >= a) b++;
  return [ids[a]!, ids[b]!];
}

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`demo: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function countRows(db: Db, table: string, column: string, ids: string[]): Promise<number> {
  const { rows } = await sql<{ n: string }>`
    select count(*)::text as n from ${sql.table(table)}
    where ${sql.ref(column)} = any(${ids}::bigint[])`.execute(db);
  return Number(rows[0]!.n);
}

/** Messages with an inbox row or a pending dead letter. */
async function countSettled(db: Db, ids: string[]): Promise<number> {
  const { rows } = await sql<{ n: string }>`
    select count(*)::text as n from unnest(${ids}::bigint[]) as m(id)
    where exists (select 1 from inbox i where i.message_id = m.id)
       or exists (select 1 from dead_letters d where d.message_id = m.id
                    and d.replayed_at is null and d.purged_at is null)`.execute(db);
  return Number(rows[0]!.n);
}

async function buildReport(
  db: Db,
  queue: Queue,
  sent: Sent[],
  accountIds: string[],
  counts: { requests: number; repeated: number; duplicateJobs: number; kills: number },
  violations: string[],
  { waitedOut, unanswered }: { waitedOut: Record<number, number>; unanswered: number },
): Promise<DemoReport> {
  const messageIds = sent.map((s) => s.messageId);

  // Deliveries and duplicates from BullMQ: every job of the run, the duplicated copies included.
  const jobIds = [...sent.map((s) => s.jobId), ...sent.map((s) => `${s.jobId}-dup`)];
  let deliveries = 0;
  let duplicateDeliveries = 0;
  for (let i = 0; i < jobIds.length; i += 200) {
    const jobs = await Promise.all(jobIds.slice(i, i + 200).map((id) => queue.getJob(id)));
    for (const job of jobs) {
      if (!job) continue;
      deliveries += Math.max(job.attemptsStarted ?? 0, job.finishedOn ? 1 : 0);
      if ((job.returnvalue as { outcome?: string } | null)?.outcome === 'duplicate') {
        duplicateDeliveries++;
      }
    }
  }

  const { rows: inbox } = await sql<{ status: string | null; n: string }>`
    select result->>'status' as status, count(*)::text as n from inbox
    where message_id = any(${messageIds}::bigint[]) group by 1`.execute(db);
  const byStatus = new Map(inbox.map((r) => [r.status ?? '', Number(r.n)]));
  const effectsCommitted = [...byStatus.values()].reduce((a, b) => a + b, 0);
  const { rows: dl } = await sql<{ n: string }>`
    select count(*)::text as n from dead_letters
    where message_id = any(${messageIds}::bigint[])
      and replayed_at is null and purged_at is null`.execute(db);
  const deadLetters = Number(dl[0]!.n);

  const invariants: DemoReport['invariants'] = [];
  const check = (name: string, holds: boolean, detail?: string) =>
    invariants.push({ name, holds, ...(holds || !detail ? {} : { detail }) });

  const settled = await countSettled(db, messageIds);
  check(
    'every accepted message applied once or dead-lettered',
    settled === messageIds.length && effectsCommitted + deadLetters >= messageIds.length,
    `${messageIds.length - settled} of ${messageIds.length} unsettled`,
  );
  check(
    'repeated requests answered with the first messageId',
    violations.length === 0,
    violations.slice(0, 3).join('; '),
  );

  // The ledger invariants over the demo's own accounts and messages (a stack given by --url may
  // hold others'): every one of its accounts was opened by one of its messages.
  const ledger = checkLedgerInvariants(await readLedgerRows(db, { accountIds, messageIds }), {
    messagesComplete: true,
  });
  check(
    'sum of balances equals sum of opening balances',
    ledger.sumBalances === ledger.sumOpening,
    `balances ${ledger.sumBalances}, opening ${ledger.sumOpening}`,
  );
  check(
    'ledger invariants: balances from transfers, one transfer row per applied transfer, ' +
      'versions, owners, opens',
    ledger.ok,
    `${ledger.violations.length} violation(s): ${ledger.violations.slice(0, 3).join('; ')}`,
  );

  return {
    requests: counts.requests,
    accepted: messageIds.length,
    repeatedRequests: counts.repeated,
    duplicateJobs: counts.duplicateJobs,
    workerKills: counts.kills,
    deliveries,
    duplicatesAbsorbed: counts.repeated + duplicateDeliveries,
    effectsCommitted,
    applied: (byStatus.get('applied') ?? 0) + (byStatus.get('closed') ?? 0),
    rejected: byStatus.get('rejected') ?? 0,
    deadLetters,
    waitedOut,
    unanswered,
    invariants,
    invariantsHold: invariants.every((i) => i.holds),
  };
}

/** The report as a few aligned lines. */
export function formatReport(report: DemoReport): string {
  const rows: [string, string | number][] = [
    ['requests sent', report.requests],
    ['messages accepted', report.accepted],
    ['repeated requests (same Idempotency-Key)', report.repeatedRequests],
    ['duplicated jobs (same message, second job)', report.duplicateJobs],
    ['worker processes killed', report.workerKills],
    ['deliveries', report.deliveries],
    ['duplicates absorbed', report.duplicatesAbsorbed],
    [
      'effects committed',
      `${report.effectsCommitted} (applied ${report.applied}, rejected ${report.rejected})`,
    ],
    ['dead letters', report.deadLetters],
    ['answers waited out (Retry-After)', formatWaits(report.waitedOut)],
    ['requests sent again after no answer', report.unanswered],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  const lines = ['', 'onceq demo', ...rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`), ''];
  for (const inv of report.invariants) {
    lines.push(
      `  ${inv.holds ? 'ok  ' : 'FAIL'}  ${inv.name}${inv.detail ? `: ${inv.detail}` : ''}`,
    );
  }
  lines.push('', `invariants hold: ${report.invariantsHold ? 'yes' : 'no'}`, '');
  return lines.join('\n');
}

function formatWaits(waits: Record<number, number>): string {
  const entries = Object.entries(waits);
  const total = entries.reduce((n, [, count]) => n + count, 0);
  return total === 0 ? '0' : `${total} (${entries.map(([s, n]) => `${s}: ${n}`).join(', ')})`;
}

/**
 * Spawns `onceq <args>` as the demo's child, with the environment of this process plus `env`
 * (a value of `undefined` removes a variable).
 */
function spawnOnceq(role: string, args: string[], env: Record<string, string | undefined>): Child {
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) delete childEnv[name];
    else childEnv[name] = value;
  }
  // process.argv[1] is this CLI's entry point (tools/cli.ts, or bin/onceq.js, which runs
  // dist/tools/cli.js); execArgv carries tsx's loader when it runs the sources, so the child
  // runs exactly what the parent runs.
  return spawnChild({
    name: role,
    command: process.execPath,
    args: [...process.execArgv, process.argv[1]!, ...args],
    env: childEnv,
    // Enough for error messages; a worker logs a line per job.
    keepChars: 64_000,
  });
}
