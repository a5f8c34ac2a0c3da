/**
 * The group transaction: several messages' transactions as one, with one inbox insert and one
 * `COMMIT` for all of them (group commit). It changes nothing the inbox guarantees: every member's
 * inbox row, effects and result commit together or not at all, exactly as in
 * {@link runMessageTransaction}; a member that fails leaves the group before the commit, with
 * its effects and its inbox row rolled back, and the others commit without it.
 *
 * One group, on one pooled connection:
 *
 *   BEGIN; SET LOCAL lock_timeout …; INSERT INTO inbox … VALUES (m1), (m2), …
 *     ON CONFLICT (message_id) DO NOTHING RETURNING
 *   for each member the insert fenced (the others are duplicates):
 *     [SAVEPOINT]  handler  [RELEASE]      (savepoint mode; optimistic mode runs them bare)
 *   SELECT onceq_assert_not_pruned(lowest id); UPDATE inbox SET result … FROM (VALUES …); COMMIT
 *
 * Members run one after another, never interleaved: each sees the writes of those before it, as
 * if they had committed in that order, so two members updating one row meet no version conflict
 * between themselves. The insert takes the members in message id order, so two groups that share
 * a message (a redelivery racing its zombie) wait on each other in one order and cannot deadlock
 * on the inbox.
 *
 * What leaves the group, and how:
 *
 * - A member whose handler throws, whose result cannot be stored, or whose `beforeCommit` throws
 *   (its lease was lost): in savepoint mode it is rolled back to its savepoint and its inbox row
 *   deleted, and the group goes on; in optimistic mode the whole transaction rolls back and the
 *   others are handed back to run again (`retry`), without it.
 * - An error whose culprit is not known for sure ends the group and hands every member back to
 *   run on its own (`alone`): a deadlock or serialization failure (the whole transaction is the
 *   victim, and the members' locks together made the cycle) or a lock wait past the group's
 *   `lock_timeout` (another transaction holds rows it needs); `25P02` in optimistic mode (an
 *   earlier member swallowed an error); a refused `COMMIT`; the pruning cutoff check.
 * - Anything else (the connection died, PostgreSQL went away) fails every member with that error.
 *   Whether such a `COMMIT` committed is unknown, as for a single message: the next delivery finds
 *   the inbox rows, or not.
 */
import { sql, type Kysely } from 'kysely';
import type { Db } from './create-db.js';
import type { Database } from './database.js';
import {
  literal,
  resultJson,
  type InboxKey,
  type MessageTransaction,
  messageTransactionOn,
} from './message-transaction.js';

/** One message of a group. */
export interface GroupMember<R = unknown> {
  key: InboxKey;
  /** The handler, run on the group's transaction. */
  body: (trx: MessageTransaction<Database>) => Promise<R>;
  /**
   * Called after the body and again just before the group commits; throws to leave the group
   * (its lease was lost, a fault point). Must not await anything.
   */
  beforeCommit?: () => void;
}

/** What the group decided for one member. */
export type GroupOutcome<R = unknown> =
  /** Committed: its inbox row, effects and result. */
  | { kind: 'applied'; result: R; resultJson: string }
  /** The inbox already had it: nothing ran; `result` is the stored one. */
  | { kind: 'duplicate'; result: unknown }
  /** Its own failure: nothing of it committed. */
  | { kind: 'failed'; error: unknown }
  /** Not decided, through no fault of its own: run it again, in a group. */
  | { kind: 'retry' }
  /** Not decided, and the culprit is not known: run it again on its own. */
  | { kind: 'alone'; error: unknown };

/** Options of {@link runGroupTransaction}. */
export interface GroupTransactionOptions {
  /**
   * Run each member inside a savepoint, so a failing member leaves the group alone (one more
   * round trip per member); else run them bare and, when one fails, roll the group back and hand
   * the others back to run again (no extra round trip while nothing fails).
   */
  savepoints: boolean;
  /**
   * How long a statement of the group may wait for a lock (`SET LOCAL lock_timeout`) before the
   * group gives up and its members run alone. A group holds its members' row locks until its one
   * commit, and takes them in no global order: two groups over the same hot rows would otherwise
   * wait on each other, or deadlock and wait out `deadlock_timeout` (1 s by default), with every
   * member of both in tow.
   */
  lockTimeoutMs: number;
  /** Called just before the `COMMIT` is sent, and just after it committed (fault tests). */
  hooks?: { beforeCommit?(): void; afterCommit?(): void };
}

/** SQLSTATEs after which the whole transaction is the victim (see the module comment). */
const WHOLE_TRANSACTION_SQLSTATES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available: the group's lock_timeout ran out
]);
/** in_failed_sql_transaction: a statement after an error the handler swallowed. */
const IN_FAILED_TRANSACTION = '25P02';

