/**
 * The exactly-once pipeline against real services, in both modes (queues and tokens in Redis, or
 * on PostgreSQL alone): repeated deliveries, duplicate enqueues, concurrent transfers, failing
 * handlers and malformed data. On a Redis Cluster too, every case that touches Redis (a queue's
 * keys in its own slot, the dead-letter queue in another, tokens in slots of their own): not the
 * load case (nothing there the first case does not already send through the cluster) nor the
 * producer's refusals (nothing reaches Redis).
 */
import { expect } from 'chai';
import { Type } from '@sinclair/typebox';
import { createTestStack, modeOptions, type TestStack } from '../support/stack.js';
import { MODES, type TestMode } from '../support/env.js';
import { assertLedgerInvariants, inboxCount, waitFor } from '../support/ledger.js';
import { forgetToken } from '../support/token-loss.js';
import { defineJob } from '../../src/jobs/define-job.js';
import { jobIdFor } from '../../src/core/message.js';
import { generateToken } from '../../src/core/token.js';
import { firstSnowflakeAt } from '../../src/core/snowflake.js';
import { findDeadLetter } from '../../src/db/dead-letters.repository.js';

async function openAccount(
  stack: TestStack,
  owner: string,
  openingBalance: number,
): Promise<string> {
  const { messageId } = await stack.producer.enqueue('account.open', { owner, openingBalance });
  return messageId;
}

async function waitApplied(
  stack: TestStack,
  messageIds: string[],
  timeoutMs = 30_000,
): Promise<void> {
  await waitFor(
    `${messageIds.length} messages applied`,
    async () => {
      const row = await stack.db
        .selectFrom('inbox')
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .where('message_id', 'in', messageIds)
        .executeTakeFirstOrThrow();
      return Number(row.n) === messageIds.length;
    },
    timeoutMs,
  );
}

for (const mode of MODES) {
  describe(`pipeline (${mode})`, function () {
    this.timeout(60_000);
    pipelineCases(mode);
  });
}

