/**
 * The handler context on a real PostgreSQL, built the way the pipeline builds it (inside
 * `runMessageTransaction`): `ctx.trx` refuses nested transactions and a connection of its own,
 * whose COMMIT would commit the message early, and the whole message then rolls back; ordinary
 * queries, the helpers and raw savepoints run inside the message's transaction.
 */
import { expect } from 'chai';
import { sql, Transaction, type ControlledTransaction } from 'kysely';
import { createTestSchema, type TestSchema } from '../support/env.js';
import {
  NestedTransactionError,
  runMessageTransaction,
  type MessageTransactionResult,
} from '../../src/db/message-transaction.js';
import { createJobContext } from '../../src/jobs/context.js';
import type { JobContext } from '../../src/jobs/define-job.js';
import { NonRetryableError, OnceqError } from '../../src/core/errors.js';
import type { Database } from '../../src/db/database.js';

type Handler = (ctx: JobContext<{ id: string }>) => Promise<unknown>;

describe('job context', () => {
  let t: TestSchema;
  before(async () => {
    t = await createTestSchema('jobctx');
  });
  after(async () => t.drop());

  const account = (id: string) => ({ id, owner: 'o', opening_balance: '5', balance: '5' });

  /** Runs `handle` for message `messageId` as the pipeline does, with `{ id: messageId }`. */
  function deliver(messageId: string, handle: Handler): Promise<MessageTransactionResult<unknown>> {
    return runMessageTransaction(t.db, { messageId, queue: 'q', jobName: 'test.ctx' }, (trx) =>
      handle(
        createJobContext({
          trx,
          data: { id: messageId },
          messageId,
          jobName: 'test.ctx',
          queue: 'q',
          attempt: 1,
          run: 1,
        }),
      ),
    );
  }

  async function failure(promise: Promise<unknown>): Promise<unknown> {
    try {
      await promise;
    } catch (err) {
      return err;
    }
    expect.fail('expected the delivery to fail');
  }

  /** Inbox rows of the message, and account rows among `ids`. */
  async function rows(messageId: string, ids: string[]) {
    const inbox = await t.db
      .selectFrom('inbox')
      .selectAll()
      .where('message_id', '=', messageId)
      .execute();
    const accounts = await t.db
      .selectFrom('accounts')
      .select('id')
      .where('id', 'in', ids)
      .execute();
    return { inbox: inbox.length, accounts: accounts.map((a) => a.id).sort() };
  }

  function expectRefused(err: unknown, attempted: string): void {
    expect(err).to.be.instanceOf(NestedTransactionError);
    expect(err).to.be.instanceOf(NonRetryableError);
    expect((err as OnceqError).code).to.equal('nested_transaction');
    const refused = err as NestedTransactionError;
    expect(refused.details).to.deep.equal({ attempted });
    expect(refused.message).to.include(`${attempted} refused`);
    expect(refused.message).to.include('exactly-once');
  }

  it('refuses ctx.trx.transaction(): the message rolls back, no inbox row, no effect', async () => {
    const err = await failure(
      deliver('2001', async (ctx) => {
        await ctx.trx.insertInto('accounts').values(account('2001')).execute();
        // @ts-expect-error transaction() is typed never: the compiler refuses it too.
        await ctx.trx.transaction().execute(async (inner: typeof ctx.trx) => {
          await inner.insertInto('accounts').values(account('2002')).execute();
        });
        return 'done';
      }),
    );
    expectRefused(err, 'ctx.trx.transaction()');
    expect(await rows('2001', ['2001', '2002'])).to.deep.equal({ inbox: 0, accounts: [] });
  });

  it('refuses ctx.trx.startTransaction(): the message rolls back, no inbox row, no effect', async () => {
    const err = await failure(
      deliver('2011', async (ctx) => {
        await ctx.trx.insertInto('accounts').values(account('2011')).execute();
        // @ts-expect-error startTransaction() is typed never: the compiler refuses it too.
        const inner: ControlledTransaction<Database> = await ctx.trx.startTransaction().execute();
        await inner.insertInto('accounts').values(account('2012')).execute();
        await inner.commit().execute();
        return 'done';
      }),
    );
    expectRefused(err, 'ctx.trx.startTransaction()');
    expect(await rows('2011', ['2011', '2012'])).to.deep.equal({ inbox: 0, accounts: [] });
  });

  it('refuses ctx.trx.connection(): the message rolls back, no inbox row, no effect', async () => {
    const err = await failure(
      deliver('2021', async (ctx) => {
        await ctx.trx.insertInto('accounts').values(account('2021')).execute();
        // @ts-expect-error connection() is typed never: the compiler refuses it too.
        await ctx.trx.connection().execute(async (conn: typeof t.db) => {
          await conn.transaction().execute(async (inner) => {
            await inner.insertInto('accounts').values(account('2022')).execute();
          });
        });
        return 'done';
      }),
    );
    expectRefused(err, 'ctx.trx.connection()');
    expect(await rows('2021', ['2021', '2022'])).to.deep.equal({ inbox: 0, accounts: [] });
  });

  it('refuses them on what withSchema, withPlugin, withoutPlugins and withTables return', async () => {
    const attempts: [string, (trx: JobContext<unknown>['trx']) => unknown][] = [
      ['ctx.trx.transaction()', (trx) => trx.withSchema(t.schema).transaction()],
      ['ctx.trx.startTransaction()', (trx) => trx.withoutPlugins().startTransaction()],
      [
        'ctx.trx.startTransaction()',
        (trx) =>
          trx
            .withPlugin({
              transformQuery: ({ node }) => node,
              transformResult: ({ result }) => Promise.resolve(result),
            })
            .startTransaction(),
      ],
      ['ctx.trx.connection()', (trx) => trx.withTables<{ extra: { id: string } }>().connection()],
    ];
    for (const [i, [attempted, attempt]] of attempts.entries()) {
      const messageId = String(2031 + i);
      const err = await failure(
        deliver(messageId, async (ctx) => {
          await ctx.trx.insertInto('accounts').values(account(messageId)).execute();
          attempt(ctx.trx);
          return 'done';
        }),
      );
      expectRefused(err, attempted);
      expect(await rows(messageId, [messageId])).to.deep.equal({ inbox: 0, accounts: [] });
    }
  });

  it('runs queries, the helpers and raw savepoints through ctx.trx, committing with the inbox row', async () => {
    const out = await deliver('2041', async (ctx) => {
      expect(ctx.trx).to.be.instanceOf(Transaction);
      expect(ctx.trx.isTransaction).to.equal(true);
      await ctx.trx.insertInto('accounts').values(account('2041')).execute();
      expect(await ctx.insertOnce('accounts', account('2041'))).to.equal(false);
      const version = await ctx.updateVersioned('accounts', '2041', 0, { balance: '7' });
      // A partial rollback, as the error message advises.
      await sql`savepoint partial`.execute(ctx.trx);
      await ctx.trx.insertInto('accounts').values(account('2042')).execute();
      await sql`rollback to savepoint partial`.execute(ctx.trx);
      const inSchema = await ctx.trx
        .withSchema(t.schema)
        .selectFrom('accounts')
        .select('balance')
        .where('id', '=', '2041')
        .executeTakeFirstOrThrow();
      return { version, balance: inSchema.balance };
    });
    expect(out).to.deep.equal({ kind: 'applied', result: { version: 1, balance: '7' } });
    expect(await rows('2041', ['2041', '2042'])).to.deep.equal({ inbox: 1, accounts: ['2041'] });
  });
});
