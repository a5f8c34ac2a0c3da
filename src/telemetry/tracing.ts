/**
 * OpenTelemetry traces, through `@opentelemetry/api` only: every span here is a no-op (a
 * non-recording span: no clock read, nothing kept or exported) until the application registers
 * an SDK, and onceq never starts one. Span kinds, names and attributes follow the OpenTelemetry messaging
 * conventions:
 *
 *   send <queue>      PRODUCER  the producer's enqueue (child of the API request's SERVER span)
 *   create <queue>    PRODUCER  a follow-up written to the outbox by `ctx.enqueue`
 *   send              PRODUCER  the outbox relay's batch, linked to each follow-up's `create`
 *   process <queue>   CONSUMER  one delivery; children `claim`, `transaction` (`handler <job>`,
 *                               `commit`)
 *   group commit      INTERNAL  a transaction shared by several deliveries, linked both ways to
 *                               each member's `transaction` span
 *
 * A message carries the context it was created in (`MessageEnvelope.trace`). Its delivery's span
 * always links to it (the conventions ask for the link) and is its child too, in the same trace,
 * except for follow-ups (`MessageTrace.link`): those start a trace of their own, so a chain of
 * follow-ups never becomes one unbounded trace.
 */
import {
  context,
  INVALID_SPAN_CONTEXT,
  isSpanContextValid,
  ProxyTracerProvider,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type Tracer,
  type TracerProvider,
} from '@opentelemetry/api';
import { messageTraceOf, type MessageTrace } from '../core/message.js';
import type { DeliveryOutcome } from '../core/outcome.js';

/** The instrumentation scope of onceq's spans. */
export const TRACER_NAME = 'onceq';

/**
 * `messaging.system`: BullMQ carries the messages (on Redis or PostgreSQL). The conventions have
 * no registered value for it; `bullmq` is the name an instrumentation of BullMQ would give.
 */
export const MESSAGING_SYSTEM = 'bullmq';

/** The attribute names onceq sets: the conventions' own, and onceq's under `onceq.`. */
export const ATTR = {
  messagingSystem: 'messaging.system',
  operationType: 'messaging.operation.type',
  operationName: 'messaging.operation.name',
  destination: 'messaging.destination.name',
  messageId: 'messaging.message.id',
  batchCount: 'messaging.batch.message_count',
  errorType: 'error.type',
  /** The job's name (`defineJob({ name })`). */
  jobName: 'onceq.job.name',
  /** This delivery's attempt, from 1 (BullMQ's attempts made + 1). */
  attempt: 'onceq.attempt',
  /** What the delivery ended with: `applied`, `duplicate`, `busy`, `retried`, `invalid`, `dead`. */
  outcome: 'onceq.outcome',
  /** Why a dead-lettered delivery was: `exhausted`, `invalid`, `expired`. */
  deadLetterReason: 'onceq.dead_letter.reason',
  /** The claim's answer: `claimed`, `done` (already applied), `busy` (another live owner). */
  claim: 'onceq.claim',
  /** The run of the message's transaction, from 1 (re-runs after a version conflict). */
  run: 'onceq.run',
  /** Messages in the group transaction a delivery's transaction joined. */
  groupSize: 'onceq.group.size',
  /** The producer answered from an earlier acceptance (same idempotency token and request). */
  replayed: 'onceq.replayed',
} as const;

let cached: { provider: TracerProvider; tracer: Tracer } | undefined;

/** What the API's provider delegates to while no SDK is registered. */
const NO_SDK = new ProxyTracerProvider().getDelegate();
/** The span every helper hands out while no SDK is registered: one, shared, recording nothing. */
const NO_SPAN = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/**
 * Whether an SDK is registered. Without one every span is a no-op anyway; the helpers then skip
 * even the no-op spans, their attributes and their contexts, so a delivery pays a few identity
 * checks for tracing, not a few microseconds. A provider of another copy of the API counts as an
 * SDK (its class is not this copy's): such a process is traced, never silently dropped.
 */
export function tracingEnabled(): boolean {
  const provider = trace.getTracerProvider();
  return !(provider instanceof ProxyTracerProvider && provider.getDelegate() === NO_SDK);
}

/**
 * onceq's tracer, from the global provider as it is now: an application (or a test) may register
 * or replace its SDK at any time, and a tracer taken before would keep the old one.
 */
