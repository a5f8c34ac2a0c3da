/**
 * The outbox's SQL against the real PostgreSQL: a follow-up whose message id already belongs to
 * an accepted message (an id minted twice) fails the batch loudly and leaves every row in place,
 * instead of being recorded with `on conflict do nothing` and then dropped by BullMQ as a
 * duplicate job id.
 */
import { expect } from 'chai';
import { IdClashError, NonRetryableError } from '../../src/core/errors.js';
import { encodeSnowflake } from '../../src/core/snowflake.js';
import { recordAccepted } from '../../src/db/accepted-messages.repository.js';
import { insertOutbox, outboxDepth, takeOutboxBatch } from '../../src/db/outbox.repository.js';
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
    const rows = await t.db.transaction().execute((trx) => takeOutboxBatch(trx, 10));
    expect(rows.map((r) => r.message_id)).to.deep.equal([id(1), id(2)]);
    expect(rows[0]).to.not.have.property('recorded');
    expect(await outboxDepth(t.db)).to.equal(0);
    const accepted = await t.db.selectFrom('accepted_messages').select('message_id').execute();
    expect(accepted.map((r) => r.message_id).sort()).to.deep.equal([id(1), id(2)]);
  });

  it('throws IdClashError on a follow-up whose id an accepted message holds, and moves nothing', async () => {
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

    const error = await t.db
      .transaction()
      .execute((trx) => takeOutboxBatch(trx, 10))
      .catch((err: unknown) => err);
    expect(error).to.be.instanceOf(IdClashError);
    expect(error).to.be.instanceOf(NonRetryableError); // no retry can give it another id
    expect((error as IdClashError).code).to.equal('id_clash');
    expect((error as IdClashError).details.messageIds).to.deep.equal([id(2)]);
    expect((error as Error).message).to.contain(id(2));
    // The batch rolled back: all three follow-ups wait in the outbox, none is half-sent, and
    // the other message's record is untouched.
    expect(await outboxDepth(t.db)).to.equal(3);
    const accepted = await t.db
      .selectFrom('accepted_messages')
      .select(['message_id', 'principal'])
      .execute();
    expect(accepted).to.deep.equal([{ message_id: id(2), principal: 'alice' }]);
  });
});
