/** Steps 1 and 2: the plan catalog, then checkout to an active subscription. */
import { completeEmulatorCheckout, DEV_TEST_PAYMENT_METHOD } from '../../lib/dev-checkout';
import { seedLocalstripeCatalog } from '../emulator-gateway/gateway';
import { type DemoHarness, StepFailure, money, type Obj } from './harness';

/** 1. The plan catalog: GET /plans, and the same plans seeded in localstripe. */
export async function catalogStep(h: DemoHarness): Promise<boolean> {
  const { stack, ctx, api, ls, waitFor, step } = h;
  return step(1, 'plan catalog', async () => {
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
}

/** 2. Checkout → an active subscription (or a direct subscription where checkout is not available). */
export async function checkoutStep(h: DemoHarness): Promise<boolean> {
  const { stack, sql, run, ctx, api, ls, waitFor, describe, step } = h;
  return step(2, 'checkout and subscription', async () => {
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
  });
}
