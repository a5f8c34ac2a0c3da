/**
 * The group transaction on a real PostgreSQL, in both modes (savepoints and optimistic): every
 * member's inbox row, effect and result commit together or not at all; a failing member leaves
 * nothing behind and, with savepoints, takes nobody with it; what the group cannot judge goes
 * back to run on its own. Then the grouping runner: one poison handler among twenty.
 */
import { expect } from 'chai';
import { sql } from 'kysely';
import { createTestSchema, type TestSchema } from '../support/env.js';
import {
  runGroupTransaction,
  type GroupMember,
  type GroupOutcome,
} from '../../src/db/group-transaction.js';
import { runMessageTransaction } from '../../src/db/message-transaction.js';
import { createCommitGroups } from '../../src/worker/commit-groups.js';
import { NonRetryableError } from '../../src/core/errors.js';
import type { Database } from '../../src/db/database.js';
import type { MessageTransaction } from '../../src/db/message-transaction.js';

describe('group transaction', function () {
  this.timeout(30_000);
  let t: TestSchema;
  let next = 5_000;
  before(async () => {
    t = await createTestSchema('grouptx');
  });
  after(async () => t.drop());

  const ids = (n: number) => Array.from({ length: n }, () => String(next++));
  const key = (messageId: string) => ({ messageId, queue: 'q', jobName: 'test.open' });
  const account = (id: string) => ({ id, owner: 'o', opening_balance: '5', balance: '5' });
  /** A member whose handler opens account `id` and returns `{ opened: id }`. */
  function opener(id: string, extra: Partial<GroupMember> = {}): GroupMember {
    return {
      key: key(id),
      async body(trx) {
        await trx.insertInto('accounts').values(account(id)).execute();
        return { opened: id };
      },
      ...extra,
    };
  }
  async function committed(id: string): Promise<{ inbox: unknown; account: boolean }> {
    const inbox = await t.db
      .selectFrom('inbox')
      .select('result')
      .where('message_id', '=', id)
      .executeTakeFirst();
    const acc = await t.db.selectFrom('accounts').select('id').where('id', '=', id).execute();
    return { inbox: inbox ? inbox.result : undefined, account: acc.length === 1 };
  }
  const kinds = (outcomes: GroupOutcome[]) => outcomes.map((o) => o.kind);

  for (const savepoints of [false, true]) {
    describe(savepoints ? 'with savepoints' : 'optimistic (no savepoints)', () => {
      it('commits every member: its effect, its inbox row and its result, in one transaction', async () => {
        const batch = ids(5);
        const before = await sql<{ n: string }>`select count(*)::text as n from inbox`.execute(
          t.db,
        );
        const outcomes = await runGroupTransaction(t.db, batch.map((id) => opener(id)).reverse(), {
          savepoints,
          lockTimeoutMs: 5_000,
        });
        expect(kinds(outcomes)).to.deep.equal(Array(5).fill('applied'));
        // In the order given (reversed), whatever order the group ran them in.
        expect(
          outcomes.map((o) => (o as { result: { opened: string } }).result.opened),
        ).to.deep.equal([...batch].reverse());
        for (const id of batch) {
          expect(await committed(id)).to.deep.equal({ inbox: { opened: id }, account: true });
        }
        const after = await sql<{ n: string }>`select count(*)::text as n from inbox`.execute(t.db);
        expect(Number(after.rows[0]!.n) - Number(before.rows[0]!.n)).to.equal(5);
      });

      it('answers members already in the inbox with their stored result, running nothing for them', async () => {
        const [old, fresh] = ids(2) as [string, string];
        await runMessageTransaction(t.db, key(old), async () => ({ first: true }));
        let ranOld = false;
        const outcomes = await runGroupTransaction(
          t.db,
          [
            {
              key: key(old),
              body: async () => {
                ranOld = true;
                return 'second';
              },
            },
            opener(fresh),
          ],
          { savepoints, lockTimeoutMs: 5_000 },
        );
        expect(ranOld).to.equal(false);
        expect(outcomes[0]).to.deep.equal({ kind: 'duplicate', result: { first: true } });
        expect(outcomes[1]!.kind).to.equal('applied');
        expect((await committed(old)).inbox).to.deep.equal({ first: true });
      });

      it('a member that throws leaves nothing behind', async () => {
        const batch = ids(4);
        const boom = new Error('handler bug');
        const members = batch.map((id, n) =>
          n === 1
            ? {
                key: key(id),
                async body(trx: MessageTransaction<Database>) {
                  await trx.insertInto('accounts').values(account(id)).execute();
                  throw boom;
                },
              }
            : opener(id),
        );
        const outcomes = await runGroupTransaction(t.db, members, {
          savepoints,
          lockTimeoutMs: 5_000,
        });
        expect(outcomes[1]).to.deep.equal({ kind: 'failed', error: boom });
        expect(await committed(batch[1]!)).to.deep.equal({ inbox: undefined, account: false });
        if (savepoints) {
          // The others commit without it.
          expect(kinds(outcomes)).to.deep.equal(['applied', 'failed', 'applied', 'applied']);
          for (const n of [0, 2, 3]) expect((await committed(batch[n]!)).account).to.equal(true);
        } else {
          // The group rolls back; the others run again (nothing of theirs committed).
          expect(kinds(outcomes)).to.deep.equal(['retry', 'failed', 'retry', 'retry']);
          for (const n of [0, 2, 3]) {
            expect(await committed(batch[n]!)).to.deep.equal({ inbox: undefined, account: false });
          }
        }
      });

      it('a result that cannot be stored fails its member as non-retryable, and only it', async () => {
        const batch = ids(3);
        const members = batch.map((id, n) =>
          n === 2 ? { key: key(id), body: async () => ({ big: 1n }) } : opener(id),
        );
        const outcomes = await runGroupTransaction(t.db, members, {
          savepoints,
          lockTimeoutMs: 5_000,
        });
        expect(outcomes[2]!.kind).to.equal('failed');
        expect((outcomes[2] as { error: unknown }).error).to.be.instanceOf(NonRetryableError);
        expect(await committed(batch[2]!)).to.deep.equal({ inbox: undefined, account: false });
        expect(kinds(outcomes).slice(0, 2)).to.deep.equal(
          savepoints ? ['applied', 'applied'] : ['retry', 'retry'],
        );
      });

      it('a handler that swallows a database error cannot take its batch-mates down with it', async () => {
        const batch = ids(3);
        const members = batch.map((id, n) =>
          n === 0
            ? {
                key: key(id),
                async body(trx: MessageTransaction<Database>) {
                  await trx.insertInto('accounts').values(account(id)).execute();
                  // A duplicate primary key, caught: the transaction is now aborted.
                  await trx
                    .insertInto('accounts')
                    .values(account(id))
                    .execute()
                    .catch(() => undefined);
                  return 'swallowed';
                },
              }
            : opener(id),
        );
        const outcomes = await runGroupTransaction(t.db, members, {
          savepoints,
          lockTimeoutMs: 5_000,
        });
        for (const id of batch) {
          if (!savepoints || id === batch[0]) {
            expect(await committed(id), id).to.deep.equal({ inbox: undefined, account: false });
          }
        }
        if (savepoints) {
          // RELEASE names the culprit; the others commit.
          expect(kinds(outcomes)).to.deep.equal(['failed', 'applied', 'applied']);
          expect((outcomes[0] as { error: { code?: string } }).error.code).to.equal('25P02');
        } else {
          // The next member meets 25P02 and cannot tell whose it is: each runs alone.
          expect(kinds(outcomes)).to.deep.equal(['alone', 'alone', 'alone']);
        }
      });

      it('a member whose inbox row another session holds: past the lock timeout every member runs alone, none failed', async () => {
        const [held, free] = ids(2) as [string, string];
        let release: () => void = () => undefined;
        const released = new Promise<void>((resolve) => (release = resolve));
        let inserted: () => void = () => undefined;
        const holding = new Promise<void>((resolve) => (inserted = resolve));
        // Another session (a zombie, a stalled original) holds `held`'s inbox row, uncommitted.
        const holder = t.db.transaction().execute(async (trx) => {
          await trx
            .insertInto('inbox')
            .values({ message_id: held, queue: 'q', job_name: 'x', result: sql<string>`null` })
            .execute();
          inserted();
          await released;
          throw new Error('rolled back on purpose');
        });
        try {
          await holding;
          const outcomes = await runGroupTransaction(t.db, [opener(held), opener(free)], {
            savepoints,
            lockTimeoutMs: 100,
          });
          expect(kinds(outcomes)).to.deep.equal(['alone', 'alone']);
          expect((outcomes[0] as { error: { code?: string } }).error.code).to.equal('55P03');
          expect(await committed(free)).to.deep.equal({ inbox: undefined, account: false });
        } finally {
          release();
          await holder.catch(() => undefined);
        }
      });

      if (!savepoints) {
        it("a member that meets an earlier member's swallowed error and wraps it is not blamed: all run alone", async () => {
          const batch = ids(3);
          const members = batch.map((id, n) => ({
            key: key(id),
            async body(trx: MessageTransaction<Database>) {
              await trx.insertInto('accounts').values(account(id)).execute();
              if (n === 0) {
                await trx
                  .insertInto('accounts')
                  .values(account(id))
                  .execute()
                  .catch(() => undefined);
              }
              return 'ok';
            },
          }));
          // The second member's statement meets 25P02; a handler that wraps it hides the code.
          const wrapping = members[1]!;
          const inner = wrapping.body;
          wrapping.body = async (trx) => {
            try {
              return await inner(trx);
            } catch (err) {
              throw new Error('my handler failed', { cause: err });
            }
          };
          const outcomes = await runGroupTransaction(t.db, members, {
            savepoints,
            lockTimeoutMs: 5_000,
          });
          expect(kinds(outcomes)).to.deep.equal(['alone', 'alone', 'alone']);
        });
      }

      it('a member whose lease is lost at the commit point never commits; the others run again', async () => {
        const batch = ids(3);
        let checks = 0;
        const members = batch.map((id, n) =>
          n === 1
            ? opener(id, {
                // Passes right after its handler, fails at the group's final check.
                beforeCommit: () => {
                  if (++checks > 1) throw new Error('lease lost');
                },
              })
            : opener(id),
        );
        const outcomes = await runGroupTransaction(t.db, members, {
          savepoints,
          lockTimeoutMs: 5_000,
        });
        expect(kinds(outcomes)).to.deep.equal(['retry', 'failed', 'retry']);
        for (const id of batch) {
          expect(await committed(id)).to.deep.equal({ inbox: undefined, account: false });
        }
      });

      it('a member at or below the pruning cutoff sends the whole group to run alone, committing nothing', async () => {
        const batch = ids(3);
        const cutoff = batch[0]!;
        await sql`update prune_cutoff set pruned_through = ${cutoff}`.execute(t.db);
        try {
          const outcomes = await runGroupTransaction(
            t.db,
            batch.map((id) => opener(id)),
            { savepoints, lockTimeoutMs: 5_000 },
          );
          expect(kinds(outcomes)).to.deep.equal(['alone', 'alone', 'alone']);
          for (const id of batch) {
            expect(await committed(id)).to.deep.equal({ inbox: undefined, account: false });
          }
        } finally {
          await sql`update prune_cutoff set pruned_through = 0`.execute(t.db);
        }
      });

      for (const { lockTimeoutMs, code, what } of [
        { lockTimeoutMs: 5_000, code: '40P01', what: 'PostgreSQL breaks the deadlock' },
        { lockTimeoutMs: 100, code: '55P03', what: "the group's lock_timeout breaks it first" },
      ]) {
        it(`two groups that deadlock on the same rows (${what}): nothing of the victim committed, its members sent to run alone`, async () => {
          const [a, b] = ids(2) as [string, string];
          await t.db
            .insertInto('accounts')
            .values([account(a), account(b)])
            .execute();
          const [m1, m2, m3, m4] = ids(4) as [string, string, string, string];
          // Each group locks one account, waits until the other group has its own, then asks for
          // the other group's: a real lock cycle that PostgreSQL breaks by failing one of them.
          let arrived = 0;
          let release: () => void = () => undefined;
          const bothHoldOne = new Promise<void>((resolve) => (release = resolve));
          const touch = (id: string) => (trx: MessageTransaction<Database>) =>
            trx.updateTable('accounts').set({ owner: 'x' }).where('id', '=', id).execute();
          const group = (first: string, second: string, mA: string, mB: string) =>
            runGroupTransaction(
              t.db,
              [
                {
                  key: key(mA),
                  async body(trx) {
                    await touch(first)(trx);
                    if (++arrived === 2) release();
                    await bothHoldOne;
                    return 'first';
                  },
                },
                {
                  key: key(mB),
                  async body(trx) {
                    await touch(second)(trx);
                    return 'second';
                  },
                },
              ],
              { savepoints, lockTimeoutMs },
            );
          const [g1, g2] = await Promise.all([group(a, b, m1, m2), group(b, a, m3, m4)]);
          const victims = [g1, g2].filter((g) => g.some((o) => o.kind === 'alone'));
          // PostgreSQL fails one of the two; two lock timeouts may both run out.
          expect(victims.length, 'victim groups').to.be.within(1, code === '40P01' ? 1 : 2);
          for (const victim of victims) {
            expect(kinds(victim)).to.deep.equal(['alone', 'alone']);
            expect((victim[0] as { error: { code?: string } }).error.code).to.equal(code);
          }
          // A surviving group commits both of its members; a victim's messages commit nothing.
          const survivors = [g1, g2].filter((g) => !victims.includes(g));
          for (const g of survivors) expect(kinds(g)).to.deep.equal(['applied', 'applied']);
          for (const [g, members] of [
            [g1, [m1, m2]],
            [g2, [m3, m4]],
          ] as const) {
            for (const id of members) {
              expect((await committed(id)).inbox, id).to.deep.equal(
                victims.includes(g) ? undefined : id === members[0] ? 'first' : 'second',
              );
            }
          }
        });
      }
    });
  }

  describe('the grouping runner', () => {
    for (const savepoints of [false, true]) {
      it(`one poison handler among twenty: nineteen applied once, the poison fails alone (${savepoints ? 'savepoints' : 'optimistic'})`, async () => {
        const groups = createCommitGroups(t.db, { maxSize: 50, maxGroups: 1, savepoints });
        const batch = ids(20);
        const runs = new Map<string, number>();
        const poison = batch[7]!;
        const settled = await Promise.allSettled(
          batch.map((id) =>
            groups.run({
              key: key(id),
              async body(trx) {
                runs.set(id, (runs.get(id) ?? 0) + 1);
                await trx.insertInto('accounts').values(account(id)).execute();
                if (id === poison) throw new Error('poison');
                return { opened: id };
              },
            }),
          ),
        );
        for (const [n, s] of settled.entries()) {
          if (batch[n] === poison) {
            expect(s.status).to.equal('rejected');
            expect((s as PromiseRejectedResult).reason.message).to.equal('poison');
            expect(await committed(poison)).to.deep.equal({ inbox: undefined, account: false });
          } else {
            expect(s).to.deep.equal({
              status: 'fulfilled',
              value: { kind: 'applied', result: { opened: batch[n] } },
            });
            expect(await committed(batch[n]!)).to.deep.equal({
              inbox: { opened: batch[n] },
              account: true,
            });
          }
        }
        const stats = groups.stats();
        expect(stats.grouped, 'they ran in groups').to.be.greaterThan(0);
        // The poison ran once: it is its own delivery's to retry, not the group's.
        expect(runs.get(poison)).to.equal(1);
      });
    }

    it('runs a lone message at once by the single-message path', async () => {
      const groups = createCommitGroups(t.db);
      const [id] = ids(1) as [string];
      const out = await groups.run(opener(id));
      expect(out).to.deep.equal({ kind: 'applied', result: { opened: id } });
      expect(groups.stats()).to.deep.equal({ groups: 1, grouped: 0, regrouped: 0, alone: 0 });
    });

    it('refuses sizes that are not positive integers, naming the option', () => {
      expect(() => createCommitGroups(t.db, { maxSize: 0 })).to.throw(RangeError, /maxSize/);
      expect(() => createCommitGroups(t.db, { maxGroups: 1.5 })).to.throw(RangeError, /maxGroups/);
    });
  });
});
