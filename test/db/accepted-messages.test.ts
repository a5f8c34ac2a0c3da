/**
 * The acceptance writer: many concurrent callers share multi-row INSERTs, and each still gets the
 * first acceptance of its `(principal, token)`, committed.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { createTestSchema, type TestSchema } from '../support/env.js';
import {
  createAcceptanceWriter,
  findAcceptedByToken,
  recordAccepted,
  type AcceptedMessage,
} from '../../src/db/accepted-messages.repository.js';

let nextId = 7_300_000_000_000_000_000n;
function message(token: string, principal = 'p1'): AcceptedMessage {
  const messageId = String(nextId++);
  return {
    messageId,
    principal,
    token,
    fingerprint: `fp-${token}`,
    queue: 'ledger',
    jobName: 'ledger.transfer',
    data: { n: token },
    jobId: `m-${messageId}`,
    options: {},
  };
}

describe('db: acceptance writer', function () {
  this.timeout(30_000);
  let t: TestSchema;
  before(async () => {
    t = await createTestSchema('accept');
  });
  after(async () => t.drop());
  afterEach(async () => {
    await sql`truncate accepted_messages`.execute(t.db);
  });

  it('commits 300 concurrent acceptances in fewer statements, each caller its own row', async () => {
    const writer = createAcceptanceWriter(t.db, 100, 2);
    const messages = Array.from({ length: 300 }, (_, i) => message(`tok-${i}`));
    const rows = await Promise.all(messages.map((m) => writer.record(m)));
    rows.forEach((row, i) => {
      expect(row.message_id).to.equal(messages[i]!.messageId);
      expect(row.token).to.equal(messages[i]!.token);
    });
    const { n } = await t.db
      .selectFrom('accepted_messages')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .executeTakeFirstOrThrow();
    expect(Number(n)).to.equal(300);
    // Rows of one statement share a transaction id: fewer transactions than rows means batching.
    const { rows: txs } = await sql<{
      n: string;
    }>`select count(distinct xmin::text) as n from accepted_messages`.execute(t.db);
    expect(Number(txs[0]!.n)).to.be.within(2, 299);
  });

  it('answers twins of one token, and a token recorded earlier, with the first acceptance', async () => {
    const writer = createAcceptanceWriter(t.db, 500, 1);
    const earlier = message('old');
    await recordAccepted(t.db, earlier);
    // Twins in one batch (the first call flushes alone, the rest queue behind it), with
    // different message ids as two racing requests would have minted.
    const lead = message('lead');
    const twinA = message('twin');
    const twinB = message('twin');
    const again = message('old');
    const rows = await Promise.all([lead, twinA, twinB, again].map((m) => writer.record(m)));
    expect(rows[0]!.message_id).to.equal(lead.messageId);
    expect(rows[1]!.message_id).to.equal(twinA.messageId);
    expect(rows[2]!.message_id, 'the second twin gets the first twin’s row').to.equal(
      twinA.messageId,
    );
    expect(rows[3]!.message_id, 'the retry gets the earlier acceptance').to.equal(
      earlier.messageId,
    );
    expect((await findAcceptedByToken(t.db, 'p1', 'twin'))!.message_id).to.equal(twinA.messageId);
  });

  it('falls back row by row on a primary-key clash, and still answers everyone', async () => {
    const writer = createAcceptanceWriter(t.db, 500, 1);
    const first = message('clash');
    await recordAccepted(t.db, first);
    // Same message id under another principal's token: the primary key, not the (principal,
    // token) target, refuses it; the batch must not take its neighbours down with it.
    const clash = { ...message('other', 'p2'), messageId: first.messageId };
    const neighbour = message('neighbour');
    const blocker = message('blocker');
    const results = await Promise.allSettled(
      [blocker, clash, neighbour].map((m) => writer.record(m)),
    );
    expect(results[0]!.status).to.equal('fulfilled');
    expect(results[2]!.status).to.equal('fulfilled');
    expect(results[1]!.status).to.equal('rejected');
    expect((results[1] as PromiseRejectedResult).reason).to.be.instanceOf(Error);
    expect(await findAcceptedByToken(t.db, 'p1', 'neighbour')).to.not.equal(undefined);
  });

  it('rejects every caller of a batch the database refuses, and writes none of it', async () => {
    const writer = createAcceptanceWriter(t.db, 500, 1);
    const good = message('good');
    const bad = { ...message('bad'), principal: null as unknown as string };
    const lead = message('lead2');
    const results = await Promise.allSettled([lead, good, bad].map((m) => writer.record(m)));
    expect(results[0]!.status).to.equal('fulfilled');
    expect(results[1]!.status).to.equal('rejected');
    expect(results[2]!.status).to.equal('rejected');
    expect(await findAcceptedByToken(t.db, 'p1', 'good')).to.equal(undefined);
  });
});
