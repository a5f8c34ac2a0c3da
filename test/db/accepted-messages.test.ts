/**
 * The acceptance writer: many concurrent callers share multi-row INSERTs, and each still gets the
 * first acceptance of its `(principal, token)`, committed.
 */
import { expect } from 'chai';
import { InsertQueryNode, sql, ValuesNode, type Kysely, type KyselyPlugin } from 'kysely';
import { createTestSchema, type TestSchema } from '../support/env.js';
import { ErrorCode, OnceqError } from '../../src/core/errors.js';
import type { Database } from '../../src/db/database.js';
import {
  createAcceptanceWriter,
  findAcceptedByMessageId,
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

/**
 * The same database, with the row count of every INSERT it sends noted in `sizes`: how a test
 * sees which callers shared a statement. The statements still run against the real PostgreSQL.
 */
function watchInserts(db: Kysely<Database>): { db: Kysely<Database>; sizes: number[] } {
  const sizes: number[] = [];
  const plugin: KyselyPlugin = {
    transformQuery({ node }) {
      if (InsertQueryNode.is(node) && node.values && ValuesNode.is(node.values)) {
        sizes.push(node.values.values.length);
      }
      return node;
    },
    transformResult: ({ result }) => Promise.resolve(result),
  };
  return { db: db.withPlugin(plugin), sizes };
}

/** The pg error code of a rejection (its cause's, for an OnceqError wrapping one). */
function pgCode(result: PromiseSettledResult<unknown>): string | undefined {
  expect(result.status).to.equal('rejected');
  return ((result as PromiseRejectedResult).reason as { code?: string }).code;
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
    // Twins in one batch (calls made in one turn of the event loop share a statement), with
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
    const watched = watchInserts(t.db);
    const writer = createAcceptanceWriter(watched.db, 500, 1);
    const first = message('clash');
    await recordAccepted(t.db, first);
    // Same message id under another principal's token: the primary key, not the (principal,
    // token) target, refuses it; the batch must not take its neighbours down with it.
    const clash = { ...message('other', 'p2'), messageId: first.messageId };
    const neighbour = message('neighbour');
    const bystander = message('bystander');
    const results = await Promise.allSettled(
      [bystander, clash, neighbour].map((m) => writer.record(m)),
    );
    expect(watched.sizes, 'one batch of three, then row by row').to.deep.equal([3, 1, 1, 1]);
    expect(results[0]!.status).to.equal('fulfilled');
    expect(results[2]!.status).to.equal('fulfilled');
    expect(await findAcceptedByToken(t.db, 'p1', 'neighbour')).to.not.equal(undefined);
    // Not "already accepted": the row holding that id is another request's message.
    expect(results[1]!.status).to.equal('rejected');
    const reason = (results[1] as PromiseRejectedResult).reason as OnceqError;
    expect(reason).to.be.instanceOf(OnceqError);
    expect(reason.code).to.equal(ErrorCode.Internal);
    expect((reason.cause as { code?: string }).code).to.equal('23505');
    expect(await findAcceptedByToken(t.db, 'p2', 'other')).to.equal(undefined);
    const holder = await findAcceptedByMessageId(t.db, first.messageId);
    expect([holder!.principal, holder!.token]).to.deep.equal(['p1', 'clash']);
  });

  it('rejects a message id taken by another request, not answering with that request’s row', async () => {
    const first = message('taken');
    await recordAccepted(t.db, first);
    const alone = { ...message('mine', 'p2'), messageId: first.messageId };
    // Both ways in: recordAccepted, and a writer batch of one (nothing else in flight).
    const watched = watchInserts(t.db);
    const writer = createAcceptanceWriter(watched.db, 500, 1);
    const results = await Promise.allSettled([recordAccepted(t.db, alone), writer.record(alone)]);
    for (const result of results) {
      expect(result.status).to.equal('rejected');
      const reason = (result as PromiseRejectedResult).reason as OnceqError;
      expect(reason).to.be.instanceOf(OnceqError);
      expect(reason.code).to.equal(ErrorCode.Internal);
      expect(reason.message).to.contain(first.messageId);
      expect((reason.cause as { code?: string }).code).to.equal('23505');
    }
    expect(watched.sizes, 'a batch of one is not retried').to.deep.equal([1]);
    expect(await findAcceptedByToken(t.db, 'p2', 'mine')).to.equal(undefined);
  });

  it('answers each caller of a batch the database refuses on its own: only the bad ones fail', async () => {
    const watched = watchInserts(t.db);
    const writer = createAcceptanceWriter(watched.db, 500, 1);
    // All eight are recorded in one turn of the event loop, so they go as one batch.
    const lead = message('lead2');
    const good = ['g1', 'g2', 'g3', 'g4', 'g5'].map((token) => message(token));
    // PostgreSQL refuses \u0000 in jsonb (22P05) and a message id past bigint (22003).
    const nul = { ...message('nul'), data: { text: 'a\u0000b' } };
    const huge = { ...message('huge'), messageId: '99999999999999999999' };
    const batch = [good[0]!, nul, good[1]!, good[2]!, huge, good[3]!, good[4]!];
    const results = await Promise.allSettled([lead, ...batch].map((m) => writer.record(m)));
    expect(watched.sizes, 'one batch of eight, then each row alone').to.deep.equal([
      8, 1, 1, 1, 1, 1, 1, 1, 1,
    ]);
    expect(pgCode(results[2]!)).to.equal('22P05');
    expect(pgCode(results[5]!)).to.equal('22003');
    for (const [i, m] of [lead, ...batch].entries()) {
      if (m === nul || m === huge) continue;
      expect(results[i]!.status, m.token).to.equal('fulfilled');
      const row = (results[i] as PromiseFulfilledResult<{ message_id: string }>).value;
      expect(row.message_id).to.equal(m.messageId);
      expect((await findAcceptedByToken(t.db, 'p1', m.token))!.message_id).to.equal(m.messageId);
    }
    expect(await findAcceptedByToken(t.db, 'p1', 'nul')).to.equal(undefined);
    expect(await findAcceptedByToken(t.db, 'p1', 'huge')).to.equal(undefined);
  });

  it('rejects the caller of a batch of one the database refuses, and carries on', async () => {
    const watched = watchInserts(t.db);
    const writer = createAcceptanceWriter(watched.db, 500, 1);
    const nul = { ...message('nul'), data: { text: '\u0000' } };
    const [refused] = await Promise.allSettled([writer.record(nul)]);
    expect(pgCode(refused!)).to.equal('22P05');
    const next = message('next');
    expect((await writer.record(next)).message_id).to.equal(next.messageId);
    expect(watched.sizes, 'the refused row is not retried').to.deep.equal([1, 1]);
  });
});
