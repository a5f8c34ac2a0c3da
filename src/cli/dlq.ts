/**
 * `onceq dlq list|show|replay|purge`: inspect, replay and purge dead letters. Thin: it parses
 * and checks the arguments before connecting to anything, then calls the dead-letter modules.
 * Human output by default, `--json` for scripts. Exit code 1 for bad arguments, unknown ids
 * (with nothing touched) and replays where some letters failed.
 */
import cliProgress from 'cli-progress';
import { QUEUE_NAME, QUEUE_NAME_RULE } from '../config.js';
import { ErrorCode, OnceqError } from '../core/errors.js';
import { parseDuration } from '../core/duration.js';
import { isSnowflake } from '../core/snowflake.js';
import {
  DEAD_LETTER_REASONS,
  deadLetterQueueName,
  isDeadLetterReason,
  type DeadLetterReason,
} from '../core/dead-letter.js';
import { jobIdFor } from '../core/message.js';
import type { DeadLetterRow } from '../db/database.js';
import {
  countPendingDeadLetters,
  findDeadLetter,
  listDeadLetters,
  purgeDeadLetters,
} from '../db/dead-letters.repository.js';
import { replayDeadLetters, type ReplaySummary } from '../worker/dead-letter-replay.js';
import { createQueueCache } from '../queues/queue-cache.js';
import { openRuntime, type Runtime } from './runtime.js';
import { loadRegistry } from './jobs.js';
import type { QueuePartitions } from '../core/queue-partitions.js';

/** Largest `--limit` of `dlq list`. */
export const MAX_LIST_LIMIT = 10_000;
/** Replays of at least this many letters show a progress bar (on a terminal, without --json). */
export const PROGRESS_THRESHOLD = 1_000;

/** Bad command-line input: one line, exit code 1, nothing connected. */
class UsageError extends OnceqError {
  constructor(message: string) {
    super(ErrorCode.BadRequest, message);
  }
}

interface FilterFlags {
  queue?: string;
  reason?: string;
}

function checkFilters(opts: FilterFlags): { queue?: string; reason?: DeadLetterReason } {
  if (opts.queue !== undefined && !QUEUE_NAME.test(opts.queue)) {
    throw new UsageError(`--queue ${opts.queue}: a queue name is ${QUEUE_NAME_RULE}`);
  }
  if (opts.reason !== undefined && !isDeadLetterReason(opts.reason)) {
    throw new UsageError(
      `--reason ${opts.reason}: expected one of ${DEAD_LETTER_REASONS.join(', ')}`,
    );
  }
  return { queue: opts.queue, reason: opts.reason as DeadLetterReason | undefined };
}

/** Options of {@link runDlqList}. */
export interface DlqListOptions extends FilterFlags {
  limit?: string;
  json?: boolean;
  all?: boolean;
}

/** `dlq list`: pending dead letters, oldest message first. */
export async function runDlqList(opts: DlqListOptions): Promise<number> {
  const filters = checkFilters(opts);
  const limit = opts.limit === undefined ? 100 : Number(opts.limit);
  if (!/^\d+$/.test(opts.limit ?? '100') || limit < 1 || limit > MAX_LIST_LIMIT) {
    throw new UsageError(`--limit ${opts.limit}: expected an integer from 1 to ${MAX_LIST_LIMIT}`);
  }
  const runtime = await openRuntime({ failFast: true, name: 'dlq' });
  try {
    const rows = await listDeadLetters(runtime.db, {
      ...filters,
      limit,
      includeSettled: opts.all,
    });
    if (opts.json) {
      for (const row of rows) process.stdout.write(`${JSON.stringify(toJson(row))}\n`);
      return 0;
    }
    const counts = await countPendingDeadLetters(runtime.db);
    const pending = counts.reduce((n, c) => n + c.count, 0);
    if (rows.length === 0) {
      process.stdout.write('no dead letters match\n');
    } else {
      printTable(rows);
    }
    process.stdout.write(
      `\n${rows.length} shown; ${pending} pending in all` +
        (counts.length
          ? ` (${counts.map((c) => `${c.queue}/${c.reason}: ${c.count}`).join(', ')})`
          : '') +
        '\n',
    );
    return 0;
  } finally {
    await runtime.close();
  }
}

/** `dlq show ID`: one dead letter, everything it records, as JSON. */
export async function runDlqShow(id: string): Promise<number> {
  if (!isSnowflake(id)) throw new UsageError(`no dead letter for message ${id}`);
  const runtime = await openRuntime({ failFast: true, name: 'dlq' });
  try {
    const row = await findDeadLetter(runtime.db, id);
    if (!row) throw new UsageError(`no dead letter for message ${id}`);
    process.stdout.write(`${JSON.stringify(toJson(row, true), null, 2)}\n`);
    return 0;
  } finally {
    await runtime.close();
  }
}

/** Options of {@link runDlqReplay}. */
export interface DlqReplayOptions extends FilterFlags {
  all?: boolean;
  dryRun?: boolean;
  json?: boolean;
}

