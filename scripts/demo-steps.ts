/**
 * The demo story (`npm run demo`, test/e2e/demo.test.ts): six steps against a running dev stack on
 * local emulators. The emulator (localstripe) acts where it can; where it cannot, the demo posts signed
 * events built from the fixtures in test/fixtures/events/ and says so in its output:
 *   - invoice.payment_failed with a decline code (localstripe sends no event for a synchronous decline,
 *     and its errors carry no decline_code);
 *   - payment_method.attached (localstripe never sends payment_method.* events).
 * Plan changes and checkout go through scripts/emulator-gateway.ts (see its header); checkout is paid on
 * the API's dev checkout page (api/routes/dev-checkout.ts) when the stack serves it. The dunning step
 * shows the customer's email from Mailpit's API when the stack runs Mailpit.
 * Every expected state is read back from the API (Postgres for the notification ledger, which has no
 * endpoint) and must be reached within the step timeout, or the step fails.
 */
import { randomBytes } from 'node:crypto';
import {
  FIXTURE_CHARGE_ID,
  FIXTURE_CUSTOMER_ID,
  FIXTURE_INVOICE_ID,
  FIXTURE_PAYMENT_INTENT_ID,
  FIXTURE_PAYMENT_METHOD_ID,
  FIXTURE_PRICE_ID,
  FIXTURE_SUBSCRIPTION_ID,
  loadFixtureText,
} from '../test/fixtures';
import { dunningWorkflowId } from '../domain/ids';
import { createSql } from '../lib/db';
import { completeEmulatorCheckout, DEV_TEST_PAYMENT_METHOD } from '../lib/dev-checkout';
import { createTemporalClient } from '../lib/temporal';
import { deliverWebhook, seedLocalstripeCatalog, signWebhookPayload } from './emulator-gateway';
import type { DevStackState } from './demo-stack';

type Obj = Record<string, any>;

/** The stack the demo needs: a dev stack on the local emulators, with the emulator gateway. */
export interface DemoStack {
  apiUrl: string;
  temporalUiUrl: string;
  temporalAddress: string;
  databaseUrl: string;
  /** The emulator gateway (what the API and worker use as Stripe). */
  stripeApiBase: string;
  /** localstripe itself: the demo changes things behind the system's back here. */
  localstripeUrl: string;
  stripeSecretKey: string;
  webhookSecret: string;
  adminToken: string;
  /** Bearer token of the app-facing endpoints, when the API was started with API_TOKEN. */
  apiToken?: string | null;
  /** The worker's DUNNING_RETRY_DAYS (null: the default 1,3,5,7). */
  dunningRetryDays: string | null;
  /** Mailpit's web UI and API (null: the stack sends no email, or not to a local Mailpit). */
  mailpitUrl: string | null;
}

/** Checks that a dev stack can run the demo; returns what is missing otherwise. */
export function demoStackFrom(
  state: DevStackState,
  tokens: { adminToken?: string | undefined; apiToken?: string | undefined } = {},
): { ok: true; stack: DemoStack } | { ok: false; reason: string } {
  if (!state.stripeSecretKey || !state.webhookSecret) {
    return { ok: false, reason: 'this dev stack talks to a real Stripe account (STRIPE_SECRET_KEY set); the demo only runs on the local emulators' };
  }
  const adminToken = state.adminToken ?? tokens.adminToken;
  if (!adminToken) return { ok: false, reason: 'this dev stack uses your own ADMIN_TOKEN: run the demo with the same ADMIN_TOKEN in its environment' };
  if (!state.localstripeUrl || !state.stripeApiBase || state.localstripeUrl === state.stripeApiBase) {
    return { ok: false, reason: 'this dev stack predates the emulator gateway (no localstripeUrl in its state file): restart `npm run dev`' };
  }
  return {
    ok: true,
    stack: {
      apiUrl: state.apiUrl,
      temporalUiUrl: state.temporalUiUrl,
      temporalAddress: state.temporalAddress,
      databaseUrl: state.databaseUrl,
      stripeApiBase: state.stripeApiBase,
      localstripeUrl: state.localstripeUrl,
      stripeSecretKey: state.stripeSecretKey,
      webhookSecret: state.webhookSecret.split(',')[0]!.trim(),
      adminToken,
      apiToken: tokens.apiToken ?? null,
      dunningRetryDays: state.dunningRetryDays ?? null,
      mailpitUrl: state.mailpitUrl ?? null,
    },
  };
}

export interface DemoOptions {
  /** Longest wait for any one expected state (default 30 s). */
  stepTimeoutMs?: number;
  /** Where the step lines go (default stdout). */
  print?: (line: string) => void;
  /** Longest wait for the first scheduled dunning retry; a later one is reported, not awaited (default 90 s). */
  maxScheduledRetryWaitMs?: number;
}

export interface StepResult {
  step: number;
  title: string;
  ok: boolean;
  line: string;
  error?: string;
}

export interface DemoSummary {
  customerId: string | null;
  subscriptionId: string | null;
  events: number;
  deliveries: number;
  applied: number;
  duplicatesDropped: number;
  bySource: { localstripe: number; gateway: number; fixture: number };
  dunning: string;
  /** What Mailpit showed of the dunning email (or why nothing). */
  email: string;
  drift: string;
  rows: [string, string][];
}