export function tracer(): Tracer {
  const provider = trace.getTracerProvider();
  if (cached?.provider !== provider) cached = { provider, tracer: provider.getTracer(TRACER_NAME) };
  return cached.tracer;
}

/**
 * The active context as a {@link MessageTrace}, or `undefined` when the propagators wrote
 * nothing (no SDK, or no valid span: an invalid context is never injected).
 */
export function activeMessageTrace(options: { link?: boolean } = {}): MessageTrace | undefined {
  if (!tracingEnabled()) return undefined;
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  if (Object.keys(carrier).length === 0) return undefined;
  return options.link ? { context: carrier, link: true } : { context: carrier };
}

/** `{ trace }` for an envelope or the outbox's options, or `{}`: spread it into the object. */
export function traceField(options: { link?: boolean } = {}): { trace?: MessageTrace } {
  const t = activeMessageTrace(options);
  return t ? { trace: t } : {};
}

/** Whether an SDK records spans in `ctx` (lets callers skip building attributes for nothing). */
export function isRecording(span: Span | undefined): boolean {
  return span?.isRecording() === true;
}

/** Records `err` on `span` and marks it failed. */
export function recordError(span: Span, err: unknown): void {
  if (!span.isRecording()) return;
  if (err instanceof Error) {
    span.recordException(err);
    span.setAttribute(ATTR.errorType, errorType(err));
  } else {
    span.recordException(String(err));
  }
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: err instanceof Error ? err.message : String(err),
  });
}

/** `error.type`: onceq's stable code when the error has one, else the class name. */
function errorType(err: Error): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && code.length > 0 ? code : err.name;
}

/**
 * Runs `fn` in a new span, child of `parent` (the active context by default), with the span
 * active; records a throw and ends the span.
 */
export function inSpan<T>(
  name: string,
  options: SpanHelperOptions,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  // Without an SDK: `fn` alone, not even a promise of ours around it.
  if (!tracingEnabled()) return fn(NO_SPAN);
  return inRecordedSpan(name, options, fn);
}

/** Options of {@link inSpan}. */
export interface SpanHelperOptions {
  /** @defaultValue INTERNAL */
  kind?: SpanKind;
  /** The span's attributes, or a function of them: only called when an SDK records. */
  attributes?: Attributes | (() => Attributes);
  links?: Link[];
  /** @defaultValue the active context */
  parent?: Context;
}

async function inRecordedSpan<T>(
  name: string,
  options: SpanHelperOptions,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  const parent = options.parent ?? context.active();
  const span = tracer().startSpan(
    name,
    {
      kind: options.kind ?? SpanKind.INTERNAL,
      attributes:
        typeof options.attributes === 'function' ? options.attributes() : options.attributes,
      links: options.links,
    },
    parent,
  );
  try {
    return await context.with(trace.setSpan(parent, span), () => fn(span));
  } catch (err) {
    recordError(span, err);
    throw err;
  } finally {
    span.end();
  }
}

/** The span name of a messaging operation: `send ledger`, `process ledger`. */
export function messagingSpanName(operation: string, queue: string | undefined): string {
  return queue ? `${operation} ${queue}` : operation;
}

/** The messaging attributes of an operation on one message. */
export function messagingAttributes(
  operation: 'send' | 'create' | 'process',
  queue: string | undefined,
  extra: Attributes = {},
): Attributes {
  return {
    [ATTR.messagingSystem]: MESSAGING_SYSTEM,
    [ATTR.operationType]: operation,
    [ATTR.operationName]: operation,
    ...(queue ? { [ATTR.destination]: queue } : {}),
    ...extra,
  };
}

/** The span of one delivery, see {@link startDeliverySpan}. */
export interface DeliverySpan {
  readonly span: Span;
  /** The context with the span active: the delivery runs in it. */
  readonly context: Context;
  /** Sets the delivery's outcome (the last one set counts). */
  outcome(outcome: DeliveryOutcome): void;
  /** Ends the span; `err` is what the delivery threw, if it threw. */
  end(err?: unknown): void;
}

const ignore = (): void => undefined;

/** Outcomes that are the message's failure (ERROR status): the others are settled or put back. */
const FAILED_OUTCOMES = new Set<DeliveryOutcome>(['retried', 'invalid', 'dead']);

