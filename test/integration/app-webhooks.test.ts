/**
 * Outgoing app webhooks: delivery by appWebhookWorkflow with retries, the signature the app verifies,
 * a duplicate start delivering once, the admin log and replay. Real Postgres, the real Temporal dev
 * server, and a local node:http server as the app.
 */
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import Ajv2020 from 'ajv/dist/2020';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAppWebhookActivities, type DeliverAppWebhookResult } from '../../activities/app-webhooks';
import { appEventId, recordAppEvents } from '../../activities/db/app-events';
import type { AppEventDraft } from '../../domain/app-events';
import type { Config } from '../../lib/config';
import { signAppWebhook, verifyAppWebhook } from '../../lib/app-webhook-signature';
import type { appWebhookWorkflow } from '../../workflows/app-webhook';
import { buildTestApp, stopTestDispatchers } from '../helpers/app';
import {
  TEST_ADMIN_TOKEN,
  createTestDatabase,
  startTestWorker,
  testClient,
  testConfig,
  uniqueId,
  type RunningWorker,
  type TestDatabase,
} from '../helpers/services';

const SECRET = 'app-webhook-secret-for-tests-0123';
const admin = { Authorization: `Bearer ${TEST_ADMIN_TOKEN}` };

/** One request the app received, and what it answered. */
interface Received {
  eventId: string | undefined;
  headers: IncomingHttpHeaders;
  body: string;
  answered: number | 'hang';
}

