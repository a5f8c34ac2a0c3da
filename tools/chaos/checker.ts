/**
 * The campaign's checker: a pure function of the history (what clients were told) and a snapshot
 * of the database and queues after the run drained (what happened). Like Jepsen's bank and
 * total-queue checkers it reports every anomaly it finds rather than stopping at the first:
 *
 * - lost: a message the API accepted (2xx) that has no effect, no dead letter and no failed job;
 * - duplicated: a message with two or more effects of one kind (inbox rows, transfer rows,
 *   account rows);
 * - unexpected: an effect whose message nobody accepted;
 * - ledger invariants (DESIGN.md section 7), checked row by row (tools/support/ledger-invariants.ts);
 * - replays: every later definite answer for a token must equal the first (status and body);
 * - tokens: the token store binds every accepted message's token to that message.
 *
 * Where the stores are durable (PostgreSQL-only mode, or a Redis no fault restarted or flushed),
 * state that only a Redis fault could excuse losing is checked too: a token the store no longer
 * holds, and a job gone from the queue without a trace, make the run invalid.
 *
 * The effect of a message is its inbox row, plus its transfer row (`ledger.transfer`) or its
 * account row (`account.open`). The database's keys make a second inbox or transfer row
 * impossible, so a real double commit shows up in the invariants (a balance moved twice, a
 * version bumped twice); the row counts are still checked, and hand-made snapshots in the unit
 * tests prove both paths report.
 */
import type { TokenState } from '../../src/core/token.js';
import type { HistoryEvent, RequestEvent } from './history.js';
import { POISON_JOB_NAME } from './poison-job.js';
import {
  checkLedgerInvariants,
  type LedgerAccountRow,
  type LedgerInboxRow,
  type LedgerTransferRow,
} from '../support/ledger-invariants.js';

/** A row of `accepted_messages`, as the checker needs it. */
export interface AcceptedSnapshotRow {
  message_id: string;
  token: string;
  job_name: string;
  data: unknown;
}

/** A row of `inbox`. */
export type InboxSnapshotRow = LedgerInboxRow;

/** A row of `accounts`; int8 columns as strings. */
export type AccountSnapshotRow = LedgerAccountRow;

/** A row of `transfers`. */
export type TransferSnapshotRow = LedgerTransferRow;

/** A row of `dead_letters`. */
export interface DeadLetterSnapshotRow {
  message_id: string;
  job_name: string;
  reason: string;
}

/** A BullMQ job in a terminal `failed` state, or still live (waiting, active, delayed). */
export interface JobSnapshot {
  jobId: string;
  messageId: string | undefined;
  name: string;
  state: string;
  failedReason?: string;
}

/** Delivery figures read from the jobs left in the queues (a lower bound after a Redis fault). */
export interface DeliveryFigures {
  /** Jobs found in the queues (every state). */
  jobs: number;
  /** Sum of BullMQ's `attemptsStarted`: deliveries to a worker. */
  deliveries: number;
  /** Sum of BullMQ's `stalledCounter`: deliveries taken over after a lost lock. */
  stalled: number;
  /** Completed jobs whose delivery applied the message. */
  applied: number;
  /** Completed jobs whose delivery found the message already applied. */
  duplicates: number;
}

/** What the token store holds for the token of one accepted message. */
export interface TokenSnapshotRow {
  /** The message `accepted_messages` records for the token. */
  messageId: string;
  token: string;
  /** The token's state in the store; `missing` when the store holds none. */
  state: TokenState | 'missing';
  /** The message id the store binds the token to. */
  boundTo: string | undefined;
}

/** What the database and the queues hold after the run drained. */
export interface DbSnapshot {
  accepted: AcceptedSnapshotRow[];
  inbox: InboxSnapshotRow[];
  accounts: AccountSnapshotRow[];
  transfers: TransferSnapshotRow[];
  /** `null` when the schema has no `dead_letters` table (dead letters not built yet). */
  deadLetters: DeadLetterSnapshotRow[] | null;
  /** Failed jobs left in the queues. */
  failedJobs: JobSnapshot[];
  /** Jobs still waiting, active, delayed or prioritized. */
  liveJobs: JobSnapshot[];
  deliveries?: DeliveryFigures;
  /** The token of every accepted message, as the token store holds it; absent: not read. */
  tokens?: TokenSnapshotRow[];
}

