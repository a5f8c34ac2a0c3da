/**
 * The ledger invariants of DESIGN.md section 7, checkable at any time, and small helpers the
 * integration and fault tests share.
 */
import { expect } from 'chai';
import type { Db } from '../../src/db/create-db.js';
import { checkLedgerInvariants, readLedgerRows } from '../../tools/support/ledger-invariants.js';

/** What the invariant check found, for assertions and messages. */
export interface LedgerState {
  accounts: number;
  sumBalances: bigint;
  sumOpening: bigint;
  transfers: number;
  appliedTransferMessages: number;
}

/**
 * Asserts the ledger invariants over every account of `db`'s schema, by the one check the demo
 * and the chaos campaign use (tools/support/ledger-invariants.ts): the sum of balances equals the
 * sum of opening balances; each balance equals its opening balance plus its incoming minus
 * outgoing transfers; one transfer row per applied transfer message, none for any other;
 * versions equal the number of updates each account saw (transfers touching it plus applied
 * renames and closes); owners and opening balances as the accepted messages asked. Tests insert
 * accounts and enqueue messages in ways the API would not, so the known messages (the accepted
 * rows) are not taken as complete.
 */
export async function assertLedgerInvariants(db: Db): Promise<LedgerState> {
  const result = checkLedgerInvariants(await readLedgerRows(db));
  expect(result.violations, 'ledger invariants').to.deep.equal([]);
  return {
    accounts: result.accounts,
    sumBalances: result.sumBalances,
    sumOpening: result.sumOpening,
    transfers: result.transfers,
    appliedTransferMessages: result.appliedTransferMessages,
  };
}

/** Polls `check` until it returns a truthy value or the time runs out. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false | null>,
  timeoutMs = 20_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Number of inbox rows (applied messages). */
export async function inboxCount(db: Db): Promise<number> {
  const row = await db
    .selectFrom('inbox')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}
