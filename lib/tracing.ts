/**
 * OpenTelemetry tracing, off unless an OTLP endpoint is set: `initTracing(env, serviceName)` then starts a
 * NodeTracerProvider (BatchSpanProcessor → OTLP/HTTP JSON exporter), registers it globally with the W3C
 * propagator and hands out the Temporal interceptors; off, it loads none of the SDK and every hook in api/
 * and activities/ is skipped (no span, no exporter). A trace crosses the database as the W3C `traceparent`
 * stored with each delivery (webhook_events.trace_context) and is continued by `inStoredTrace`.
 *
 * Variables: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is) or OTEL_EXPORTER_OTLP_ENDPOINT (+ `/v1/traces`)
 * turns it on; OTEL_TRACES_ENABLED=false (or the standard OTEL_SDK_DISABLED=true) keeps it off anyway;
 * OTEL_SERVICE_NAME overrides the service name. The exporter and the SDK read the other standard OTEL_*
 * variables themselves (OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_*, OTEL_TRACES_SAMPLER).
 */
import { context, isSpanContextValid, propagation, SpanKind, SpanStatusCode, trace, type Attributes, type Link, type Span, type SpanContext, type Tracer } from '@opentelemetry/api';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { WorkflowClientInterceptor } from '@temporalio/client';
import type { WorkerOptions } from '@temporalio/worker';
import type { Logger } from './logger';

/** The tracing of one process: a no-op (enabled false, no tracer) unless an endpoint is configured. */
export interface Tracing {
  enabled: boolean;
  /** Undefined when off: callers skip their span code entirely. */
  tracer: Tracer | undefined;
  /** Where spans are POSTed (null when off). */
  endpoint: string | null;
  /** For `new Client({ interceptors: { workflow } })`: undefined when off. */
  clientInterceptors(): WorkflowClientInterceptor[] | undefined;
  /** Spread into Worker.create: activity interceptors, the workflow interceptor module and the span sink ({} when off). */
  workerOptions(): Pick<WorkerOptions, 'interceptors' | 'sinks'>;
  /** Exports what is buffered. */
  forceFlush(): Promise<void>;
  /** Exports what is buffered, stops the exporter and unregisters the global provider. */
  shutdown(): Promise<void>;
}

