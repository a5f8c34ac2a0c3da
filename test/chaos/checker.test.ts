/**
 * The checker on hand-made histories and snapshots: one valid run, then the same run broken in
 * each way the checker must catch (lost, duplicated, unexpected, broken invariants, replays that
 * do not match), to prove it says so.
 */
import { expect } from 'chai';
import {
  checkCampaign,
  type DbSnapshot,
  type TokenSnapshotRow,
} from '../../tools/chaos/checker.js';
import { parseHistory, type HistoryEvent, type RequestEvent } from '../../tools/chaos/history.js';
import { POISON_JOB_NAME } from '../../tools/chaos/poison-job.js';

const A = '1001';
const B = '1002';
const T = '1003';
const R = '1004';
const P = '1005';

function accepted(
  time: number,
  token: string,
  messageId: string,
  name: string,
  data: unknown,
  retry = false,
): RequestEvent {
  return {
    type: 'request',
    time,
    invokedAt: time - 1,
    client: 0,
    op: name === 'account.open' ? 'open' : name === 'account.rename' ? 'rename' : 'transfer',
    token,
    request: { name, data },
    retry,
    status: 202,
    body: { jobId: `m-${messageId}`, messageId, queue: 'ledger', name, state: 'queued' },
    ...(retry ? { replayed: true } : {}),
  };
}

/** Two accounts, a transfer between them, a rename, a replay, a poison message. */
function validRun(): { history: HistoryEvent[]; snapshot: DbSnapshot } {
  const history: HistoryEvent[] = [
    { type: 'meta', time: 0, startedAt: '2026-01-01T00:00:00Z', seed: 1, options: {}, plan: [] },
    accepted(10, 'tA', A, 'account.open', { owner: 'alice', openingBalance: 500 }),
    accepted(11, 'tB', B, 'account.open', { owner: 'bob', openingBalance: 300 }),
    accepted(20, 'tT', T, 'ledger.transfer', { fromId: A, toId: B, amount: 50 }),
    accepted(30, 'tR', R, 'account.rename', { accountId: B, owner: 'bob2', expectedVersion: 1 }),
    accepted(31, 'tA', A, 'account.open', { owner: 'alice', openingBalance: 500 }, true),
    accepted(40, 'tP', P, POISON_JOB_NAME, { note: 'x' }),
    {
      type: 'request',
      time: 41,
      invokedAt: 35,
      client: 1,
      op: 'open',
      token: 'tX',
      request: { name: 'account.open', data: { owner: 'x', openingBalance: 1 } },
      retry: false,
      status: null,
      body: null,
      error: 'ECONNRESET',
    },
    {
      type: 'poison-raw',
      time: 50,
      messageId: '1009',
      jobId: 'poison-1009',
      name: 'ledger.transfer',
      data: { amount: -5 },
      ok: true,
    },
  ];
  const snapshot: DbSnapshot = {
    accepted: [
      {
        message_id: A,
        token: 'tA',
        job_name: 'account.open',
        data: { owner: 'alice', openingBalance: 500 },
      },
      {
        message_id: B,
        token: 'tB',
        job_name: 'account.open',
        data: { owner: 'bob', openingBalance: 300 },
      },
      {
        message_id: T,
        token: 'tT',
        job_name: 'ledger.transfer',
        data: { fromId: A, toId: B, amount: 50 },
      },
      {
        message_id: R,
        token: 'tR',
        job_name: 'account.rename',
        data: { accountId: B, owner: 'bob2', expectedVersion: 1 },
      },
      { message_id: P, token: 'tP', job_name: POISON_JOB_NAME, data: { note: 'x' } },
    ],
    inbox: [
      { message_id: A, job_name: 'account.open', result: { status: 'applied', accountId: A } },
      { message_id: B, job_name: 'account.open', result: { status: 'applied', accountId: B } },
      { message_id: T, job_name: 'ledger.transfer', result: { status: 'applied', transferId: T } },
      { message_id: R, job_name: 'account.rename', result: { status: 'applied', version: 2 } },
    ],
    accounts: [
      { id: A, owner: 'alice', opening_balance: '500', balance: '450', version: 1, closed: false },
      { id: B, owner: 'bob2', opening_balance: '300', balance: '350', version: 2, closed: false },
    ],
    transfers: [{ id: T, from_id: A, to_id: B, amount: '50', message_id: T }],
    deadLetters: [
      { message_id: P, job_name: POISON_JOB_NAME, reason: 'exhausted' },
      { message_id: '1009', job_name: 'ledger.transfer', reason: 'invalid' },
    ],
    failedJobs: [],
    liveJobs: [],
  };
  return { history, snapshot };
}