/** The SQLSTATE of an error PostgreSQL raised (pg's DatabaseError has a severity; EPIPE has not). */
function sqlState(err: unknown): string | undefined {
  const e = err as { code?: unknown; severity?: unknown } | null;
  const code = e?.code;
  return typeof code === 'string' && typeof e?.severity === 'string' && /^[0-9A-Z]{5}$/.test(code)
    ? code
    : undefined;
}

/** Most bytes of results one group's final statement may carry; past it, members run alone. */
const MAX_GROUP_RESULT_BYTES = 32 * 2 ** 20;

/**
 * Runs `members` as one transaction and returns one outcome per member, in the order given.
 * Rejects only if no transaction could be started at all (no connection).
 */
export async function runGroupTransaction(
  db: Db,
  members: readonly GroupMember[],
  options: GroupTransactionOptions,
): Promise<GroupOutcome[]> {
  const outcomes: (GroupOutcome | undefined)[] = members.map(() => undefined);
  // Members in message id order (the insert's lock order); a second member of the same message
  // (which a claim should have kept out) runs again after this group, not in it.
  const seen = new Set<string>();
  const order: number[] = [];
  for (const i of members
    .map((_, i) => i)
    .sort((a, b) => compareIds(members[a]!.key.messageId, members[b]!.key.messageId))) {
    const { messageId } = members[i]!.key;
    if (!/^[0-9]{1,19}$/.test(messageId)) {
      outcomes[i] = { kind: 'failed', error: new RangeError(`bad message id ${messageId}`) };
    } else if (seen.has(messageId)) {
      outcomes[i] = { kind: 'retry' };
    } else {
      seen.add(messageId);
      order.push(i);
    }
  }
  if (order.length === 0) return outcomes as GroupOutcome[];

  await db.connection().execute(async (conn) => {
    const trx = messageTransactionOn(conn.getExecutor());
    const { savepoints } = options;
    let open = false;
    const settleAll = (outcome: GroupOutcome) => {
      for (const j of order) outcomes[j] ??= outcome;
    };
    try {
      const values = order
        .map((i) => {
          const k = members[i]!.key;
          return `(${k.messageId}, ${literal(k.queue)}, ${literal(k.jobName)})`;
        })
        .join(', ');
      open = true;
      let fenced: { rows: { message_id: string }[] };
      try {
        fenced = await sql
          .raw<{ message_id: string }>(
            `BEGIN; SET LOCAL lock_timeout = ${Math.max(1, Math.round(options.lockTimeoutMs))}; ` +
              `INSERT INTO inbox (message_id, queue, job_name) VALUES ${values} ` +
              `ON CONFLICT (message_id) DO NOTHING RETURNING message_id::text AS message_id`,
          )
          .execute(conn);
      } catch (err) {
        // Refused by PostgreSQL (most often a lock wait past the timeout: another session holds
        // the inbox row of a member, a zombie or the pruner): alone, each member waits its turn
        // or finds out for itself. A dead connection fails them all, below.
        if (sqlState(err) === undefined) throw err;
        settleAll({ kind: 'alone', error: err });
        return;
      }
      const fencedIds = new Set(fenced.rows.map((r) => r.message_id));
      // Members whose inbox row this transaction holds; the others are duplicates.
      const live = order.filter((i) => fencedIds.has(members[i]!.key.messageId));
      const duplicates = order.filter((i) => !fencedIds.has(members[i]!.key.messageId));
      const done = new Map<number, { result: unknown; json: string }>();

      // The savepoint of the first member; each later one is taken as the one before is released,
      // in the same round trip, and the last is released with the commit.
      if (savepoints && live.length > 0) await sql.raw('SAVEPOINT onceq_member').execute(conn);
      for (let n = 0; n < live.length; n++) {
        const i = live[n]!;
        const member = members[i]!;
        try {
          const result = await member.body(trx);
          const json = resultJson(result);
          member.beforeCommit?.();
          if (savepoints && n < live.length - 1) {
            // A handler that swallowed a database error left the transaction aborted: RELEASE
            // fails then (25P02), and names this member as the culprit.
            await sql.raw('RELEASE SAVEPOINT onceq_member; SAVEPOINT onceq_member').execute(conn);
          }
          done.set(i, { result, json });
        } catch (err) {
          const state = sqlState(err);
          if (state !== undefined && WHOLE_TRANSACTION_SQLSTATES.has(state)) {
            settleAll({ kind: 'alone', error: err });
            return;
          }
          if (!savepoints) {
            // Blamed only when the transaction is still sound: an aborted one may have been
            // aborted by an earlier member that swallowed its error (this member then meets
            // 25P02, bare or wrapped), so no one can be blamed and each member runs alone.
            if (state === IN_FAILED_TRANSACTION || (await transactionAborted(conn))) {
              settleAll({ kind: 'alone', error: err });
            } else {
              outcomes[i] = { kind: 'failed', error: err };
              settleAll({ kind: 'retry' });
            }
            return;
          }
          // Back to the member's savepoint (which stays, for the next member), without its row.
          await sql
            .raw(
              'ROLLBACK TO SAVEPOINT onceq_member; ' +
                `DELETE FROM inbox WHERE message_id = ${member.key.messageId}`,
            )
            .execute(conn);
          outcomes[i] = { kind: 'failed', error: err };
        }
      }

      // Every member still in the group checks its lease once more, just before the commit. One
      // that lost it leaves, and the others run again without it (nothing of theirs committed).
      const committing = live.filter((i) => done.has(i));
      let leaving = false;
      for (const i of committing) {
        try {
          members[i]!.beforeCommit?.();
        } catch (err) {
          outcomes[i] = { kind: 'failed', error: err };
          leaving = true;
        }
      }
      if (leaving) {
        settleAll({ kind: 'retry' });
        return;
      }

      if (committing.length > 0) {
        const lowest = committing
          .map((i) => members[i]!.key.messageId)
          .reduce((a, b) => (compareIds(a, b) <= 0 ? a : b));
        const highest = committing
          .map((i) => members[i]!.key.messageId)
          .reduce((a, b) => (compareIds(a, b) >= 0 ? a : b));
        const bytes = committing.reduce((n, i) => n + done.get(i)!.json.length, 0);
        if (bytes > MAX_GROUP_RESULT_BYTES) {
          settleAll({ kind: 'alone', error: new Error(`results of ${bytes} characters`) });
          return;
        }
        const results = committing
          .map((i) => `(${members[i]!.key.messageId}, ${literal(done.get(i)!.json)})`)
          .join(', ');
        let committed: { rows: { command?: string }[] };
        options.hooks?.beforeCommit?.();
        try {
          // The cutoff check after the inbox insert, in a statement of its own: see
          // MessagePrunedError in message-transaction.ts for why that order is safe.
          committed = await sql
            .raw<{ command: string }>(
              (savepoints ? 'RELEASE SAVEPOINT onceq_member; ' : '') +
                `SELECT onceq_assert_not_pruned(${lowest}); ` +
                `UPDATE inbox SET result = v.result::jsonb FROM (VALUES ${results}) ` +
                `AS v(message_id, result) WHERE inbox.message_id = v.message_id ` +
                // The bounds let the planner keep to the inbox partitions of those ids (one day,
                // two at midnight) instead of joining the values with every partition.
                `AND inbox.message_id BETWEEN ${lowest} AND ${highest}; COMMIT`,
            )
            .execute(conn);
        } catch (err) {
          // A statement PostgreSQL refused at the end (the cutoff check, for one member or more;
          // 25P02 after the last member swallowed an error): nothing committed, and alone each
          // member finds out for itself.
          if (sqlState(err) !== undefined) {
            settleAll({ kind: 'alone', error: err });
            return;
          }
          throw err;
        }
        open = false;
        if (committed.rows[0]?.command !== 'COMMIT') {
          // A deferred constraint, or a transaction aborted without an error reaching us.
          settleAll({
            kind: 'alone',
            error: new Error(`COMMIT answered ${committed.rows[0]?.command ?? 'nothing'}`),
          });
          return;
        }
        for (const i of committing) {
          const { result, json } = done.get(i)!;
          outcomes[i] = { kind: 'applied', result, resultJson: json };
        }
        options.hooks?.afterCommit?.();
      } else {
        open = false;
        await sql.raw('ROLLBACK').execute(conn);
      }

      if (duplicates.length > 0) {
        const stored = await conn
          .selectFrom('inbox')
          .select(['message_id', 'result'])
          .where(
            'message_id',
            'in',
            duplicates.map((i) => members[i]!.key.messageId),
          )
          .execute();
        const byId = new Map(stored.map((r) => [String(r.message_id), r.result]));
        for (const i of duplicates) {
          outcomes[i] = { kind: 'duplicate', result: byId.get(members[i]!.key.messageId) ?? null };
        }
      }
    } catch (err) {
      // The connection or the server failed under the group: every undecided member fails with
      // it, and its delivery is retried as any failed delivery is.
      settleAll({ kind: 'failed', error: err });
    } finally {
      if (open) {
        // On a dead connection this fails too; pg drops such a client when it is released.
        await sql
          .raw('ROLLBACK')
          .execute(conn)
          .catch(() => undefined);
      }
    }
  });
  return outcomes as GroupOutcome[];
}

/**
 * Whether the transaction on `conn` can no longer run statements: aborted (25P02), or the
 * connection gone. One round trip, on the failure path only.
 */
async function transactionAborted(conn: Kysely<Database>): Promise<boolean> {
  try {
    await sql.raw('SELECT 1').execute(conn);
    return false;
  } catch {
    return true;
  }
}

/** Orders decimal message ids numerically (they are at most 19 digits, no leading zeros). */
function compareIds(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}
