/**
 * The outbox's SQL against the real PostgreSQL: a follow-up whose message id already belongs to
 * an accepted message (an id minted twice) is reported as an IdClashError and quarantined in
 * place, instead of being recorded with `on conflict do nothing` and then dropped by BullMQ as a
 * duplicate job id; the rows beside it are taken.
 */
import { expect } from 'chai';
import { IdClashError, NonRetryableError } from '../../src/core/errors.js';
import { encodeSnowflake } from '../../src/core/snowflake.js';
import { recordAccepted } from '../../src/db/accepted-messages.repository.js';
import {
  insertOutbox,
  outboxBacklog,
  quarantinedFollowUps,
  takeOutboxBatch,
} from '../../src/db/outbox.repository.js';
import { createTestSchema, type TestSchema } from '../support/env.js';

const id = (sequence: number) =>
  encodeSnowflake({ timestampMs: Date.UTC(2026, 5, 1), workerId: 3, sequence });

describe('outbox repository', () => {
  let t: TestSchema;
  beforeEach(async () => {
    t = await createTestSchema('outbox_repo', 2);
  });
  afterEach(async () => t.drop());

  async function followUp(messageId: string): Promise<void> {
    await insertOutbox(t.db, {
      messageId,
      parentMessageId: id(999),
      queue: 'ledger',
      jobName: 'account.open',
      data: { owner: 'a', openingBalance: 1 },
      token: `tok-${messageId}`,
      options: {},
    });
  }

  it('takes committed rows and records each as an accepted message', async () => {
    await followUp(id(1));
    await followUp(id(2));
    const { rows, clashes } = await t.db.transaction().execute((trx) => takeOutboxBatch(trx, 10));
    expect(clashes).to.equal(undefined);
    expect(rows.map((r) => r.message_id)).to.deep.equal([id(1), id(2)]);
    expect(rows[0]).to.not.have.property('recorded');
    expect((await outboxBacklog(t.db)).depth).to.equal(0);
    const accepted = await t.db.selectFrom('accepted_messages').select('message_id').execute();
    expect(accepted.map((r) => r.message_id).sort()).to.deep.equal([id(1), id(2)]);
  });

  it('reports an IdClashError for a follow-up whose id an accepted message holds, quarantines it, and takes the rest', async () => {
    await recordAccepted(t.db, {
      messageId: id(2),
      principal: 'alice',
      token: 'tok-alice',
      fingerprint: 'f',
      queue: 'ledger',
      jobName: 'account.open',
      data: { owner: 'alice', openingBalance: 5 },
      jobId: `m-${id(2)}`,
      options: {},
    });
    for (const n of [1, 2, 3]) await followUp(id(n));

    const { rows, clashes } = await t.db.transaction().execute((trx) => takeOutboxBatch(trx, 10));
    expect(rows.map((r) => r.message_id)).to.deep.equal([id(1), id(3)]);
    expect(clashes).to.be.instanceOf(IdClashError);
    expect(clashes).to.be.instanceOf(NonRetryableError); // no retry can give it another id
    expect(clashes!.code).to.equal('id_clash');
    expect(clashes!.details.messageIds).to.deep.equal([id(2)]);
    expect(clashes!.message).to.contain(id(2));
    // The clash stays in the outbox, marked, and the other message's record is untouched.
    expect((await outboxBacklog(t.db)).depth).to.equal(1);
    const quarantined = await quarantinedFollowUps(t.db);
    expect(quarantined.map((q) => q.message_id)).to.deep.equal([id(2)]);
    expect(quarantined[0]!.quarantined_at).to.be.instanceOf(Date);
    const accepted = await t.db
      .selectFrom('accepted_messages')
      .select(['message_id', 'principal'])
      .orderBy('message_id')
      .execute();
    expect(accepted).to.deep.equal([
      { message_id: id(1), principal: 'outbox' },
      { message_id: id(2), principal: 'alice' },
      { message_id: id(3), principal: 'outbox' },
    ]);
    // A quarantined row is never taken again.
    const again = await t.db.transaction().execute((trx) => takeOutboxBatch(trx, 10));
    expect(again).to.deep.equal({ rows: [], clashes: undefined });
  });
});