/** Options of {@link checkCampaign}. */
export interface CheckOptions {
  /**
   * Nothing in the run could lose queue or token state: PostgreSQL-only mode (queues and tokens
   * in tables), or a Redis no fault restarted or flushed. A token the store no longer holds, or a
   * job that left the queue without a trace, is then an anomaly rather than the known cost of a
   * Redis fault. @defaultValue false
   */
  durableStores?: boolean;
}

/** A message that was accepted and came to nothing. */
export interface LostMessage {
  messageId: string;
  token: string;
  name: string;
  /** A job for it is still waiting or delayed: stuck rather than dropped. */
  stillQueued: boolean;
  /** BullMQ failed its job but no dead letter holds it. */
  failedWithoutDeadLetter: boolean;
  /** History line (1-based) of the 2xx answer. */
  line: number;
}

/** One anomaly, with where to look. */
export interface Anomaly {
  messageId?: string;
  token?: string;
  detail: string;
  /** History lines (1-based) that show it. */
  lines?: number[];
}

/** The checker's verdict. */
export interface CheckResult {
  valid: boolean;
  /** Distinct messages answered 2xx. */
  accepted: number;
  /** Messages with an inbox row. */
  applied: number;
  lost: LostMessage[];
  duplicated: Anomaly[];
  unexpected: Anomaly[];
  /** 2xx answers the database does not back (no accepted row, another token, another id). */
  acceptance: Anomaly[];
  /** Dead letters by reason; `null` when there is no dead-letter table yet. */
  deadLetters: Record<string, number> | null;
  /** Failed BullMQ jobs of messages with no dead letter, by reason. */
  failed: Record<string, number>;
  poison: {
    accepted: number;
    deadOrFailed: number;
    applied: Anomaly[];
    rawInjected: number;
    rawDeadOrFailed: number;
    /** Raw poison jobs gone without a trace: never accepted, so a Redis fault may drop them. */
    rawVanished: number;
  };
  indeterminate: {
    /** Requests that got no answer. */
    requests: number;
    /** Messages accepted by the database whose client never got a 2xx. */
    acceptedWithoutAnswer: number;
    /** Of those, how many were applied (allowed: the request may have succeeded). */
    appliedWithoutAnswer: number;
  };
  replays: { checked: number; mismatched: Anomaly[] };
  /** `null` when the snapshot did not read the tokens. */
  tokens: {
    checked: number;
    /** Tokens of accepted messages by state; of applied messages by state. */
    byState: Record<string, number>;
    appliedByState: Record<string, number>;
    /**
     * Tokens bound to another message than the one accepted under them; with durable stores also
     * tokens the store lost, or holds as never used.
     */
    anomalies: Anomaly[];
  } | null;
  /**
   * Jobs the queue dropped: with durable stores, raw poison jobs (never accepted, so no
   * reconciler brings them back) that are neither dead-lettered, failed nor live. Always empty
   * otherwise (a Redis fault may drop them; `poison.rawVanished` counts them).
   */
  vanished: Anomaly[];
  invariants: {
    ok: boolean;
    violations: string[];
    accounts: number;
    transfers: number;
    sumBalances: string;
    sumOpening: string;
  };
  requests: { total: number; byStatus: Record<string, number> };
  deliveries?: DeliveryFigures;
  /** Oddities that do not make the run invalid but deserve a look. */
  warnings: string[];
}

/** Answers that settle what a request did; 409 and 429 say "try again", 5xx and none "unknown". */
export function isDefinite(status: number | null): status is number {
  return status !== null && status < 500 && status !== 409 && status !== 429;
}

function is2xx(status: number | null): boolean {
  return status !== null && status >= 200 && status < 300;
}

