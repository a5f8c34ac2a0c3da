/**
 * `ctx.enqueue` checks a follow-up at the door, with the producer's rules: a registered job, a
 * queue that job is declared on (never a dead-letter queue), a delay below the dedupe window and
 * a priority within BullMQ's range. A bad follow-up fails its parent's own delivery (dead-lettered
 * `invalid`, with the error) and nothing reaches the outbox, where the relay could never send it.
 * Real Redis and PostgreSQL, a real worker; the relay is off, so the outbox shows what was written.
 */
import { expect } from 'chai';
import { Type } from '@sinclair/typebox';
import { createTestStack, type TestStack } from '../support/stack.js';
import { waitFor } from '../support/ledger.js';
import { defineJob } from '../../src/jobs/define-job.js';
import { findDeadLetter } from '../../src/db/dead-letters.repository.js';
import { outboxBacklog } from '../../src/db/outbox.repository.js';
import { MAX_PRIORITY } from '../../src/core/limits.js';

const CHILD_QUEUE = 'fu-child';
const CHILD_BULK_QUEUE = 'fu-child-bulk';

/** The follow-up: runs on its own queue, and may also be sent to a bulk queue. */
const child = defineJob({
  name: 'fu.child',
  queue: CHILD_QUEUE,
  queues: [CHILD_BULK_QUEUE],
  schema: Type.Object({ n: Type.Integer() }),
  async handle() {
    return { status: 'applied' };
  },
});

/** Enqueues one follow-up with whatever name and options its data says. */
const parent = defineJob({
  name: 'fu.parent',
  queue: 'fu-parent',
  schema: Type.Object({ name: Type.String(), options: Type.Unknown() }),
  async handle(ctx) {
    const id = await ctx.enqueue(ctx.data.name, { n: 1 }, ctx.data.options as object);
    return { status: 'applied', followUp: id };
  },
});

describe('jobs: ctx.enqueue refuses a bad follow-up at the door', function () {
  this.timeout(60_000);
  let stack: TestStack;
  before(async () => {
    stack = await createTestStack('fuopts', { jobs: [parent, child], maxAttempts: 3 });
    await stack.startWorker({ outbox: false });
  });
  after(async () => stack.close());
  // Each case reads the outbox on its own: one case's leftovers (a regression) fail only it.
  afterEach(async () => {
    await stack.db.deleteFrom('outbox').execute();
  });

  async function outboxRows() {
    return stack.db.selectFrom('outbox').select(['queue', 'job_name', 'options']).execute();
  }

  for (const [label, name, options, path] of [
    [
      'a priority above BullMQ’s 2,097,151',
      'fu.child',
      { priority: MAX_PRIORITY + 1 },
      '/priority',
    ],
    ['a negative priority', 'fu.child', { priority: -1 }, '/priority'],
    ['a fractional priority', 'fu.child', { priority: 1.5 }, '/priority'],
    ['a delay beyond the dedupe window', 'fu.child', { delay: 7 * 86_400_000 }, '/delay'],
    ['a negative delay', 'fu.child', { delay: -5 }, '/delay'],
    ['the dead-letter queue of its queue', 'fu.child', { queue: `${CHILD_QUEUE}.dlq` }, '/queue'],
    ['a queue no job is declared on', 'fu.child', { queue: 'nowhere' }, '/queue'],
    ['another job’s queue', 'fu.child', { queue: 'fu-parent' }, '/queue'],
    ['an unknown job', 'no.such.job', {}, undefined],
  ] as const) {
    it(`${label}: the parent is dead-lettered as invalid, nothing in the outbox`, async () => {
      const sent = await stack.producer.enqueue('fu.parent', { name, options });
      const letter = await waitFor('parent dead-lettered', () =>
        findDeadLetter(stack.db, sent.messageId),
      );
      expect(letter.reason).to.equal('invalid');
      // One delivery, no retries: the error is not one a retry can fix.
      expect(letter.attempts).to.equal(1);
      if (path) {
        expect(letter.error).to.contain(`ctx.enqueue(${name})`).and.to.contain(path);
      } else {
        expect(letter.error).to.contain(`unknown job "${name}"`);
      }
      expect((await outboxBacklog(stack.db)).depth).to.equal(0);
      const inbox = await stack.db
        .selectFrom('inbox')
        .select('message_id')
        .where('message_id', '=', sent.messageId)
        .execute();
      expect(inbox).to.deep.equal([]);
    });
  }

  it('a follow-up on a declared extra queue at the highest priority is written to the outbox', async () => {
    const sent = await stack.producer.enqueue('fu.parent', {
      name: 'fu.child',
      options: { queue: CHILD_BULK_QUEUE, priority: MAX_PRIORITY, delay: 1000 },
    });
    const rows = await waitFor('follow-up in the outbox', async () => {
      const r = await outboxRows();
      return r.length > 0 ? r : undefined;
    });
    expect(rows).to.deep.equal([
      {
        queue: CHILD_BULK_QUEUE,
        job_name: 'fu.child',
        options: { delay: 1000, priority: MAX_PRIORITY },
      },
    ]);
    expect(await findDeadLetter(stack.db, sent.messageId)).to.equal(undefined);
  });
});