/**
 * Starts the CONSUMER span of a delivery. Its parent is the context the message was created in
 * (a single message per delivery: the conventions allow the creation context as parent), with a
 * link to that context as well; for a follow-up ({@link MessageTrace.link}) only the link, in a
 * trace of its own. A message without a (valid) context gets a span under the active context.
 */
export function startDeliverySpan(delivery: {
  queue: string;
  jobName: string;
  attempt: number;
  envelope: unknown;
}): DeliverySpan {
  if (!tracingEnabled()) {
    return { span: NO_SPAN, context: context.active(), outcome: ignore, end: ignore };
  }
  const envelope = (typeof delivery.envelope === 'object' ? delivery.envelope : null) as Record<
    string,
    unknown
  > | null;
  const carried = messageTraceOf(envelope?.trace);
  let parent = context.active();
  let links: Link[] | undefined;
  if (carried) {
    const extracted = propagation.extract(ROOT_CONTEXT, carried.context);
    const created = trace.getSpanContext(extracted);
    if (created && isSpanContextValid(created)) {
      links = [{ context: created }];
      parent = carried.link ? trace.deleteSpan(extracted) : extracted;
    }
  }
  const messageId = typeof envelope?.messageId === 'string' ? envelope.messageId : undefined;
  const span = tracer().startSpan(
    messagingSpanName('process', delivery.queue),
    {
      kind: SpanKind.CONSUMER,
      links,
      attributes: messagingAttributes('process', delivery.queue, {
        ...(messageId ? { [ATTR.messageId]: messageId } : {}),
        [ATTR.jobName]: delivery.jobName,
        [ATTR.attempt]: delivery.attempt,
      }),
    },
    parent,
  );
  let outcome: DeliveryOutcome | undefined;
  return {
    span,
    context: trace.setSpan(parent, span),
    outcome(o) {
      outcome = o;
      span.setAttribute(ATTR.outcome, o);
    },
    end(err) {
      if (outcome === undefined ? err !== undefined : FAILED_OUTCOMES.has(outcome)) {
        recordError(span, err ?? new Error(`delivery ${outcome}`));
      }
      span.end();
    },
  };
}

/**
 * Starts the span of a group transaction: a root of its own (it belongs to no one member's
 * trace), linked to each member's transaction span; each member's span gets a link back to it
 * and the group's size. `members` without a recording span are left out.
 */
export function startGroupSpan(members: readonly (Span | undefined)[]): Span | undefined {
  const recording = members.filter((s): s is Span => s?.isRecording() === true);
  if (recording.length === 0) return undefined;
  const group = tracer().startSpan('group commit', {
    root: true,
    kind: SpanKind.INTERNAL,
    links: recording.map((s) => ({ context: s.spanContext() })),
    attributes: { [ATTR.groupSize]: members.length },
  });
  for (const member of recording) {
    member.addLink({ context: group.spanContext() });
    member.setAttribute(ATTR.groupSize, members.length);
  }
  return group;
}

/**
 * Records a span that already happened, from `startTime` (a `performance.now()` reading) to now,
 * under `parent`: for a step whose start is only known inside code that cannot hold a span open
 * (the commit, which the transaction runs).
 */
export function recordSpan(name: string, parent: Context, startTime: number, err?: unknown): void {
  if (!tracingEnabled()) return;
  const span = tracer().startSpan(name, { kind: SpanKind.INTERNAL, startTime }, parent);
  if (err !== undefined) recordError(span, err);
  span.end();
}

/**
 * Runs `fn`, the send of a batch of messages created earlier (the outbox relay), in a
 * `send` PRODUCER span of its own, linked to each message's creation context (the conventions'
 * batch send). Nothing is traced for an empty batch.
 */
export function inBatchSendSpan<T>(traces: readonly unknown[], fn: () => Promise<T>): Promise<T> {
  if (traces.length === 0 || !tracingEnabled()) return fn();
  const links: Link[] = [];
  for (const value of traces) {
    const carried = messageTraceOf(value);
    if (!carried) continue;
    const created = trace.getSpanContext(propagation.extract(ROOT_CONTEXT, carried.context));
    if (created && isSpanContextValid(created)) links.push({ context: created });
  }
  return inSpan(
    'send',
    {
      kind: SpanKind.PRODUCER,
      parent: ROOT_CONTEXT,
      links,
      attributes: () =>
        messagingAttributes('send', undefined, { [ATTR.batchCount]: traces.length }),
    },
    fn,
  );
}
