/**
 * Tracing: one webhook is one trace, from the request through the stored row, the dispatcher's signal and
 * the customer workflow to the apply transaction, exported over OTLP/HTTP (JSON) to a receiver in this
 * process; and with tracing off, no span and no export at all. Real Postgres, Temporal dev server and worker.
 */
import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { readdirSync, readFileSync } from 'node:fs';
import { temporal } from '@temporalio/proto';
import { bundleWorkflowCode, Worker, type WorkflowBundle } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createTemporalClient } from '../../lib/temporal';
import { initTracing, WORKFLOW_INTERCEPTORS_MODULE, type Tracing } from '../../lib/tracing';
import { buildTestApp, postWebhook, stopTestDispatchers } from '../helpers/app';
import { uniqueFixture } from '../helpers/fixtures';
import {
  createTestDatabase,
  eventually,
  realActivities,
  startTestWorker,
  TEST_WEBHOOK_SECRET,
  testConfig,
  type RunningWorker,
  type TestDatabase,
} from '../helpers/services';

const ROOT = path.resolve(__dirname, '..', '..');

/** One exported span, flattened from OTLP/JSON. */
interface ExportedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  attributes: Record<string, unknown>;
  links: { traceId: string; spanId: string; attributes: Record<string, unknown> }[];
}

type OtlpValue = { stringValue?: string; intValue?: number | string; boolValue?: boolean; arrayValue?: { values?: OtlpValue[] } };
const valueOf = (v: OtlpValue): unknown =>
  v.arrayValue ? (v.arrayValue.values ?? []).map(valueOf) : v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : v.boolValue);
const attrs = (list: { key: string; value: OtlpValue }[] = []) => Object.fromEntries(list.map((a) => [a.key, valueOf(a.value)]));