/** `dlq replay ID… | --all`: back to the original queues; prints a summary. */
export async function runDlqReplay(ids: string[], opts: DlqReplayOptions): Promise<number> {
  const filters = checkFilters(opts);
  if (ids.length === 0 && !opts.all) {
    throw new UsageError('name the messages to replay, or pass --all');
  }
  if (ids.length > 0 && opts.all) throw new UsageError('pass message ids or --all, not both');
  if (ids.length > 0 && (filters.queue || filters.reason)) {
    throw new UsageError('--queue and --reason go with --all');
  }
  const runtime = await openRuntime({ failFast: true, name: 'dlq' });
  let bar: cliProgress.SingleBar | undefined;
  try {
    const showBar = !opts.json && Boolean(process.stderr.isTTY);
    const summary = await replayDeadLetters({
      db: runtime.db,
      backend: runtime.backend,
      partitions: await partitionsOf(runtime),
      messageIds: ids.length > 0 ? ids : undefined,
      ...filters,
      dryRun: opts.dryRun,
      dedupeWindowMs: runtime.config.dedupeWindowMs,
      maxAttempts: runtime.config.maxAttempts,
      onProgress: (done, total) => {
        if (!showBar || total < PROGRESS_THRESHOLD) return;
        if (!bar) {
          bar = new cliProgress.SingleBar(
            { format: 'replay [{bar}] {percentage}% | {value}/{total} | eta {eta}s' },
            cliProgress.Presets.shades_classic,
          );
          bar.start(total, 0);
        }
        bar.update(done);
      },
    });
    bar?.stop();
    bar = undefined;
    printSummary(summary, opts.json);
    return summary.failed > 0 ? 1 : 0;
  } finally {
    bar?.stop();
    await runtime.close();
  }
}

function printSummary(summary: ReplaySummary, json: boolean | undefined): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return;
  }
  const verb = summary.dryRun ? 'would replay' : 'replayed';
  process.stdout.write(
    `${verb} ${summary.replayed}, already applied ${summary.alreadyApplied}, ` +
      `failed ${summary.failed}` +
      (summary.skipped ? `, skipped ${summary.skipped} (not pending)` : '') +
      ` of ${summary.total}\n`,
  );
  for (const f of summary.failures.slice(0, 20)) {
    process.stdout.write(`  failed ${f.messageId}: ${f.error}\n`);
  }
  if (summary.failures.length > 20) {
    process.stdout.write(`  … and ${summary.failures.length - 20} more (see --json)\n`);
  }
}

/** Options of {@link runDlqPurge}. */
export interface DlqPurgeOptions extends FilterFlags {
  olderThan?: string;
  json?: boolean;
}

/**
 * `dlq purge`: gives dead letters up for good (the operator's decision: their messages will
 * never be applied). Their data is dropped and their BullMQ copies removed; a tombstone stays
 * until the dedupe window has passed, so the reconciler does not bring them back.
 */
export async function runDlqPurge(opts: DlqPurgeOptions): Promise<number> {
  const filters = checkFilters(opts);
  let deadBefore: Date | undefined;
  if (opts.olderThan !== undefined) {
    const ms = parseDuration(opts.olderThan);
    if (ms === undefined) {
      throw new UsageError(
        `--older-than ${opts.olderThan}: expected a duration such as 30m, 24h or 7d`,
      );
    }
    deadBefore = new Date(Date.now() - ms);
  }
  const runtime = await openRuntime({ failFast: true, name: 'dlq' });
  const partitions = await partitionsOf(runtime).catch(async (err: unknown) => {
    await runtime.close();
    throw err;
  });
  const queues = createQueueCache(runtime.backend, partitions);
  try {
    let purged = 0;
    for (;;) {
      const rows = await purgeDeadLetters(runtime.db, { ...filters, deadBefore, limit: 1_000 });
      await Promise.all(
        rows.flatMap((r) => [
          queues.get(deadLetterQueueName(r.queue)).remove(jobIdFor(r.message_id)),
          queues.route(r.queue, r.message_id).remove(r.job_id),
        ]),
      );
      purged += rows.length;
      if (rows.length < 1_000) break;
    }
    process.stdout.write(opts.json ? `${JSON.stringify({ purged })}\n` : `purged ${purged}\n`);
    return 0;
  } finally {
    await queues.close();
    await runtime.close();
  }
}

/**
 * The partition counts of the jobs' queues (the ledger's and `ONCEQ_JOBS`'s, as the worker loads
 * them): a dead letter's original, and its replay, live in its message's partition.
 */
async function partitionsOf(runtime: Runtime): Promise<QueuePartitions> {
  return (await loadRegistry(runtime.config.jobsModule)).partitions();
}

function toJson(row: DeadLetterRow, full = false) {
  return {
    messageId: row.message_id,
    queue: row.queue,
    name: row.job_name,
    jobId: row.job_id,
    reason: row.reason,
    error: row.error,
    attempts: row.attempts,
    deadAt: row.dead_at.toISOString(),
    deadCount: row.dead_count,
    enqueuedAt: row.enqueued_at?.toISOString() ?? null,
    replayedAt: row.replayed_at?.toISOString() ?? null,
    replayCount: row.replay_count,
    purgedAt: row.purged_at?.toISOString() ?? null,
    ...(full ? { data: row.data, stack: row.stack, options: row.options } : {}),
  };
}

function printTable(rows: DeadLetterRow[]): void {
  const header = ['message id', 'queue', 'job', 'reason', 'attempts', 'dead at', 'error'];
  const cells = rows.map((r) => [
    r.message_id,
    r.queue,
    r.job_name,
    r.replayed_at ? `${r.reason} (replayed)` : r.purged_at ? `${r.reason} (purged)` : r.reason,
    String(r.attempts),
    r.dead_at.toISOString(),
    oneLine(r.error ?? '', 60),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) =>
    c
      .map((v, i) => v.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  process.stdout.write(`${line(header)}\n`);
  for (const c of cells) process.stdout.write(`${line(c)}\n`);
}

function oneLine(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}
