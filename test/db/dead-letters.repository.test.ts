/**
 * The one conflict rule of `dead_letters` against the real PostgreSQL: a worker's dead letter
 * replaces the row in every state; the pruner's expiry replaces only a replayed letter, and
 * leaves a pending letter's reason and an operator's tombstone alone.
 */
import { expect } from 'chai';
import { encodeSnowflake } from '../../src/core/snowflake.js';
import { recordAccepted } from '../../src/db/accepted-messages.repository.js';
import {
  claimForReplay,
  expireUnapplied,
  findDeadLetter,
  purgeDeadLetters,
  upsertDeadLetter,
  EXPIRED_UNAPPLIED_ERROR,
} from '../../src/db/dead-letters.repository.js';
import { createTestSchema, type TestSchema } from '../support/env.js';

const id = (sequence: number) =>
  encodeSnowflake({ timestampMs: Date.UTC(2026, 5, 1), workerId: 3, sequence });

describe('dead-letters repository: one conflict rule', () => {
  let t: TestSchema;
  beforeEach(async () => {
    t = await createTestSchema('dead_letters_repo', 2);
  });
  afterEach(async () => t.drop());

  async function accept(messageId: string): Promise<void> {
    await recordAccepted(t.db, {
      messageId,
      principal: 'p',
      token: `tok-${messageId}`,
      fingerprint: 'fp',
      queue: 'ledger',
      jobName: 'account.open',
      data: { owner: 'a', openingBalance: 1 },
      jobId: `m-${messageId}`,
      options: {},
    });
  }

  async function exhaust(messageId: string): Promise<void> {
    await upsertDeadLetter(t.db, {
      messageId,
      queue: 'ledger',
      jobName: 'account.open',
      jobId: `m-${messageId}`,
      data: { owner: 'a', openingBalance: 1 },
      token: `tok-${messageId}`,
      reason: 'exhausted',
      error: 'boom',
      stack: 'at boom',
      attempts: 3,
      options: {},
      enqueuedAt: null,
    });
  }

  const minMessageId = id(0);

  it('a worker dead letter replaces the row whatever its state, and counts every death', async () => {
    await exhaust(id(1));
    await exhaust(id(1));
    expect(await findDeadLetter(t.db, id(1))).to.include({ reason: 'exhausted', dead_count: 2 });
    await purgeDeadLetters(t.db, { limit: 10 });
    await exhaust(id(1));
    const letter = (await findDeadLetter(t.db, id(1)))!;
    expect(letter).to.include({ dead_count: 3, purged_at: null, replayed_at: null });
    expect(letter.data).to.deep.equal({ owner: 'a', openingBalance: 1 });
  });

  it('an expiry writes a letter for an accepted message that has none', async () => {
    await accept(id(1));
    expect(await expireUnapplied(t.db, [id(1)])).to.equal(1);
    expect(await findDeadLetter(t.db, id(1))).to.include({
      reason: 'expired',
      error: EXPIRED_UNAPPLIED_ERROR,
      attempts: 0,
      dead_count: 1,
      token: `tok-${id(1)}`,
    });
  });

  it('an expiry skips applied messages', async () => {
    await accept(id(1));
    await t.db
      .insertInto('inbox')
      .values({ message_id: id(1), queue: 'ledger', job_name: 'account.open', result: 'null' })
      .execute();
    expect(await expireUnapplied(t.db, [id(1)])).to.equal(0);
    expect(await findDeadLetter(t.db, id(1))).to.equal(undefined);
  });

  it('an expiry leaves a pending letter its reason, and a tombstone purged', async () => {
    for (const n of [1, 2]) {
      await accept(id(n));
      await exhaust(id(n));
    }
    await purgeDeadLetters(t.db, { limit: 1 });
    expect(await expireUnapplied(t.db, [id(1), id(2)])).to.equal(0);
    expect(await findDeadLetter(t.db, id(1))).to.include({ reason: 'exhausted', dead_count: 1 });
    const tombstone = (await findDeadLetter(t.db, id(1)))!;
    expect(tombstone.purged_at).to.be.instanceOf(Date);
    expect(await findDeadLetter(t.db, id(2))).to.include({
      reason: 'exhausted',
      dead_count: 1,
      purged_at: null,
    });
  });

  it('an expiry makes a replayed letter pending again, as expired', async () => {
    await accept(id(1));
    await exhaust(id(1));
    expect(await claimForReplay(t.db, { minMessageId, limit: 10 })).to.have.length(1);
    expect(await expireUnapplied(t.db, [id(1)])).to.equal(1);
    expect(await findDeadLetter(t.db, id(1))).to.include({
      reason: 'expired',
      error: EXPIRED_UNAPPLIED_ERROR,
      dead_count: 2,
      attempts: 0,
      stack: null,
      replayed_at: null,
      purged_at: null,
    });
  });
});
