/**
 * The one ledger invariant check (tools/support/ledger-invariants.ts), pure: the rules that hold
 * whatever the caller knows, and those that need every message known (`messagesComplete`).
 * The chaos checker's tests (test/chaos/checker.test.ts) cover the rest through it.
 */
import { expect } from 'chai';
import {
  checkLedgerInvariants,
  type KnownMessage,
  type LedgerRows,
} from '../../tools/support/ledger-invariants.js';

/** Account 1 opened with 100 by message 1; account 2 inserted by hand with 50; 30 moved 1 -> 2. */
function rows(): LedgerRows & { messages: Map<string, KnownMessage> } {
  return {
    accounts: [
      { id: '1', owner: 'a', opening_balance: '100', balance: '70', version: 1, closed: false },
      { id: '2', owner: 'b', opening_balance: '50', balance: '80', version: 1, closed: false },
    ],
    transfers: [{ id: '10', from_id: '1', to_id: '2', amount: '30', message_id: '3' }],
    inbox: [
      { message_id: '1', job_name: 'account.open', result: { status: 'applied' } },
      { message_id: '3', job_name: 'ledger.transfer', result: { status: 'applied' } },
    ],
    messages: new Map<string, KnownMessage>([
      ['1', { name: 'account.open', data: { owner: 'a', openingBalance: 100 } }],
      ['3', { name: 'ledger.transfer', data: { fromId: '1', toId: '2', amount: 30 } }],
    ]),
  };
}

describe('tools: the ledger invariant check', () => {
  it('holds for a consistent ledger whose known messages are not all of them', () => {
    const r = checkLedgerInvariants(rows());
    expect(r.violations).to.deep.equal([]);
    expect(r).to.include({ ok: true, accounts: 2, transfers: 1, appliedTransferMessages: 1 });
    expect(r.sumBalances).to.equal(150n);
  });

  it('with messagesComplete, flags an account no known open made, and the sum of the opens', () => {
    const r = checkLedgerInvariants(rows(), { messagesComplete: true });
    expect(r.violations).to.deep.equal([
      'sum of balances 150 ≠ sum of opening balances of applied opens 100',
      'account 2 that no applied open opened',
    ]);
  });

  it('flags an applied transfer the inbox records without its row, even when unknown', () => {
    const ledger = rows();
    ledger.messages.delete('3');
    const r = checkLedgerInvariants({ ...ledger, transfers: [] });
    expect(r.violations).to.include('transfer 3 applied but has no transfer row');
  });

  it('flags a transfer row whose message was not applied, and a version that miscounts', () => {
    const ledger = rows();
    const r = checkLedgerInvariants({
      ...ledger,
      inbox: [ledger.inbox[0]!],
      accounts: [ledger.accounts[0]!, { ...ledger.accounts[1]!, version: 2 }],
    });
    expect(r.violations).to.deep.equal([
      'transfer row 10 for message 3, whose result is null',
      'account 2 version 2 ≠ 1 applied updates',
    ]);
  });
});