/** Checks a history against a snapshot. Pure; never throws on odd data, it reports it. */
export function checkCampaign(
  history: readonly HistoryEvent[],
  snapshot: DbSnapshot,
  options: CheckOptions = {},
): CheckResult {
  const durable = options.durableStores ?? false;
  const warnings: string[] = [];
  const requests: { event: RequestEvent; line: number }[] = [];
  const rawPoison = new Map<string, number>();
  history.forEach((event, i) => {
    if (event.type === 'request' && event.op !== 'tokens') requests.push({ event, line: i + 1 });
    if (event.type === 'poison-raw' && event.ok) rawPoison.set(event.messageId, i + 1);
  });

  const byStatus: Record<string, number> = {};
  for (const { event } of history
    .map((event, i) => ({ event, line: i + 1 }))
    .filter((e) => e.event.type === 'request')) {
    const r = event as RequestEvent;
    const key = r.status === null ? 'none' : String(r.status);
    byStatus[key] = (byStatus[key] ?? 0) + 1;
  }

  // What clients were told: the first 2xx per message.
  const answered = new Map<
    string,
    { token: string; name: string; data: unknown; line: number; all: number[] }
  >();
  const tokensAnswered = new Set<string>();
  for (const { event, line } of requests) {
    if (!is2xx(event.status) || !event.token) continue;
    const messageId = (event.body as { messageId?: unknown } | null)?.messageId;
    if (typeof messageId !== 'string') continue;
    tokensAnswered.add(event.token);
    const request = event.request as { name: string; data: unknown };
    const seen = answered.get(messageId);
    if (seen) seen.all.push(line);
    else
      answered.set(messageId, {
        token: event.token,
        name: request.name,
        data: request.data,
        line,
        all: [line],
      });
  }

  const acceptedById = new Map(snapshot.accepted.map((r) => [r.message_id, r]));
  const acceptance: Anomaly[] = [];
  for (const [messageId, a] of answered) {
    const row = acceptedById.get(messageId);
    if (!row) {
      acceptance.push({
        messageId,
        token: a.token,
        detail: 'answered 2xx but not in accepted_messages',
        lines: a.all,
      });
    } else if (row.token !== a.token) {
      acceptance.push({
        messageId,
        token: a.token,
        detail: `answered for token ${a.token} but accepted under token ${row.token}`,
        lines: a.all,
      });
    }
  }

  // Every message the system knows of: accepted rows, plus 2xx answers it may have forgotten.
  const known = new Map<string, { name: string; data: unknown; token: string }>();
  for (const r of snapshot.accepted)
    known.set(r.message_id, { name: r.job_name, data: r.data, token: r.token });
  for (const [id, a] of answered) {
    if (!known.has(id)) known.set(id, { name: a.name, data: a.data, token: a.token });
  }

  const countBy = <T>(rows: readonly T[], key: (r: T) => string): Map<string, number> => {
    const m = new Map<string, number>();
    for (const r of rows) m.set(key(r), (m.get(key(r)) ?? 0) + 1);
    return m;
  };
  const inboxCount = countBy(snapshot.inbox, (r) => r.message_id);
  const transferCount = countBy(snapshot.transfers, (r) => r.message_id);
  const accountCount = countBy(snapshot.accounts, (r) => r.id);
  const dead = new Map((snapshot.deadLetters ?? []).map((r) => [r.message_id, r]));
  const failed = new Map<string, JobSnapshot>();
  for (const j of snapshot.failedJobs) if (j.messageId) failed.set(j.messageId, j);
  // Where dead letters exist, a message ends applied or dead-lettered (DESIGN.md section 1.2):
  // a job BullMQ failed without a dead letter counts as lost. Before them, failed is the end.
  const deadLetterTable = snapshot.deadLetters !== null;
  const live = new Set(snapshot.liveJobs.map((j) => j.messageId).filter(Boolean) as string[]);

  const accountIdOf = (messageId: string, data: unknown): string => {
    const id = (data as { accountId?: unknown } | null)?.accountId;
    return typeof id === 'string' ? id : messageId;
  };

  // Lost and duplicated.
  const lost: LostMessage[] = [];
  const duplicated: Anomaly[] = [];
  const poisonApplied: Anomaly[] = [];
  let poisonAccepted = 0;
  let poisonDead = 0;
  for (const [messageId, a] of answered) {
    const applied = inboxCount.get(messageId) ?? 0;
    const terminal = dead.has(messageId) || (!deadLetterTable && failed.has(messageId));
    if (a.name === POISON_JOB_NAME) {
      poisonAccepted++;
      if (terminal) poisonDead++;
    }
    if (applied === 0 && !terminal) {
      lost.push({
        messageId,
        token: a.token,
        name: a.name,
        stillQueued: live.has(messageId),
        failedWithoutDeadLetter: failed.has(messageId),
        line: a.line,
      });
    }
  }
  for (const [messageId, m] of known) {
    const n = inboxCount.get(messageId) ?? 0;
    if (n > 1) duplicated.push({ messageId, token: m.token, detail: `${n} inbox rows` });
    const t = transferCount.get(messageId) ?? 0;
    if (t > 1) duplicated.push({ messageId, token: m.token, detail: `${t} transfer rows` });
    if (m.name === 'account.open') {
      const accounts = accountCount.get(accountIdOf(messageId, m.data)) ?? 0;
      if (accounts > 1) {
        duplicated.push({ messageId, token: m.token, detail: `${accounts} account rows` });
      }
    }
    if (m.name === POISON_JOB_NAME && n > 0) {
      poisonApplied.push({ messageId, token: m.token, detail: 'poison message applied' });
    }
    if (n > 0 && dead.has(messageId)) {
      warnings.push(`message ${messageId} is applied and also dead-lettered`);
    }
  }

  // Unexpected effects.
  const unexpected: Anomaly[] = [];
  for (const r of snapshot.inbox) {
    if (!known.has(r.message_id)) {
      const raw = rawPoison.get(r.message_id);
      unexpected.push({
        messageId: r.message_id,
        detail: raw
          ? `inbox row for a raw poison job (${r.job_name}) that no one accepted`
          : `inbox row (${r.job_name}) for a message no one accepted`,
        lines: raw ? [raw] : undefined,
      });
    }
  }
  for (const r of snapshot.transfers) {
    if (!known.has(r.message_id)) {
      unexpected.push({
        messageId: r.message_id,
        detail: `transfer row ${r.id} for a message no one accepted`,
      });
    }
  }
  const openedIds = new Set<string>();
  for (const [messageId, m] of known) {
    if (m.name === 'account.open') openedIds.add(accountIdOf(messageId, m.data));
  }
  for (const r of snapshot.accounts) {
    if (!openedIds.has(r.id))
      unexpected.push({ detail: `account ${r.id} that no accepted message opened` });
  }

  // Indeterminate requests.
  let acceptedWithoutAnswer = 0;
  let appliedWithoutAnswer = 0;
  for (const r of snapshot.accepted) {
    if (answered.has(r.message_id) || tokensAnswered.has(r.token)) continue;
    acceptedWithoutAnswer++;
    if ((inboxCount.get(r.message_id) ?? 0) > 0) appliedWithoutAnswer++;
  }

  // Replays: every later definite answer for a token equals the first one.
  const byToken = new Map<string, { event: RequestEvent; line: number }[]>();
  for (const r of requests) {
    if (!r.event.token || !isDefinite(r.event.status)) continue;
    const list = byToken.get(r.event.token) ?? [];
    list.push(r);
    byToken.set(r.event.token, list);
  }
  let replaysChecked = 0;
  const mismatched: Anomaly[] = [];
  for (const [token, list] of byToken) {
    list.sort((a, b) => a.event.time - b.event.time || a.line - b.line);
    const first = list[0]!;
    for (const later of list.slice(1)) {
      if (canonical(later.event.request) !== canonical(first.event.request)) continue;
      replaysChecked++;
      if (
        later.event.status !== first.event.status ||
        canonical(later.event.body) !== canonical(first.event.body)
      ) {
        mismatched.push({
          token,
          detail:
            `replay answered ${later.event.status} ${canonical(later.event.body)}; ` +
            `first answer was ${first.event.status} ${canonical(first.event.body)}`,
          lines: [first.line, later.line],
        });
      }
    }
  }

  // The campaign knows every message: accepted rows and 2xx answers are the only way in.
  const ledger = checkLedgerInvariants(
    {
      accounts: snapshot.accounts,
      transfers: snapshot.transfers,
      inbox: snapshot.inbox,
      messages: known,
    },
    { messagesComplete: true },
  );
  const invariants: CheckResult['invariants'] = {
    ok: ledger.ok,
    violations: ledger.violations,
    accounts: ledger.accounts,
    transfers: ledger.transfers,
    sumBalances: ledger.sumBalances.toString(),
    sumOpening: ledger.sumOpening.toString(),
  };

  // Dead letters and failures.
  let deadLetters: Record<string, number> | null = null;
  if (snapshot.deadLetters) {
    deadLetters = {};
    for (const r of snapshot.deadLetters) deadLetters[r.reason] = (deadLetters[r.reason] ?? 0) + 1;
  }
  const failedByReason: Record<string, number> = {};
  for (const j of snapshot.failedJobs) {
    if (j.messageId && dead.has(j.messageId)) continue;
    const reason = /^(\w+):/.exec(j.failedReason ?? '')?.[1] ?? 'error';
    failedByReason[reason] = (failedByReason[reason] ?? 0) + 1;
  }
  let rawDead = 0;
  let rawVanished = 0;
  const vanished: Anomaly[] = [];
  for (const [messageId, line] of rawPoison) {
    if (dead.has(messageId) || (!deadLetterTable && failed.has(messageId))) rawDead++;
    else if (!live.has(messageId)) {
      rawVanished++;
      if (durable) {
        vanished.push({
          messageId,
          detail: 'raw poison job neither dead-lettered, failed nor queued',
          lines: [line],
        });
      }
    }
  }

  // Tokens: the store binds each accepted message's token to that message. A Redis fault may
  // lose a token (the API and the workers fall back to PostgreSQL's records), nothing else may.
  let tokens: CheckResult['tokens'] = null;
  if (snapshot.tokens) {
    const byState: Record<string, number> = {};
    const appliedByState: Record<string, number> = {};
    const anomalies: Anomaly[] = [];
    for (const t of snapshot.tokens) {
      byState[t.state] = (byState[t.state] ?? 0) + 1;
      if ((inboxCount.get(t.messageId) ?? 0) > 0) {
        appliedByState[t.state] = (appliedByState[t.state] ?? 0) + 1;
      }
      const at = answered.get(t.messageId);
      const where = { messageId: t.messageId, token: t.token, lines: at?.all };
      if (t.state === 'missing' || t.state === 'issued') {
        // Redis may lose an accepted token, and a restored copy of Redis may hold it as issued.
        if (durable) {
          anomalies.push({
            ...where,
            detail:
              t.state === 'missing'
                ? 'the token store holds no state for it'
                : 'the token store holds it as never used',
          });
        }
      } else if (t.boundTo !== t.messageId) {
        anomalies.push({ ...where, detail: `the token store binds it to ${t.boundTo ?? 'none'}` });
      }
    }
    tokens = { checked: snapshot.tokens.length, byState, appliedByState, anomalies };
  }

  const applied = [...known.keys()].filter((id) => (inboxCount.get(id) ?? 0) > 0).length;
  const valid =
    lost.length === 0 &&
    duplicated.length === 0 &&
    unexpected.length === 0 &&
    acceptance.length === 0 &&
    poisonApplied.length === 0 &&
    mismatched.length === 0 &&
    (tokens?.anomalies.length ?? 0) === 0 &&
    vanished.length === 0 &&
    invariants.ok;

  return {
    valid,
    accepted: answered.size,
    applied,
    lost,
    duplicated,
    unexpected,
    acceptance,
    deadLetters,
    failed: failedByReason,
    poison: {
      accepted: poisonAccepted,
      deadOrFailed: poisonDead,
      applied: poisonApplied,
      rawInjected: rawPoison.size,
      rawDeadOrFailed: rawDead,
      rawVanished,
    },
    indeterminate: {
      requests: requests.filter((r) => r.event.status === null).length,
      acceptedWithoutAnswer,
      appliedWithoutAnswer,
    },
    replays: { checked: replaysChecked, mismatched },
    tokens,
    vanished,
    invariants,
    requests: { total: Object.values(byStatus).reduce((a, b) => a + b, 0), byStatus },
    deliveries: snapshot.deliveries,
    warnings,
  };
}

/** JSON with sorted keys, so two equal values always give the same text. */
export function canonical(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value as Record<string, unknown>)
        .sort()
        .map((k) => [k, sortKeys((value as Record<string, unknown>)[k])]),
    );
  }
  return value;
}