/** The app: answers each event id from its script (a status, or 'hang' to never answer), then 200. */
async function startApp() {
  const received: Received[] = [];
  const script = new Map<string, (number | 'hang')[]>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const eventId = req.headers['billing-event-id'] as string | undefined;
      const answer = (eventId ? script.get(eventId)?.shift() : undefined) ?? 200;
      received.push({ eventId, headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), answered: answer });
      if (answer === 'hang') return;
      res.writeHead(answer, { 'content-type': 'text/plain' }).end(answer >= 300 ? 'app is unhappy' : 'ok');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/billing-events`;
  return {
    url,
    received,
    script,
    of: (id: string) => received.filter((r) => r.eventId === id),
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

/** A local port nothing listens on (a listener's, after it closed). */
async function closedPort(): Promise<number> {
  const s = createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

describe('app webhooks', () => {
  let db: TestDatabase;
  let client: Client;
  let worker: RunningWorker;
  let app: Awaited<ReturnType<typeof startApp>>;
  let config: Config;
  let built: ReturnType<typeof buildTestApp>;

  beforeAll(async () => {
    app = await startApp();
    config = testConfig({ APP_WEBHOOK_URL: app.url, APP_WEBHOOK_SECRET: SECRET, APP_WEBHOOK_TIMEOUT_MS: '500' });
    db = await createTestDatabase();
    client = await testClient();
    worker = await startTestWorker({ taskQueue: config.TEMPORAL_TASK_QUEUE, activities: createAppWebhookActivities({ sql: db.sql, config }) });
    built = buildTestApp({ sql: db.sql, temporal: client, config, dispatch: false });
  });

  afterAll(async () => {
    await stopTestDispatchers();
    await worker?.stop();
    await client?.connection.close();
    await db?.drop();
    await app?.close();
  });

  /** Records one event (as a producer would, in its transaction); returns its id. */
  async function record(overrides: Partial<AppEventDraft> = {}): Promise<string> {
    const customerId = overrides.customerId ?? `cus_${uniqueId()}`;
    const draft: AppEventDraft = {
      sourceKey: `test:${uniqueId()}`,
      type: 'access.changed',
      customerId,
      data: { customerId, accessState: 'grace', previousAccessState: 'active' },
      ...overrides,
    };
    await db.sql.begin((tx) => recordAppEvents(tx, [draft]));
    return appEventId(draft.sourceKey);
  }

  const row = async (id: string) => {
    const [r] = await db.sql<
      { status: string; attempts: number; last_status_code: number | null; last_error: string | null; delivered_at: Date | null; created_at: Date; data: unknown; replays: number }[]
    >`SELECT status, attempts, last_status_code, last_error, delivered_at, created_at, data, replays FROM app_webhooks WHERE id = ${id}`;
    return r!;
  };

  const deliver = (id: string, workflowId = `app-webhook:${id}`) =>
    client.workflow.execute<typeof appWebhookWorkflow>('appWebhookWorkflow', { workflowId, taskQueue: config.TEMPORAL_TASK_QUEUE, args: [{ id }] });

  describe('delivery', () => {
    it('retries a 500 and ends delivered after two attempts, with a body and signature the app can verify', async () => {
      const id = await record({ type: 'subscription.changed', data: { customerId: 'cus_x', subscription: { id: 'sub_1', status: 'active' }, previousAttributes: null } });
      app.script.set(id, [500]);

      expect(await deliver(id)).toEqual({ id, outcome: 'delivered' });

      const r = await row(id);
      expect(r).toMatchObject({ status: 'delivered', attempts: 2, last_status_code: 200, last_error: null });
      expect(r.delivered_at).toBeInstanceOf(Date);
      const requests = app.of(id);
      expect(requests.map((q) => q.answered)).toEqual([500, 200]);
      const ok = requests.filter((q) => typeof q.answered === 'number' && q.answered < 300);
      expect(ok).toHaveLength(1);
      const { headers, body } = ok[0]!;
      expect(verifyAppWebhook(body, headers['billing-signature'] as string, SECRET)).toBe(true);
      expect(verifyAppWebhook(body, headers['billing-signature'] as string, 'another-secret-0123456789')).toBe(false);
      expect(headers['content-type']).toBe('application/json');
      expect(headers['user-agent']).toMatch(/^billing-engine\//);
      expect(headers['billing-event-id']).toBe(id);
      const parsed = JSON.parse(body);
      expect(Object.keys(parsed)).toEqual(['id', 'type', 'created', 'data']);
      expect(parsed).toEqual({ id, type: 'subscription.changed', created: Math.floor(r.created_at.getTime() / 1000), data: r.data });
      // Each attempt is signed afresh; the body is the same bytes.
      expect(requests[0]!.body).toBe(body);
      for (const q of requests) expect(JSON.stringify(q.headers)).not.toContain(SECRET);
    });

    it('delivers once when the relay starts the same workflow id twice', async () => {
      const id = await record();
      const opts = { workflowId: `app-webhook:${id}`, taskQueue: config.TEMPORAL_TASK_QUEUE, args: [{ id }] as [{ id: string }] };
      const first = await client.workflow.start<typeof appWebhookWorkflow>('appWebhookWorkflow', opts);
      await expect(client.workflow.start<typeof appWebhookWorkflow>('appWebhookWorkflow', opts)).rejects.toBeInstanceOf(WorkflowExecutionAlreadyStartedError);
      expect(await first.result()).toEqual({ id, outcome: 'delivered' });
      // A start after the first run closed (a relay that lost its workflow_started_at write) posts nothing.
      expect(await deliver(id)).toEqual({ id, outcome: 'already_delivered' });
      expect(app.of(id).map((q) => q.answered)).toEqual([200]);
      expect(await row(id)).toMatchObject({ status: 'delivered', attempts: 1 });
    });

    it('gives up at once when app webhooks are not configured on the worker', async () => {
      const bare = testConfig({ TEMPORAL_TASK_QUEUE: uniqueId('tq-bare-') });
      const bareWorker = await startTestWorker({ taskQueue: bare.TEMPORAL_TASK_QUEUE, activities: createAppWebhookActivities({ sql: db.sql, config: bare }) });
      try {
        const id = await record();
        const out = await client.workflow.execute<typeof appWebhookWorkflow>('appWebhookWorkflow', {
          workflowId: `app-webhook:${id}`,
          taskQueue: bare.TEMPORAL_TASK_QUEUE,
          args: [{ id }],
        });
        expect(out).toEqual({ id, outcome: 'given_up' });
        const r = await row(id);
        expect(r).toMatchObject({ status: 'given_up', attempts: 0 });
        expect(r.last_error).toContain('APP_WEBHOOK_URL');
        expect(app.of(id)).toEqual([]);
      } finally {
        await bareWorker.stop();
      }
    });
  });

  describe('one attempt (the activity)', () => {
    const env = () => new MockActivityEnvironment(undefined, { logger: new DefaultLogger('ERROR') });
    const attempt = (acts: ReturnType<typeof createAppWebhookActivities>, id: string) =>
      env().run(acts.deliverAppWebhook, { id }) as Promise<DeliverAppWebhookResult>;

    it('records a timeout as a failed attempt and throws a retryable AppWebhookFailed', async () => {
      const id = await record();
      app.script.set(id, ['hang']);
      const err = await attempt(createAppWebhookActivities({ sql: db.sql, config }), id).catch((e: unknown) => e);
      expect(err).toMatchObject({ type: 'AppWebhookFailed', nonRetryable: false });
      expect((err as Error).message).toContain('timed out after 500 ms');
      expect(await row(id)).toMatchObject({ status: 'failed', attempts: 1, last_status_code: null, last_error: 'timed out after 500 ms' });
    });

    it('records the status and the start of the answer of a refusing app, without the secret', async () => {
      const id = await record();
      app.script.set(id, [503]);
      const err = await attempt(createAppWebhookActivities({ sql: db.sql, config }), id).catch((e: unknown) => e);
      expect(err).toMatchObject({ type: 'AppWebhookFailed', nonRetryable: false });
      expect((err as Error).message).toContain('HTTP 503');
      expect(JSON.stringify(err)).not.toContain(SECRET);
      const r = await row(id);
      expect(r).toMatchObject({ status: 'failed', attempts: 1, last_status_code: 503, last_error: 'HTTP 503: app is unhappy' });
    });

    it('records a refused connection, and does not post a delivered row again', async () => {
      const id = await record();
      const down = createAppWebhookActivities({ sql: db.sql, config: { ...config, APP_WEBHOOK_URL: `http://127.0.0.1:${await closedPort()}/hooks` } });
      const err = await attempt(down, id).catch((e: unknown) => e);
      expect(err).toMatchObject({ type: 'AppWebhookFailed' });
      expect((await row(id)).last_error).toMatch(/^network error: .*ECONNREFUSED/);

      const acts = createAppWebhookActivities({ sql: db.sql, config });
      expect(await attempt(acts, id)).toEqual({ status: 'delivered', statusCode: 200 });
      expect(await attempt(acts, id)).toEqual({ status: 'already_delivered' });
      expect(app.of(id)).toHaveLength(1);
      expect(await row(id)).toMatchObject({ status: 'delivered', attempts: 2, last_error: null });
    });

    it('refuses an unknown id without retrying', async () => {
      const err = await attempt(createAppWebhookActivities({ sql: db.sql, config }), 'aevt_missing').catch((e: unknown) => e);
      expect(err).toMatchObject({ type: 'AppWebhookNotFound', nonRetryable: true });
    });

    it('leaves a delivered row delivered when told to give up', async () => {
      const id = await record();
      const acts = createAppWebhookActivities({ sql: db.sql, config });
      await attempt(acts, id);
      await env().run(acts.giveUpAppWebhook, { id, error: 'late give-up' });
      expect(await row(id)).toMatchObject({ status: 'delivered', last_error: null });
    });
  });

  describe('admin API', () => {
    let doc: any;
    beforeAll(async () => {
      doc = await (await built.app.request('/openapi.json')).json();
    });

    /** Checks a response body against the OpenAPI document's schema for it. */
    async function documented(res: Response, method: string, path: string): Promise<any> {
      const body = await res.json();
      const schema = doc.paths[path]?.[method]?.responses?.[String(res.status)]?.content?.['application/json']?.schema;
      expect(schema, `${method} ${path} documents ${res.status}`).toBeTruthy();
      const rewrite = (v: unknown): unknown =>
        Array.isArray(v)
          ? v.map(rewrite)
          : v && typeof v === 'object'
            ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, k === '$ref' ? String(x).replace('#/components/schemas/', 'doc#/$defs/') : rewrite(x)]))
            : v;
      const ajv = new Ajv2020({ strict: true, strictTypes: false, allErrors: true });
      for (const f of ['email', 'uri', 'date-time', 'uuid']) ajv.addFormat(f, true);
      ajv.addSchema({ $id: 'doc', $defs: rewrite(doc.components.schemas) as object });
      const validate = ajv.compile(rewrite(schema) as object);
      expect(validate(body), `${method} ${path} ${res.status}: ${JSON.stringify(validate.errors)}`).toBe(true);
      return body;
    }

    const get = (path: string) => built.app.request(path, { headers: admin });
    const replay = (id: string) => built.app.request(`/admin/app-webhooks/${id}/replay`, { method: 'POST', headers: admin });

    it('lists a customer’s events newest first, page by page, filtered by status and type', async () => {
      const customerId = `cus_${uniqueId()}`;
      const first = await record({ customerId });
      const second = await record({ customerId, type: 'dunning.started', data: { customerId, invoiceId: 'in_1' } });
      await db.sql`UPDATE app_webhooks SET created_at = created_at - interval '1 minute' WHERE id = ${first}`;

      const all = await documented(await get(`/admin/app-webhooks?customerId=${customerId}`), 'get', '/admin/app-webhooks');
      expect(all.data.map((e: any) => e.id)).toEqual([second, first]);
      expect(all.nextCursor).toBeNull();
      expect(all.data[0]).toEqual({
        id: second,
        type: 'dunning.started',
        customerId,
        status: 'pending',
        attempts: 0,
        lastStatusCode: null,
        lastError: null,
        lastAttemptAt: null,
        deliveredAt: null,
        createdAt: expect.any(String),
        replays: 0,
      });

      const page1 = await documented(await get(`/admin/app-webhooks?customerId=${customerId}&limit=1`), 'get', '/admin/app-webhooks');
      expect(page1.data.map((e: any) => e.id)).toEqual([second]);
      expect(page1.nextCursor).toEqual(expect.any(String));
      const page2 = await documented(
        await get(`/admin/app-webhooks?customerId=${customerId}&limit=1&cursor=${page1.nextCursor}`),
        'get',
        '/admin/app-webhooks',
      );
      expect(page2).toEqual({ data: [expect.objectContaining({ id: first })], nextCursor: null });

      const byType: any = await (await get(`/admin/app-webhooks?customerId=${customerId}&type=access.changed`)).json();
      expect(byType.data.map((e: any) => e.id)).toEqual([first]);
      const byStatus: any = await (await get(`/admin/app-webhooks?customerId=${customerId}&status=delivered`)).json();
      expect(byStatus.data).toEqual([]);
    });

    it('answers 400 in the common error shape for a bad filter or cursor, and 401 without the admin token', async () => {
      for (const q of ['limit=0', 'limit=abc', 'status=sent', 'type=no.such']) {
        const res = await get(`/admin/app-webhooks?${q}`);
        expect(res.status, q).toBe(400);
        expect(await documented(res, 'get', '/admin/app-webhooks')).toMatchObject({ error: 'validation_error', details: expect.any(Array) });
      }
      const bad = await get('/admin/app-webhooks?cursor=not-a-cursor');
      expect(await documented(bad, 'get', '/admin/app-webhooks')).toEqual({ error: 'invalid_cursor', message: expect.any(String) });
      expect((await built.app.request('/admin/app-webhooks')).status).toBe(401);
      expect((await built.app.request('/admin/app-webhooks/aevt_x/replay', { method: 'POST' })).status).toBe(401);
    });

    it('shows one event with its payload, and 404 for an unknown id', async () => {
      const customerId = `cus_${uniqueId()}`;
      const id = await record({ customerId, type: 'checkout.completed', data: { customerId, sessionId: 'cs_1', planId: 'pro' } });
      const shown = await documented(await get(`/admin/app-webhooks/${id}`), 'get', '/admin/app-webhooks/{id}');
      expect(shown).toMatchObject({ id, type: 'checkout.completed', customerId, status: 'pending', data: { customerId, sessionId: 'cs_1', planId: 'pro' } });
      const missing = await get('/admin/app-webhooks/aevt_nope');
      expect(missing.status).toBe(404);
      expect(await documented(missing, 'get', '/admin/app-webhooks/{id}')).toEqual({ error: 'app_webhook_not_found', message: expect.any(String) });
    });

    it('replays a delivered event: the replay workflow posts the same id again', async () => {
      const id = await record();
      await deliver(id);
      expect(app.of(id)).toHaveLength(1);
      await db.sql`UPDATE app_webhooks SET workflow_started_at = now() WHERE id = ${id}`; // as the relay would have

      const res = await replay(id);
      expect(res.status).toBe(202);
      const body = await documented(res, 'post', '/admin/app-webhooks/{id}/replay');
      expect(body).toEqual({ id, replays: 1, workflowId: `app-webhook:${id}:replay-1` });
      const [reset] = await db.sql`SELECT status, replays, workflow_started_at FROM app_webhooks WHERE id = ${id}`;
      expect(reset).toMatchObject({ status: 'pending', replays: 1, workflow_started_at: null });

      expect(await deliver(id, body.workflowId)).toEqual({ id, outcome: 'delivered' });
      const requests = app.of(id);
      expect(requests).toHaveLength(2);
      expect(JSON.parse(requests[1]!.body).id).toBe(id);
      expect(requests[1]!.body).toBe(requests[0]!.body);
      expect(verifyAppWebhook(requests[1]!.body, requests[1]!.headers['billing-signature'] as string, SECRET)).toBe(true);
      const shown = await (await get(`/admin/app-webhooks/${id}`)).json();
      expect(shown).toMatchObject({ status: 'delivered', attempts: 2, replays: 1, lastStatusCode: 200 });
    });

    it('answers 409 while a delivery is in flight and 404 for an unknown id', async () => {
      const id = await record();
      await db.sql`UPDATE app_webhooks SET workflow_started_at = now(), status = 'failed' WHERE id = ${id}`;
      const busy = await replay(id);
      expect(busy.status).toBe(409);
      expect(await documented(busy, 'post', '/admin/app-webhooks/{id}/replay')).toEqual({ error: 'delivery_in_flight', message: expect.any(String) });
      expect(await row(id)).toMatchObject({ status: 'failed', replays: 0 });

      await db.sql`UPDATE app_webhooks SET status = 'given_up' WHERE id = ${id}`;
      const again = await replay(id);
      expect(again.status).toBe(202);
      expect(await again.json()).toEqual({ id, replays: 1, workflowId: `app-webhook:${id}:replay-1` });

      const missing = await replay('aevt_nope');
      expect(missing.status).toBe(404);
      expect(await documented(missing, 'post', '/admin/app-webhooks/{id}/replay')).toMatchObject({ error: 'app_webhook_not_found' });
    });
  });
});

