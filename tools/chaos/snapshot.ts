/**
 * Reads what the checker judges: the campaign schema's tables, the jobs left in the campaign's
 * queues and the token of every accepted message. Queues and tokens are read through the
 * campaign's Backend (BullMQ's Queue API, the token store's `inspect`), so the same code reads
 * Redis or, in PostgreSQL-only mode, BullMQ's tables and the token table. Also the drain probe,
 * which tells when the run has settled.
 */
import { sql } from 'kysely';
import type { Job, Queue } from 'bullmq';
import type { Db } from '../../src/db/create-db.js';
import type { TokenStore } from '../../src/core/token-store.js';
import { messageIdOf } from '../../src/core/message.js';
import { readLedgerRows } from '../support/ledger-invariants.js';
import type {
  AcceptedSnapshotRow,
  DbSnapshot,
  DeadLetterSnapshotRow,
  DeliveryFigures,
  JobSnapshot,
  TokenSnapshotRow,
} from './checker.js';

/** Token reads in flight at once while the snapshot inspects every accepted message's token. */
const TOKEN_READS = 8;

/** BullMQ states in which a job will still be delivered. */
export const LIVE_STATES = [
  'waiting',
  'active',
  'delayed',
  'prioritized',
  'waiting-children',
] as const;

/** Whether the schema has the dead-letter table (built by the dead-letter work). */
export async function hasDeadLetterTable(db: Db, schema: string): Promise<boolean> {
  const r = await sql<{ found: boolean }>`
    select to_regclass(${`${schema}.dead_letters`}) is not null as found`.execute(db);
  return r.rows[0]?.found === true;
}

/** The message id a job works on: its envelope's, else the one in its job id. */
function messageIdOfJob(job: Job): string | undefined {
  const fromData = (job.data as { messageId?: unknown } | null)?.messageId;
  if (typeof fromData === 'string') return fromData;
  return job.id ? messageIdOf(job.id) : undefined;
}

function jobSnapshot(job: Job, state: string): JobSnapshot {
  return {
    jobId: job.id ?? '',
    messageId: messageIdOfJob(job),
    name: job.name,
    state,
    failedReason: job.failedReason || undefined,
  };
}

/** Every job of some states, page by page. */
async function jobsIn(queue: Queue, states: readonly string[]): Promise<Job[]> {
  const all: Job[] = [];
  const page = 1_000;
  for (const state of states) {
    for (let start = 0; ; start += page) {
      // BullMQ's typed state list is narrower than the strings it accepts.
      const jobs = await queue.getJobs(
        [state] as Parameters<Queue['getJobs']>[0],
        start,
        start + page - 1,
        true,
      );
      all.push(...jobs.filter(Boolean).map((j) => Object.assign(j, { snapshotState: state })));
      if (jobs.length < page) break;
    }
  }
  return all;
}

/** What the token store holds for each accepted message's token. */
async function readTokens(
  tokens: TokenStore,
  accepted: readonly AcceptedSnapshotRow[],
): Promise<TokenSnapshotRow[]> {
  const rows: TokenSnapshotRow[] = new Array(accepted.length);
  let next = 0;
  const reader = async (): Promise<void> => {
    for (let i = next++; i < accepted.length; i = next++) {
      const { message_id: messageId, token } = accepted[i]!;
      const found = await tokens.inspect(token);
      rows[i] = {
        messageId,
        token,
        state: found?.state ?? 'missing',
        boundTo: found?.messageId,
      };
    }
  };
  await Promise.all(Array.from({ length: TOKEN_READS }, reader));
  return rows;
}

/**
 * Reads the snapshot the checker takes; with `tokens`, also what the token store holds for the
 * token of every accepted message.
 */
export async function readSnapshot(
  db: Db,
  schema: string,
  queues: Queue[],
  tokens?: TokenStore,
): Promise<DbSnapshot> {
  const accepted = await sql<AcceptedSnapshotRow>`
    select message_id::text as message_id, token, job_name, data
    from accepted_messages order by message_id`.execute(db);
  // The ledger's rows as the one invariant check reads them.
  const { inbox, accounts, transfers } = await readLedgerRows(db);
  let deadLetters: DeadLetterSnapshotRow[] | null = null;
  if (await hasDeadLetterTable(db, schema)) {
    const rows = await sql<DeadLetterSnapshotRow>`
      select message_id::text as message_id, job_name, reason
      from dead_letters order by message_id`.execute(db);
    deadLetters = rows.rows;
  }

  const failedJobs: JobSnapshot[] = [];
  const liveJobs: JobSnapshot[] = [];
  const deliveries: DeliveryFigures = {
    jobs: 0,
    deliveries: 0,
    stalled: 0,
    applied: 0,
    duplicates: 0,
  };
  for (const queue of queues) {
    for (const job of await jobsIn(queue, ['completed', 'failed', ...LIVE_STATES])) {
      const state = (job as Job & { snapshotState: string }).snapshotState;
      deliveries.jobs++;
      deliveries.deliveries += job.attemptsStarted ?? 0;
      deliveries.stalled += job.stalledCounter ?? 0;
      if (state === 'completed') {
        const outcome = (job.returnvalue as { outcome?: string } | null)?.outcome;
        if (outcome === 'applied') deliveries.applied++;
        else if (outcome === 'duplicate') deliveries.duplicates++;
      } else if (state === 'failed') {
        failedJobs.push(jobSnapshot(job, state));
      } else {
        liveJobs.push(jobSnapshot(job, state));
      }
    }
  }
  return {
    accepted: accepted.rows,
    inbox: [...inbox],
    accounts: [...accounts],
    transfers: [...transfers],
    deadLetters,
    failedJobs,
    liveJobs,
    deliveries,
    tokens: tokens ? await readTokens(tokens, accepted.rows) : undefined,
  };
}

/** What the drain loop watches. */
export interface DrainProbe {
  /** Jobs that will still be delivered. */
  live: number;
  /** Of the given message ids, those with no inbox row, no dead letter and no failed job. */
  unresolved: string[];
  applied: number;
}

/** How far the run is from settled. */
export async function probeDrain(
  db: Db,
  schema: string,
  queues: Queue[],
  acceptedIds: Iterable<string>,
): Promise<DrainProbe> {
  let live = 0;
  const failed = new Set<string>();
  const dead = await hasDeadLetterTable(db, schema);
  for (const queue of queues) {
    const counts = await queue.getJobCounts(...LIVE_STATES);
    live += Object.values(counts).reduce((a, b) => a + b, 0);
    // Without dead letters, a failed job is where a message ends (see the checker).
    if (dead) continue;
    for (const job of await jobsIn(queue, ['failed'])) {
      const id = messageIdOfJob(job);
      if (id) failed.add(id);
    }
  }
  const ids = [...acceptedIds].filter((id) => !failed.has(id));
  const resolved = new Set<string>();
  for (let i = 0; i < ids.length; i += 5_000) {
    const chunk = ids.slice(i, i + 5_000);
    if (chunk.length === 0) break;
    const rows = await sql<{ id: string }>`
      select message_id::text as id from inbox where message_id = any(${chunk}::bigint[])
      ${dead ? sql`union select message_id::text from dead_letters where message_id = any(${chunk}::bigint[])` : sql``}`.execute(
      db,
    );
    for (const r of rows.rows) resolved.add(r.id);
  }
  const appliedRow = await sql<{ n: string }>`select count(*)::text as n from inbox`.execute(db);
  return {
    live,
    unresolved: ids.filter((id) => !resolved.has(id)),
    applied: Number(appliedRow.rows[0]?.n ?? 0),
  };
}
