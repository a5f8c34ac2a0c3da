/**
 * The ledger invariants of DESIGN.md section 7, checkable at any time, and small helpers the
 * integration and fault tests share.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import type { Db } from '../../src/db/create-db.js';

/** What the invariant check found, for assertions and messages. */
export interface LedgerState {
  accounts: number;
  sumBalances: bigint;
  sumOpening: bigint;
  transfers: number;
  appliedTransferMessages: number;
}

/**
 * Asserts: the sum of balances equals the sum of opening balances; each balance equals its
 * opening balance plus its incoming minus outgoing transfers; one transfer row per applied
 * transfer message, none for any other; versions equal the number of updates each account saw
 * (transfers touching it plus applied renames and closes).
 */
export async function assertLedgerInvariants(db: Db): Promise<LedgerState> {
  const totals = await sql<{ sum_balance: string; sum_opening: string; n: string }>`
    select coalesce(sum(balance), 0)::text as sum_balance,
           coalesce(sum(opening_balance), 0)::text as sum_opening,
           count(*)::text as n
    from accounts`.execute(db);
  const t = totals.rows[0]!;
  expect(BigInt(t.sum_balance), 'sum of balances equals sum of opening balances').to.equal(
    BigInt(t.sum_opening),
  );

  const mismatched = await sql<{ id: string; balance: string; expected: string }>`
    select a.id, a.balance::text,
           (a.opening_balance
             + coalesce((select sum(amount) from transfers where to_id = a.id), 0)
             - coalesce((select sum(amount) from transfers where from_id = a.id), 0))::text as expected
    from accounts a
    where a.balance <> a.opening_balance
             + coalesce((select sum(amount) from transfers where to_id = a.id), 0)
             - coalesce((select sum(amount) from transfers where from_id = a.id), 0)`.execute(db);
  expect(mismatched.rows, 'accounts whose balance is not opening + in - out').to.deep.equal([]);

  const transferCheck = await sql<{
    transfers: string;
    applied: string;
    orphans: string;
    missing: string;
  }>`
    select
      (select count(*) from transfers)::text as transfers,
      (select count(*) from inbox where job_name = 'ledger.transfer' and result->>'status' = 'applied')::text as applied,
      (select count(*) from transfers t where not exists (
         select 1 from inbox i where i.message_id = t.message_id
           and i.job_name = 'ledger.transfer' and i.result->>'status' = 'applied'))::text as orphans,
      (select count(*) from inbox i where i.job_name = 'ledger.transfer' and i.result->>'status' = 'applied'
         and not exists (select 1 from transfers t where t.message_id = i.message_id))::text as missing`.execute(
    db,
  );
  const c = transferCheck.rows[0]!;
  expect(Number(c.orphans), 'transfer rows without an applied transfer message').to.equal(0);
  expect(Number(c.missing), 'applied transfer messages without a transfer row').to.equal(0);
  expect(Number(c.transfers)).to.equal(Number(c.applied));

  const versions = await sql<{ id: string; version: number; expected: string }>`
    select a.id, a.version,
      ((select count(*) from transfers where to_id = a.id or from_id = a.id)
       + (select count(*) from inbox where job_name = 'account.rename' and result->>'status' = 'applied'
            and exists (select 1 from accepted_messages m where m.message_id = inbox.message_id
                          and m.data->>'accountId' = a.id::text))
       + (select count(*) from inbox where job_name = 'account.close' and result->>'status' = 'closed'
            and exists (select 1 from accepted_messages m where m.message_id = inbox.message_id
                          and m.data->>'accountId' = a.id::text)))::text as expected
    from accounts a`.execute(db);
  const badVersions = versions.rows.filter((r) => String(r.version) !== r.expected);
  expect(badVersions, 'accounts whose version is not their number of updates').to.deep.equal([]);

  return {
    accounts: Number(t.n),
    sumBalances: BigInt(t.sum_balance),
    sumOpening: BigInt(t.sum_opening),
    transfers: Number(c.transfers),
    appliedTransferMessages: Number(c.applied),
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