/** An OTLP/HTTP traces receiver: keeps every POSTed body and its spans. */
async function startReceiver() {
  const bodies: string[] = [];
  const spans: ExportedSpan[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      bodies.push(body);
      if (req.url === '/v1/traces' && String(req.headers['content-type']).startsWith('application/json')) {
        for (const rs of JSON.parse(body).resourceSpans ?? []) {
          const service = String(attrs(rs.resource?.attributes)['service.name']);
          for (const ss of rs.scopeSpans ?? [])
            for (const s of ss.spans ?? [])
              spans.push({
                service,
                traceId: s.traceId,
                spanId: s.spanId,
                parentSpanId: s.parentSpanId ?? '',
                name: s.name,
                attributes: attrs(s.attributes),
                links: (s.links ?? []).map((l: { traceId: string; spanId: string; attributes?: { key: string; value: OtlpValue }[] }) => ({
                  traceId: l.traceId,
                  spanId: l.spanId,
                  attributes: attrs(l.attributes),
                })),
              });
        }
      }
      res.writeHead(200, { 'Content-Type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, bodies, spans, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe('tracing', () => {
  let db: TestDatabase;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;

  beforeAll(async () => {
    db = await createTestDatabase();
    receiver = await startReceiver();
  });

  afterAll(async () => {
    await stopTestDispatchers();
    await receiver?.close();
    await db?.drop();
  });

  const traceContextOf = async (eventId: string) =>
    (await db.sql<{ trace_context: string | null }[]>`SELECT trace_context FROM webhook_events WHERE event_id = ${eventId}`)[0]?.trace_context;

  const applied = (eventIds: string[]) =>
    eventually(async () => {
      const rows = await db.sql<{ status: string }[]>`SELECT status::text AS status FROM webhook_events WHERE event_id IN ${db.sql(eventIds)}`;
      return rows.length === eventIds.length && rows.every((r) => r.status === 'applied');
    }, 30_000, `${eventIds.join(', ')} applied`);

  describe('on', () => {
    let tracing: Tracing;
    let client: Client;
    let worker: RunningWorker;
    let bundle: WorkflowBundle;
    const config = testConfig();

    beforeAll(async () => {
      tracing = await initTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: `${receiver.url}/`, OTEL_SERVICE_NAME: 'billing-tracing-test' }, 'billing-api');
      expect(tracing).toMatchObject({ enabled: true, endpoint: `${receiver.url}/v1/traces` });
      client = await createTemporalClient({ address: inject('temporalAddress'), namespace: 'default' }, tracing.clientInterceptors());
      // The shared bundle has no interceptors: a traced worker bundles the OTel workflow module in, as Worker.create does from workflowModules.
      bundle = await bundleWorkflowCode({
        workflowsPath: path.join(ROOT, 'workflows', 'index.ts'),
        workflowInterceptorModules: [require.resolve(WORKFLOW_INTERCEPTORS_MODULE)],
        logger: { log: () => {}, trace: () => {}, debug: () => {}, info: () => {}, warn: () => {}, error: (m: string) => process.stderr.write(`${m}\n`) },
      });
      const { interceptors, sinks } = tracing.workerOptions();
      worker = await startTestWorker({
        taskQueue: config.TEMPORAL_TASK_QUEUE,
        activities: realActivities(db.sql, config),
        workerOptions: { workflowBundle: bundle, interceptors: { activity: interceptors?.activity }, sinks },
      });
    });

    afterAll(async () => {
      await stopTestDispatchers();
      await worker?.stop();
      await client?.connection.close();
      await tracing?.shutdown();
    });

    /** Flushes the exporter until `pick` finds what it needs in what was received. */
    const received = <T>(what: string, pick: (spans: ExportedSpan[]) => T | undefined) =>
      eventually(async () => {
        await tracing.forceFlush();
        return pick(receiver.spans);
      }, 20_000, what);

    const one = (spans: ExportedSpan[], traceId: string, name: string) => spans.find((s) => s.traceId === traceId && s.name === name);

    it('replays every recorded workflow history with the tracing interceptors bundled in (turning tracing on is safe for running workflows)', async () => {
      expect(bundle.code).toContain('OpenTelemetryInboundInterceptor');
      const dir = path.join(ROOT, 'test', 'fixtures', 'histories');
      const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
      expect(files.length).toBeGreaterThanOrEqual(8);
      const histories = files.map((f) => {
        const { workflowId, history } = JSON.parse(readFileSync(path.join(dir, f), 'utf8'));
        return { workflowId: workflowId as string, history: temporal.api.history.v1.History.fromObject(history) };
      });
      const failures: string[] = [];
      for await (const r of Worker.runReplayHistories({ workflowBundle: bundle, sinks: tracing.workerOptions().sinks, replayName: 'traced' }, histories)) {
        if (r.error) failures.push(`${r.workflowId}: ${r.error.message}`);
      }
      expect(failures).toEqual([]);
    });

    it('connects a webhook to its applied transaction in one trace: request → dispatch → signal → workflow → apply', async () => {
      const app = buildTestApp({ sql: db.sql, temporal: client, config, tracer: tracing.tracer });
      const { envelope, customerId } = uniqueFixture('customer.created');
      const eventId = envelope.id as string;
      expect((await postWebhook(app.app, envelope)).status).toBe(200);
      await applied([eventId]);

      const webhook = await received('the webhook span', (spans) =>
        spans.find((s) => s.name === 'POST /webhooks/stripe' && s.attributes['billing.event.id'] === eventId),
      );
      expect(webhook).toMatchObject({
        service: 'billing-tracing-test',
        parentSpanId: '',
        attributes: { 'billing.event.type': 'customer.created', 'billing.customer.id': customerId, 'billing.outcome': 'received', 'http.response.status_code': 200 },
      });
      // The context crossed the database with the row.
      expect(await traceContextOf(eventId)).toBe(`00-${webhook.traceId}-${webhook.spanId}-01`);

      const t = webhook.traceId;
      const chain = await received('the whole chain in the webhook’s trace', (spans) => {
        const found = {
          dispatch: one(spans, t, 'dispatch stripeEvents'),
          signal: one(spans, t, 'SignalWithStartWorkflow:customerWorkflow'),
          handle: one(spans, t, 'HandleSignal:stripeEvents'),
          start: one(spans, t, 'StartActivity:applyBillingEvents'),
          run: one(spans, t, 'RunActivity:applyBillingEvents'),
          apply: one(spans, t, 'apply'),
        };
        return Object.values(found).every(Boolean) ? (found as { [K in keyof typeof found]: ExportedSpan }) : undefined;
      });
      expect(chain.dispatch.parentSpanId).toBe(webhook.spanId);
      expect(chain.dispatch.attributes).toMatchObject({ 'billing.customer.id': customerId, 'billing.event.ids': [eventId], 'billing.event.count': 1 });
      expect(chain.signal.parentSpanId).toBe(chain.dispatch.spanId);
      expect(chain.handle.parentSpanId).toBe(chain.signal.spanId);
      expect(chain.run.parentSpanId).toBe(chain.start.spanId);
      expect(chain.apply.parentSpanId).toBe(chain.run.spanId);
      expect(chain.apply.attributes).toMatchObject({ 'billing.event.ids': [eventId], 'billing.outcomes': ['applied'], 'billing.customer.id': customerId });

      // Never the payload or a secret: no customer data, no signature material, in anything exported.
      const exported = receiver.bodies.join('\n');
      for (const secret of [TEST_WEBHOOK_SECRET, 'ada@example.com', 'Ada Lovelace', 'usr_']) expect(exported).not.toContain(secret);
      await app.close();
    });

    it('keeps a later event of a long-lived customer workflow in its own webhook’s trace, linked to the workflow’s', async () => {
      const app = buildTestApp({ sql: db.sql, temporal: client, config, tracer: tracing.tracer });
      const created = uniqueFixture('customer.created');
      expect((await postWebhook(app.app, created.envelope)).status).toBe(200);
      await applied([created.envelope.id]);
      // The workflow now runs in the first webhook's trace; the next event's apply belongs to the next webhook's.
      const later = uniqueFixture('customer.subscription.created', { token: created.token }).envelope;
      expect((await postWebhook(app.app, later)).status).toBe(200);
      await applied([later.id]);

      const webhook = await received('the later webhook span', (spans) =>
        spans.find((s) => s.name === 'POST /webhooks/stripe' && s.attributes['billing.event.id'] === later.id),
      );
      const apply = await received('the later apply span', (spans) => spans.find((s) => s.name === 'apply' && (s.attributes['billing.event.ids'] as string[]).includes(later.id)));
      const handle = await received('the later signal handling', (spans) => one(spans, webhook.traceId, 'HandleSignal:stripeEvents'));
      const run = await received('the later activity span', (spans) =>
        spans.find((s) => s.name === 'RunActivity:applyBillingEvents' && s.spanId === apply.links.find((l) => l.attributes['billing.link'] === 'temporal')?.spanId),
      );
      expect(apply.traceId).toBe(webhook.traceId);
      expect(apply.parentSpanId).toBe(webhook.spanId);
      expect(handle.traceId).toBe(webhook.traceId);
      // The Temporal side of the apply (activity started by the workflow's main loop) stays in the workflow's trace, linked.
      expect(run.traceId).not.toBe(webhook.traceId);
      await app.close();
    });

    it('puts a coalesced signal in its first delivery’s trace and links the other deliveries’ traces', async () => {
      const app = buildTestApp({ sql: db.sql, temporal: client, config, tracer: tracing.tracer, dispatch: false });
      const created = uniqueFixture('customer.created');
      const sub = uniqueFixture('customer.subscription.created', { token: created.token });
      const ids = [created.envelope.id as string, sub.envelope.id as string];
      for (const e of [created.envelope, sub.envelope]) expect((await postWebhook(app.app, e)).status).toBe(200);
      expect(await app.dispatcher.pass()).toMatchObject({ dispatched: 2, signals: 1 });
      await applied(ids);

      const [first, second] = await Promise.all(
        ids.map((id) => received(`webhook span of ${id}`, (spans) => spans.find((s) => s.name === 'POST /webhooks/stripe' && s.attributes['billing.event.id'] === id))),
      );
      expect(first!.traceId).not.toBe(second!.traceId);
      const dispatch = await received('the coalesced dispatch span', (spans) => one(spans, first!.traceId, 'dispatch stripeEvents'));
      expect(dispatch.parentSpanId).toBe(first!.spanId);
      expect(dispatch.attributes['billing.event.ids']).toEqual(ids);
      expect(dispatch.links).toEqual([{ traceId: second!.traceId, spanId: second!.spanId, attributes: { 'billing.event.id': ids[1] } }]);
      const apply = await received('the batch apply span', (spans) => one(spans, first!.traceId, 'apply'));
      expect(apply.attributes['billing.outcomes']).toEqual(['applied', 'applied']);
      expect(apply.links.map((l) => l.spanId)).toContain(second!.spanId);
      await app.close();
    });
  });

  describe('off', () => {
    it('is off without an endpoint or with OTEL_TRACES_ENABLED=false, and then loads none of the SDK', async () => {
      for (const env of [{}, { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_TRACES_ENABLED: 'false' }, { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: receiver.url, OTEL_SDK_DISABLED: 'true' }]) {
        const off = await initTracing(env, 'billing-api');
        expect(off).toMatchObject({ enabled: false, tracer: undefined, endpoint: null });
        expect(off.clientInterceptors()).toBeUndefined();
        expect(off.workerOptions()).toEqual({});
      }
      // In a fresh process (this one may have loaded the SDK for the tests above).
      const script = `require('./lib/tracing').initTracing({}, 'x').then((t) => console.log(JSON.stringify({ enabled: t.enabled,
        loaded: Object.keys(require.cache).filter((k) => /@opentelemetry[\\\\/](sdk-|exporter-|resources)|interceptors-opentelemetry/.test(k)) })))`;
      const out = execFileSync(process.execPath, ['--require', 'tsx/cjs', '-e', script], { cwd: ROOT, encoding: 'utf8' });
      expect(JSON.parse(out)).toEqual({ enabled: false, loaded: [] });
    });

    it('produces no span and exports nothing for a webhook applied end to end', async () => {
      const config = testConfig();
      const off = await initTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_TRACES_ENABLED: 'false' }, 'billing-api');
      const client = await createTemporalClient({ address: inject('temporalAddress'), namespace: 'default' }, off.clientInterceptors());
      const worker = await startTestWorker({ taskQueue: config.TEMPORAL_TASK_QUEUE, activities: realActivities(db.sql, config), workerOptions: off.workerOptions() });
      try {
        const before = receiver.bodies.length;
        const app = buildTestApp({ sql: db.sql, temporal: client, config, tracer: off.tracer });
        const { envelope } = uniqueFixture('customer.created');
        expect((await postWebhook(app.app, envelope)).status).toBe(200);
        await applied([envelope.id]);
        await off.forceFlush();
        await app.close();
        expect(await traceContextOf(envelope.id)).toBeNull();
        await new Promise((r) => setTimeout(r, 500));
        expect(receiver.bodies.slice(before)).toEqual([]);
      } finally {
        await worker.stop();
        await client.connection.close();
      }
    });
  });
});