/** The cases, declared once per mode; `mode` is where the stacks keep queues and tokens. */
function pipelineCases(mode: TestMode): void {
  const tokenLoss =
    mode === 'postgres' ? 'the token row expired and was swept' : 'Redis lost the token';
  const onCluster = mode === 'redis-cluster';

  describe('one message delivered five times', () => {
    let stack: TestStack;
    before(async () => {
      stack = await createTestStack('five', { ...modeOptions(mode) });
    });
    after(async () => stack.close());

    it('commits one effect and returns the first result to every delivery', async () => {
      const worker = await stack.startWorker();
      const a = await openAccount(stack, 'alice', 1_000);
      const b = await openAccount(stack, 'bob', 0);
      await waitApplied(stack, [a, b]);

      const sent = await stack.producer.enqueue('ledger.transfer', {
        fromId: a,
        toId: b,
        amount: 250,
      });
      await waitApplied(stack, [sent.messageId]);
      const queue = stack.producer.queue('ledger');
      const first = await queue.getJob(sent.jobId);
      await waitFor('first delivery completed', async () => (await first!.isCompleted()) && true);
      const firstResult = (await queue.getJob(sent.jobId))!.returnvalue;
      expect(firstResult).to.deep.equal({
        outcome: 'applied',
        result: { status: 'applied', transferId: sent.messageId },
      });

      const envelope = {
        messageId: sent.messageId,
        token: sent.token,
        data: { fromId: a, toId: b, amount: 250 },
      };
      const finished = async (jobId: string) => {
        await waitFor(
          `job ${jobId} completed`,
          async () => (await (await queue.getJob(jobId))?.isCompleted()) ?? false,
        );
        return (await queue.getJob(jobId))!.returnvalue as { outcome: string; result: unknown };
      };

      // 2: the same message enqueued again under another job id: the token's `done` fast path.
      await queue.add('ledger.transfer', envelope, { jobId: 'dup-2' });
      const second = await finished('dup-2');

      // 3: the token store forgot the token (Redis lost it, or its row expired): the inbox row
      // in PostgreSQL answers.
      await forgetToken(stack, sent.token);
      await queue.add('ledger.transfer', envelope, { jobId: 'dup-3' });
      const third = await finished('dup-3');

      // 4: a forced retry of the completed original.
      await (await queue.getJob(sent.jobId))!.retry('completed');
      await waitFor('retried original completed again', async () => {
        const job = await queue.getJob(sent.jobId);
        return (await job?.isCompleted()) && job!.attemptsStarted >= 2;
      });
      const fourth = (await queue.getJob(sent.jobId))!.returnvalue;

      // 5: a forced stall: another consumer takes the job and never finishes it; its lock runs
      // out and the stalled-job check hands it to the onceq worker.
      await worker.close();
      await queue.add('ledger.transfer', envelope, { jobId: 'dup-5' });
      const thief = stack.backend.newWorker(
        'ledger',
        () => Promise.reject(new Error('the thief only fetches, by hand')),
        { concurrency: 1, lockDuration: 1_000, stalledInterval: 1_000, maxStalledCount: 10 },
      );
      try {
        const stolen = await thief.getNextJob('thief-token');
        expect(stolen?.id).to.equal('dup-5');
      } finally {
        await thief.close();
      }
      await stack.startWorker({ lockDurationMs: 1_000 });
      const fifth = await finished('dup-5');

      for (const r of [second, third, fourth, fifth]) {
        expect(r.outcome).to.equal('duplicate');
        expect(r.result).to.deep.equal(firstResult.result);
      }
      const transfers = await stack.db.selectFrom('transfers').selectAll().execute();
      expect(transfers).to.have.length(1);
      expect(transfers[0]!.id).to.equal(sent.messageId);
      const balances = await stack.db
        .selectFrom('accounts')
        .select(['id', 'balance', 'version'])
        .orderBy('id')
        .execute();
      expect(balances.find((r) => r.id === a)).to.include({ balance: '750', version: 1 });
      expect(balances.find((r) => r.id === b)).to.include({ balance: '250', version: 1 });
      const dupOutcomes = stack.outcomes.filter((o) => o.messageId === sent.messageId);
      expect(dupOutcomes.map((o) => o.outcome)).to.deep.equal([
        'applied',
        'duplicate',
        'duplicate',
        'duplicate',
        'duplicate',
      ]);
      await assertLedgerInvariants(stack.db);
    });
  });

  describe('the same payload enqueued twice with one token', () => {
    let stack: TestStack;
    before(async () => {
      stack = await createTestStack('twice', { ...modeOptions(mode) });
    });
    after(async () => stack.close());

    it('makes one message and one job, and the second answer is a replay', async () => {
      const token = await stack.producer.issueToken();
      const first = await stack.producer.enqueue(
        'account.open',
        { owner: 'carol', openingBalance: 5 },
        { token },
      );
      const again = await stack.producer.enqueue(
        'account.open',
        { openingBalance: 5, owner: 'carol' },
        { token },
      );
      expect(again.messageId).to.equal(first.messageId);
      expect(again.jobId).to.equal(first.jobId);
      expect(first.replayed).to.equal(false);
      expect(again.replayed).to.equal(true);
      const queue = stack.producer.queue('ledger');
      expect(await queue.getJobCounts('wait', 'active', 'delayed', 'completed')).to.deep.equal({
        wait: 1,
        active: 0,
        delayed: 0,
        completed: 0,
      });
      const accepted = await stack.db.selectFrom('accepted_messages').selectAll().execute();
      expect(accepted).to.have.length(1);

      await stack.startWorker();
      await waitApplied(stack, [first.messageId]);
      expect(await stack.db.selectFrom('accounts').selectAll().execute()).to.have.length(1);
    });

    it('refuses the token for a different request and leaves the original untouched', async () => {
      const token = await stack.producer.issueToken();
      const first = await stack.producer.enqueue(
        'account.open',
        { owner: 'dan', openingBalance: 1 },
        { token },
      );
      let error: unknown;
      try {
        await stack.producer.enqueue(
          'account.open',
          { owner: 'dan', openingBalance: 2 },
          { token },
        );
      } catch (err) {
        error = err;
      }
      expect(error).to.have.property('code', 'idempotency_key_reused');
      const row = await stack.db
        .selectFrom('accepted_messages')
        .selectAll()
        .where('message_id', '=', first.messageId)
        .executeTakeFirstOrThrow();
      expect(row.data).to.deep.equal({ owner: 'dan', openingBalance: 1 });
    });

    it('refuses a token that was never issued', async () => {
      let error: unknown;
      try {
        await stack.producer.enqueue(
          'account.open',
          { owner: 'eve', openingBalance: 1 },
          { token: 'oqt_' + 'A'.repeat(32) },
        );
      } catch (err) {
        error = err;
      }
      expect(error).to.have.property('code', 'idempotency_key_unknown');
      expect(
        await stack.db
          .selectFrom('accepted_messages')
          .selectAll()
          .where('principal', '=', 'local')
          .where('token', '=', 'oqt_' + 'A'.repeat(32))
          .execute(),
      ).to.have.length(0);
    });

    it(`answers a replay from PostgreSQL after ${tokenLoss}`, async () => {
      const token = await stack.producer.issueToken();
      const first = await stack.producer.enqueue(
        'account.open',
        { owner: 'fay', openingBalance: 3 },
        { token },
      );
      // Applied and settled first: a delivery still to come would claim the token again and the
      // replay would be answered by the token store instead.
      await stack.startWorker();
      const queue = stack.producer.queue('ledger');
      await waitFor(
        'the message completed',
        async () => (await (await queue.getJob(first.jobId))?.isCompleted()) ?? false,
      );
      await forgetToken(stack, token);
      const again = await stack.producer.enqueue(
        'account.open',
        { owner: 'fay', openingBalance: 3 },
        { token },
      );
      expect(again).to.include({ messageId: first.messageId, jobId: first.jobId, replayed: true });
    });
  });

  if (!onCluster) {
    describe('200 concurrent transfers between 5 accounts at concurrency 20', () => {
      let stack: TestStack;
      before(async () => {
        stack = await createTestStack('concurrent', { poolSize: 20, ...modeOptions(mode) });
      });
      after(async () => stack.close());

      it('loses no update: balances add up and versions count the updates', async () => {
        const accounts: string[] = [];
        for (let i = 0; i < 5; i++) accounts.push(await openAccount(stack, `acct-${i}`, 10_000));
        await stack.startWorker({ concurrency: 20 });
        await waitApplied(stack, accounts);

        const sends = [];
        for (let i = 0; i < 200; i++) {
          const from = accounts[i % 5]!;
          const to = accounts[(i + 1 + (i % 4)) % 5]!;
          sends.push(
            stack.producer.enqueue('ledger.transfer', {
              fromId: from,
              toId: to,
              amount: 1 + (i % 7),
            }),
          );
        }
        const sent = await Promise.all(sends);
        await waitApplied(
          stack,
          sent.map((s) => s.messageId),
          60_000,
        );

        const state = await assertLedgerInvariants(stack.db);
        expect(state.transfers).to.equal(sent.length);
        const versions = await stack.db.selectFrom('accounts').select(['id', 'version']).execute();
        const updates = new Map<string, number>();
        for (let i = 0; i < 200; i++) {
          const from = accounts[i % 5]!;
          const to = accounts[(i + 1 + (i % 4)) % 5]!;
          updates.set(from, (updates.get(from) ?? 0) + 1);
          updates.set(to, (updates.get(to) ?? 0) + 1);
        }
        for (const v of versions)
          expect(v.version, `version of ${v.id}`).to.equal(updates.get(v.id) ?? 0);
      });
    });
  }

  describe('a handler that always throws', () => {
    let stack: TestStack;
    const alwaysFails = defineJob({
      name: 'test.always-fails',
      queue: 'ledger',
      schema: Type.Object({ accountId: Type.String() }),
      async handle(ctx) {
        await ctx.insertOnce('accounts', {
          id: ctx.data.accountId,
          owner: 'doomed',
          opening_balance: '1',
          balance: '1',
        });
        throw new Error('handler exploded');
      },
    });
    before(async () => {
      stack = await createTestStack('throws', {
        jobs: [alwaysFails],
        maxAttempts: 3,
        backoffMs: 10,
        ...modeOptions(mode),
      });
    });
    after(async () => stack.close());

    it('dead-letters it after its attempts with no effect, while other jobs keep flowing', async () => {
      await stack.startWorker();
      const doomed = await stack.producer.enqueue('test.always-fails', { accountId: '999' });
      const fine = [];
      for (let i = 0; i < 20; i++)
        fine.push(
          (await stack.producer.enqueue('account.open', { owner: `ok-${i}`, openingBalance: i }))
            .messageId,
        );
      await waitApplied(stack, fine);
      const queue = stack.producer.queue('ledger');
      const letter = await waitFor('doomed message dead-lettered', () =>
        findDeadLetter(stack.db, doomed.messageId),
      );
      expect(letter.reason).to.equal('exhausted');
      expect(letter.attempts).to.equal(3);
      expect(letter.error).to.equal('handler exploded');
      expect(letter.stack).to.contain('handler exploded');
      expect(letter.token).to.equal(doomed.token);
      expect(letter.data).to.deep.equal({ accountId: '999' });
      // The copy is written first, then the original leaves its queue.
      await waitFor('original removed', async () => !(await queue.getJob(doomed.jobId)));
      const dlq = stack.producer.queue('ledger.dlq');
      const copy = (await dlq.getJob(doomed.jobId))!;
      expect(copy.data).to.include({ messageId: doomed.messageId, token: doomed.token });
      expect(copy.data.deadLetter).to.include({ reason: 'exhausted', attempts: 3 });
      expect(
        await stack.db.selectFrom('accounts').selectAll().where('id', '=', '999').execute(),
      ).to.have.length(0);
      expect(
        await stack.db
          .selectFrom('inbox')
          .selectAll()
          .where('message_id', '=', doomed.messageId)
          .execute(),
      ).to.have.length(0);
      expect(await inboxCount(stack.db)).to.equal(20);
    });
  });

  describe('malformed job data', () => {
    let stack: TestStack;
    before(async () => {
      stack = await createTestStack('malformed', { ...modeOptions(mode) });
    });
    after(async () => stack.close());

    if (!onCluster) {
      it('is refused by the producer with every failing field named, and nothing is written', async () => {
        let error: { code?: string; details?: unknown } | undefined;
        try {
          await stack.producer.enqueue('ledger.transfer', {
            fromId: 12,
            toId: '1',
            amount: -5,
            extra: true,
          });
        } catch (err) {
          error = err as typeof error;
        }
        expect(error?.code).to.equal('validation_failed');
        const paths = (error?.details as { path: string }[]).map((f) => f.path).sort();
        expect(paths).to.deep.equal(['/amount', '/extra', '/fromId']);
        expect(await stack.db.selectFrom('accepted_messages').selectAll().execute()).to.have.length(
          0,
        );
      });
    }

    if (!onCluster) {
      it('is refused by the producer when PostgreSQL could not store it, naming the field', async () => {
        for (const [data, path, words] of [
          [{ owner: 'a\u0000b', openingBalance: 1 }, '/owner', /U\+0000/],
          [{ owner: 'half \ud83d', openingBalance: 1 }, '/owner', /surrogate/],
          [{ owner: '\ude00 first', openingBalance: 1 }, '/owner', /surrogate/],
        ] as const) {
          let error: { code?: string; details?: { path: string; message: string }[] } | undefined;
          try {
            await stack.producer.enqueue('account.open', data);
          } catch (err) {
            error = err as typeof error;
          }
          expect(error?.code, JSON.stringify(data)).to.equal('validation_failed');
          expect(error?.details?.[0]?.path).to.equal(path);
          expect(error?.details?.[0]?.message).to.match(words);
        }
        // Nothing was written; a whole pair (an emoji) is ordinary text.
        expect(await stack.db.selectFrom('accepted_messages').selectAll().execute()).to.have.length(
          0,
        );
        const sent = await stack.producer.enqueue('account.open', {
          owner: '\ud83d\ude00',
          openingBalance: 1,
        });
        expect(sent.replayed).to.equal(false);
        await stack.db.deleteFrom('accepted_messages').execute();
        await stack.producer.queue('ledger').obliterate({ force: true });
      });
    }

    it('is dead-lettered at once in the worker, not retried, with the reason recorded', async () => {
      await stack.startWorker();
      const queue = stack.backend.newQueue('ledger');
      try {
        const badId = firstSnowflakeAt(Date.now());
        const unknownId = String(BigInt(badId) + 1n);
        const bad = await queue.add(
          'ledger.transfer',
          { messageId: badId, token: generateToken(), data: { fromId: 'abc', amount: 'lots' } },
          { jobId: jobIdFor(badId), attempts: 5 },
        );
        await queue.add(
          'no.such-job',
          { messageId: unknownId, token: generateToken(), data: {} },
          { attempts: 5 },
        );
        const notEnvelope = await queue.add('ledger.transfer', { hello: 'world' }, { attempts: 5 });

        const badLetter = await waitFor('bad data dead-lettered', () =>
          findDeadLetter(stack.db, badId),
        );
        expect(badLetter.reason).to.equal('invalid');
        expect(badLetter.attempts).to.equal(1);
        expect(badLetter.error).to.match(/^invalid data for job ledger.transfer: /);
        expect(badLetter.error).to.contain('/fromId').and.contain('/toId').and.contain('/amount');
        await waitFor('invalid original removed', async () => !(await queue.getJob(bad.id!)));
        const unknownLetter = await waitFor('unknown job dead-lettered', () =>
          findDeadLetter(stack.db, unknownId),
        );
        expect(unknownLetter.reason).to.equal('invalid');
        expect(unknownLetter.error).to.equal('unknown job "no.such-job"');
        // Not an onceq envelope: no messageId to key a dead letter by, so it only fails.
        await waitFor(
          `job ${notEnvelope.id} failed`,
          async () => (await (await queue.getJob(notEnvelope.id!))?.isFailed()) ?? false,
        );
        const failed = (await queue.getJob(notEnvelope.id!))!;
        expect(failed.attemptsMade).to.equal(1);
        expect(failed.failedReason).to.contain('envelope.messageId');
        expect(await inboxCount(stack.db)).to.equal(0);
      } finally {
        await queue.close();
      }
    });
  });
}
