/**
 * The message transaction on a real PostgreSQL: the inbox fence, rollback on every failure, and
 * the SQL literals it builds by hand.
 */
import { expect } from 'chai';
import { Kysely, sql, Transaction } from 'kysely';
import { createTestSchema, type TestSchema } from '../support/env.js';
import {
  literal,
  MessageTransaction,
  NestedTransactionError,
  resultJson,
  runMessageTransaction,
} from '../../src/db/message-transaction.js';
import { NonRetryableError } from '../../src/core/errors.js';

describe('message transaction', () => {
  let t: TestSchema;
  before(async () => {
    t = await createTestSchema('msgtx');
  });
  after(async () => t.drop());

  const key = (messageId: string) => ({ messageId, queue: "q'ueue", jobName: 'job\\name' });
  const account = (id: string) => ({ id, owner: 'o', opening_balance: '5', balance: '5' });
  /** Neither the message's effect nor its inbox row was committed. */
  async function expectNothingCommitted(id: string): Promise<void> {
    const effects = await t.db.selectFrom('accounts').selectAll().where('id', '=', id).execute();
    expect(effects, `accounts ${id}`).to.have.length(0);
    const inbox = await t.db.selectFrom('inbox').selectAll().where('message_id', '=', id).execute();
    expect(inbox, `inbox ${id}`).to.have.length(0);
  }

  it('commits the effect with the inbox row and its result', async () => {
    const out = await runMessageTransaction(t.db, key('1001'), async (trx) => {
      await trx.insertInto('accounts').values(account('1001')).execute();
      return { status: 'applied', note: "it's \\ fine" };
    });
    expect(out).to.deep.equal({
      kind: 'applied',
      result: { status: 'applied', note: "it's \\ fine" },
    });
    const inbox = await t.db
      .selectFrom('inbox')
      .selectAll()
      .where('message_id', '=', '1001')
      .executeTakeFirstOrThrow();
    expect(inbox).to.include({ queue: "q'ueue", job_name: 'job\\name' });
    expect(inbox.result).to.deep.equal({ status: 'applied', note: "it's \\ fine" });
  });

  it('returns the stored result for a message already in the inbox, running nothing', async () => {
    let ran = false;
    const out = await runMessageTransaction(t.db, key('1001'), async () => {
      ran = true;
      return 'second';
    });
    expect(ran).to.equal(false);
    expect(out).to.deep.equal({
      kind: 'duplicate',
      result: { status: 'applied', note: "it's \\ fine" },
    });
  });

  it('rolls back the effect and the inbox row when the handler throws', async () => {
    const error = await runMessageTransaction(t.db, key('1002'), async (trx) => {
      await trx.insertInto('accounts').values(account('1002')).execute();
      throw new Error('boom');
    }).catch((err: unknown) => err);
    expect((error as Error).message).to.equal('boom');
    await expectNothingCommitted('1002');
  });

  it('refuses a result that cannot be stored, non-retryably, and rolls everything back', async () => {
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    const cases: [string, unknown, RegExp][] = [
      ['1010', { amount: 10n }, /BigInt/],
      ['1011', cycle, /circular/i],
      ['1012', { note: 'a\u0000b' }, /U\+0000/],
      ['1014', { note: 'half of \ud83d' }, /surrogate/],
      ['1015', ['\ude00 alone'], /surrogate/],
    ];
    for (const [id, result, message] of cases) {
      let error: unknown;
      try {
        await runMessageTransaction(t.db, key(id), async (trx) => {
          await trx.insertInto('accounts').values(account(id)).execute();
          return result;
        });
      } catch (err) {
        error = err;
      }
      expect(error, id).to.be.instanceOf(NonRetryableError);
      expect((error as NonRetryableError).code).to.equal('invalid_result');
      expect((error as Error).message).to.match(message);
      await expectNothingCommitted(id);
    }
    // A backslash followed by "u0000" is ordinary text, stored as such.
    expect(resultJson({ path: 'C:\\u0000' })).to.equal('{"path":"C:\\\\u0000"}');
    const out = await runMessageTransaction(t.db, key('1013'), async () => ({ path: 'C:\\u0000' }));
    expect(out).to.deep.equal({ kind: 'applied', result: { path: 'C:\\u0000' } });
    // A surrogate pair (an emoji) is ordinary text, and so is a backslash before "ud800".
    const text = { emoji: '\ud83d\ude00', path: 'C:\\ud800' };
    const stored = await runMessageTransaction(t.db, key('1016'), async () => text);
    expect(stored).to.deep.equal({ kind: 'applied', result: text });
  });

  it('rolls back when beforeCommit throws (a lost lease)', async () => {
    let error: unknown;
    try {
      await runMessageTransaction(
        t.db,
        key('1003'),
        async (trx) => {
          await trx.insertInto('accounts').values(account('1003')).execute();
          return 'x';
        },
        () => {
          throw new Error('lease lost');
        },
      );
    } catch (err) {
      error = err;
    }
    expect((error as Error).message).to.equal('lease lost');
    expect(
      await t.db.selectFrom('inbox').selectAll().where('message_id', '=', '1003').execute(),
    ).to.have.length(0);
    expect(
      await t.db.selectFrom('accounts').selectAll().where('id', '=', '1003').execute(),
    ).to.have.length(0);
  });

  it('makes a concurrent second transaction wait on the uncommitted row, then see a duplicate', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let firstInside!: () => void;
    const inside = new Promise<void>((r) => (firstInside = r));
    const first = runMessageTransaction(t.db, key('1004'), async (trx) => {
      await trx.insertInto('accounts').values(account('1004')).execute();
      firstInside();
      await gate;
      return 'first';
    });
    await inside;
    let secondRan = false;
    const second = runMessageTransaction(t.db, key('1004'), async () => {
      secondRan = true;
      return 'second';
    });
    await new Promise((r) => setTimeout(r, 200));
    release();
    expect(await first).to.deep.equal({ kind: 'applied', result: 'first' });
    expect(await second).to.deep.equal({ kind: 'duplicate', result: 'first' });
    expect(secondRan).to.equal(false);
    expect(
      await t.db.selectFrom('accounts').selectAll().where('id', '=', '1004').execute(),
    ).to.have.length(1);
  });

  it('hands the body a Kysely Transaction that refuses nested transactions', async () => {
    await runMessageTransaction(t.db, key('1005'), async (trx) => {
      expect(trx).to.be.instanceOf(MessageTransaction);
      expect(trx).to.be.instanceOf(Transaction);
      expect(() => trx.transaction()).to.throw(NestedTransactionError, 'ctx.trx.transaction()');
      expect(() => trx.startTransaction()).to.throw(
        NestedTransactionError,
        'ctx.trx.startTransaction()',
      );
      expect(() => trx.connection()).to.throw(NestedTransactionError, 'ctx.trx.connection()');
      for (const derived of [
        trx.withSchema(t.schema),
        trx.withoutPlugins(),
        trx.withTables<{ extra: { id: string } }>(),
      ]) {
        expect(derived).to.be.instanceOf(MessageTransaction);
      }
    });
  });

  it("refuses Kysely's own transaction methods at the driver too, sending nothing", async () => {
    // Kysely.prototype's methods skip MessageTransaction's overrides and reach its driver, the
    // second fence. Had either sent BEGIN/COMMIT, account 1006 would survive the throw below.
    const error = await runMessageTransaction(t.db, key('1006'), async (trx) => {
      await trx.insertInto('accounts').values(account('1006')).execute();
      const refusals: unknown[] = [];
      await Kysely.prototype.transaction
        .call(trx)
        .execute(async () => undefined)
        .catch((err: unknown) => refusals.push(err));
      await Kysely.prototype.startTransaction
        .call(trx)
        .execute()
        .catch((err: unknown) => refusals.push(err));
      expect(refusals).to.have.length(2);
      for (const err of refusals) {
        expect(err).to.be.instanceOf(NestedTransactionError);
        expect((err as NestedTransactionError).details).to.deep.equal({ attempted: 'BEGIN' });
      }
      throw new Error('after the refusals');
    }).catch((err: unknown) => err);
    expect((error as Error).message).to.equal('after the refusals');
    await expectNothingCommitted('1006');
  });

  it('introspects through the message transaction', async () => {
    const out = await runMessageTransaction(t.db, key('1007'), async (trx) => {
      const tables = await trx.introspection.getTables();
      return tables.some((table) => table.schema === t.schema && table.name === 'accounts');
    });
    expect(out).to.deep.equal({ kind: 'applied', result: true });
  });

  it('leaves no connection inside a transaction afterwards', async () => {
    const open = await sql<{ n: string }>`
      select count(*)::text as n from pg_stat_activity
      where datname = current_database() and state like 'idle in transaction%'
        and application_name = 'onceq-test'`.execute(t.db);
    expect(open.rows[0]!.n).to.equal('0');
  });

  it('refuses a message id that is not a decimal snowflake', async () => {
    let error: unknown;
    try {
      await runMessageTransaction(t.db, key('1; drop table inbox'), async () => 'x');
    } catch (err) {
      error = err;
    }
    expect(error).to.be.instanceOf(RangeError);
  });

  it('writes literals PostgreSQL reads back unchanged', async () => {
    const samples = [
      'plain',
      "it's",
      'back\\slash',
      "both\\'q",
      '{"a":"x\\\\y"}',
      "unicode ✓ 'é'",
      '',
    ];
    for (const text of samples) {
      const r = await sql.raw<{ v: string }>(`select ${literal(text)} as v`).execute(t.db);
      expect(r.rows[0]!.v, JSON.stringify(text)).to.equal(text);
    }
  });
});
