/**
 * Traces with the real OpenTelemetry SDK (sdk-trace-base, its in-memory exporter, the
 * AsyncLocalStorage context manager, the W3C propagator), registered globally as an application
 * would: the spans of an API request, its repeat and a redelivery; a follow-up's own trace, linked
 * to its parent's; a group transaction; trace ids on log lines; and nothing without an SDK.
 */
import { Writable } from 'node:stream';
import { expect } from 'chai';
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { hrTimeToNanoseconds } from '@opentelemetry/core';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import type { Logger } from 'pino';
import { createApiTest, type ApiTest } from '../support/api.js';
import { createTestStack, type TestStack } from '../support/stack.js';
import { createTestSchema, type TestSchema } from '../support/env.js';
import { waitFor } from '../support/ledger.js';
import { childNamed, installTracing, parentOf, type TestTracing } from '../support/tracing.js';
import { createFixtureTables, fixtureJobs, FIXTURE_QUEUE, setFailing } from '../fixtures/jobs.js';
import { createLogger } from '../../src/logger.js';
import { createJobObserver } from '../../src/metrics/job-observer.js';
import { createCommitGroups } from '../../src/worker/commit-groups.js';
import { traceLogFields } from '../../src/index.js';

type Line = Record<string, unknown>;

/** A logger as the CLI makes it (with the trace mixin), into `lines`. */
function capturingLogger(lines: Line[]): Logger {
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return createLogger({ level: 'info', destination: sink });
}

/** Starts a worker of `stack` that writes the per-delivery log lines into `lines`. */
async function startLoggingWorker(stack: TestStack, lines: Line[], outbox = false): Promise<void> {
  const logger = capturingLogger(lines);
  const observer = createJobObserver({ logger });
  await stack.startWorker({
    onOutcome: observer.onOutcome,
    logger,
    ...(outbox ? { outbox: { intervalMs: 100 } } : {}),
  });
}

const id = (span: ReadableSpan) => span.spanContext().spanId;
const traceOf = (span: ReadableSpan) => span.spanContext().traceId;
const ns = (time: ReadableSpan['startTime']) => hrTimeToNanoseconds(time);
/**
 * The SDK anchors each span's start on `Date.now()` (whole milliseconds) and measures its
 * duration on the performance clock: two spans' times can disagree by up to a millisecond.
 */
const CLOCK_SLACK_NS = 2_000_000;
const inOrder = (a: ReadableSpan['endTime'], b: ReadableSpan['startTime']) =>
  expect(ns(a)).to.be.at.most(ns(b) + CLOCK_SLACK_NS);

describe('telemetry: without an OpenTelemetry SDK', function () {
  this.timeout(60_000);
  let stack: TestStack;
  const lines: Line[] = [];
  before(async () => {
    stack = await createTestStack('otel-none');
    await startLoggingWorker(stack, lines);
  });
  after(async () => stack.close());

  it('puts no trace context in the envelope and no trace ids on log lines', async () => {
    expect(trace.getActiveSpan()).to.equal(undefined);
    const sent = await stack.producer.enqueue('account.open', { owner: 'ada', openingBalance: 1 });
    const job = await stack.producer.queue('ledger').getJob(sent.jobId);
    expect(job?.data).to.have.keys('messageId', 'token', 'data');
    const line = await waitFor('the job line', async () =>
      lines.find((l) => l.messageId === sent.messageId && l.msg === 'job applied'),
    );
    expect(line).to.not.have.any.keys('trace_id', 'span_id', 'trace_flags');
    expect(traceLogFields()).to.deep.equal({});
  });
});

