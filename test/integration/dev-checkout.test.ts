/**
 * The dev stack's checkout page (api/routes/dev-checkout.ts) on the emulators `npm run dev` uses:
 * localstripe behind the emulator gateway, the plan catalog seeded into it, the real app served on a
 * socket (the gateway and localstripe post signed webhooks to it) and a worker on the shared Temporal
 * dev server. Also: never served in production, and Mailpit as scripts/stack.ts starts it.
 */
import { readFileSync, readlinkSync, rmSync } from 'node:fs';
import path from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import type { Client } from '@temporalio/client';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../activities';
import type { Plan } from '../../domain/plan-catalog';
import { devCheckoutEnabled } from '../../lib/dev-checkout';
import { syncPlans } from '../../lib/plan-catalog-sync';
import { createStripe } from '../../lib/stripe';
import { seedLocalstripeCatalog, startEmulatorGateway, type EmulatorGatewayHandle } from '../../support/emulator-gateway/gateway';
import { freePort, portInUse, ROOT, startMailpit, tempDir, TOOLS_BIN } from '../../support/services';
import { buildTestApp, stopTestDispatchers } from '../helpers/app';
import {
  TEST_WEBHOOK_SECRET,
  createTestDatabase,
  eventually,
  startTestWorker,
  testClient,
  testConfig,
  uniqueId,
  type RunningWorker,
  type TestDatabase,
} from '../helpers/services';

const run = uniqueId();
/** Price ids unique to this file: localstripe is shared by every test file. */
const PLANS: Plan[] = [
  { id: 'basic-monthly', stripePriceId: `price_devck_${run}_basic`, name: 'Basic (monthly)', amount: 900, currency: 'usd', interval: 'month', rank: 10, active: true },
  { id: 'pro-monthly', stripePriceId: `price_devck_${run}_pro`, name: 'Pro (monthly)', amount: 2900, currency: 'usd', interval: 'month', rank: 20, active: true },
];
const SUCCESS_URL = 'https://app.example.com/welcome?session={CHECKOUT_SESSION_ID}';
const CANCEL_URL = 'https://app.example.com/pricing';