/** The OTLP/HTTP traces URL the environment asks for, or null (tracing off). */
export function tracesEndpoint(env: Record<string, string | undefined>): string | null {
  if (env.OTEL_TRACES_ENABLED?.trim().toLowerCase() === 'false' || env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return null;
  const signal = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
  if (signal) return signal;
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  return base ? `${base.replace(/\/+$/, '')}/v1/traces` : null;
}

const OFF: Tracing = {
  enabled: false,
  tracer: undefined,
  endpoint: null,
  clientInterceptors: () => undefined,
  workerOptions: () => ({}),
  forceFlush: async () => {},
  shutdown: async () => {},
};

/** Starts tracing for `serviceName` when the environment sets an OTLP endpoint (see the module comment); else a no-op. */
export async function initTracing(
  env: Record<string, string | undefined>,
  serviceName: string,
  opts: { logger?: Logger } = {},
): Promise<Tracing> {
  const endpoint = tracesEndpoint(env);
  if (!endpoint) return OFF;
  // Loaded only here: with tracing off the process never loads the SDK or the exporter.
  const [{ NodeTracerProvider }, { BatchSpanProcessor }, { OTLPTraceExporter }, { Resource }] = await Promise.all([
    import('@opentelemetry/sdk-trace-node'),
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
  ]);
  const name = env.OTEL_SERVICE_NAME?.trim() || serviceName;
  const resource = Resource.default().merge(new Resource({ 'service.name': name }));
  const processor: SpanProcessor = new BatchSpanProcessor(new OTLPTraceExporter({ url: endpoint }));
  const provider = new NodeTracerProvider({ resource, spanProcessors: [processor] });
  // Global: the Temporal interceptors inject and extract through the global propagator and context manager.
  provider.register();
  const tracer = provider.getTracer('billing-engine');
  opts.logger?.info({ endpoint, serviceName: name }, 'tracing on: spans exported over OTLP/HTTP');
  return {
    enabled: true,
    tracer,
    endpoint,
    clientInterceptors() {
      // Required lazily, by path: the package's index also loads the worker plugin (and the native bridge).
      const { OpenTelemetryWorkflowClientInterceptor } = require('@temporalio/interceptors-opentelemetry/lib/client') as typeof import('@temporalio/interceptors-opentelemetry/lib/client');
      return [new OpenTelemetryWorkflowClientInterceptor({ tracer })];
    },
    workerOptions() {
      const otel = require('@temporalio/interceptors-opentelemetry/lib/worker') as typeof import('@temporalio/interceptors-opentelemetry/lib/worker');
      return {
        interceptors: {
          activity: [(ctx) => ({ inbound: new otel.OpenTelemetryActivityInboundInterceptor(ctx, { tracer }), outbound: new otel.OpenTelemetryActivityOutboundInterceptor(ctx) })],
          // In the workflow bundle only when tracing is on; it spans workflow runs, signals, updates and (local) activity starts.
          workflowModules: [require.resolve(WORKFLOW_INTERCEPTORS_MODULE)],
        },
        // Workflow spans leave the sandbox through this sink (not called during replay).
        sinks: { exporter: otel.makeWorkflowExporter(processor, resource) },
      };
    },
    forceFlush: () => provider.forceFlush(),
    async shutdown() {
      await provider.shutdown();
      trace.disable();
      context.disable();
      propagation.disable();
    },
  };
}

/** The workflow interceptor module of @temporalio/interceptors-opentelemetry (for bundleWorkflowCode's workflowInterceptorModules). */
export const WORKFLOW_INTERCEPTORS_MODULE = '@temporalio/interceptors-opentelemetry/lib/workflow-interceptors';

/** The W3C traceparent of the active span, or null (no span: tracing off or not sampled into a span). */
export function activeTraceparent(): string | null {
  const sc = trace.getActiveSpan()?.spanContext();
  if (!sc || !isSpanContextValid(sc)) return null;
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The span context a stored traceparent names, or undefined (null, malformed, all-zero ids). */
export function spanContextOf(traceparent: string | null | undefined): SpanContext | undefined {
  const m = traceparent ? TRACEPARENT.exec(traceparent) : null;
  if (!m) return undefined;
  const sc: SpanContext = { traceId: m[1]!, spanId: m[2]!, traceFlags: Number.parseInt(m[3]!, 16), isRemote: true };
  return isSpanContextValid(sc) ? sc : undefined;
}

/**
 * Runs `fn` in a span that continues the traces stored with the deliveries it handles: the parent is the
 * active span when it already belongs to the first delivery's trace (or there is no stored trace), else the
 * first delivery's stored context, with the active span linked; every other delivery's trace is linked.
 * So a coalesced signal or a batch apply appears in the first delivery's trace and is reachable from the rest.
 */
export async function inStoredTrace<T>(
  tracer: Tracer,
  name: string,
  stored: { eventId: string; traceparent: string | null }[],
  attributes: Attributes,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  const active = trace.getActiveSpan()?.spanContext();
  const contexts = stored.flatMap((s) => {
    const sc = spanContextOf(s.traceparent);
    return sc ? [{ eventId: s.eventId, sc }] : [];
  });
  const first = contexts[0]?.sc;
  const reparent = first !== undefined && (!active || !isSpanContextValid(active) || active.traceId !== first.traceId);
  const parentTraceId = reparent ? first.traceId : active?.traceId;
  const links: Link[] = [];
  if (reparent && active && isSpanContextValid(active)) links.push({ context: active, attributes: { 'billing.link': 'temporal' } });
  const seen = new Set<string>();
  for (const { eventId, sc } of contexts) {
    if (sc.traceId === parentTraceId || seen.has(sc.spanId)) continue;
    seen.add(sc.spanId);
    links.push({ context: sc, attributes: { 'billing.event.id': eventId } });
  }
  const parent = reparent ? trace.setSpanContext(context.active(), first) : context.active();
  return tracer.startActiveSpan(name, { kind: SpanKind.INTERNAL, attributes, links }, parent, async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      span.recordException(err instanceof Error ? err : String(err));
      span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
      throw err;
    } finally {
      span.end();
    }
  });
}
