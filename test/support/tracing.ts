/**
 * A real OpenTelemetry SDK for tests: a tracer provider whose spans go to an in-memory exporter,
 * the AsyncLocalStorage context manager and the W3C propagator, all registered globally as an
 * application would. `uninstall()` unregisters them, so later tests run without an SDK again.
 */
import { context, propagation, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';

export interface TestTracing {
  exporter: InMemorySpanExporter;
  /** Finished spans so far. */
  spans(): ReadableSpan[];
  uninstall(): Promise<void>;
}

export function installTracing(): TestTracing {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const contextManager = new AsyncLocalStorageContextManager().enable();
  if (!trace.setGlobalTracerProvider(provider)) throw new Error('a tracer provider is registered');
  context.setGlobalContextManager(contextManager);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  return {
    exporter,
    spans: () => exporter.getFinishedSpans(),
    async uninstall() {
      trace.disable();
      context.disable();
      propagation.disable();
      await provider.shutdown();
    },
  };
}

/** The span's parent span id, or undefined for a root. */
export function parentOf(span: ReadableSpan): string | undefined {
  return span.parentSpanContext?.spanId;
}

/** The one span named `name` among `spans` whose parent is `parent` (throws naming what is there). */
export function childNamed(
  spans: readonly ReadableSpan[],
  parent: ReadableSpan,
  name: string,
): ReadableSpan {
  const found = spans.filter((s) => s.name === name && parentOf(s) === parent.spanContext().spanId);
  if (found.length !== 1) {
    const children = spans
      .filter((s) => parentOf(s) === parent.spanContext().spanId)
      .map((s) => s.name);
    throw new Error(
      `expected one "${name}" under "${parent.name}", found ${found.length}; children: ${children.join(', ')}`,
    );
  }
  return found[0]!;
}
