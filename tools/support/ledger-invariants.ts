/**
 * The one check of the ledger invariants (DESIGN.md section 7), for the chaos checker, the demo
 * and the tests: a pure function over the ledger's rows and the messages the caller knows of
 * (name and data), which reports every violation it finds rather than stopping at the first,
 * and a reader that loads those rows from a database, optionally only some accounts' and some
 * messages'. It is a tool, not the product: it reads the example's tables with SQL of its own.
 */
import { sql } from 'kysely';
import type { Db } from '../../src/db/create-db.js';

/** A row of `accounts`; int8 columns as strings. */
export interface LedgerAccountRow {
  id: string;
  owner: string;
  opening_balance: string;
  balance: string;
  version: number;
  closed: boolean;
}

/** A row of `transfers`. */
export interface LedgerTransferRow {
  id: string;
  from_id: string;
  to_id: string;
  amount: string;
  message_id: string;
}

/** A row of `inbox`: a message's recorded result. */
export interface LedgerInboxRow {
  message_id: string;
  job_name: string;
  result: unknown;
}

/** A message the caller knows was sent (accepted): its job name and data. */
export interface KnownMessage {
  name: string;
  data: unknown;
}

/** What {@link checkLedgerInvariants} judges. */
export interface LedgerRows {
  accounts: readonly LedgerAccountRow[];
  transfers: readonly LedgerTransferRow[];
  inbox: readonly LedgerInboxRow[];
  /** Known messages by message id. */
  messages: ReadonlyMap<string, KnownMessage>;
}

/** Options of {@link checkLedgerInvariants}. */
export interface LedgerCheckOptions {
  /**
   * The known messages are every message that touched these accounts: then every account must
   * have been opened by an applied known `account.open`, and the balances must add up to the
   * opening balances those opens asked for. Tests that insert accounts themselves, or enqueue
   * without an accepted row, leave it off. @defaultValue false
   */
  messagesComplete?: boolean;
}

/** The verdict of {@link checkLedgerInvariants}. */
export interface LedgerInvariants {
  ok: boolean;
  violations: string[];
  accounts: number;
  transfers: number;
  sumBalances: bigint;
  sumOpening: bigint;
  /** Inbox rows of `ledger.transfer` whose result is `applied`. */
  appliedTransferMessages: number;
}

/**
 * Checks conservation of money, each balance against its transfers, one transfer row per applied
 * transfer message (and its data), versions equal to the number of updates each account saw,
 * owners equal to the last applied rename (or the open), no negative balance, accounts equal to
 * what their open asked; with `messagesComplete`, also that every account comes from a known
 * open and the balances add up to those opens. Pure; never throws on odd data, it reports it.
 */