describe('dev checkout page on the emulators', () => {
  const localstripeUrl = inject('localstripeUrl');
  const hookId = uniqueId('dev-checkout-');
  let apiPort = 0;
  let gateway: EmulatorGatewayHandle;
  let config: ReturnType<typeof testConfig>;
  let db: TestDatabase;
  let temporal: Client;
  let worker: RunningWorker;
  let server: ServerType;
  let apiUrl = '';

  beforeAll(async () => {
    apiPort = await freePort();
    apiUrl = `http://127.0.0.1:${apiPort}`;
    // The same glue `npm run dev` puts in front of localstripe.
    gateway = await startEmulatorGateway({
      port: await freePort(),
      upstream: localstripeUrl,
      webhookUrl: `${apiUrl}/webhooks/stripe`,
      webhookSecret: TEST_WEBHOOK_SECRET,
      checkoutPageUrl: (id) => `${apiUrl}/dev/checkout/${id}`,
    });
    config = testConfig({ NODE_ENV: 'development', STRIPE_API_BASE: gateway.baseUrl, PUBLIC_BASE_URL: apiUrl, TEMPORAL_TASK_QUEUE: uniqueId('dev-checkout-') });
    const seeded = await seedLocalstripeCatalog({ localstripeUrl, secretKey: config.STRIPE_SECRET_KEY, plans: PLANS });
    expect(seeded.created).toHaveLength(PLANS.length);
    db = await createTestDatabase();
    await syncPlans(db.sql, PLANS);
    temporal = await testClient();
    const stripe = createStripe({ secretKey: config.STRIPE_SECRET_KEY, apiBase: gateway.baseUrl, maxNetworkRetries: 0 });
    worker = await startTestWorker({ taskQueue: config.TEMPORAL_TASK_QUEUE, activities: createActivities({ sql: db.sql, stripe, config }) });
    const { app } = buildTestApp({ sql: db.sql, temporal, config, stripe });
    server = await new Promise<ServerType>((resolve) => {
      const s = serve({ fetch: app.fetch, port: apiPort, hostname: '127.0.0.1' }, () => resolve(s));
    });
    await registerWebhook(`${apiUrl}/webhooks/stripe`);
  });

  afterAll(async () => {
    await stopTestDispatchers();
    // localstripe cannot delete a webhook: point this one at no event type instead.
    await registerWebhook('http://127.0.0.1:9/unused', ['billing.dev-checkout.none']).catch(() => {});
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await gateway?.stop();
    await worker?.stop();
    await temporal?.connection.close();
    await db?.drop();
  });

  async function registerWebhook(url: string, events?: string[]): Promise<void> {
    const body = new URLSearchParams({ url, secret: TEST_WEBHOOK_SECRET });
    for (const e of events ?? []) body.append('events[]', e);
    const res = await fetch(`${localstripeUrl}/_config/webhooks/${hookId}`, { method: 'POST', body });
    if (!res.ok) throw new Error(`localstripe webhook registration failed: ${res.status}`);
  }

  async function checkout(planId: string): Promise<{ sessionId: string; url: string; customerId: string }> {
    const res = await fetch(`${apiUrl}/checkout`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ planId, email: `${uniqueId('buyer-')}@example.com`, successUrl: SUCCESS_URL, cancelUrl: CANCEL_URL }),
    });
    expect(res.status, await res.clone().text()).toBe(201);
    return (await res.json()) as { sessionId: string; url: string; customerId: string };
  }

  it('seeding the catalog into localstripe again creates nothing', async () => {
    const again = await seedLocalstripeCatalog({ localstripeUrl, secretKey: config.STRIPE_SECRET_KEY, plans: PLANS });
    expect(again).toEqual({ created: [], present: PLANS.map((p) => p.stripePriceId) });
  });

  it('answers POST /checkout with the local page, which shows the plan, the amount and the pay button', async () => {
    const session = await checkout('pro-monthly');
    expect(session.url).toBe(`${apiUrl}/dev/checkout/${session.sessionId}`);
    const page = await fetch(session.url);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await page.text();
    expect(html).toContain('Pro (monthly)');
    expect(html).toContain('$29.00 / month');
    expect(html).toMatch(/<form method="post" action="\/dev\/checkout\/cs_\w+\/complete"><button type="submit">Pay with test card<\/button>/);
    expect(html).toContain(`href="${CANCEL_URL}"`);
    // The emulator's own session url (what Stripe would call the hosted page) leads there too.
    const remote = await createStripe({ secretKey: config.STRIPE_SECRET_KEY, apiBase: gateway.baseUrl, maxNetworkRetries: 0 }).checkout.sessions.retrieve(session.sessionId);
    const viaGateway = await fetch(remote.url!, { redirect: 'manual' });
    expect(viaGateway.status).toBe(302);
    expect(viaGateway.headers.get('location')).toBe(session.url);
  });

  it('paying on the page redirects to success_url and the subscription is applied locally', async () => {
    const session = await checkout('basic-monthly');
    const paid = await fetch(`${apiUrl}/dev/checkout/${session.sessionId}/complete`, { method: 'POST', redirect: 'manual' });
    expect(paid.status, await paid.clone().text()).toBe(303);
    expect(paid.headers.get('location')).toBe(`https://app.example.com/welcome?session=${session.sessionId}`);

    // By signed webhooks only: localstripe's customer.subscription.created, the gateway's checkout.session.completed.
    const customer = await eventually(async () => {
      const res = await fetch(`${apiUrl}/customers/${session.customerId}`);
      const body = (await res.json()) as { accessState: string; subscription: { id: string; status: string; planId: string } | null };
      return res.status === 200 && body.subscription?.status === 'active' && body.subscription.planId === 'basic-monthly' ? body : null;
    }, 30_000, 'the subscription active on basic-monthly locally');
    const row = await eventually(async () => {
      const [r] = await db.sql<{ status: string; subscription_id: string | null }[]>`SELECT status, subscription_id FROM checkout_sessions WHERE id = ${session.sessionId}`;
      return r?.status === 'complete' ? r : null;
    }, 30_000, 'the checkout session complete locally');
    expect(row.subscription_id).toBe(customer.subscription!.id);

    // A second click (or a reload) goes where the first went; the page says there is nothing left to pay.
    const again = await fetch(`${apiUrl}/dev/checkout/${session.sessionId}/complete`, { method: 'POST', redirect: 'manual' });
    expect(again.status).toBe(303);
    expect(again.headers.get('location')).toBe(paid.headers.get('location'));
    const page = await (await fetch(session.url)).text();
    expect(page).not.toContain('Pay with test card');
    expect(page).toContain('nothing left to pay');
  });

  it('answers 404 for a session not created here', async () => {
    const res = await fetch(`${apiUrl}/dev/checkout/cs_test_unknown`);
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ error: 'checkout_session_not_found' });
  });

  it('is never served in production, and POST /checkout keeps Stripe\'s url there', async () => {
    const prodConfig = testConfig({ NODE_ENV: 'production', API_AUTH: 'none', STRIPE_API_BASE: gateway.baseUrl, PUBLIC_BASE_URL: apiUrl });
    const stripe = createStripe({ secretKey: prodConfig.STRIPE_SECRET_KEY, apiBase: gateway.baseUrl, maxNetworkRetries: 0 });
    const prod = buildTestApp({ sql: db.sql, temporal, config: prodConfig, stripe, dispatch: false });
    try {
      const created = await prod.app.request('/checkout', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ planId: 'basic-monthly', email: `${uniqueId('prod-')}@example.com`, successUrl: SUCCESS_URL, cancelUrl: CANCEL_URL }),
      });
      expect(created.status).toBe(201);
      const { sessionId, url } = (await created.json()) as { sessionId: string; url: string };
      expect(url).toBe(`${gateway.baseUrl}/_gateway/checkout/sessions/${sessionId}`);
      expect((await prod.app.request(`/dev/checkout/${sessionId}`)).status).toBe(404);
      expect((await prod.app.request(`/dev/checkout/${sessionId}/complete`, { method: 'POST' })).status).toBe(404);
    } finally {
      await prod.close();
    }
  });

  it('is enabled only in development, on an emulator, with a test key', () => {
    const base = { NODE_ENV: 'development', STRIPE_API_BASE: 'http://127.0.0.1:8421', STRIPE_SECRET_KEY: 'sk_test_x' } as const;
    expect(devCheckoutEnabled(base)).toBe(true);
    expect(devCheckoutEnabled({ ...base, NODE_ENV: 'production' })).toBe(false);
    expect(devCheckoutEnabled({ ...base, NODE_ENV: 'test' })).toBe(false);
    expect(devCheckoutEnabled({ ...base, STRIPE_API_BASE: undefined })).toBe(false);
    expect(devCheckoutEnabled({ ...base, STRIPE_SECRET_KEY: 'sk_live_x' })).toBe(false);
  });
});

