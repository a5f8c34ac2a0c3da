/**
 * Group commit: the worker's concurrent deliveries share transactions (db/group-transaction.ts),
 * one inbox insert and one `COMMIT` for many messages instead of one each.
 *
 * Batching is natural, as graphile-worker's and River's completers do it: a delivery that is
 * ready to run its transaction joins the queue; while fewer than `maxGroups` groups are in flight,
 * the next group takes everything queued (up to `maxSize`) on the next turn of the event loop. A
 * quiet worker thus runs each message alone, at once, by the single-message path; a busy one
 * runs bigger groups the longer each group takes, with no timer to wait out.
 */
import type { Db } from '../db/create-db.js';
import { NO_FAULTS, type FaultHook } from './fault-hook.js';
import { runMessageTransaction, type MessageTransactionResult } from '../db/message-transaction.js';
import {
  runGroupTransaction,
  type GroupMember,
  type GroupOutcome,
} from '../db/group-transaction.js';
import {
  DEFAULT_GROUP_COMMIT_MAX_GROUPS,
  DEFAULT_GROUP_COMMIT_MAX_SIZE,
  DEFAULT_GROUP_COMMIT_LOCK_TIMEOUT_MS,
} from '../core/defaults.js';
import type { Span } from '@opentelemetry/api';
import { recordError, startGroupSpan } from '../telemetry/tracing.js';

/** How deliveries are grouped into transactions. */
export interface GroupCommitOptions {
  /** Most messages in one transaction. @defaultValue 50 */
  maxSize?: number;
  /** Groups in flight at once, each on a connection of its own. @defaultValue 2 */
  maxGroups?: number;
  /**
   * Run each member in a savepoint, so a failing member leaves its group alone at the cost of a
   * round trip per member; else a failing member rolls its group back and the others run again.
   * @defaultValue false
   */
  savepoints?: boolean;
  /**
   * Longest lock wait of a group's statement before the group is given up and its members run
   * alone (see db/group-transaction.ts). @defaultValue 100 ms
   */
  lockTimeoutMs?: number;
  /** Fault injection at the group's crash points (tests). @defaultValue none */
  fault?: FaultHook;
}

/** A member handed back by a group this many times runs on its own. */
const MAX_REGROUPS = 2;

interface Entry {
  member: GroupMember;
  regroups: number;
  /** The member's transaction span: the group links to it (telemetry/tracing.ts). */
  span?: Span;
  resolve(result: MessageTransactionResult<unknown>): void;
  reject(err: unknown): void;
}

/** Figures of the grouping, for metrics and the bench. */
export interface GroupCommitStats {
  /** Transactions committed or rolled back, of any size. */
  groups: number;
  /** Messages that went through a group of two or more. */
  grouped: number;
  /** Members handed back to run again (a batch-mate failed). */
  regrouped: number;
  /** Members run on their own after their group could not decide for them. */
  alone: number;
}

/** The grouping runner of a worker. */
export interface CommitGroups {
  /**
   * Runs `member`'s transaction, in a group when others are ready at the same time. Resolves as
   * {@link runMessageTransaction} does; rejects with the member's own error. `span`, the
   * member's transaction span, is linked to the group's span both ways.
   */
  run<R>(member: GroupMember<R>, span?: Span): Promise<MessageTransactionResult<R>>;
  stats(): GroupCommitStats;
}

export function createCommitGroups(db: Db, options: GroupCommitOptions = {}): CommitGroups {
  const maxSize = options.maxSize ?? DEFAULT_GROUP_COMMIT_MAX_SIZE;
  const maxGroups = options.maxGroups ?? DEFAULT_GROUP_COMMIT_MAX_GROUPS;
  const savepoints = options.savepoints ?? false;
  const fault = options.fault ?? NO_FAULTS;
  const lockTimeoutMs = options.lockTimeoutMs ?? DEFAULT_GROUP_COMMIT_LOCK_TIMEOUT_MS;
  if (!Number.isInteger(maxSize) || maxSize < 1) {
    throw new RangeError(`groupCommit.maxSize must be a positive integer, got ${maxSize}`);
  }
  if (!Number.isInteger(lockTimeoutMs) || lockTimeoutMs < 1) {
    throw new RangeError(
      `groupCommit.lockTimeoutMs must be a positive integer of ms, got ${lockTimeoutMs}`,
    );
  }
  if (!Number.isInteger(maxGroups) || maxGroups < 1) {
    throw new RangeError(`groupCommit.maxGroups must be a positive integer, got ${maxGroups}`);
  }
  const pending: Entry[] = [];
  const stats: GroupCommitStats = { groups: 0, grouped: 0, regrouped: 0, alone: 0 };
  let active = 0;
  let scheduled = false;

  function schedule(): void {
    if (scheduled || active >= maxGroups || pending.length === 0) return;
    scheduled = true;
    // One turn of the event loop: deliveries whose claims answered in the same read join.
    setImmediate(() => {
      scheduled = false;
      while (active < maxGroups && pending.length > 0) {
        const batch = pending.splice(0, maxSize);
        active++;
        void runBatch(batch).finally(() => {
          active--;
          schedule();
        });
      }
    });
  }

  async function runAlone(entry: Entry): Promise<void> {
    const { member } = entry;
    try {
      entry.resolve(await runMessageTransaction(db, member.key, member.body, member.beforeCommit));
    } catch (err) {
      entry.reject(err);
    }
  }

  async function runBatch(batch: Entry[]): Promise<void> {
    stats.groups++;
    if (batch.length === 1) return runAlone(batch[0]!);
    stats.grouped += batch.length;
    let outcomes: GroupOutcome[];
    const span = startGroupSpan(batch.map((e) => e.span));
    try {
      outcomes = await runGroupTransaction(
        db,
        batch.map((e) => e.member),
        {
          savepoints,
          lockTimeoutMs,
          hooks: {
            beforeCommit: () => fault.at('group-before-commit'),
            afterCommit: () => fault.at('group-after-commit'),
          },
        },
      );
    } catch (err) {
      if (span) recordError(span, err);
      for (const e of batch) e.reject(err);
      return;
    } finally {
      span?.end();
    }
    const alone: Entry[] = [];
    const again: Entry[] = [];
    outcomes.forEach((outcome, n) => {
      const entry = batch[n]!;
      switch (outcome.kind) {
        case 'applied':
          entry.resolve({ kind: 'applied', result: outcome.result });
          break;
        case 'duplicate':
          entry.resolve({ kind: 'duplicate', result: outcome.result });
          break;
        case 'failed':
          entry.reject(outcome.error);
          break;
        case 'retry':
          stats.regrouped++;
          if (++entry.regroups > MAX_REGROUPS) alone.push(entry);
          else again.push(entry);
          break;
        case 'alone':
          alone.push(entry);
          break;
      }
    });
    // Handed back: first in line for the next group.
    pending.unshift(...again);
    // One after another: members that deadlocked together must not race again.
    stats.alone += alone.length;
    for (const entry of alone) await runAlone(entry);
  }

  return {
    run<R>(member: GroupMember<R>, span?: Span): Promise<MessageTransactionResult<R>> {
      return new Promise((resolve, reject) => {
        pending.push({
          member: member as GroupMember,
          regroups: 0,
          span,
          resolve: resolve as Entry['resolve'],
          reject,
        });
        schedule();
      });
    },
    stats: () => ({ ...stats }),
  };
}
