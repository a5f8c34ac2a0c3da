/**
 * A SERVER span per API request (OpenTelemetry HTTP server conventions), through
 * `@opentelemetry/api` only: a no-op until the application registers an SDK. The span continues
 * the caller's trace when the request carries one (`traceparent`), and is active for the rest of
 * the request, so the producer's `send` span, and the message's delivery after it, join its trace.
 *
 * `@fastify/otel` would do the same through the SDK's instrumentation packages; onceq keeps to
 * the API. Plain hooks do: `onRequest` runs the rest of the request inside the span's context
 * (Fastify keeps the async context across body parsing), `onResponse` ends it.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  context,
  propagation,
  SpanKind,
  SpanStatusCode,
  trace,
  type Span,
} from '@opentelemetry/api';
import { ATTR, recordError, tracer, tracingEnabled } from '../telemetry/tracing.js';
import { REPLAYED_HEADER } from './routes/jobs.js';

const spans = new WeakMap<FastifyRequest, Span>();

/** Traces every request of `app`; call it before any other hook is added. */
export function traceRequests(app: FastifyInstance): void {
  app.addHook('onRequest', (request, _reply, done) => {
    if (!tracingEnabled()) return done();
    const parent = propagation.extract(context.active(), request.headers);
    const route = request.routeOptions.url;
    const span = tracer().startSpan(
      route ? `${request.method} ${route}` : request.method,
      {
        kind: SpanKind.SERVER,
        attributes: {
          'http.request.method': request.method,
          'url.path': request.url.split('?')[0],
          'url.scheme': request.protocol,
          ...(route ? { 'http.route': route } : {}),
        },
      },
      parent,
    );
    spans.set(request, span);
    context.with(trace.setSpan(parent, span), done);
  });
  app.addHook('onError', (request, _reply, err, done) => {
    const span = spans.get(request);
    // A 4xx is the client's: recorded as an event, but not a failed span (HTTP conventions).
    if (span?.isRecording()) span.recordException(err);
    done();
  });
  app.addHook('onResponse', (request, reply, done) => {
    end(request, reply);
    done();
  });
  app.addHook('onRequestAbort', (request, done) => {
    const span = spans.get(request);
    if (span) {
      recordError(span, new Error('the client closed the connection before the answer'));
      span.end();
      spans.delete(request);
    }
    done();
  });
}

function end(request: FastifyRequest, reply: FastifyReply): void {
  const span = spans.get(request);
  if (!span) return;
  spans.delete(request);
  const status = reply.statusCode;
  span.setAttribute('http.response.status_code', status);
  if (reply.getHeader(REPLAYED_HEADER) === 'true') span.setAttribute(ATTR.replayed, true);
  if (status >= 500) {
    span.setAttribute(ATTR.errorType, String(status));
    span.setStatus({ code: SpanStatusCode.ERROR });
  }
  span.end();
}
