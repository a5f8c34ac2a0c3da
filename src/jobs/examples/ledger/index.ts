/**
 * The built-in ledger example (DESIGN.md section 7): accounts with optimistic versions and
 * transfers between them. Used by the demo, the tests and the benchmarks, and a model for user
 * jobs. Rejections (insufficient funds, unknown or closed accounts) are recorded outcomes, not
 * errors: they commit the inbox row with their result and write nothing else.
 */
import type { Kysely } from 'kysely';
import type { Database, AccountRow } from '../../../db/database.js';
import { defineJob } from '../../define-job.js';
import { CloseAccount, OpenAccount, RenameAccount, Transfer } from './schemas.js';

/** `defineJob` for the ledger's tables: its handlers' queries are checked against them. */
const defineLedgerJob = defineJob<Database>();

/** The queue all ledger jobs run on. */
export const LEDGER_QUEUE = 'ledger';

export type OpenResult =
  { status: 'applied'; accountId: string } | { status: 'rejected'; reason: string };
export type RenameResult =
  | { status: 'applied'; version: number }
  | { status: 'conflict'; currentVersion: number }
  | { status: 'rejected'; reason: string };
export type TransferResult =
  { status: 'applied'; transferId: string } | { status: 'rejected'; reason: string };
export type CloseResult = { status: 'closed' } | { status: 'rejected'; reason: string };

async function findAccounts(
  trx: Kysely<Database>,
  ids: string[],
): Promise<Map<string, AccountRow>> {
  const rows = await trx.selectFrom('accounts').selectAll().where('id', 'in', ids).execute();
  return new Map(rows.map((r) => [r.id, r]));
}

/** `account.open`: inserts the account under a pre-minted id (the messageId by default). */
export const openAccount = defineLedgerJob({
  name: 'account.open',
  queue: LEDGER_QUEUE,
  schema: OpenAccount,
  async handle(ctx): Promise<OpenResult> {
    const accountId = ctx.data.accountId ?? ctx.messageId;
    const balance = String(ctx.data.openingBalance);
    const inserted = await ctx.insertOnce('accounts', {
      id: accountId,
      owner: ctx.data.owner,
      opening_balance: balance,
      balance,
    });
    // The inbox already fences re-deliveries of this message; a conflict here means another
    // message opened this id first, which must not look like success.
    if (!inserted) return { status: 'rejected', reason: `account ${accountId} already exists` };
    return { status: 'applied', accountId };
  },
});

/** `account.rename`: a version-checked update against the client's `expectedVersion`. */
export const renameAccount = defineLedgerJob({
  name: 'account.rename',
  queue: LEDGER_QUEUE,
  schema: RenameAccount,
  async handle(ctx): Promise<RenameResult> {
    const account = (await findAccounts(ctx.trx, [ctx.data.accountId])).get(ctx.data.accountId);
    if (!account) return { status: 'rejected', reason: `unknown account ${ctx.data.accountId}` };
    if (account.closed_at) return { status: 'rejected', reason: `account ${account.id} is closed` };
    if (account.version !== ctx.data.expectedVersion) {
      return { status: 'conflict', currentVersion: account.version };
    }
    const version = await ctx.updateVersioned('accounts', account.id, account.version, {
      owner: ctx.data.owner,
    });
    return { status: 'applied', version };
  },
});

/**
 * `ledger.transfer`: reads both accounts, updates both with version checks (in id order, so two
 * transfers never wait on each other in opposite orders), and records the transfer under the
 * messageId.
 */
export const transfer = defineLedgerJob({
  name: 'ledger.transfer',
  queue: LEDGER_QUEUE,
  schema: Transfer,
  async handle(ctx): Promise<TransferResult> {
    const { fromId, toId } = ctx.data;
    if (fromId === toId)
      return { status: 'rejected', reason: 'cannot transfer to the same account' };
    const accounts = await findAccounts(ctx.trx, [fromId, toId]);
    const from = accounts.get(fromId);
    const to = accounts.get(toId);
    for (const [id, account] of [
      [fromId, from],
      [toId, to],
    ] as const) {
      if (!account) return { status: 'rejected', reason: `unknown account ${id}` };
      if (account.closed_at) return { status: 'rejected', reason: `account ${id} is closed` };
    }
    const amount = BigInt(ctx.data.amount);
    if (BigInt(from!.balance) < amount) return { status: 'rejected', reason: 'insufficient funds' };

    const updates = [
      { account: from!, balance: BigInt(from!.balance) - amount },
      { account: to!, balance: BigInt(to!.balance) + amount },
    ].sort((a, b) => (BigInt(a.account.id) < BigInt(b.account.id) ? -1 : 1));
    for (const u of updates) {
      await ctx.updateVersioned('accounts', u.account.id, u.account.version, {
        balance: u.balance.toString(),
      });
    }
    await ctx.insertOnce('transfers', {
      id: ctx.messageId,
      from_id: fromId,
      to_id: toId,
      amount: amount.toString(),
      message_id: ctx.messageId,
    });
    return { status: 'applied', transferId: ctx.messageId };
  },
});

/**
 * `account.close`: only a zero balance closes. The row stays (marked closed) rather than being
 * deleted, so transfers keep their accounts and the ledger's invariants keep adding up.
 */
export const closeAccount = defineLedgerJob({
  name: 'account.close',
  queue: LEDGER_QUEUE,
  schema: CloseAccount,
  async handle(ctx): Promise<CloseResult> {
    const account = (await findAccounts(ctx.trx, [ctx.data.accountId])).get(ctx.data.accountId);
    if (!account) return { status: 'rejected', reason: `unknown account ${ctx.data.accountId}` };
    if (account.closed_at)
      return { status: 'rejected', reason: `account ${account.id} is already closed` };
    if (account.balance !== '0') return { status: 'rejected', reason: 'balance is not zero' };
    await ctx.updateVersioned('accounts', account.id, account.version, { closed_at: new Date() });
    return { status: 'closed' };
  },
});

/** The four ledger jobs, registered by default. */
export const ledgerJobs = [openAccount, renameAccount, transfer, closeAccount] as const;
