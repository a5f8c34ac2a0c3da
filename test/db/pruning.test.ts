/**
 * The pruning cutoff against the real PostgreSQL: the pruner's batch (delete the inbox rows,
 * raise the cutoff, one transaction) interleaved step by step with message transactions, so
 * that the orderings that could apply a pruned message twice are run, not argued. Each test has
 * its own schema, dropped afterwards.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import {
  MessagePrunedError,
  runMessageTransaction,
  type MessageTransactionResult,
} from '../../src/db/message-transaction.js';
import { advancePruneCutoff, readPruneCutoff } from '../../src/db/pruning.repository.js';
import { deleteInboxThrough } from '../../src/db/inbox.repository.js';
import { ErrorCode } from '../../src/core/errors.js';
import { encodeSnowflake } from '../../src/core/snowflake.js';
import { createDb, type Db } from '../../src/db/create-db.js';
import { createTestSchema, TEST_DATABASE_URL, type TestSchema } from '../support/env.js';
import { waitFor } from '../support/ledger.js';

const DAY = 86_400_000;

describe('db: pruning cutoff', function () {
  this.timeout(30_000);
  let t: TestSchema;
  beforeEach(async () => {
    t = await createTestSchema('pruning');
    // No key at all: a second application of a message shows as a second row.
    await sql`create table effects (message_id bigint not null)`.execute(t.db);
  });
  afterEach(async () => t.drop());

  let sequence = 0;
  /** A message id minted `ageMs` ago. */
  const idAged = (ageMs: number) =>
    encodeSnowflake({ timestampMs: Date.now() - ageMs, workerId: 7, sequence: ++sequence });

  /** One delivery of `messageId` (on `db`, the test schema's by default): one row in `effects`. */
  function deliver(
    messageId: string,
    during?: () => Promise<void>,
    db: Db = t.db,
  ): Promise<MessageTransactionResult<unknown> | Error> {
    return runMessageTransaction(db, { messageId, queue: 'q', jobName: 'j' }, async (trx) => {
      await sql`insert into effects (message_id) values (${messageId})`.execute(trx);
      await during?.();
      return { applied: messageId };
    }).catch((err: Error) => err);
  }

  async function effects(messageId: string): Promise<number> {
    const { rows } = await sql<{ n: number }>`
      select count(*)::int as n from effects where message_id = ${messageId}`.execute(t.db);
    return rows[0]!.n;
  }

  async function inboxRow(messageId: string) {
    return t.db
      .selectFrom('inbox')
      .selectAll()
      .where('message_id', '=', messageId)
      .executeTakeFirst();
  }

  it('starts at 0 (nothing pruned) and is only ever raised', async () => {
    expect(await readPruneCutoff(t.db)).to.equal('0');
    const x = idAged(DAY);
    await t.db.transaction().execute((trx) => advancePruneCutoff(trx, x));
    expect(await readPruneCutoff(t.db)).to.equal(x);
    // A pruner with a longer window (a lower cutoff) cannot bring pruned messages back.
    await t.db.transaction().execute((trx) => advancePruneCutoff(trx, idAged(2 * DAY)));
    expect(await readPruneCutoff(t.db)).to.equal(x);
  });

  it('refuses a message at or below the cutoff, commits nothing of it, and applies one above', async () => {
    const [below, at, above] = [idAged(DAY + 1_000), idAged(DAY), idAged(DAY - 1_000)];
    await t.db.transaction().execute((trx) => advancePruneCutoff(trx, at!));
    for (const id of [below!, at!]) {
      const refused = await deliver(id);
      expect(refused, id).to.be.instanceOf(MessagePrunedError);
      expect((refused as MessagePrunedError).code).to.equal(ErrorCode.MessageExpired);
      expect((refused as Error).message).to.contain(
        `message ${id} is at or below the pruning cutoff`,
      );
      expect(await effects(id)).to.equal(0);
      expect(await inboxRow(id)).to.equal(undefined);
    }
    expect(await deliver(above!)).to.deep.include({ kind: 'applied' });
    expect(await effects(above!)).to.equal(1);
  });

  /**
   * The race of the issue: the pruner deletes X's inbox row and raises the cutoff over X, while a
   * redelivery of X (Redis lost its `done` marker) runs its inbox insert, on `workerDb`. The
   * insert waits on the row being deleted; once the prune commits the row is gone and the insert
   * succeeds, and only the cutoff check, which runs after it, stands between X and a second
   * effect.
   */
  async function raceRedeliveryWithPrune(
    workerDb: Db,
    expectFirst: (outcome: unknown) => void = (outcome) =>
      expect(outcome).to.be.instanceOf(MessagePrunedError),
  ): Promise<string> {
    const x = idAged(DAY);
    expect(await deliver(x, undefined, workerDb)).to.deep.include({ kind: 'applied' });

    const prune = await t.db.startTransaction().execute();
    let committed = false;
    try {
      expect(await deleteInboxThrough(prune, x, 100)).to.equal(1);
      await advancePruneCutoff(prune, x);
      const redelivery = deliver(x, undefined, workerDb);
      await waitFor('the redelivery waits on the row being deleted', async () => {
        const { rows } = await sql<{ pid: number }>`
          select pid from pg_stat_activity
          where wait_event_type = 'Lock' and query like ${`%INSERT INTO inbox%VALUES (${x},%`}`.execute(
          t.db,
        );
        return rows.length === 1;
      });
      await prune.commit().execute();
      committed = true;
      expectFirst(await redelivery);
    } finally {
      if (!committed) await prune.rollback().execute();
    }
    expect(await effects(x), 'one effect').to.equal(1);
    expect(await inboxRow(x)).to.equal(undefined);
    return x;
  }

  it('refuses a redelivery whose inbox row a concurrent prune deleted under it', async () => {
    await raceRedeliveryWithPrune(t.db);
  });

  // Under REPEATABLE READ or SERIALIZABLE the transaction reads one snapshot, taken before its
  // insert waited on the prune, so the check alone would see the old cutoff. PostgreSQL does not
  // let it get that far: an insert whose conflicting row was deleted by a transaction its
  // snapshot cannot see fails with a serialization failure (40001), which the pipeline re-runs
  // (RERUN_SQLSTATES), and the re-run's fresh snapshot sees the cutoff.
  for (const level of ['repeatable read', 'serializable']) {
    it(`refuses it too when the session default isolation is ${level.toUpperCase()}`, async () => {
      const other = createDb({ url: TEST_DATABASE_URL, schema: t.schema, poolSize: 1 });
      try {
        // One connection: the session default set here is the one every delivery on it gets.
        await sql`select set_config('default_transaction_isolation', ${level}, false)`.execute(
          other,
        );
        const { rows } = await sql<{ level: string }>`
          select current_setting('transaction_isolation') as level`.execute(other);
        expect(rows[0]!.level).to.equal(level);
        const x = await raceRedeliveryWithPrune(other, (first) =>
          expect((first as { code?: string }).code, String(first)).to.equal('40001'),
        );
        // The pipeline's re-run of the delivery.
        expect(await deliver(x, undefined, other)).to.be.instanceOf(MessagePrunedError);
        expect(await effects(x), 'one effect').to.equal(1);
      } finally {
        await other.destroy();
      }
    });
  }

  // A first delivery whose transaction is open when the prune commits: its own inbox row is not
  // visible to the pruner, so nothing stops the prune; the check at its commit does.
  it('refuses a delivery in flight when a prune over it commits', async () => {
    const y = idAged(DAY);
    let entered!: () => void;
    let resume!: () => void;
    const inHandler = new Promise<void>((resolve) => (entered = resolve));
    const gate = new Promise<void>((resolve) => (resume = resolve));
    const delivery = deliver(y, async () => {
      entered();
      await gate;
    });
    await inHandler;
    const pruned = await t.db.transaction().execute(async (trx) => {
      const deleted = await deleteInboxThrough(trx, y, 100);
      await advancePruneCutoff(trx, y);
      return deleted;
    });
    expect(pruned, "the delivery's row is not the pruner's to see").to.equal(0);
    resume();
    expect(await delivery).to.be.instanceOf(MessagePrunedError);
    expect(await effects(y)).to.equal(0);
    expect(await inboxRow(y)).to.equal(undefined);
  });

  it('answers a redelivery as a duplicate while its inbox row is still there, even below the cutoff', async () => {
    const x = idAged(DAY);
    expect(await deliver(x)).to.deep.include({ kind: 'applied' });
    // The cutoff passed X, but the batch that deletes X's row has not run yet.
    await t.db.transaction().execute((trx) => advancePruneCutoff(trx, x));
    expect(await deliver(x)).to.deep.equal({ kind: 'duplicate', result: { applied: x } });
    expect(await effects(x)).to.equal(1);
  });
});