export function checkLedgerInvariants(
  rows: LedgerRows,
  options: LedgerCheckOptions = {},
): LedgerInvariants {
  const violations: string[] = [];
  const inboxById = new Map(rows.inbox.map((r) => [r.message_id, r]));
  const resultOf = (messageId: string) =>
    inboxById.get(messageId)?.result as { status?: unknown; version?: unknown } | null | undefined;
  const status = (messageId: string): unknown => resultOf(messageId)?.status;

  let sumBalances = 0n;
  let sumOpening = 0n;
  for (const a of rows.accounts) {
    sumBalances += BigInt(a.balance);
    sumOpening += BigInt(a.opening_balance);
  }
  if (sumBalances !== sumOpening) {
    violations.push(`sum of balances ${sumBalances} ≠ sum of opening balances ${sumOpening}`);
  }

  // Opens: the applied ones, their accounts, their opening balances.
  let sumAppliedOpens = 0n;
  const accountsById = new Map(rows.accounts.map((a) => [a.id, a]));
  const openOwner = new Map<string, string>();
  for (const [messageId, m] of rows.messages) {
    if (m.name !== 'account.open' || status(messageId) !== 'applied') continue;
    const data = m.data as { owner: string; openingBalance: number; accountId?: string };
    const id = data.accountId ?? messageId;
    sumAppliedOpens += BigInt(data.openingBalance);
    openOwner.set(id, data.owner);
    const account = accountsById.get(id);
    if (!account) violations.push(`open ${messageId} applied but account ${id} does not exist`);
    else if (account.opening_balance !== String(data.openingBalance)) {
      violations.push(
        `account ${id} opening balance ${account.opening_balance} ≠ ${data.openingBalance} asked by ${messageId}`,
      );
    }
  }
  if (options.messagesComplete) {
    if (sumAppliedOpens !== sumBalances) {
      violations.push(
        `sum of balances ${sumBalances} ≠ sum of opening balances of applied opens ${sumAppliedOpens}`,
      );
    }
    for (const a of rows.accounts) {
      if (!openOwner.has(a.id)) violations.push(`account ${a.id} that no applied open opened`);
    }
  }

  // Transfers: rows against applied messages, balances against rows.
  const flow = new Map<string, bigint>();
  const touches = new Map<string, number>();
  const rowsByMessage = new Map<string, LedgerTransferRow>();
  for (const t of rows.transfers) {
    const amount = BigInt(t.amount);
    flow.set(t.to_id, (flow.get(t.to_id) ?? 0n) + amount);
    flow.set(t.from_id, (flow.get(t.from_id) ?? 0n) - amount);
    touches.set(t.to_id, (touches.get(t.to_id) ?? 0) + 1);
    touches.set(t.from_id, (touches.get(t.from_id) ?? 0) + 1);
    rowsByMessage.set(t.message_id, t);
    if (status(t.message_id) !== 'applied') {
      violations.push(
        `transfer row ${t.id} for message ${t.message_id}, whose result is ${JSON.stringify(inboxById.get(t.message_id)?.result ?? null)}`,
      );
    }
    const m = rows.messages.get(t.message_id);
    if (m) {
      const d = m.data as { fromId: string; toId: string; amount: number };
      if (d.fromId !== t.from_id || d.toId !== t.to_id || String(d.amount) !== t.amount) {
        violations.push(`transfer row ${t.id} does not match message ${t.message_id}'s data`);
      }
    }
  }
  // Applied transfers: the known ones, and any the inbox records (known or not).
  const appliedTransfers = new Set<string>();
  for (const [messageId, m] of rows.messages) {
    if (m.name === 'ledger.transfer' && status(messageId) === 'applied') {
      appliedTransfers.add(messageId);
    }
  }
  let appliedTransferMessages = 0;
  for (const r of rows.inbox) {
    if (r.job_name === 'ledger.transfer' && status(r.message_id) === 'applied') {
      appliedTransferMessages++;
      appliedTransfers.add(r.message_id);
    }
  }
  for (const messageId of appliedTransfers) {
    if (!rowsByMessage.has(messageId))
      violations.push(`transfer ${messageId} applied but has no transfer row`);
  }
  for (const a of rows.accounts) {
    const expected = BigInt(a.opening_balance) + (flow.get(a.id) ?? 0n);
    if (BigInt(a.balance) !== expected) {
      violations.push(
        `account ${a.id} balance ${a.balance} ≠ opening ${a.opening_balance} + transfers = ${expected}`,
      );
    }
  }

  // Versions and owners: renames and closes that were applied.
  const updates = new Map<string, number>(touches);
  const lastRename = new Map<string, { version: number; owner: string; messageId: string }>();
  for (const [messageId, m] of rows.messages) {
    const result = resultOf(messageId);
    if (m.name === 'account.rename' && result?.status === 'applied') {
      const d = m.data as { accountId: string; owner: string };
      updates.set(d.accountId, (updates.get(d.accountId) ?? 0) + 1);
      const prev = lastRename.get(d.accountId);
      const version = Number(result.version);
      if (prev && prev.version === version) {
        violations.push(
          `renames ${prev.messageId} and ${messageId} both applied as version ${version} of account ${d.accountId}`,
        );
      }
      if (!prev || version > prev.version)
        lastRename.set(d.accountId, { version, owner: d.owner, messageId });
    }
    if (m.name === 'account.close' && result?.status === 'closed') {
      const d = m.data as { accountId: string };
      updates.set(d.accountId, (updates.get(d.accountId) ?? 0) + 1);
    }
  }
  for (const a of rows.accounts) {
    const expected = updates.get(a.id) ?? 0;
    if (a.version !== expected) {
      violations.push(`account ${a.id} version ${a.version} ≠ ${expected} applied updates`);
    }
    const rename = lastRename.get(a.id);
    const owner = rename?.owner ?? openOwner.get(a.id);
    if (owner !== undefined && a.owner !== owner) {
      violations.push(
        `account ${a.id} owner "${a.owner}" ≠ "${owner}" (${rename ? `rename ${rename.messageId}` : 'its open'})`,
      );
    }
    if (BigInt(a.balance) < 0n) violations.push(`account ${a.id} balance ${a.balance} < 0`);
  }

  return {
    ok: violations.length === 0,
    violations,
    accounts: rows.accounts.length,
    transfers: rows.transfers.length,
    sumBalances,
    sumOpening,
    appliedTransferMessages,
  };
}

/** Options of {@link readLedgerRows}. */
export interface ReadLedgerRowsOptions {
  /** Only these accounts, and the transfers from or to them. @defaultValue every account */
  accountIds?: readonly string[];
  /** Only these messages' inbox rows and accepted rows. @defaultValue every message */
  messageIds?: readonly string[];
}

/**
 * Loads the rows {@link checkLedgerInvariants} judges from `db` (its schema's accounts,
 * transfers and inbox), with the known messages from `accepted_messages`.
 */
export async function readLedgerRows(
  db: Db,
  options: ReadLedgerRowsOptions = {},
): Promise<LedgerRows> {
  const { accountIds, messageIds } = options;
  const accounts = await sql<LedgerAccountRow>`
    select id::text as id, owner, opening_balance::text as opening_balance,
           balance::text as balance, version, closed_at is not null as closed
    from accounts
    where ${accountIds ? sql`id = any(${[...accountIds]}::bigint[])` : sql`true`}
    order by id`.execute(db);
  const transfers = await sql<LedgerTransferRow>`
    select id::text as id, from_id::text as from_id, to_id::text as to_id,
           amount::text as amount, message_id::text as message_id
    from transfers
    where ${
      accountIds
        ? sql`from_id = any(${[...accountIds]}::bigint[]) or to_id = any(${[...accountIds]}::bigint[])`
        : sql`true`
    }
    order by id`.execute(db);
  const inMessages = messageIds ? sql`message_id = any(${[...messageIds]}::bigint[])` : sql`true`;
  const inbox = await sql<LedgerInboxRow>`
    select message_id::text as message_id, job_name, result
    from inbox where ${inMessages} order by message_id`.execute(db);
  const accepted = await sql<{ message_id: string; job_name: string; data: unknown }>`
    select message_id::text as message_id, job_name, data
    from accepted_messages where ${inMessages} order by message_id`.execute(db);
  return {
    accounts: accounts.rows,
    transfers: transfers.rows,
    inbox: inbox.rows,
    messages: new Map(accepted.rows.map((r) => [r.message_id, { name: r.job_name, data: r.data }])),
  };
}