describe('Billing-Signature', () => {
  const body = JSON.stringify({ id: 'aevt_1', type: 'access.changed', created: 1_700_000_000, data: { customerId: 'cus_1' } });
  const now = 1_700_000_100;

  it('verifies what it signs', () => {
    const header = signAppWebhook(body, SECRET, now);
    expect(header).toMatch(/^t=1700000100,v1=[0-9a-f]{64}$/);
    expect(verifyAppWebhook(body, header, SECRET, { nowSec: now })).toBe(true);
  });

  it('refuses a tampered body and a wrong secret', () => {
    const header = signAppWebhook(body, SECRET, now);
    expect(verifyAppWebhook(body.replace('cus_1', 'cus_2'), header, SECRET, { nowSec: now })).toBe(false);
    expect(verifyAppWebhook(`${body} `, header, SECRET, { nowSec: now })).toBe(false);
    expect(verifyAppWebhook(body, header, 'not-the-secret-0123456789', { nowSec: now })).toBe(false);
    // A signature moved to another timestamp does not verify.
    expect(verifyAppWebhook(body, header.replace('t=1700000100', 't=1700000101'), SECRET, { nowSec: now })).toBe(false);
  });

  it('refuses timestamps outside the tolerance, in the past and in the future', () => {
    expect(verifyAppWebhook(body, signAppWebhook(body, SECRET, now - 300), SECRET, { nowSec: now })).toBe(true);
    expect(verifyAppWebhook(body, signAppWebhook(body, SECRET, now - 301), SECRET, { nowSec: now })).toBe(false);
    expect(verifyAppWebhook(body, signAppWebhook(body, SECRET, now + 301), SECRET, { nowSec: now })).toBe(false);
    expect(verifyAppWebhook(body, signAppWebhook(body, SECRET, now - 3000), SECRET, { nowSec: now, toleranceSec: 3600 })).toBe(true);
    // Against the real clock by default.
    expect(verifyAppWebhook(body, signAppWebhook(body, SECRET, Math.floor(Date.now() / 1000) - 3600), SECRET)).toBe(false);
  });

  it('accepts any of several v1 entries (secret rotation) and refuses malformed headers', () => {
    const old = signAppWebhook(body, 'the-old-secret-0123456789', now).split(',')[1]!;
    const header = `${signAppWebhook(body, SECRET, now)},${old}`;
    expect(verifyAppWebhook(body, header, SECRET, { nowSec: now })).toBe(true);
    expect(verifyAppWebhook(body, header, 'the-old-secret-0123456789', { nowSec: now })).toBe(true);
    const v1 = signAppWebhook(body, SECRET, now).split(',')[1]!;
    for (const bad of ['', v1, `t=${now}`, `t=abc,${v1}`, `t=${now},t=${now},${v1}`, `t=${now},v1=zz`, `t=${now},v0=${v1.slice(3)}`]) {
      expect(verifyAppWebhook(body, bad, SECRET, { nowSec: now }), bad).toBe(false);
    }
  });
});