/** The tokens of a valid run: done for applied messages, claimed for the dead poison one. */
function withTokens(snapshot: DbSnapshot): TokenSnapshotRow[] {
  return snapshot.accepted.map((r) => ({
    messageId: r.message_id,
    token: r.token,
    state: r.message_id === P ? 'claimed' : 'done',
    boundTo: r.message_id,
  }));
}

describe('chaos checker', () => {
  it('finds a valid run valid, and counts what happened', () => {
    const { history, snapshot } = validRun();
    const r = checkCampaign(history, snapshot);
    expect(r.valid, JSON.stringify(r, null, 1)).to.equal(true);
    expect(r.accepted).to.equal(5);
    expect(r.applied).to.equal(4);
    expect(r.replays.checked).to.equal(1);
    expect(r.deadLetters).to.deep.equal({ exhausted: 1, invalid: 1 });
    expect(r.poison).to.include({
      accepted: 1,
      deadOrFailed: 1,
      rawInjected: 1,
      rawDeadOrFailed: 1,
    });
    expect(r.indeterminate.requests).to.equal(1);
    expect(r.invariants.ok).to.equal(true);
    expect(r.requests.byStatus).to.deep.equal({ '202': 6, none: 1 });
  });

  it('counts a failed job as the end of a poison message when there are no dead letters', () => {
    const { history, snapshot } = validRun();
    snapshot.deadLetters = null;
    snapshot.failedJobs = [
      {
        jobId: `m-${P}`,
        messageId: P,
        name: POISON_JOB_NAME,
        state: 'failed',
        failedReason: 'boom',
      },
    ];
    const r = checkCampaign(history, snapshot);
    expect(r.valid).to.equal(true);
    expect(r.deadLetters).to.equal(null);
    expect(r.failed).to.deep.equal({ error: 1 });
    expect(r.poison.rawVanished).to.equal(1);
  });

  it('reports a message BullMQ failed without a dead letter as lost, where dead letters exist', () => {
    const { history, snapshot } = validRun();
    snapshot.deadLetters = snapshot.deadLetters!.filter((d) => d.message_id !== P);
    snapshot.failedJobs = [
      {
        jobId: `m-${P}`,
        messageId: P,
        name: POISON_JOB_NAME,
        state: 'failed',
        failedReason: 'boom',
      },
    ];
    const r = checkCampaign(history, snapshot);
    expect(r.valid).to.equal(false);
    expect(r.lost.map((l) => [l.messageId, l.failedWithoutDeadLetter])).to.deep.equal([[P, true]]);
  });

  it('reports an accepted message with no effect as lost', () => {
    const { history, snapshot } = validRun();
    history.push(accepted(60, 'tL', '1006', 'ledger.transfer', { fromId: B, toId: A, amount: 1 }));
    snapshot.accepted.push({
      message_id: '1006',
      token: 'tL',
      job_name: 'ledger.transfer',
      data: { fromId: B, toId: A, amount: 1 },
    });
    const r = checkCampaign(history, snapshot);
    expect(r.valid).to.equal(false);
    expect(r.lost).to.have.length(1);
    expect(r.lost[0]).to.include({ messageId: '1006', token: 'tL', stillQueued: false, line: 10 });
    expect(r.invariants.ok).to.equal(true);
  });

  it('reports a lost poison message (neither dead nor failed), and one still queued', () => {
    const { history, snapshot } = validRun();
    snapshot.deadLetters = [];
    snapshot.liveJobs = [
      { jobId: `m-${P}`, messageId: P, name: POISON_JOB_NAME, state: 'delayed' },
    ];
    const r = checkCampaign(history, snapshot);
    expect(r.valid).to.equal(false);
    expect(r.lost.map((l) => [l.messageId, l.stillQueued])).to.deep.equal([[P, true]]);
  });

  it('reports a 2xx the database does not back', () => {
    const { history, snapshot } = validRun();
    snapshot.accepted = snapshot.accepted.filter((r) => r.message_id !== T);
    const r = checkCampaign(history, snapshot);
    expect(r.valid).to.equal(false);
    expect(r.acceptance.map((a) => a.messageId)).to.deep.equal([T]);
  });

  it('reports a message with two inbox rows or two transfer rows as duplicated', () => {
    const { history, snapshot } = validRun();
    snapshot.inbox.push({ ...snapshot.inbox[2]! });
    snapshot.transfers.push({ ...snapshot.transfers[0]!, id: '2000' });
    const r = checkCampaign(history, snapshot);
    expect(r.valid).to.equal(false);
    expect(r.duplicated.map((d) => d.detail)).to.deep.equal(['2 inbox rows', '2 transfer rows']);
  });

  it('catches a transfer applied twice under one row through the balances and versions', () => {
    const { history, snapshot } = validRun();
    // What a second commit of the transfer would leave: both balances moved again, versions
    // bumped again, the transfer row absorbed by ON CONFLICT.
    snapshot.accounts[0] = { ...snapshot.accounts[0]!, balance: '400', version: 2 };
    snapshot.accounts[1] = { ...snapshot.accounts[1]!, balance: '400', version: 3 };
    const r = checkCampaign(history, snapshot);
    expect(r.valid).to.equal(false);
    expect(r.invariants.ok).to.equal(false);
    expect(r.invariants.violations.join('\n'))
      .to.match(new RegExp(`account ${A} balance 400 ≠ opening 500 \\+ transfers = 450`))
      .and.to.match(new RegExp(`account ${B} version 3 ≠ 2 applied updates`));
  });

  it('reports effects no one accepted as unexpected', () => {
    const { history, snapshot } = validRun();
    snapshot.inbox.push({ message_id: '1009', job_name: 'ledger.transfer', result: null });
    snapshot.inbox.push({ message_id: '7777', job_name: 'account.open', result: null });
    snapshot.accounts.push({
      id: '8888',
      owner: 'ghost',
      opening_balance: '0',
      balance: '0',
      version: 0,
      closed: false,
    });
    const r = checkCampaign(history, snapshot);
    expect(r.valid).to.equal(false);
    expect(r.unexpected.map((u) => u.detail)).to.deep.equal([
      'inbox row for a raw poison job (ledger.transfer) that no one accepted',
      'inbox row (account.open) for a message no one accepted',
      'account 8888 that no accepted message opened',
    ]);
  });

  it('reports a poison message that was applied', () => {
    const { history, snapshot } = validRun();
    snapshot.inbox.push({ message_id: P, job_name: POISON_JOB_NAME, result: null });
    const r = checkCampaign(history, snapshot);
    expect(r.valid).to.equal(false);
    expect(r.poison.applied.map((a) => a.messageId)).to.deep.equal([P]);
  });

  it('reports broken ledger invariants', () => {
    const { history, snapshot } = validRun();
    snapshot.accounts[0] = { ...snapshot.accounts[0]!, balance: '451' };
    snapshot.accounts[1] = { ...snapshot.accounts[1]!, owner: 'bob' };
    const r = checkCampaign(history, snapshot);
    expect(r.valid).to.equal(false);
    const text = r.invariants.violations.join('\n');
    expect(text).to.include('sum of balances 801 ≠ sum of opening balances 800');
    expect(text).to.include(`account ${A} balance 451`);
    expect(text).to.include(`account ${B} owner "bob" ≠ "bob2"`);
  });

  it('reports an applied transfer without its row, and a row for a rejected transfer', () => {
    const { history, snapshot } = validRun();
    snapshot.transfers = [];
    snapshot.accounts[0] = { ...snapshot.accounts[0]!, balance: '500', version: 0 };
    snapshot.accounts[1] = { ...snapshot.accounts[1]!, balance: '300', version: 1 };
    let r = checkCampaign(history, snapshot);
    expect(r.invariants.violations).to.deep.equal([
      `transfer ${T} applied but has no transfer row`,
    ]);

    const second = validRun();
    second.snapshot.inbox[2] = {
      ...second.snapshot.inbox[2]!,
      result: { status: 'rejected', reason: 'insufficient funds' },
    };
    r = checkCampaign(second.history, second.snapshot);
    expect(r.valid).to.equal(false);
    expect(r.invariants.violations[0]).to.match(
      /^transfer row 1003 for message 1003, whose result/,
    );
  });

  it('reports a replay whose answer differs from the first', () => {
    const { history, snapshot } = validRun();
    const replay = accepted(
      70,
      'tB',
      '1099',
      'account.open',
      { owner: 'bob', openingBalance: 300 },
      true,
    );
    history.push(replay);
    history.push({ ...replay, time: 71, status: 422, body: { code: 'idempotency_key_unknown' } });
    const r = checkCampaign(history, snapshot);
    expect(r.valid).to.equal(false);
    expect(r.replays.checked).to.equal(3);
    expect(r.replays.mismatched).to.have.length(2);
    expect(r.replays.mismatched[0]!.lines).to.deep.equal([3, 10]);
    // The second message id a replay handed out is itself accepted and lost.
    expect(r.lost.map((l) => l.messageId)).to.deep.equal(['1099']);
  });

  it('does not count 409, 429, 5xx or no answer as replay mismatches', () => {
    const { history, snapshot } = validRun();
    for (const status of [409, 429, 500, 503, null]) {
      history.push({
        ...accepted(80, 'tA', A, 'account.open', { owner: 'alice', openingBalance: 500 }, true),
        status,
        body: null,
      });
    }
    expect(checkCampaign(history, snapshot).valid).to.equal(true);
  });

  it('checks tokens: bound to another message is always an anomaly', () => {
    const { history, snapshot } = validRun();
    snapshot.tokens = withTokens(snapshot);
    expect(checkCampaign(history, snapshot).tokens).to.deep.include({
      checked: 5,
      byState: { done: 4, claimed: 1 },
      appliedByState: { done: 4 },
      anomalies: [],
    });
    snapshot.tokens[2]!.boundTo = '999';
    for (const durableStores of [false, true]) {
      const r = checkCampaign(history, snapshot, { durableStores });
      expect(r.valid).to.equal(false);
      expect(r.tokens!.anomalies.map((a) => [a.messageId, a.detail])).to.deep.equal([
        [T, 'the token store binds it to 999'],
      ]);
    }
  });

  it('reports a lost or never-used token only where the stores are durable', () => {
    const { history, snapshot } = validRun();
    snapshot.tokens = withTokens(snapshot);
    snapshot.tokens[0] = { ...snapshot.tokens[0]!, state: 'missing', boundTo: undefined };
    snapshot.tokens[1] = { ...snapshot.tokens[1]!, state: 'issued', boundTo: undefined };
    // Redis faults may lose tokens, and the fallbacks to PostgreSQL's records cover it.
    expect(checkCampaign(history, snapshot).valid).to.equal(true);
    const r = checkCampaign(history, snapshot, { durableStores: true });
    expect(r.valid).to.equal(false);
    expect(r.tokens!.anomalies.map((a) => [a.messageId, a.detail])).to.deep.equal([
      [A, 'the token store holds no state for it'],
      [B, 'the token store holds it as never used'],
    ]);
  });

  it('reports a raw poison job gone without a trace only where the stores are durable', () => {
    const { history, snapshot } = validRun();
    snapshot.deadLetters = snapshot.deadLetters!.filter((d) => d.message_id !== '1009');
    const lenient = checkCampaign(history, snapshot);
    expect(lenient.valid).to.equal(true);
    expect(lenient.poison.rawVanished).to.equal(1);
    expect(lenient.vanished).to.deep.equal([]);
    const r = checkCampaign(history, snapshot, { durableStores: true });
    expect(r.valid).to.equal(false);
    expect(r.vanished.map((a) => [a.messageId, a.lines])).to.deep.equal([['1009', [9]]]);
    // Still queued is not gone.
    snapshot.liveJobs = [
      { jobId: 'poison-1009', messageId: '1009', name: 'ledger.transfer', state: 'waiting' },
    ];
    expect(checkCampaign(history, snapshot, { durableStores: true }).vanished).to.deep.equal([]);
  });

  it('reads a history whose last line was cut off', () => {
    const { history } = validRun();
    const text = `${history.map((e) => JSON.stringify(e)).join('\n')}\n{"type":"req`;
    expect(parseHistory(text)).to.deep.equal(history);
    expect(() => parseHistory(`{"a":\n{"type":"meta"}\n`)).to.throw();
  });
});
