/**
 * Trace ids on log lines: a pino `mixin` that adds the active span's `trace_id`, `span_id` and
 * `trace_flags` (the field names of OpenTelemetry's log data model and of its pino
 * instrumentation), so a log line leads to its trace and back.
 */
import { isSpanContextValid, trace } from '@opentelemetry/api';

/** The fields {@link traceLogFields} adds. */
export interface TraceLogFields {
  /** The trace's id, 32 hex digits. */
  trace_id?: string;
  /** The active span's id, 16 hex digits. */
  span_id?: string;
  /** The W3C trace flags as two hex digits: `01` when the trace is sampled. */
  trace_flags?: string;
}

/**
 * The active span's ids, or no fields when no span is active or its context is invalid (no SDK:
 * a no-op span's ids are all zeros). Pass it as pino's `mixin`:
 * `pino({ mixin: traceLogFields })`; onceq's CLI logger does. A new object every call: pino merges
 * the line's own fields into what the mixin returns.
 */
export function traceLogFields(): TraceLogFields {
  const span = trace.getActiveSpan();
  if (!span) return {};
  const ctx = span.spanContext();
  if (!isSpanContextValid(ctx)) return {};
  return {
    trace_id: ctx.traceId,
    span_id: ctx.spanId,
    trace_flags: ctx.traceFlags.toString(16).padStart(2, '0'),
  };
}