export interface DemoReport {
  ok: boolean;
  steps: StepResult[];
  customerId: string | null;
  summary: DemoSummary;
}

class StepFailure extends Error {}

const DAY_MS = 86_400_000;
const money = (minor: number, currency = 'usd') => `${currency === 'usd' ? '$' : `${currency.toUpperCase()} `}${(minor / 100).toFixed(2)}`;
const day = (unix: number | null | undefined) => (unix ? new Date(unix * 1000).toISOString().slice(0, 10) : 'n/a');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const tag = () => randomBytes(4).toString('hex');

/** Runs the six steps; never throws for a failing step (it is reported), only for a broken stack. */
export async function runDemo(stack: DemoStack, options: DemoOptions = {}): Promise<DemoReport> {
  const stepTimeoutMs = options.stepTimeoutMs ?? 30_000;
  const print = options.print ?? ((line: string) => process.stdout.write(`${line}\n`));
  const sql = createSql(stack.databaseUrl, { max: 2, applicationName: 'billing-demo' });
  const steps: StepResult[] = [];
  const run = tag();
  const ctx: {
    plans: Obj[];
    base: Obj | null;
    upgrade: Obj | null;
    customerId: string | null;
    email: string | null;
    subscriptionId: string | null;
    renewalInvoiceId: string | null;
    dunningLine: string;
    emailLine: string;
    driftLine: string;
    runId: string | null;
  } = {
    plans: [],
    base: null,
    upgrade: null,
    customerId: null,
    email: null,
    subscriptionId: null,
    renewalInvoiceId: null,
    dunningLine: 'not reached',
    emailLine: 'not reached',
    driftLine: 'not reached',
    runId: null,
  };

  // ---------------------------------------------------------------------------------------- HTTP

  async function http(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Obj }> {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}), ...headers },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(Math.max(stepTimeoutMs, 35_000)),
    });
    const text = await res.text();
    let parsed: Obj;
    try {
      parsed = text ? (JSON.parse(text) as Obj) : {};
    } catch {
      parsed = { text };
    }
    return { status: res.status, body: parsed };
  }
  const api = (method: string, path: string, body?: unknown) =>
    http(stack.apiUrl, method, path, body, stack.apiToken ? { Authorization: `Bearer ${stack.apiToken}` } : {});
  const admin = (method: string, path: string, body?: unknown) => http(stack.apiUrl, method, path, body, { Authorization: `Bearer ${stack.adminToken}` });

  /** A call to localstripe itself (form-encoded, like Stripe's API). */
  async function ls(method: string, path: string, params?: Record<string, string>, base = stack.localstripeUrl): Promise<Obj> {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { Authorization: `Bearer ${stack.stripeSecretKey}`, ...(params ? { 'Content-Type': 'application/x-www-form-urlencoded' } : {}) },
      body: params ? new URLSearchParams(params).toString() : undefined,
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    let body: Obj;
    try {
      body = JSON.parse(text) as Obj;
    } catch {
      body = { text };
    }
    if (!res.ok) {
      const err = new Error(`${method} ${path} → ${res.status} ${body.error?.message ?? text.slice(0, 200)}`) as Error & { status: number };
      err.status = res.status;
      throw err;
    }
    return body;
  }

  function expectOk(res: { status: number; body: Obj }, what: string, statuses: number[] = [200, 201, 202]): Obj {
    if (!statuses.includes(res.status)) {
      throw new StepFailure(`${what}: HTTP ${res.status} ${res.body.error ?? ''} ${res.body.message ?? res.body.text ?? ''}`.trim());
    }
    return res.body;
  }

  /** Polls until `probe` returns a value; fails the step with the last observed state. */
  async function waitFor<T>(what: string, probe: () => Promise<{ done: T | null; seen: string }>, timeoutMs = stepTimeoutMs): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let seen = 'nothing yet';
    for (;;) {
      try {
        const r = await probe();
        seen = r.seen;
        if (r.done !== null) return r.done;
      } catch (err) {
        seen = `error: ${(err as Error).message}`;
      }
      if (Date.now() > deadline) throw new StepFailure(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}; last seen: ${seen}`);
      await sleep(300);
    }
  }

  async function customer(): Promise<Obj> {
    return expectOk(await api('GET', `/customers/${ctx.customerId}`), `GET /customers/${ctx.customerId}`);
  }

  const describe = (c: Obj): string => {
    const s = c.subscription;
    if (!s) return `no subscription, access ${c.accessState}`;
    const extras = [
      s.pendingPlanId ? `pending ${s.pendingPlanId}` : null,
      s.cancelAtPeriodEnd ? 'cancels at period end' : null,
      c.dunning && !['recovered', 'exhausted', 'canceled'].includes(c.dunning.state) ? `dunning ${c.dunning.state}` : null,
    ].filter(Boolean);
    return `${s.status} on ${s.planId ?? s.priceId}${extras.length ? ` (${extras.join(', ')})` : ''}, access ${c.accessState}`;
  };

  const link = () => (ctx.customerId ? `${stack.temporalUiUrl}/namespaces/default/workflows/customer:${ctx.customerId}` : stack.temporalUiUrl);

  /** Signs and posts a fixture-built event to our webhook endpoint (as Stripe would deliver it). */
  async function postEvent(event: Obj): Promise<Obj> {
    await Promise.all(pendingDeclines.splice(0));
    const out = await deliverWebhook(`${stack.apiUrl}/webhooks/stripe`, stack.webhookSecret, event);
    if (out.status !== 200) throw new StepFailure(`webhook ${String(event.type)} ${String(event.id)}: HTTP ${out.status} ${JSON.stringify(out.body)}`);
    return out.body;
  }

  async function step(n: number, title: string, body: () => Promise<string>): Promise<boolean> {
    const started = Date.now();
    try {
      const line = await body();
      const full = `[${n}/6] ${line}  (${((Date.now() - started) / 1000).toFixed(1)} s)  ${link()}`;
      steps.push({ step: n, title, ok: true, line: full });
      print(full);
      return true;
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const full = `[${n}/6] FAILED ${title}: ${message}  ${link()}`;
      steps.push({ step: n, title, ok: false, line: full, error: message });
      print(full);
      return false;
    }
  }

  // -------------------------------------------------------------------------------- fixture events

  /** A fixture envelope with the fixture's ids replaced by real ones, a fresh event id and `created` = now. */
  function fixtureEvent(type: string, ids: Record<string, string | null>): Obj {
    let text = loadFixtureText(type);
    for (const [from, to] of Object.entries(ids)) if (to) text = text.split(from).join(to);
    const envelope = JSON.parse(text) as Obj;
    envelope.id = `evt_fx${randomBytes(9).toString('hex')}`;
    envelope.created = Math.floor(Date.now() / 1000);
    envelope.request = { id: null, idempotency_key: null };
    return envelope;
  }

  const DECLINES: Record<string, { message: string; advice: string; network: string }> = {
    insufficient_funds: { message: 'Your card has insufficient funds.', advice: 'try_again_later', network: '51' },
    expired_card: { message: 'Your card has expired.', advice: 'do_not_try_again', network: '54' },
  };

  /** invoice.payment_failed for a real localstripe invoice, with the decline code localstripe cannot give. */
  function paymentFailedEvent(invoice: Obj, declineCode: string, attempt: number): Obj {
    const pi = typeof invoice.payment_intent === 'string' ? invoice.payment_intent : null;
    const charge = invoice.charge && typeof invoice.charge === 'object' ? String(invoice.charge.id) : null;
    const event = fixtureEvent('invoice.payment_failed', {
      [FIXTURE_INVOICE_ID]: invoice.id,
      [FIXTURE_CUSTOMER_ID]: ctx.customerId,
      [FIXTURE_SUBSCRIPTION_ID]: ctx.subscriptionId,
      [FIXTURE_PAYMENT_INTENT_ID]: pi,
      [FIXTURE_CHARGE_ID]: charge,
      [FIXTURE_PRICE_ID]: ctx.upgrade?.stripePriceId ?? null,
    });
    const o = event.data.object as Obj;
    const d = DECLINES[declineCode]!;
    o.amount_due = invoice.amount_due;
    o.amount_remaining = invoice.amount_due;
    o.subtotal = o.total = o.subtotal_excluding_tax = o.total_excluding_tax = invoice.amount_due;
    o.currency = invoice.currency;
    o.attempt_count = attempt;
    o.created = invoice.created ?? event.created;
    o.hosted_invoice_url = null;
    o.invoice_pdf = null;
    o.next_payment_attempt = null;
    o.period_start = invoice.period_start ?? o.period_start;
    o.period_end = invoice.period_end ?? o.period_end;
    if (o.parent?.subscription_details?.metadata) o.parent.subscription_details.metadata = { plan_id: ctx.upgrade?.id ?? null };
    const line = o.lines?.data?.[0];
    if (line) {
      line.amount = invoice.amount_due;
      line.description = `1 × ${ctx.upgrade?.name ?? 'plan'} (renewal)`;
    }
    // Today's webhook invoice says nothing about the decline; Stripe holds it on the invoice's payment.
    // localstripe knows no decline codes, so the gateway is told what Stripe would hold (see its header).
    void registerDecline(String(invoice.id), { decline_code: declineCode, advice_code: d.advice, network_decline_code: d.network });
    return event;
  }

  const pendingDeclines: Promise<unknown>[] = [];
  function registerDecline(invoiceId: string, decline: Obj): void {
    pendingDeclines.push(http(stack.stripeApiBase, 'POST', `/_gateway/invoices/${encodeURIComponent(invoiceId)}/decline`, decline));
  }

  // ==================================================================================== 1. catalog
  await step(1, 'plan catalog', async () => {
    const plans = await waitFor('the plan catalog (GET /plans, synced by the worker from config/plans.json)', async () => {
      const res = await api('GET', '/plans');
      const data = (res.body.data ?? []) as Obj[];
      return { done: res.status === 200 && data.length > 0 ? data : null, seen: `HTTP ${res.status}, ${data.length} plans` };
    });
    ctx.plans = plans;
    // `npm run dev` seeds them at startup; an older stack may not have: the same idempotent seeding.
    const seeded = await seedLocalstripeCatalog({
      localstripeUrl: stack.localstripeUrl,
      secretKey: stack.stripeSecretKey,
      plans: plans.map((p) => ({ id: String(p.id), stripePriceId: String(p.stripePriceId), name: String(p.name), amount: Number(p.amount), currency: String(p.currency), interval: String(p.interval) })),
    });
    for (const p of plans) await ls('GET', `/v1/plans/${encodeURIComponent(String(p.stripePriceId))}`);
    const monthly = plans.filter((p) => p.interval === 'month').sort((a, b) => a.rank - b.rank);
    ctx.base = monthly[0] ?? null;
    ctx.upgrade = monthly[1] ?? null;
    if (!ctx.base || !ctx.upgrade) throw new StepFailure('the catalog needs two monthly plans for the story');
    const first = plans[0]!;
    const last = plans[plans.length - 1]!;
    const where = seeded.created.length === 0 ? 'seeded by npm run dev' : `${seeded.created.length} created now`;
    return `catalog: ${plans.length} plans (GET /plans, synced from config/plans.json) in localstripe as Plans with the catalog's ids, ${where} (${first.stripePriceId} ${money(first.amount, first.currency)} … ${last.stripePriceId} ${money(last.amount, last.currency)})`;
  });

  // ============================================================================ 2. checkout → active
  const subscribed = ctx.base
    ? await step(2, 'checkout and subscription', async () => {
        const base = ctx.base!;
        const email = `demo+${run}@example.com`;
        ctx.email = email;
        let how: string;
        const checkout = await api('POST', '/checkout', {
          email,
          planId: base.id,
          successUrl: 'http://localhost/demo/success?session_id={CHECKOUT_SESSION_ID}',
          cancelUrl: 'http://localhost/demo/cancel',
          requestId: `demo-${run}`,
        });
        if (checkout.status === 201 || checkout.status === 200) {
          ctx.customerId = checkout.body.customerId;
          const sessionId = String(checkout.body.sessionId);
          const pageUrl = String(checkout.body.url ?? '');
          if (pageUrl.includes('/dev/checkout/')) {
            // The customer opens the url POST /checkout answered: the API's dev checkout page…
            const page = await fetch(pageUrl, { signal: AbortSignal.timeout(15_000) });
            const html = await page.text();
            if (page.status !== 200 || !html.includes('Pay with test card')) throw new StepFailure(`GET ${pageUrl}: HTTP ${page.status}, expected the dev checkout page: ${html.slice(0, 200)}`);
            // …and clicks "Pay with test card": the emulator pays (lib/dev-checkout.ts), then Stripe-style redirect to success_url.
            const paid = await fetch(`${pageUrl}/complete`, { method: 'POST', redirect: 'manual', signal: AbortSignal.timeout(30_000) });
            const location = paid.headers.get('location') ?? '';
            if (paid.status !== 303 || !location.includes(sessionId)) throw new StepFailure(`POST ${pageUrl}/complete: HTTP ${paid.status} ${location || (await paid.text()).slice(0, 300)}`);
            how = `POST /checkout → ${pageUrl.replace(sessionId, `${sessionId.slice(0, 18)}…`)}, "Pay with test card" (${DEV_TEST_PAYMENT_METHOD}) → 303 to the success_url`;
          } else {
            // No dev page on this stack (NODE_ENV is not development): what its button does, called directly.
            const done = await completeEmulatorCheckout({ apiBase: stack.stripeApiBase, secretKey: stack.stripeSecretKey, sessionId }).catch((err: Error) => {
              throw new StepFailure(`completing checkout ${sessionId}: ${err.message}`);
            });
            ctx.subscriptionId = done.subscription;
            how = `POST /checkout → ${sessionId.slice(0, 18)}…, paid with ${DEV_TEST_PAYMENT_METHOD} on the (emulated) hosted page`;
          }
        } else {
          // Checkout is not available on this stack: subscribe directly on localstripe, as Stripe would.
          const cus = await ls('POST', '/v1/customers', { email, payment_method: 'pm_card_visa', 'invoice_settings[default_payment_method]': 'pm_card_visa' });
          ctx.customerId = cus.id;
          const sub = await ls('POST', '/v1/subscriptions', { customer: cus.id, 'items[0][plan]': base.stripePriceId, 'metadata[plan_id]': base.id });
          ctx.subscriptionId = sub.id;
          how = `POST /checkout answered ${checkout.status} (${checkout.body.message ?? checkout.body.error}); subscribed directly on localstripe with pm_card_visa`;
        }
        const c = await waitFor(`subscription ${ctx.subscriptionId ?? ''} active on ${base.id} locally (localstripe webhooks)`, async () => {
          const res = await api('GET', `/customers/${ctx.customerId}`);
          const s = res.body.subscription;
          return { done: res.status === 200 && s?.status === 'active' && s.planId === base.id ? res.body : null, seen: res.status === 200 ? describe(res.body) : `HTTP ${res.status}` };
        });
        ctx.subscriptionId ??= String(c.subscription.id);
        const sessions = await sql<{ status: string }[]>`SELECT status FROM checkout_sessions WHERE request_id = ${`demo-${run}`}`.catch(() => []);
        let checkoutState = '';
        if (sessions[0]) {
          const session = await waitFor('checkout session complete locally (checkout.session.completed)', async () => {
            const rows = await sql<{ status: string }[]>`SELECT status FROM checkout_sessions WHERE request_id = ${`demo-${run}`}`;
            return { done: rows[0]?.status === 'complete' ? rows[0] : null, seen: rows[0]?.status ?? 'no row' };
          });
          checkoutState = `, checkout ${session.status}`;
        }
        return `subscribed ${email} (${ctx.customerId}) to ${base.id}: ${how}; localstripe's signed webhooks → local: ${describe(c)}${checkoutState}`;
      })
    : false;

  if (!subscribed || !ctx.customerId || !ctx.subscriptionId) {
    for (const [n, title] of [[3, 'plan changes'], [4, 'dunning'], [5, 'reconciliation'], [6, 'redelivery']] as const) {
      steps.push({ step: n, title, ok: false, line: `[${n}/6] SKIPPED ${title}: no subscription`, error: 'no subscription' });
      print(`[${n}/6] SKIPPED ${title}: needs the subscription of step 2`);
    }
    await sql.end({ timeout: 5 });
    return { ok: false, steps, customerId: ctx.customerId, summary: await emptySummary() };
  }

  // ======================================================================= 3. upgrade, downgrade
  await step(3, 'upgrade with proration preview, downgrade at period end', async () => {
    const base = ctx.base!;
    const up = ctx.upgrade!;
    const preview = expectOk(await api('POST', `/customers/${ctx.customerId}/subscription/plan/preview`, { planId: up.id }), `preview ${up.id}`);
    const change = await api('PUT', `/customers/${ctx.customerId}/subscription/plan`, { planId: up.id, requestId: `demo-${run}-up`, prorationDate: preview.prorationDate });
    const result = expectOk(change, `PUT plan ${up.id}`, [200]);
    if (result.status !== 'confirmed') throw new StepFailure(`upgrade answered ${result.status}: ${result.message}`);
    await waitFor(`plan ${up.id} locally (customer.subscription.updated)`, async () => {
      const c = await customer();
      return { done: c.subscription?.planId === up.id ? c : null, seen: describe(c) };
    });
    const down = expectOk(await api('PUT', `/customers/${ctx.customerId}/subscription/plan`, { planId: base.id, requestId: `demo-${run}-down` }), `PUT plan ${base.id}`, [202]);
    if (down.status !== 'scheduled') throw new StepFailure(`downgrade answered ${down.status}: ${down.message}`);
    const c = await waitFor(`pendingPlanId ${base.id} locally`, async () => {
      const c = await customer();
      return { done: c.subscription?.pendingPlanId === base.id && c.subscription?.planId === up.id ? c : null, seen: describe(c) };
    });
    const estimate = preview.estimate ? ` (time-based estimate ${money(preview.estimate.net, preview.currency)})` : '';
    return `upgrade ${base.id} → ${up.id}: preview ${money(preview.amountDueNow, preview.currency)} due now${estimate}; PUT → ${result.status}, invoice ${result.invoiceId ?? 'n/a'} paid; downgrade ${up.id} → ${base.id} ${down.status} for ${day(down.effectiveAt)} → local: ${describe(c)}`;
  });

  // ============================================================================ 4. dunning
  await step(4, 'dunning: soft then hard decline, recovery with a new card', async () => {
    const customerId = ctx.customerId!;
    const retryDays = (stack.dunningRetryDays ?? '1,3,5,7').split(',').map(Number);
    const firstRetryMs = (retryDays[0] ?? 1) * DAY_MS;
    const maxWait = options.maxScheduledRetryWaitMs ?? 90_000;
    // The renewal: the customer's card now declines at charge time (localstripe test card 4000000000000341).
    const failing = await ls('POST', '/v1/payment_methods/pm_card_chargeCustomerFail/attach', { customer: customerId });
    await ls('POST', `/v1/customers/${customerId}`, { 'invoice_settings[default_payment_method]': failing.id });
    const draft = await ls('POST', '/v1/invoices', { customer: customerId, subscription: ctx.subscriptionId! });
    ctx.renewalInvoiceId = draft.id;
    const declined = await ls('POST', `/v1/invoices/${draft.id}/pay`);
    if (declined.status !== 'open') throw new StepFailure(`renewal invoice ${draft.id} is ${declined.status}, expected a declined (open) invoice`);
    // localstripe sends no event for that synchronous decline and knows no decline codes: the fixture says what Stripe would.
    await postEvent(paymentFailedEvent(declined, 'insufficient_funds', 1));
    const started = await waitFor('a dunning cycle retrying after insufficient_funds', async () => {
      const c = await customer();
      const d = c.dunning;
      return { done: d?.invoiceId === draft.id && d.state === 'retrying' && d.nextAttemptAt ? c : null, seen: d ? `${d.state} (${d.lastDeclineCode})` : 'no cycle' };
    });
    // One notice for the failure (the ledger row is written right after the cycle's state).
    const notices1 = await waitFor('the payment_failed notice in the notification ledger', async () => {
      const rows = await noticesFor(draft.id);
      return { done: rows.some((n) => n.status !== 'suppressed') ? rows : null, seen: rows.map((n) => `${n.kind}/${n.status}`).join(', ') || 'none' };
    });
    // Looked for while the cycle goes on; never fails the step (the sender may be off, or in quiet hours).
    const emailSeen = emailInMailpit(ctx.email ?? '', notices1.map((n) => `${n.kind}/${n.status}`).join(', '));
    let retryPart: string;
    if (firstRetryMs <= maxWait) {
      await waitFor(`retry #1 at ${started.dunning.nextAttemptAt}`, async () => {
        const c = await customer();
        return { done: (c.dunning?.attempt ?? 0) >= 1 ? c : null, seen: `${c.dunning?.state} attempt ${c.dunning?.attempt}` };
      }, firstRetryMs + stepTimeoutMs);
      retryPart = `retry #1 after ${(firstRetryMs / 1000).toFixed(0)} s declined again`;
    } else {
      retryPart = `retry #1 scheduled for ${started.dunning.nextAttemptAt} (this stack's DUNNING_RETRY_DAYS=${stack.dunningRetryDays ?? '1,3,5,7 (default)'}; not awaited)`;
    }
    const afterRetry = await ls('GET', `/v1/invoices/${draft.id}`);
    await postEvent(paymentFailedEvent(afterRetry, 'expired_card', 2));
    await waitFor('dunning waiting for a new payment method after expired_card', async () => {
      const c = await customer();
      return { done: c.dunning?.state === 'awaiting_payment_method' ? c : null, seen: `${c.dunning?.state} (${c.dunning?.lastDeclineCode})` };
    });
    // The customer adds a good card: real on localstripe; payment_method.attached is a fixture (localstripe never sends it).
    const good = await ls('POST', '/v1/payment_methods/pm_card_visa/attach', { customer: customerId });
    await ls('POST', `/v1/customers/${customerId}`, { 'invoice_settings[default_payment_method]': good.id });
    const attached = fixtureEvent('payment_method.attached', { [FIXTURE_PAYMENT_METHOD_ID]: good.id, [FIXTURE_CUSTOMER_ID]: customerId });
    attached.data.object.card = { ...attached.data.object.card, brand: 'visa', display_brand: 'visa', last4: String(good.card?.last4 ?? '4242') };
    await postEvent(attached);
    const c = await waitFor('dunning recovered and the subscription active', async () => {
      const c = await customer();
      const d = c.dunning;
      return { done: d?.invoiceId === draft.id && d.state === 'recovered' && c.subscription?.status === 'active' ? c : null, seen: `${describe(c)}; dunning ${d?.state} attempt ${d?.attempt}` };
    });
    // The cycle's last act mirrors the subscription from Stripe: let it finish before anything else changes Stripe.
    const temporal = await createTemporalClient({ address: stack.temporalAddress, namespace: 'default' });
    try {
      await waitFor(`workflow ${dunningWorkflowId(draft.id)} completed`, async () => {
        const d = await temporal.workflow.getHandle(dunningWorkflowId(draft.id)).describe();
        return { done: d.status.name === 'COMPLETED' ? d : null, seen: d.status.name };
      });
    } finally {
      await temporal.connection.close();
    }
    const paid = await ls('GET', `/v1/invoices/${draft.id}`);
    if (paid.status !== 'paid') throw new StepFailure(`invoice ${draft.id} is ${paid.status} on localstripe after recovery`);
    const notices = await noticesFor(draft.id);
    // The customer is told once about the failure; the hard decline within the notice spacing sends no
    // second reminder (held back, then withdrawn at recovery); an outcome notice (recovered) may follow.
    const toldAtFirstFailure = notices1.filter((n) => n.status !== 'suppressed').length;
    const remindersSent = notices.filter((n) => n.kind !== 'recovered' && n.kind !== 'final_notice' && n.status === 'sent');
    const ledger = notices.map((n) => `${n.kind}/${n.status}`).join(', ') || 'none';
    if (toldAtFirstFailure !== 1 || remindersSent.length > 1) throw new StepFailure(`expected one notice at the first failure and at most one reminder sent, ledger has: ${ledger}`);
    const noticeState = (st: string) => (st === 'canceled' ? 'withdrawn at recovery' : st === 'suppressed' ? 'suppressed by the notice spacing' : st);
    ctx.emailLine = await emailSeen;
    ctx.dunningLine = `recovered after ${c.dunning.attempt} ${c.dunning.attempt === 1 ? 'retry' : 'retries'} (insufficient_funds → expired_card → new card); 1 notice at the first failure (ledger: ${notices.map((n) => `${n.kind} ${noticeState(n.status)}`).join('; ')})`;
    return `renewal ${draft.id} ${money(declined.amount_due, declined.currency)} declined on localstripe; fixture invoice.payment_failed insufficient_funds (soft) → dunning retrying, access ${started.accessState}, 1 notice; ${retryPart}; fixture invoice.payment_failed expired_card (hard) → awaiting_payment_method; new card ${good.id} (+ fixture payment_method.attached) → retry paid → local: ${describe(c)}, dunning ${c.dunning.state} after ${c.dunning.attempt} attempts; ${ctx.emailLine}`;
  });

  /** The customer's email as Mailpit's API shows it (polled up to timeoutMs), or why there is none. */
  async function emailInMailpit(to: string, noticeState: string, timeoutMs = 10_000): Promise<string> {
    if (!stack.mailpitUrl) return 'email sending not configured';
    const deadline = Date.now() + timeoutMs;
    let seen = 'no email to it yet';
    for (;;) {
      try {
        const res = await fetch(`${stack.mailpitUrl}/api/v1/messages?limit=100`, { signal: AbortSignal.timeout(3000) });
        if (!res.ok) seen = `Mailpit answered HTTP ${res.status}`;
        else {
          const messages = ((await res.json()) as { messages?: Obj[] }).messages ?? [];
          // Newest first: the oldest one to this customer is the failure notice.
          const mail = [...messages].reverse().find((m) => ((m.To ?? []) as Obj[]).some((a) => String(a.Address).toLowerCase() === to.toLowerCase()));
          if (mail) return `email "${mail.Subject}" to ${mail.To.map((a: Obj) => a.Address).join(', ')} in Mailpit ${stack.mailpitUrl}/view/${mail.ID}`;
        }
      } catch (err) {
        seen = `Mailpit unreachable: ${(err as Error).message}`;
      }
      if (Date.now() > deadline) return `no email to ${to} in Mailpit ${stack.mailpitUrl} within ${Math.round(timeoutMs / 1000)} s (${seen}; notice ${noticeState})`;
      await sleep(500);
    }
  }

  async function noticesFor(invoiceId: string): Promise<{ kind: string; status: string }[]> {
    return sql<{ kind: string; status: string }[]>`SELECT kind, status FROM notifications WHERE invoice_id = ${invoiceId} ORDER BY id`;
  }

  // ======================================================================= 5. drift + reconciliation
  await step(5, 'drift and reconciliation', async () => {
    const subId = ctx.subscriptionId!;
    const before = await customer();
    if (before.subscription?.cancelAtPeriodEnd !== false) throw new StepFailure(`expected cancelAtPeriodEnd false locally before the drift, saw ${describe(before)}`);
    // Behind the system's back: straight to localstripe (not the gateway), which sends no webhook for an update.
    const changed = await ls('POST', `/v1/subscriptions/${subId}`, { cancel_at_period_end: 'true' });
    if (changed.cancel_at_period_end !== true) throw new StepFailure('localstripe did not accept cancel_at_period_end');
    await sleep(1500);
    const still = await customer();
    if (still.subscription?.cancelAtPeriodEnd !== false) throw new StepFailure('the local row changed without reconciliation: the drift did not happen behind its back');
    const started = expectOk(await admin('POST', '/admin/reconciliations', { repairWaitSeconds: 30 }), 'POST /admin/reconciliations', [202]);
    ctx.runId = started.runId;
    const run = await waitFor(`drift on ${subId} found and repaired by ${started.runId}`, async () => {
      const res = await admin('GET', `/admin/reconciliations/${encodeURIComponent(started.runId)}?limit=500`);
      const mine = ((res.body.drift ?? []) as Obj[]).filter((d) => d.subscriptionId === subId);
      const done = mine.length > 0 && mine.every((d) => d.repairStatus === 'repaired') ? { run: res.body, mine } : null;
      return { done, seen: `run ${res.body.status ?? res.status}, scanned ${res.body.scanned ?? '?'}, drift on ${subId}: ${mine.map((d) => `${d.field} ${d.repairStatus}`).join(', ') || 'none'}` };
    });
    const c = await waitFor('cancelAtPeriodEnd true locally', async () => {
      const c = await customer();
      return { done: c.subscription?.cancelAtPeriodEnd === true ? c : null, seen: describe(c) };
    });
    const fields = run.mine.map((d: Obj) => `${d.field} ${d.localValue} → ${d.stripeValue}`).join(', ');
    ctx.driftLine = `${run.mine.length} found on ${subId} (${fields}), ${run.mine.filter((d: Obj) => d.repairStatus === 'repaired').length} repaired; run ${started.runId}: scanned ${run.run.scanned}, drifted ${run.run.drifted}`;
    return `set cancel_at_period_end=true on localstripe without a webhook (local still false); POST /admin/reconciliations → ${started.runId}: drift ${fields}, ${run.mine[0]?.repairStatus} via the customer workflow → local: ${describe(c)}`;
  });

  // =========================================================================== 6. redelivery
  await step(6, 'webhook redelivered three times, applied once', async () => {
    // A real localstripe event (the recovery's invoice.payment_succeeded), redelivered the way Stripe retries: same id, new signature.
    const events = (await ls('GET', '/v1/events?limit=100&type=invoice.payment_succeeded')).data as Obj[];
    let event = events.find((e) => e.data?.object?.id === ctx.renewalInvoiceId) ?? null;
    if (!event) {
      const created = (await ls('GET', '/v1/events?limit=100&type=customer.subscription.created')).data as Obj[];
      event = created.find((e) => e.data?.object?.id === ctx.subscriptionId) ?? null;
    }
    if (!event) throw new StepFailure('found no localstripe event of this customer to redeliver');
    const first = await waitFor(`${event.id} applied`, async () => {
      const res = await admin('GET', `/admin/webhook-events/${event!.id}`);
      return { done: res.status === 200 && res.body.status === 'applied' ? res.body : null, seen: res.status === 200 ? `${res.body.status}, attempts ${res.body.attempts}` : `HTTP ${res.status}` };
    });
    const payload = JSON.stringify(event, null, 2);
    const answers: Obj[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${stack.apiUrl}/webhooks/stripe`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json; charset=utf-8', 'Stripe-Signature': signWebhookPayload(payload, stack.webhookSecret) },
        body: payload,
      });
      const body = (await res.json()) as Obj;
      if (res.status !== 200) throw new StepFailure(`redelivery ${i + 1}: HTTP ${res.status} ${JSON.stringify(body)}`);
      answers.push(body);
    }
    const after = expectOk(await admin('GET', `/admin/webhook-events/${event.id}`), `GET /admin/webhook-events/${event.id}`);
    const applied = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM applied_events WHERE event_id = ${String(event.id)}`;
    if (after.attempts !== first.attempts + 3) throw new StepFailure(`attempts ${after.attempts}, expected ${first.attempts + 3}`);
    if (!answers.every((a) => a.duplicate === true)) throw new StepFailure(`a redelivery was not recognised as a duplicate: ${JSON.stringify(answers)}`);
    if (after.status !== 'applied' || after.appliedAt !== first.appliedAt || applied[0]?.n !== 1) {
      throw new StepFailure(`expected one application, saw status ${after.status}, appliedAt ${after.appliedAt} (was ${first.appliedAt}), applied_events rows ${applied[0]?.n}`);
    }
    return `${event.type} ${event.id} (from localstripe) redelivered 3× with the same id → each answered duplicate; GET /admin/webhook-events/${event.id}: attempts ${after.attempts}, status ${after.status}, applied once at ${String(after.appliedAt).slice(11, 19)} (${after.appliedOutcome ?? 'applied'})`;
  });

  const summary = await buildSummary();
  await sql.end({ timeout: 5 });
  return { ok: steps.every((s) => s.ok), steps, customerId: ctx.customerId, summary };

  // ----------------------------------------------------------------------------------- summary

  async function emptySummary(): Promise<DemoSummary> {
    return {
      customerId: ctx.customerId,
      subscriptionId: ctx.subscriptionId,
      events: 0,
      deliveries: 0,
      applied: 0,
      duplicatesDropped: 0,
      bySource: { localstripe: 0, gateway: 0, fixture: 0 },
      dunning: ctx.dunningLine,
      email: ctx.emailLine,
      drift: ctx.driftLine,
      rows: [],
    };
  }

  async function buildSummary(): Promise<DemoSummary> {
    const res = await admin('GET', `/admin/webhook-events?customer=${ctx.customerId}&limit=500`);
    const rows = (res.body.data ?? []) as Obj[];
    const bySource = { localstripe: 0, gateway: 0, fixture: 0 };
    for (const r of rows) {
      const id = String(r.eventId);
      if (id.startsWith('evt_fx')) bySource.fixture++;
      else if (id.startsWith('evt_gw')) bySource.gateway++;
      else bySource.localstripe++;
    }
    const deliveries = rows.reduce((s, r) => s + Number(r.attempts ?? 1), 0);
    const applied = rows.filter((r) => r.status === 'applied').length;
    const byStatus = rows.reduce<Record<string, number>>((acc, r) => ({ ...acc, [r.status]: (acc[r.status] ?? 0) + 1 }), {});
    const out: DemoSummary = {
      customerId: ctx.customerId,
      subscriptionId: ctx.subscriptionId,
      events: rows.length,
      deliveries,
      applied,
      duplicatesDropped: deliveries - rows.length,
      bySource,
      dunning: ctx.dunningLine,
      email: ctx.emailLine,
      drift: ctx.driftLine,
      rows: [],
    };
    out.rows = [
      ['customer', `${ctx.customerId} (subscription ${ctx.subscriptionId})`],
      ['events received', `${rows.length} (${bySource.localstripe} from localstripe, ${bySource.gateway} from the emulator gateway, ${bySource.fixture} signed fixtures), ${deliveries} deliveries`],
      ['events applied', `${applied}${Object.entries(byStatus).filter(([s]) => s !== 'applied').map(([s, n]) => `, ${n} ${s}`).join('')}`],
      ['duplicates dropped', `${out.duplicatesDropped} (redeliveries acknowledged, never re-applied)`],
      ['dunning', ctx.dunningLine],
      ['email', ctx.emailLine],
      ['drift', ctx.driftLine],
      ['steps', `${steps.filter((s) => s.ok).length}/6 passed${steps.some((s) => !s.ok) ? ` — failed: ${steps.filter((s) => !s.ok).map((s) => s.step).join(', ')}` : ''}`],
    ];
    return out;
  }
}

/** The summary as an aligned two-column table. */
export function formatSummary(summary: DemoSummary): string {
  const width = Math.max(...summary.rows.map(([k]) => k.length));
  const line = '─'.repeat(width + 2);
  return [`┌${line}┬${'─'.repeat(40)}`, ...summary.rows.map(([k, v]) => `│ ${k.padEnd(width)} │ ${v}`), `└${line}┴${'─'.repeat(40)}`].join('\n');
}
