/**
 * Operability and security against real Postgres and a real Temporal dev server: metrics, logs,
 * readiness, admin auth, the OpenAPI document, body and content-type limits, opaque errors, and the
 * real worker entry point (its Prometheus endpoint and its pino log lines).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { Client as TemporalClient, Connection, type Client } from '@temporalio/client';
import Ajv2020 from 'ajv/dist/2020';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { SCRAPE_READ_TIMEOUT_MS } from '../../api/metrics';
import { BulkReplayBodySchema, ListWebhookEventsQuerySchema } from '../../api/routes/admin-webhooks';
import { createSql } from '../../lib/db';
import { createLogger } from '../../lib/logger';
import { freePort } from '../../support/services';
import { buildTestApp, postWebhook, signPayload, stopTestDispatchers } from '../helpers/app';
import { uniqueFixture } from '../helpers/fixtures';
import {
  createTestDatabase,
  eventually,
  realActivities,
  startTestWorker,
  testClient,
  testConfig,
  uniqueId,
  TEST_ADMIN_TOKEN,
  TEST_WEBHOOK_SECRET,
  type RunningWorker,
  type TestDatabase,
} from '../helpers/services';

const ROOT = path.resolve(__dirname, '..', '..');
const STRIPE_KEY = 'sk_test_123';
const admin = { Authorization: `Bearer ${TEST_ADMIN_TOKEN}` };

/** Captures pino output line by line. */
function captureLogs() {
  const lines: Record<string, any>[] = [];
  const raw: string[] = [];
  return {
    lines,
    raw,
    destination: {
      write(chunk: string) {
        raw.push(chunk);
        for (const l of chunk.split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      },
    },
  };
}

/** Sums the samples of one Prometheus series whose labels include `labels`. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += Number(m[3]);
  }
  return total;
}

/** Text that must never appear in a response or a log line. */
const FORBIDDEN_IN_OUTPUT = [TEST_WEBHOOK_SECRET, TEST_ADMIN_TOKEN, STRIPE_KEY];

describe('operability and security', () => {
  let db: TestDatabase;
  let client: Client;
  let worker: RunningWorker;
  const config = testConfig();
  const logs = captureLogs();
  let built: ReturnType<typeof buildTestApp>;

  beforeAll(async () => {
    db = await createTestDatabase();
    client = await testClient();
    worker = await startTestWorker({ taskQueue: config.TEMPORAL_TASK_QUEUE, activities: realActivities(db.sql, config) });
    built = buildTestApp({ sql: db.sql, temporal: client, config, logger: createLogger({ level: 'debug', destination: logs.destination }) });
    await db.sql`
      INSERT INTO plans (id, stripe_price_id, name, amount, currency, interval, rank)
      VALUES ('pro-monthly', 'price_ProMonthly', 'Pro', 2900, 'usd', 'month', 20) ON CONFLICT DO NOTHING`;
  });

  afterAll(async () => {
    await stopTestDispatchers();
    await worker?.stop();
    await client?.connection.close();
    await db?.drop();
  });

  const applied = (eventId: string, sql = db.sql) =>
    eventually(async () => (await sql`SELECT 1 FROM applied_events WHERE event_id = ${eventId}`).length > 0, 30_000, `event ${eventId} to be applied`);
  const scrape = async (app = built.app) => {
    const res = await app.request('/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    return res.text();
  };

  describe('GET /metrics', () => {
    it('exposes the named webhook series, and they move when webhooks are processed', async () => {
      const before = await scrape(); // also the starting point of the lag histograms
      for (const name of [
        'billing_webhooks_received_total',
        'billing_webhooks_rejected_total',
        'billing_webhooks_duplicate_total',
        'billing_webhooks_ignored_total',
        'billing_webhooks_failed_total',
        'billing_webhook_ack_seconds',
        'billing_webhook_oldest_undispatched_age_seconds',
        'billing_webhook_created_to_applied_seconds',
        'billing_webhook_received_to_applied_seconds',
      ]) {
        expect(before, name).toContain(`# TYPE ${name} `);
      }

      const type = 'customer.subscription.created';
      const { envelope } = uniqueFixture(type);
      expect((await postWebhook(built.app, envelope)).status).toBe(200);
      await applied(envelope.id);
      expect((await postWebhook(built.app, envelope)).status).toBe(200); // redelivery
      expect((await postWebhook(built.app, uniqueFixture(type).envelope, { secret: 'whsec_wrong' })).status).toBe(400);
      const ignored = uniqueFixture('customer.created').envelope;
      ignored.type = 'issuing_card.created';
      expect((await postWebhook(built.app, ignored)).status).toBe(200);
      const invalid = uniqueFixture('customer.subscription.updated').envelope;
      invalid.data.object.status = 'not-a-status';
      expect((await postWebhook(built.app, invalid)).status).toBe(200);

      const after = await scrape();
      const delta = (name: string, labels: Record<string, string> = {}) => sample(after, name, labels) - sample(before, name, labels);
      expect(delta('billing_webhooks_received_total', { type })).toBe(2);
      expect(delta('billing_webhooks_duplicate_total')).toBe(1);
      expect(delta('billing_webhooks_rejected_total', { reason: 'bad_signature' })).toBe(1);
      expect(delta('billing_webhooks_ignored_total')).toBe(1);
      expect(delta('billing_webhooks_failed_total')).toBe(1);
      expect(delta('billing_webhook_ack_seconds_count', { status: '200' })).toBe(4);
      // The lag is read from the rows the worker stamped applied_at (one apply: one observation each).
      expect(delta('billing_webhook_created_to_applied_seconds_count', { type })).toBe(1);
      expect(delta('billing_webhook_received_to_applied_seconds_count', { type })).toBe(1);
      expect(delta('billing_webhook_received_to_applied_seconds_sum', { type })).toBeGreaterThan(0);
      expect(delta('billing_webhook_received_to_applied_seconds_sum', { type })).toBeLessThan(30);
      expect(delta('billing_webhook_received_to_applied_seconds_bucket', { type, le: '+Inf' })).toBe(1);

      // A scrape observes each applied event once, even though it re-reads a window.
      const again = await scrape();
      expect(sample(again, 'billing_webhook_received_to_applied_seconds_count', { type })).toBe(
        sample(after, 'billing_webhook_received_to_applied_seconds_count', { type }),
      );
    });

    it('exposes the dunning, checkout and reconciliation series', async () => {
      const text = await scrape();
      for (const name of [
        'billing_dunning_cycles',
        'billing_dunning_recovery_rate',
        'billing_dunning_cycles_by_decline_code',
        'billing_checkout_success_rate',
        'billing_reconciliation_drift_found',
        'billing_reconciliation_drift_repaired',
        'billing_reconciliation_last_success_timestamp_seconds',
      ]) {
        expect(text, name).toContain(`# TYPE ${name} gauge`);
      }
    });

    it('counts notices and app events by status, with the age of the oldest overdue or undelivered one', async () => {
      const customerId = `cus_${uniqueId('outbox')}`;
      const key = `invoice:in_${uniqueId()}:payment_failed:0`;
      await db.sql`
        INSERT INTO notifications (dedup_key, customer_id, kind, status, due_at, created_at)
        VALUES (${key}, ${customerId}, 'payment_failed', 'queued', now() - interval '600 seconds', now() - interval '700 seconds')`;
      await db.sql`
        INSERT INTO app_webhooks (id, source_key, customer_id, type, data, status, created_at)
        VALUES (${`aevt_${uniqueId()}`}, ${`test:${uniqueId()}`}, ${customerId}, 'access.changed', '{}'::jsonb, 'failed', now() - interval '300 seconds')`;
      try {
        const text = await scrape();
        expect(sample(text, 'billing_notices', { kind: 'payment_failed', status: 'queued' })).toBeGreaterThanOrEqual(1);
        expect(sample(text, 'billing_notices_overdue_oldest_age_seconds')).toBeGreaterThanOrEqual(600);
        expect(sample(text, 'billing_app_webhooks', { status: 'failed' })).toBeGreaterThanOrEqual(1);
        expect(sample(text, 'billing_app_webhooks_oldest_undelivered_age_seconds')).toBeGreaterThanOrEqual(300);
      } finally {
        await db.sql`DELETE FROM notifications WHERE customer_id = ${customerId}`;
        await db.sql`DELETE FROM app_webhooks WHERE customer_id = ${customerId}`;
      }
    });

    it('reports the age of the oldest delivery not yet handed to Temporal', async () => {
      const eventId = `evt_${uniqueId('stuck')}`;
      await db.sql`
        INSERT INTO webhook_events (event_id, type, stripe_created_at, status, payload, payload_bytes, received_at)
        VALUES (${eventId}, 'customer.created', now(), 'received', '{}'::jsonb, 2, now() - interval '120 seconds')`;
      try {
        expect(sample(await scrape(), 'billing_webhook_oldest_undispatched_age_seconds')).toBeGreaterThanOrEqual(120);
      } finally {
        await db.sql`DELETE FROM webhook_events WHERE event_id = ${eventId}`;
      }
      expect(sample(await scrape(), 'billing_webhook_oldest_undispatched_age_seconds')).toBeLessThan(120);
    });
  });

  describe('logs', () => {
    it('carries eventId, customerId, workflowId and the request id on event lines, and never a secret or the payload', async () => {
      const { envelope, customerId } = uniqueFixture('customer.subscription.updated');
      const marker = `payload-marker-${uniqueId()}`;
      envelope.data.object.metadata = { note: marker };
      const payload = JSON.stringify(envelope);
      const signature = signPayload(payload);
      const requestId = `req-${uniqueId()}`;
      const from = logs.lines.length;
      const res = await built.app.request('/webhooks/stripe', {
        method: 'POST',
        body: payload,
        headers: { 'Content-Type': 'application/json', 'Stripe-Signature': signature, 'X-Request-Id': requestId },
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-request-id')).toBe(requestId);
      const mine = logs.lines.slice(from);

      // One line per delivery: the request line, with the event's ids.
      const stored = mine.find((l) => l.msg === 'request' && l.eventId === envelope.id);
      expect(stored).toMatchObject({ eventId: envelope.id, customerId, workflowId: `customer:${customerId}`, requestId, path: '/webhooks/stripe', status: 200, level: 'info' });
      // The hand-over happens later, in the dispatcher: its line names the same ids.
      const dispatched = await eventually(async () => logs.lines.find((l) => l.msg === 'events dispatched' && (l.eventIds as string[] | undefined)?.includes(envelope.id)), 10_000, 'the dispatch log line');
      expect(dispatched).toMatchObject({ customerId, workflowId: `customer:${customerId}`, events: 1, level: 'info' });
      const access = mine.find((l) => l.msg === 'request' && l.requestId === requestId);
      expect(access).toMatchObject({ method: 'POST', path: '/webhooks/stripe', status: 200, level: 'info' });

      const text = logs.raw.join('');
      for (const secret of [...FORBIDDEN_IN_OUTPUT, signature, marker]) expect(text).not.toContain(secret);
    });

    it('logs 4xx at warn and 5xx at error, each with the request id', async () => {
      const from = logs.lines.length;
      const res = await built.app.request('/admin/webhook-events', { headers: { Authorization: 'Bearer wrong-token-0000000000', 'X-Request-Id': 'req-forbidden-1' } });
      expect(res.status).toBe(403);
      expect(logs.lines.slice(from)).toContainEqual(
        expect.objectContaining({ msg: 'request', requestId: 'req-forbidden-1', status: 403, level: 'warn' }),
      );
      expect(logs.raw.join('')).not.toContain('wrong-token-0000000000');
    });
  });

  describe('admin auth', () => {
    const adminRoutes: [string, string][] = [
      ['GET', '/admin/webhook-events'],
      ['GET', '/admin/webhook-events/evt_x'],
      ['POST', '/admin/webhook-events/evt_x/replay'],
      ['POST', '/admin/webhook-events/replay'],
      ['GET', '/admin/reconciliations'],
    ];

    it('answers 401 without a token, 403 with a wrong one and 200 with the right one', async () => {
      for (const [method, p] of adminRoutes) {
        const none = await built.app.request(p, { method });
        expect(none.status, `${method} ${p}`).toBe(401);
        expect(none.headers.get('www-authenticate')).toContain('Bearer');
        expect(await none.json()).toMatchObject({ error: 'unauthorized' });
        const wrong = await built.app.request(p, { method, headers: { Authorization: `Bearer ${TEST_ADMIN_TOKEN}x` } });
        expect(wrong.status, `${method} ${p}`).toBe(403);
        expect(await wrong.json()).toMatchObject({ error: 'forbidden' });
        const basic = await built.app.request(p, { method, headers: { Authorization: `Basic ${Buffer.from(`a:${TEST_ADMIN_TOKEN}`).toString('base64')}` } });
        expect(basic.status, `${method} ${p}`).toBe(401);
      }
      expect((await built.app.request('/admin/webhook-events', { headers: admin })).status).toBe(200);
    });

    it('hides every admin route (404) when ADMIN_TOKEN is not set, whatever the token', async () => {
      const open = buildTestApp({ sql: db.sql, temporal: client, config: testConfig({ ADMIN_TOKEN: '' }), dispatch: false }).app;
      for (const [method, p] of adminRoutes) {
        for (const headers of [{}, admin]) {
          const res = await open.request(p, { method, headers });
          expect(res.status, `${method} ${p}`).toBe(404);
          expect(await res.json()).toMatchObject({ error: 'not_found' });
        }
      }
    });

    it('guards the app-facing routes with API_TOKEN when it is set', async () => {
      const apiToken = 'api-token-0123456789abcdef';
      const guarded = buildTestApp({ sql: db.sql, temporal: client, config: testConfig({ API_TOKEN: apiToken }), dispatch: false }).app;
      expect((await guarded.request('/customers/cus_nobody')).status).toBe(401);
      expect((await guarded.request('/customers/cus_nobody', { headers: { Authorization: 'Bearer not-the-api-token-xx' } })).status).toBe(403);
      expect((await guarded.request('/customers/cus_nobody', { headers: { Authorization: `Bearer ${apiToken}` } })).status).toBe(404);
      // The admin token is not an API token.
      expect((await guarded.request('/customers/cus_nobody', { headers: admin })).status).toBe(403);
    });
  });

  describe('GET /readyz', () => {
    it('answers 200 when Postgres, Temporal and migrations are fine', async () => {
      const res = await built.app.request('/readyz');
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({
        status: 'ready',
        temporal: 'up',
        dispatcher: { running: true, temporalUp: true, lastError: null, window: expect.any(Number), inFlight: expect.any(Number) },
      });
    });

    it('answers 503 naming postgres when Postgres is down', async () => {
      const downSql = createSql(`postgres://postgres@127.0.0.1:${await freePort()}/billing`, { max: 1 });
      try {
        const app = buildTestApp({ sql: downSql, temporal: client, config, dispatch: false }).app;
        const started = Date.now();
        const res = await app.request('/readyz');
        expect(res.status).toBe(503);
        const body: any = await res.json();
        expect(body).toMatchObject({ status: 'unavailable', error: 'not_ready', failing: ['postgres'] });
        expect(body.message).toContain('postgres');
        expect(Date.now() - started).toBeLessThan(10_000);
        // Scraping never fails because Postgres is down, and answers within its bound (each group of gauges
        // waits 2 s at most, side by side), well inside Prometheus's 10 s scrape timeout.
        const scrapeStarted = Date.now();
        expect((await app.request('/metrics')).status).toBe(200);
        expect(Date.now() - scrapeStarted).toBeLessThan(SCRAPE_READ_TIMEOUT_MS + 1500);
      } finally {
        await downSql.end({ timeout: 1 });
      }
    });

    it('answers 503 naming migrations when one is missing, and 200 degraded naming temporal when Temporal is unreachable', async () => {
      const other = await createTestDatabase();
      // No retry interceptor: the call fails at once instead of retrying past the test.
      const deadConnection = await Connection.lazy({ address: `127.0.0.1:${await freePort()}`, interceptors: [] });
      try {
        await other.sql`DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)`;
        const res = await buildTestApp({ sql: other.sql, temporal: client, config, dispatch: false }).app.request('/readyz');
        expect(res.status).toBe(503);
        expect(await res.json()).toMatchObject({ failing: ['migrations'] });

        // Webhooks are still stored and acknowledged: the replica stays in the load balancer, and says why it is degraded.
        const noTemporal = buildTestApp({ sql: db.sql, temporal: new TemporalClient({ connection: deadConnection }), config, dispatch: false }).app;
        const res2 = await noTemporal.request('/readyz');
        expect(res2.status).toBe(200);
        expect(await res2.json()).toMatchObject({ status: 'degraded', temporal: 'down', degraded: ['temporal'] });
      } finally {
        await deadConnection.close().catch(() => {});
        await other.drop();
      }
    });
  });

  describe('OpenAPI', () => {
    let doc: any;
    beforeAll(async () => {
      const res = await built.app.request('/openapi.json');
      expect(res.status).toBe(200);
      doc = await res.json();
    });

    const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'];
    const operations = () =>
      Object.entries(doc.paths as Record<string, Record<string, any>>).flatMap(([p, item]) =>
        Object.entries(item)
          .filter(([m]) => METHODS.includes(m))
          .map(([m, op]) => ({ path: p, method: m, op })),
      );

    /** Points component $refs at an Ajv schema `doc` holding every component schema under $defs. */
    const rewrite = (v: unknown): unknown =>
      Array.isArray(v)
        ? v.map(rewrite)
        : v && typeof v === 'object'
          ? Object.fromEntries(
              Object.entries(v).map(([k, x]) => [k, k === '$ref' && typeof x === 'string' ? x.replace('#/components/schemas/', 'doc#/$defs/') : rewrite(x)]),
            )
          : v;
    /** Ajv (JSON Schema 2020-12, the dialect of OpenAPI 3.1) in strict mode: unknown keywords fail. */
    const docAjv = () => {
      const ajv = new Ajv2020({ strict: true, strictTypes: false, allErrors: true });
      // Formats zod emits: known (so strict mode accepts them), not checked.
      for (const f of ['email', 'uri', 'date-time', 'uuid']) ajv.addFormat(f, true);
      ajv.addSchema({ $id: 'doc', $defs: rewrite(doc.components.schemas) as object });
      return ajv;
    };
    /** Compiles the document's schema for one response. */
    function responseValidator(method: string, p: string, status: number) {
      const schema = doc.paths[p]?.[method]?.responses?.[String(status)]?.content?.['application/json']?.schema;
      if (!schema) throw new Error(`${method.toUpperCase()} ${p} documents no JSON body for ${status}`);
      return docAjv().compile(rewrite(schema) as object);
    }
    const expectDocumented = async (res: Response, method: string, p: string) => {
      const body = await res.json();
      const validate = responseValidator(method, p, res.status);
      expect(validate(body), `${method.toUpperCase()} ${p} ${res.status}: ${JSON.stringify(validate.errors)}`).toBe(true);
      return body;
    };

    it('is an OpenAPI 3.1 document whose operations all declare responses and whose $refs all resolve', () => {
      expect(doc.openapi).toBe('3.1.0');
      expect(doc.info).toMatchObject({ title: expect.any(String), version: expect.any(String) });
      expect(operations().length).toBeGreaterThan(5);
      for (const { path: p, method, op } of operations()) {
        const codes = Object.keys(op.responses ?? {});
        expect(codes.some((c) => /^[23]\d\d$/.test(c)), `${method} ${p} has a 2xx (or a redirect)`).toBe(true);
        expect(codes, `${method} ${p}`).toContain('500');
        for (const c of codes) expect(op.responses[c].description, `${method} ${p} ${c}`).toBeTruthy();
        const declared = (op.parameters ?? []).filter((x: any) => x.in === 'path').map((x: any) => x.name).sort();
        const templated = [...p.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
        expect(declared, `${method} ${p} path parameters`).toEqual(templated);
        for (const prm of op.parameters ?? []) if (prm.in === 'path') expect(prm.required).toBe(true);
        if (p.startsWith('/admin/')) {
          expect(op.security, `${method} ${p}`).toEqual([{ adminToken: [] }]);
          expect(codes, `${method} ${p}`).toEqual(expect.arrayContaining(['401', '403', '404']));
        }
      }
      const refs: string[] = [];
      const walk = (v: unknown) => {
        if (Array.isArray(v)) v.forEach(walk);
        else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) k === '$ref' ? refs.push(x as string) : walk(x);
      };
      walk(doc);
      expect(refs.length).toBeGreaterThan(10);
      for (const ref of refs) {
        expect(ref.startsWith('#/'), ref).toBe(true);
        const target = ref.slice(2).split('/').reduce((o: any, k) => o?.[k], doc);
        expect(target, ref).toBeTruthy();
      }
      for (const s of Object.values(doc.components.securitySchemes) as any[]) expect(s).toMatchObject({ type: 'http', scheme: 'bearer' });
    });

    it('has component, parameter and body schemas that compile as JSON Schema 2020-12', () => {
      const ajv = docAjv();
      const names = Object.keys(doc.components.schemas);
      expect(names).toEqual(expect.arrayContaining(['Error', 'Customer', 'WebhookEvent', 'BulkReplayRequest', 'ReconciliationReport']));
      for (const name of names) expect(() => ajv.compile({ $ref: `doc#/$defs/${name}` }), name).not.toThrow();
      for (const { path: p, method, op } of operations()) {
        for (const prm of op.parameters ?? []) expect(() => ajv.compile(rewrite(prm.schema) as object), `${method} ${p} ${prm.name}`).not.toThrow();
        const body = op.requestBody?.content?.['application/json']?.schema;
        if (body) expect(() => ajv.compile(rewrite(body) as object), `${method} ${p} body`).not.toThrow();
      }
    });

    it('documents every route registered on the app except the listed undocumented ones', () => {
      // Served but not in the document: the document itself, its viewer, and the dev-only checkout page.
      const undocumented = ['/docs', '/docs/assets/:file', '/openapi.json', '/dev/checkout/:sessionId', '/dev/checkout/:sessionId/complete'];
      const onApp = new Set(
        built.app.routes
          .filter((r) => r.method !== 'ALL' && !undocumented.includes(r.path))
          .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`),
      );
      const inDoc = new Set(operations().map((o) => `${o.method.toUpperCase()} ${o.path}`));
      expect(onApp.size).toBeGreaterThan(20);
      expect([...onApp].filter((r) => !inDoc.has(r)), 'routes missing from the document').toEqual([]);
      expect([...inDoc].filter((r) => !onApp.has(r)), 'documented routes the app does not serve').toEqual([]);
      expect(Object.keys(doc.components.securitySchemes).sort()).toEqual(['adminToken', 'apiToken']);
      expect(doc.info.title).toBe('Billing engine API');
    });

    it('uses the same zod schemas the routes validate with', async () => {
      const body = doc.paths['/admin/webhook-events/replay'].post.requestBody.content['application/json'].schema;
      const component = doc.components.schemas[body.$ref.split('/').pop()];
      expect(Object.keys(component.properties).sort()).toEqual(Object.keys(BulkReplayBodySchema.shape).sort());
      expect(component.properties.limit).toMatchObject({ type: 'integer', minimum: 1, maximum: 5000, default: 500 });
      expect(component.properties.status.enum.sort()).toEqual([...BulkReplayBodySchema.shape.status.unwrap().options].sort());
      // Strict: the document says unknown fields are refused, as the route does.
      expect(component.additionalProperties).toBe(false);
      const names = doc.paths['/admin/webhook-events'].get.parameters.map((x: any) => x.name).sort();
      expect(names).toEqual(Object.keys(ListWebhookEventsQuerySchema.shape).sort());
    });

    it('describes the bodies the routes really return', async () => {
      await expectDocumented(await built.app.request('/healthz'), 'get', '/healthz');
      await expectDocumented(await built.app.request('/readyz'), 'get', '/readyz');
      const { envelope, customerId } = uniqueFixture('customer.subscription.created');
      await expectDocumented(await postWebhook(built.app, envelope), 'post', '/webhooks/stripe');
      await applied(envelope.id);
      await expectDocumented(await built.app.request(`/customers/${customerId}`), 'get', '/customers/{customerId}');
      await expectDocumented(await built.app.request('/customers/bad-id'), 'get', '/customers/{customerId}');
      await expectDocumented(await built.app.request('/customers/cus_missing'), 'get', '/customers/{customerId}');
      await expectDocumented(await postWebhook(built.app, envelope, { signature: null }), 'post', '/webhooks/stripe');
      await expectDocumented(await built.app.request(`/admin/webhook-events?customer=${customerId}`, { headers: admin }), 'get', '/admin/webhook-events');
      await expectDocumented(await built.app.request('/admin/webhook-events?limit=0', { headers: admin }), 'get', '/admin/webhook-events');
      await expectDocumented(await built.app.request(`/admin/webhook-events/${envelope.id}`, { headers: admin }), 'get', '/admin/webhook-events/{eventId}');
      await expectDocumented(await built.app.request('/admin/webhook-events/evt_missing', { headers: admin }), 'get', '/admin/webhook-events/{eventId}');
      await expectDocumented(
        await built.app.request(`/admin/webhook-events/${envelope.id}/replay`, { method: 'POST', headers: admin }),
        'post',
        '/admin/webhook-events/{eventId}/replay',
      );
      await expectDocumented(
        await built.app.request('/admin/webhook-events/replay', {
          method: 'POST',
          headers: { ...admin, 'Content-Type': 'application/json' },
          body: JSON.stringify({ type: 'no.such.type', limit: 1 }),
        }),
        'post',
        '/admin/webhook-events/replay',
      );
      await expectDocumented(await built.app.request('/admin/webhook-events'), 'get', '/admin/webhook-events');
      await expectDocumented(await built.app.request('/admin/reconciliations', { headers: admin }), 'get', '/admin/reconciliations');
      await expectDocumented(await built.app.request('/admin/reconciliations/reconciliation:nope', { headers: admin }), 'get', '/admin/reconciliations/{runId}');
      await expectDocumented(await built.app.request('/plans'), 'get', '/plans');
      await expectDocumented(await built.app.request('/admin/checkout/success-rate', { headers: admin }), 'get', '/admin/checkout/success-rate');
      const postJson = (p: string, body: unknown, method = 'POST') =>
        built.app.request(p, { method, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      await expectDocumented(await postJson('/checkout', { planId: 'pro-monthly' }), 'post', '/checkout');
      await expectDocumented(
        await postJson('/customers/cus_nobody/subscription/plan/preview', { planId: 'pro-monthly' }),
        'post',
        '/customers/{customerId}/subscription/plan/preview',
      );
      await expectDocumented(
        await postJson('/customers/cus_nobody/subscription/plan', { planId: 'pro-monthly', requestId: 'r1' }, 'PUT'),
        'put',
        '/customers/{customerId}/subscription/plan',
      );
      await expectDocumented(
        await postJson('/customers/cus_nobody/subscription/cancel', { atPeriodEnd: true, requestId: 'r1' }),
        'post',
        '/customers/{customerId}/subscription/cancel',
      );
    });

    it('serves interactive docs at /docs that load /openapi.json', async () => {
      const res = await built.app.request('/docs');
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toContain('text/html');
      const html = await res.text();
      expect(html).toContain('SwaggerUIBundle');
      expect(html).toContain('/openapi.json');
      // Offline: every script and stylesheet is served here, from the pinned swagger-ui-dist package.
      const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
      expect(refs.length).toBeGreaterThanOrEqual(2);
      for (const ref of refs) {
        expect(ref, 'no CDN').toMatch(/^\/docs\/assets\//);
        const asset = await built.app.request(ref);
        expect(asset.status, ref).toBe(200);
        expect((await asset.text()).length, ref).toBeGreaterThan(1000);
      }
      expect((await built.app.request('/docs/assets/..%2Fpackage.json')).status).toBe(404);
    });
  });

  describe('request limits and errors', () => {
    it('limits the body size of every JSON route (413) before auth or parsing', async () => {
      const big = JSON.stringify({ type: 'x'.repeat(70 * 1024) });
      for (const [method, p] of [
        ['POST', '/admin/webhook-events/replay'],
        ['POST', '/admin/reconciliations'],
        ['POST', '/admin/webhook-events/evt_x/replay'],
        ['POST', '/checkout'],
        ['PUT', '/customers/cus_x/subscription/plan'],
      ]) {
        const res = await built.app.request(p!, {
          method,
          body: big,
          headers: { ...admin, 'Content-Type': 'application/json', 'Content-Length': String(big.length) },
        });
        expect(res.status, p).toBe(413);
        expect(await res.json()).toMatchObject({ error: 'payload_too_large' });
      }
      // Without a Content-Length the streamed body is counted too.
      const streamed = await built.app.request('/admin/webhook-events/replay', {
        method: 'POST',
        body: new Blob([big]).stream(),
        headers: { ...admin, 'Content-Type': 'application/json' },
        duplex: 'half',
      } as RequestInit);
      expect(streamed.status).toBe(413);
    });

    it('requires application/json where a JSON body is expected (415), and rejects bad JSON and bad fields (400)', async () => {
      const post = (body: string, type?: string) =>
        built.app.request('/admin/webhook-events/replay', { method: 'POST', body, headers: { ...admin, ...(type ? { 'Content-Type': type } : {}) } });
      const json = JSON.stringify({ status: 'failed', limit: 1 });
      for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/jsonp', undefined]) {
        const res = await post(json, type);
        expect(res.status, String(type)).toBe(415);
        expect(await res.json()).toMatchObject({ error: 'unsupported_media_type' });
      }
      expect((await post(json, 'application/json; charset=utf-8')).status).toBe(200);
      const bad = await post('{"status":', 'application/json');
      expect(bad.status).toBe(400);
      expect(await bad.json()).toMatchObject({ error: 'invalid_json' });
      const invalid = await post(JSON.stringify({ limit: -1 }), 'application/json');
      expect(invalid.status).toBe(400);
      expect(await invalid.json()).toMatchObject({ error: 'validation_error', details: expect.arrayContaining([expect.objectContaining({ path: 'limit' })]) });
    });

    it('rejects an unknown body field, naming it, and words each invalid field in one plain message', async () => {
      const post = (body: unknown) =>
        built.app.request('/admin/webhook-events/replay', { method: 'POST', body: JSON.stringify(body), headers: { ...admin, 'Content-Type': 'application/json' } });
      const unknown = await post({ status: 'failed', limit: 1, stauts: 'x' });
      expect(unknown.status).toBe(400);
      expect(await unknown.json()).toEqual({
        error: 'validation_error',
        message: 'request body is invalid',
        details: [{ path: 'stauts', message: 'stauts is not a known field' }],
      });
      const invalid = await post({ status: 'nope', limit: 0, ratePerSecond: 'fast' });
      expect(invalid.status).toBe(400);
      const body: any = await invalid.json();
      expect(body.error).toBe('validation_error');
      expect(body.details).toEqual([
        { path: 'status', message: 'status must be one of: received, failed, ignored, dispatched, quarantined' },
        { path: 'limit', message: 'limit must be at least 1' },
        { path: 'ratePerSecond', message: 'ratePerSecond must be a number' },
      ]);
      const missing = await built.app.request('/customers/cus_x/subscription/resume', {
        method: 'POST',
        body: '{}',
        headers: { 'Content-Type': 'application/json' },
      });
      expect(missing.status).toBe(400);
      expect(((await missing.json()) as any).details).toEqual([{ path: 'requestId', message: 'requestId is required' }]);
      // No zod wording anywhere.
      expect(JSON.stringify(body)).not.toMatch(/Invalid input|expected string|received undefined/);
      const query = await built.app.request('/admin/webhook-events?limit=abc', { headers: admin });
      expect(query.status).toBe(400);
      expect(await query.json()).toMatchObject({ error: 'validation_error', message: 'query is invalid', details: [{ path: 'limit', message: 'limit must be a number' }] });
    });

    it('answers 405 with an Allow header for a known path and another method, and 404 for an unknown path', async () => {
      const wrong = await built.app.request('/plans', { method: 'DELETE' });
      expect(wrong.status).toBe(405);
      expect(wrong.headers.get('allow')).toBe('GET, HEAD');
      expect(await wrong.json()).toEqual({ error: 'method_not_allowed', message: expect.stringContaining('GET') });
      const param = await built.app.request('/admin/webhook-events/evt_1', { method: 'PUT', headers: admin });
      expect(param.status).toBe(405);
      expect(param.headers.get('allow')).toBe('GET, HEAD');
      const post = await built.app.request('/webhooks/stripe', { method: 'GET' });
      expect(post.status).toBe(405);
      expect(post.headers.get('allow')).toBe('POST');
      const unknown = await built.app.request('/no/such/path', { method: 'DELETE' });
      expect(unknown.status).toBe(404);
      expect(await unknown.json()).toEqual({ error: 'not_found', message: 'no such route' });
    });

    it('never puts a stack trace or SQL in an error response when the database fails', async () => {
      const broken = await createTestDatabase();
      const brokenLogs = captureLogs();
      try {
        await broken.sql`DROP TABLE webhook_events CASCADE`;
        const app = buildTestApp({ sql: broken.sql, temporal: client, config, logger: createLogger({ level: 'info', destination: brokenLogs.destination }), dispatch: false }).app;
        const responses = [
          await app.request('/admin/webhook-events', { headers: { ...admin, 'X-Request-Id': 'req-db-error-1' } }),
          await app.request('/admin/webhook-events/evt_x', { headers: admin }),
          await app.request('/admin/webhook-events/replay', {
            method: 'POST',
            headers: { ...admin, 'Content-Type': 'application/json' },
            body: JSON.stringify({ status: 'failed' }),
          }),
          await postWebhook(app, uniqueFixture('customer.created').envelope),
        ];
        expect(responses.map((r) => r.status)).toEqual([500, 500, 500, 503]);
        for (const res of responses) {
          const text = await res.text();
          const body = JSON.parse(text);
          expect(Object.keys(body).sort()).toEqual(['error', 'message']);
          expect(text).not.toMatch(/webhook_events|relation|select|insert|syntax|postgres|\bat\s.+:\d+|\.ts\b|\.js\b/i);
          for (const s of FORBIDDEN_IN_OUTPUT) expect(text).not.toContain(s);
        }
        expect(JSON.parse(await (await app.request('/admin/webhook-events', { headers: admin })).text())).toEqual({
          error: 'internal_error',
          message: 'internal error',
        });
        // The cause is in the log, keyed by the request id, for the operator.
        expect(brokenLogs.lines).toContainEqual(expect.objectContaining({ msg: 'unhandled error', requestId: 'req-db-error-1', level: 'error' }));
        expect(brokenLogs.lines).toContainEqual(expect.objectContaining({ msg: 'request', requestId: 'req-db-error-1', status: 500, level: 'error' }));
      } finally {
        await broken.drop();
      }
    });

    it('refuses to start the API in production without ADMIN_TOKEN', async () => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'api/server.ts'], {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH,
          NODE_ENV: 'production',
          DATABASE_URL: db.url,
          STRIPE_SECRET_KEY: STRIPE_KEY,
          STRIPE_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
          PORT: String(await freePort()),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr!.on('data', (d) => (stderr += d));
      const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      expect(code).toBe(1);
      expect(stderr).toContain('ADMIN_TOKEN is required when NODE_ENV=production');
      expect(stderr).not.toContain(TEST_WEBHOOK_SECRET);
    });

    it('refuses to start the API in production without API_TOKEN, unless API_AUTH=none says so', async () => {
      const run = async (extra: Record<string, string>) => {
        const child = spawn(process.execPath, ['--import', 'tsx', 'api/server.ts'], {
          cwd: ROOT,
          env: {
            PATH: process.env.PATH,
            NODE_ENV: 'production',
            DATABASE_URL: db.url,
            STRIPE_SECRET_KEY: STRIPE_KEY,
            STRIPE_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
            ADMIN_TOKEN: TEST_ADMIN_TOKEN,
            TEMPORAL_ADDRESS: inject('temporalAddress'),
            PORT: String(await freePort()),
            ...extra,
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        child.stderr!.on('data', (d) => (out += d));
        child.stdout!.on('data', (d) => (out += d));
        const exited = new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
        const listening = eventually(async () => out.includes('api listening'), 20_000, 'the API to listen').then(() => 'listening' as const, () => 'timeout' as const);
        const first = await Promise.race([exited, listening]);
        if (child.exitCode === null) child.kill('SIGKILL');
        return { first, out };
      };
      const refused = await run({});
      expect(refused.first).toBe(1);
      expect(refused.out).toContain('API_TOKEN is required when NODE_ENV=production');
      const open = await run({ API_AUTH: 'none' });
      expect(open.first).toBe('listening');
      expect(open.out).toMatch(/API_AUTH=none.*WITHOUT authentication/);
    });
  });

  describe('the worker entry point (npm run worker)', () => {
    let child: ChildProcess | undefined;
    afterAll(async () => {
      if (child && child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child!.once('exit', r));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child!.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(timer);
      }
    });

    it('serves Temporal worker metrics on WORKER_METRICS_ADDRESS and logs applied events with all three ids through pino', async () => {
      const metricsPort = await freePort();
      const taskQueue = uniqueId('tq-worker-');
      child = spawn(process.execPath, ['--import', 'tsx', 'worker/main.ts'], {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH,
          NODE_ENV: 'test',
          DATABASE_URL: db.url,
          TEMPORAL_ADDRESS: inject('temporalAddress'),
          TEMPORAL_TASK_QUEUE: taskQueue,
          STRIPE_SECRET_KEY: STRIPE_KEY,
          STRIPE_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
          STRIPE_API_BASE: inject('stripeMockUrl'),
          ADMIN_TOKEN: TEST_ADMIN_TOKEN,
          LOG_LEVEL: 'info',
          WORKER_METRICS_ADDRESS: `127.0.0.1:${metricsPort}`,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (d) => (stdout += d));
      child.stderr!.on('data', (d) => (stderr += d));
      const lines = () =>
        stdout
          .split('\n')
          .filter((l) => l.trim())
          .map((l) => JSON.parse(l) as Record<string, any>);
      await eventually(async () => {
        if (child!.exitCode !== null) throw new Error(`worker exited ${child!.exitCode}: ${stderr}`);
        return lines().some((l) => l.msg === 'worker started');
      }, 90_000, 'the worker to start');
      // No SMTP_URL / NOTIFY_FROM here: startup says notices stay in the outbox.
      await eventually(async () => lines().some((l) => l.level === 'warn' && /notices stay queued in the notifications outbox/.test(String(l.msg))), 10_000, 'the outbox-only warning');

      // This delivery is for the child worker's task queue: only this app's dispatcher may hand it over.
      await built.dispatcher.stop();
      const own = buildTestApp({ sql: db.sql, temporal: client, config: testConfig({ TEMPORAL_TASK_QUEUE: taskQueue }) });
      const { envelope, customerId } = uniqueFixture('customer.subscription.created');
      try {
        expect((await postWebhook(own.app, envelope)).status).toBe(200);
        await applied(envelope.id);
      } finally {
        await own.close();
        await built.dispatcher.start();
      }

      const line = await eventually(async () => lines().find((l) => l.msg === 'event applied' && l.eventId === envelope.id), 10_000, 'the apply log line');
      expect(line).toMatchObject({
        level: 'info',
        service: 'worker',
        component: 'temporal',
        eventId: envelope.id,
        customerId,
        workflowId: `customer:${customerId}`,
        type: 'customer.subscription.created',
        outcome: 'applied',
        activityType: 'applyBillingEvents',
        taskToken: '[redacted]',
      });
      // SDK lines (worker lifecycle) go through the same pino logger.
      expect(lines().some((l) => l.component === 'temporal' && l.sdkComponent === 'worker')).toBe(true);
      for (const s of [...FORBIDDEN_IN_OUTPUT, 'data":{"object']) expect(stdout + stderr).not.toContain(s);

      const text = await eventually(async () => {
        const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
        const body = await res.text();
        // The customer workflow's Postgres writes are local activities: their latency series proves the apply ran here.
        return res.ok && body.includes('temporal_local_activity_execution_latency') ? body : null;
      }, 15_000, 'worker Prometheus metrics');
      expect(text).toContain(`task_queue="${taskQueue}"`);
      expect(text).toMatch(/temporal_workflow_completed|temporal_workflow_task_execution_latency|temporal_worker_task_slots_available/);
    }, 150_000);
  });
});
