/**
 * Metrics and job lines of an in-process worker, against real Redis and PostgreSQL: each
 * delivery counted once under the right outcome (a committed `rejected` result as `rejected`, a
 * second delivery as `duplicate`), claim results, latency histograms, every job line carrying
 * messageId, jobId, queue and outcome; and registries that never count into each other.
 */
import { Writable } from 'node:stream';
import { expect } from 'chai';
import { createTestStack, type TestStack } from '../support/stack.js';
import { waitFor } from '../support/ledger.js';
import { sample } from '../support/metrics.js';
import { createMetrics, type Metrics } from '../../src/metrics/metrics.js';
import { claimResultOf, createJobObserver, jobOutcomeOf } from '../../src/metrics/job-observer.js';
import { addStateCollectors } from '../../src/metrics/state-collectors.js';
import { createLogger } from '../../src/logger.js';
import { messageJobOptions } from '../../src/queues/message-job-options.js';

describe('metrics', () => {
  describe('outcome mapping', () => {
    it('counts committed conflict and rejected results as such, busy as no outcome', () => {
      expect(jobOutcomeOf('applied', { status: 'applied' })).to.equal('applied');
      expect(jobOutcomeOf('applied', { status: 'rejected' })).to.equal('rejected');
      expect(jobOutcomeOf('applied', { status: 'conflict' })).to.equal('conflict');
      expect(jobOutcomeOf('applied', null)).to.equal('applied');
      expect(jobOutcomeOf('duplicate', { status: 'rejected' })).to.equal('duplicate');
      expect(jobOutcomeOf('retried')).to.equal('retried');
      expect(jobOutcomeOf('invalid')).to.equal('dead');
      expect(jobOutcomeOf('dead')).to.equal('dead');
      expect(jobOutcomeOf('busy')).to.equal(undefined);
      expect(claimResultOf('busy', false)).to.equal('busy');
      expect(claimResultOf('duplicate', false)).to.equal('done');
      expect(claimResultOf('applied', true)).to.equal('claimed');
      expect(claimResultOf('invalid', false)).to.equal(undefined);
    });
  });

  describe('a worker with an observer', function () {
    this.timeout(30_000);
    let stack: TestStack;
    let metrics: Metrics;
    let removeCollectors: () => Promise<void>;
    const lines: Record<string, unknown>[] = [];
    const jobLines = () => lines.filter((l) => String(l.msg).startsWith('job '));

    before(async () => {
      stack = await createTestStack('metrics');
      metrics = createMetrics({ defaultMetrics: false });
      removeCollectors = addStateCollectors(metrics, {
        db: stack.db,
        backend: stack.backend,
        queues: ['ledger'],
      });
      const sink = new Writable({
        write(chunk, _enc, done) {
          for (const line of String(chunk).split('\n').filter(Boolean))
            lines.push(JSON.parse(line));
          done();
        },
      });
      const logger = createLogger({ level: 'info', destination: sink });
      const observer = createJobObserver({ metrics, logger });
      await stack.startWorker({
        registry: observer.instrument(stack.registry),
        onOutcome: observer.onOutcome,
        logger,
      });
    });
    after(async () => {
      await removeCollectors();
      await stack.close();
    });

    it('counts applied, rejected and duplicate deliveries once each, and logs each with its ids', async () => {
      const a = await stack.producer.enqueue('account.open', { owner: 'a', openingBalance: 10 });
      const b = await stack.producer.enqueue('account.open', { owner: 'b', openingBalance: 0 });
      const t = await stack.producer.enqueue('ledger.transfer', {
        fromId: b.messageId,
        toId: a.messageId,
        amount: 5,
      });
      await waitFor('three outcomes', async () => jobLines().length >= 3);
      // A second delivery of the refused transfer: a duplicate, not a second `rejected`.
      await stack.producer.queue('ledger').add(
        'ledger.transfer',
        {
          messageId: t.messageId,
          token: t.token,
          data: { fromId: b.messageId, toId: a.messageId, amount: 5 },
        },
        { ...messageJobOptions(t.messageId), jobId: `${t.jobId}-dup` },
      );
      await waitFor('the duplicate', async () => jobLines().length >= 4);

      const text = await metrics.text();
      const jobs = (outcome: string) =>
        sample(text, 'onceq_jobs_total', { queue: 'ledger', outcome });
      expect(jobs('applied'), text).to.equal(2);
      expect(jobs('rejected'), text).to.equal(1);
      expect(jobs('duplicate'), text).to.equal(1);
      expect(sample(text, 'onceq_claims_total', { result: 'claimed' })).to.equal(3);
      expect(sample(text, 'onceq_claims_total', { result: 'done' })).to.equal(1);
      expect(
        sample(text, 'onceq_handler_duration_seconds_count', { job: 'ledger.transfer' }),
      ).to.equal(1);
      expect(sample(text, 'onceq_job_end_to_end_seconds_count', { outcome: 'duplicate' })).to.equal(
        1,
      );
      expect(sample(text, 'onceq_queue_jobs', { queue: 'ledger', state: 'failed' })).to.equal(0);
      expect(sample(text, 'onceq_outbox_lag_seconds', {})).to.equal(0);

      expect(jobLines()).to.have.length(4);
      for (const line of jobLines()) {
        expect(line).to.include.keys('messageId', 'jobId', 'queue', 'outcome');
        expect(line.queue).to.equal('ledger');
      }
      expect(
        jobLines()
          .map((l) => l.outcome)
          .sort(),
      ).to.deep.equal(['applied', 'applied', 'duplicate', 'rejected']);
      expect(jobLines().find((l) => l.outcome === 'duplicate')).to.include({
        messageId: t.messageId,
        jobId: `${t.jobId}-dup`,
      });
    });

    it('keeps registries apart: a second set of metrics in the process counts nothing', async () => {
      const other = createMetrics({ defaultMetrics: false });
      const text = await other.text();
      expect(Number.isNaN(sample(text, 'onceq_jobs_total', { outcome: 'applied' }))).to.equal(true);
    });

    it('reports reconciler passes pushed through its hook', async () => {
      const old = '1';
      metrics.observeReconcilerPass({ ran: false });
      expect(sample(await metrics.text(), 'onceq_reconciler_lag_seconds', {})).to.equal(0);
      metrics.observeReconcilerPass({ ran: true, reenqueued: 2, oldestUnsettledMessageId: old });
      const text = await metrics.text();
      expect(sample(text, 'onceq_reconciler_lag_seconds', {})).to.be.greaterThan(0);
      expect(sample(text, 'onceq_reconciler_messages_total', { action: 'reenqueued' })).to.equal(2);
      metrics.observeReconcilerPass({ ran: true });
      expect(sample(await metrics.text(), 'onceq_reconciler_lag_seconds', {})).to.equal(0);
    });
  });
});