describe('telemetry: traces with the OpenTelemetry SDK', function () {
  this.timeout(60_000);
  let tracing: TestTracing;
  before(() => {
    tracing = installTracing();
  });
  after(async () => tracing.uninstall());

  describe('an API request, its repeat and a redelivery', () => {
    let api: ApiTest;
    const lines: Line[] = [];
    before(async () => {
      api = await createApiTest('otel-api');
      await startLoggingWorker(api.stack, lines);
    });
    after(async () => api.close());

    it('give the expected tree; the repeat says replayed, the redelivery duplicate', async () => {
      const key = await api.key('otel');
      const token = await api.token(key);
      const body = { name: 'account.open', data: { owner: 'ada', openingBalance: 5 } };
      const first = await api.enqueue(key, token, body);
      expect(first.statusCode, first.body).to.equal(202);
      const { messageId, jobId } = first.json() as { messageId: string; jobId: string };
      const isProcess = (outcome: string) => (s: ReadableSpan) =>
        s.name === 'process ledger' &&
        s.attributes['messaging.message.id'] === messageId &&
        s.attributes['onceq.outcome'] === outcome;
      const delivery = await waitFor('the delivery span', async () =>
        tracing.spans().find(isProcess('applied')),
      );

      const repeat = await api.enqueue(key, token, body);
      expect(repeat.statusCode).to.equal(202);
      expect(repeat.headers['idempotent-replayed']).to.equal('true');

      // A redelivery: the same message's job once more (a duplicated job, or a stalled job's
      // second run): same envelope, same trace context.
      const queue = api.stack.producer.queue('ledger');
      const original = (await queue.getJob(jobId))!;
      await queue.add(original.name, original.data, { jobId: 'redelivery' });
      const redelivery = await waitFor('the redelivery span', async () =>
        tracing.spans().find(isProcess('duplicate')),
      );

      const spans = tracing.spans();
      const requests = spans.filter((s) => s.name === 'POST /v1/jobs');
      expect(requests).to.have.length(2);
      const [request, repeated] = requests as [ReadableSpan, ReadableSpan];
      for (const r of requests) {
        expect(r.kind).to.equal(SpanKind.SERVER);
        expect(parentOf(r)).to.equal(undefined);
        expect(r.attributes).to.include({
          'http.request.method': 'POST',
          'http.route': '/v1/jobs',
          'url.path': '/v1/jobs',
          'http.response.status_code': 202,
        });
      }
      expect(request.attributes).to.not.have.property('onceq.replayed');
      expect(repeated.attributes['onceq.replayed']).to.equal(true);

      const send = childNamed(spans, request, 'send ledger');
      expect(send.kind).to.equal(SpanKind.PRODUCER);
      expect(send.attributes).to.include({
        'messaging.system': 'bullmq',
        'messaging.operation.type': 'send',
        'messaging.destination.name': 'ledger',
        'messaging.message.id': messageId,
        'onceq.job.name': 'account.open',
        'onceq.replayed': false,
      });
      const resend = childNamed(spans, repeated, 'send ledger');
      expect(resend.attributes).to.include({
        'messaging.message.id': messageId,
        'onceq.replayed': true,
      });

      // The delivery continues the request's trace, as a child of the send span, linked to it.
      expect(delivery.kind).to.equal(SpanKind.CONSUMER);
      expect(traceOf(delivery)).to.equal(traceOf(request));
      expect(parentOf(delivery)).to.equal(id(send));
      expect(delivery.links.map((l) => l.context.spanId)).to.deep.equal([id(send)]);
      expect(delivery.attributes).to.include({
        'messaging.system': 'bullmq',
        'messaging.operation.type': 'process',
        'messaging.operation.name': 'process',
        'messaging.destination.name': 'ledger',
        'messaging.message.id': messageId,
        'onceq.job.name': 'account.open',
        'onceq.attempt': 1,
        'onceq.outcome': 'applied',
      });
      const claim = childNamed(spans, delivery, 'claim');
      expect(claim.attributes['onceq.claim']).to.equal('claimed');
      const transaction = childNamed(spans, delivery, 'transaction');
      expect(transaction.attributes['onceq.run']).to.equal(1);
      const handler = childNamed(spans, transaction, 'handler account.open');
      const commit = childNamed(spans, transaction, 'commit');
      // In the pipeline's order: claim, then the transaction: its handler, then its commit.
      inOrder(claim.endTime, transaction.startTime);
      inOrder(handler.endTime, commit.startTime);
      inOrder(commit.endTime, transaction.endTime);
      inOrder(transaction.endTime, delivery.endTime);

      // The redelivery: the same message's context, answered by its claim alone, a duplicate.
      expect(parentOf(redelivery)).to.equal(id(send));
      expect(redelivery.attributes['onceq.outcome']).to.equal('duplicate');
      expect(spans.filter((s) => parentOf(s) === id(redelivery)).map((s) => s.name)).to.deep.equal([
        'claim',
      ]);
      expect(childNamed(spans, redelivery, 'claim').attributes['onceq.claim']).to.equal('done');

      for (const s of [
        request,
        repeated,
        send,
        resend,
        delivery,
        claim,
        transaction,
        handler,
        commit,
        redelivery,
      ]) {
        expect(s.status.code, s.name).to.not.equal(SpanStatusCode.ERROR);
      }

      // Log lines written during a delivery carry its trace and span ids.
      const applied = lines.find((l) => l.msg === 'job applied' && l.messageId === messageId);
      expect(applied).to.include({
        trace_id: traceOf(delivery),
        span_id: id(delivery),
        trace_flags: '01',
      });
      const duplicate = lines.find((l) => l.msg === 'job duplicate' && l.jobId === 'redelivery');
      expect(duplicate).to.include({ trace_id: traceOf(redelivery), span_id: id(redelivery) });
    });
  });

  describe('follow-ups and malformed contexts', () => {
    let stack: TestStack;
    const lines: Line[] = [];
    before(async () => {
      stack = await createTestStack('otel-outbox', { jobs: fixtureJobs });
      await createFixtureTables(stack.db);
      await startLoggingWorker(stack, lines, true);
    });
    after(async () => stack.close());

    it("a follow-up from ctx.enqueue starts a trace of its own, linked to its parent's", async () => {
      const sent = await stack.producer.enqueue('fixture.parent', { n: 1, throwAfter: false });
      const followUp = await waitFor('the follow-up delivery', async () =>
        tracing
          .spans()
          .find(
            (s) =>
              s.name === 'process fixture' && s.attributes['onceq.job.name'] === 'fixture.bump',
          ),
      );
      const spans = tracing.spans();
      const parent = spans.find(
        (s) =>
          s.name === 'process fixture' && s.attributes['messaging.message.id'] === sent.messageId,
      )!;
      expect(parent.attributes['onceq.outcome']).to.equal('applied');
      const handler = childNamed(
        spans,
        childNamed(spans, parent, 'transaction'),
        'handler fixture.parent',
      );
      const create = childNamed(spans, handler, 'create fixture');
      expect(create.kind).to.equal(SpanKind.PRODUCER);
      expect(create.attributes).to.include({
        'messaging.operation.type': 'create',
        'messaging.destination.name': FIXTURE_QUEUE,
        'messaging.message.id': followUp.attributes['messaging.message.id'],
        'onceq.job.name': 'fixture.bump',
      });
      expect(parentOf(followUp)).to.equal(undefined);
      expect(traceOf(followUp)).to.not.equal(traceOf(parent));
      expect(followUp.links.map((l) => [l.context.traceId, l.context.spanId])).to.deep.equal([
        [traceOf(create), id(create)],
      ]);
      expect(followUp.attributes['onceq.outcome']).to.equal('applied');
      // The relay's batch send: a trace of its own too, linked to the creation contexts it sent.
      const relayed = spans.filter(
        (s) => s.name === 'send' && s.links.some((l) => l.context.spanId === id(create)),
      );
      expect(relayed).to.have.length(1);
      expect(relayed[0]!.kind).to.equal(SpanKind.PRODUCER);
      expect(parentOf(relayed[0]!)).to.equal(undefined);
      expect(relayed[0]!.attributes['messaging.batch.message_count']).to.be.at.least(1);
    });

    it('a failed attempt is an ERROR span with its exception; the next attempt says so', async () => {
      await setFailing(stack.db, true);
      const sent = await stack.producer.enqueue('fixture.bump', { n: 40 });
      const ofMessage = (s: ReadableSpan) =>
        s.name === 'process fixture' && s.attributes['messaging.message.id'] === sent.messageId;
      const failed = await waitFor('the failed attempt', async () =>
        tracing.spans().find((s) => ofMessage(s) && s.attributes['onceq.outcome'] === 'retried'),
      );
      await setFailing(stack.db, false);
      const applied = await waitFor('the applied attempt', async () =>
        tracing.spans().find((s) => ofMessage(s) && s.attributes['onceq.outcome'] === 'applied'),
      );
      expect(failed.attributes['onceq.attempt']).to.equal(1);
      expect(failed.status.code).to.equal(SpanStatusCode.ERROR);
      expect(failed.status.message).to.contain('the switch is on');
      const exception = failed.events.find((e) => e.name === 'exception');
      expect(exception?.attributes?.['exception.message']).to.contain('bump 40 refused');
      // The handler's own span failed too, and the transaction around it.
      const transaction = childNamed(tracing.spans(), failed, 'transaction');
      expect(transaction.status.code).to.equal(SpanStatusCode.ERROR);
      expect(childNamed(tracing.spans(), transaction, 'handler fixture.bump').status.code).to.equal(
        SpanStatusCode.ERROR,
      );
      expect(applied.attributes['onceq.attempt']).to.be.greaterThan(1);
      expect(applied.status.code).to.not.equal(SpanStatusCode.ERROR);
      // Both attempts continue the same send span.
      expect(parentOf(applied)).to.equal(parentOf(failed));
    });

    it('a malformed trace context never fails a message: its delivery starts a new trace', async () => {
      const queue = stack.producer.queue(FIXTURE_QUEUE);
      const garbled = [{ context: { traceparent: '00-not-a-trace-01' } }, 'junk'];
      const messageIds: string[] = [];
      for (const [n, bad] of garbled.entries()) {
        // Held back by a delay, then put back with the bad context in its envelope.
        const sent = await stack.producer.enqueue('fixture.bump', { n }, { delay: 60_000 });
        const job = (await queue.getJob(sent.jobId))!;
        await job.remove();
        await queue.add(job.name, { ...job.data, trace: bad }, { jobId: sent.jobId });
        messageIds.push(sent.messageId);
      }
      for (const messageId of messageIds) {
        const span = await waitFor('the delivery span', async () =>
          tracing
            .spans()
            .find(
              (s) =>
                s.name === 'process fixture' && s.attributes['messaging.message.id'] === messageId,
            ),
        );
        expect(span.attributes['onceq.outcome']).to.equal('applied');
        expect(parentOf(span)).to.equal(undefined);
        expect(span.links).to.deep.equal([]);
      }
    });

    it('a dead-lettered delivery is an ERROR span that says why', async () => {
      const queue = stack.producer.queue(FIXTURE_QUEUE);
      const sent = await stack.producer.enqueue('fixture.bump', { n: 50 }, { delay: 60_000 });
      const job = (await queue.getJob(sent.jobId))!;
      await job.remove();
      // Data its schema refuses: dead-lettered as invalid, at once.
      await queue.add(job.name, { ...job.data, data: { n: 'fifty' } }, { jobId: sent.jobId });
      const span = await waitFor('the delivery span', async () =>
        tracing
          .spans()
          .find(
            (s) =>
              s.name === 'process fixture' &&
              s.attributes['messaging.message.id'] === sent.messageId,
          ),
      );
      expect(span.attributes).to.include({
        'onceq.outcome': 'invalid',
        'onceq.dead_letter.reason': 'invalid',
      });
      expect(span.status.code).to.equal(SpanStatusCode.ERROR);
      expect(span.events.map((e) => e.name)).to.include('exception');
    });
  });

  describe('group commit', () => {
    let schema: TestSchema;
    before(async () => {
      schema = await createTestSchema('otel-group');
    });
    after(async () => schema.drop());

    it("links one group span both ways to each member's transaction span", async () => {
      const groups = createCommitGroups(schema.db);
      const tracer = trace.getTracer('test');
      const members = [0, 1, 2].map((n) => tracer.startSpan(`member ${n}`));
      // Queued in one turn of the event loop: one group of three.
      const results = await Promise.all(
        members.map((span, n) =>
          groups.run(
            {
              key: { messageId: String(7_000_001 + n), queue: 'q', jobName: 'j' },
              body: async () => n,
            },
            span,
          ),
        ),
      );
      for (const span of members) span.end();
      expect(results.map((r) => r.kind)).to.deep.equal(['applied', 'applied', 'applied']);
      expect(groups.stats().grouped).to.equal(3);

      const spans = tracing.spans();
      const group = spans.find((s) => s.name === 'group commit')!;
      expect(parentOf(group)).to.equal(undefined);
      expect(group.attributes['onceq.group.size']).to.equal(3);
      expect(group.links.map((l) => l.context.spanId)).to.have.members(
        members.map((m) => m.spanContext().spanId),
      );
      for (const name of ['member 0', 'member 1', 'member 2']) {
        const member = spans.find((s) => s.name === name)!;
        expect(member.attributes['onceq.group.size']).to.equal(3);
        expect(member.links.map((l) => l.context.spanId)).to.deep.equal([id(group)]);
      }
    });
  });
});