describe('Mailpit in the dev stack', () => {
  it('is pinned and installed by npm run tools like the other tools', () => {
    const pinned = /^MAILPIT_VERSION=(\S+)/m.exec(readFileSync(path.join(ROOT, 'scripts', 'tools.sh'), 'utf8'))?.[1];
    expect(pinned).toBe('v1.33.1');
    expect(readFileSync(path.join(ROOT, '.tools', 'versions', 'mailpit'), 'utf8')).toBe(pinned);
    // A symlink to the real binary, so stopping the stack stops Mailpit itself.
    expect(readlinkSync(path.join(TOOLS_BIN, 'mailpit'))).toBe(path.join(ROOT, '.tools', 'go-bin', 'mailpit'));
  });

  it('startMailpit catches an email sent over SMTP, shows it on its API, and stops with the stack', async () => {
    const [smtpPort, httpPort] = [await freePort(), await freePort()];
    const logDir = tempDir('mailpit-test');
    const mailpit = await startMailpit({ smtpPort, httpPort, logDir });
    try {
      expect(mailpit.smtpUrl).toBe(`smtp://127.0.0.1:${smtpPort}`);
      const to = `${uniqueId('mp-')}@example.com`;
      await nodemailer.createTransport(mailpit.smtpUrl).sendMail({ from: 'Billing <billing@example.test>', to, subject: 'Payment failed', text: 'hello' });
      const found = await eventually(async () => {
        const body = (await (await fetch(`${mailpit.baseUrl}/api/v1/messages`)).json()) as { messages: { Subject: string; To: { Address: string }[] }[] };
        return body.messages.find((m) => m.To.some((a) => a.Address === to)) ?? null;
      }, 10_000, 'the email in Mailpit');
      expect(found.Subject).toBe('Payment failed');
    } finally {
      await mailpit.stop();
      rmSync(logDir, { recursive: true, force: true });
    }
    expect(await portInUse(smtpPort)).toBe(false);
    expect(await portInUse(httpPort)).toBe(false);
  });
});
