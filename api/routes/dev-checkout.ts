/**
 * DEV ONLY — the local stand-in for Stripe's hosted checkout page, for `npm run dev` on the emulators:
 * GET /dev/checkout/:sessionId shows the plan and amount with a "Pay with test card" button; its POST
 * /dev/checkout/:sessionId/complete has the emulator pay (lib/dev-checkout.ts) and redirects to the
 * session's success_url. The subscription then arrives the way it would from Stripe: by signed webhooks.
 * api/app.ts mounts these routes only when devCheckoutEnabled(config): NEVER in production.
 */
import { Hono } from 'hono';
import type Stripe from 'stripe';
import { formatAmount } from '../../domain/notice-templates';
import type { Sql } from '../../lib/db';
import { completeEmulatorCheckout, DEV_TEST_PAYMENT_METHOD, EmulatorCheckoutError, successRedirectUrl } from '../../lib/dev-checkout';
import { ApiError } from '../errors';

/** Checkout Session ids (Stripe `cs_test_…`). */
const CHECKOUT_SESSION_ID = /^cs_[A-Za-z0-9_]{1,250}$/;

type PageRow = {
  id: string;
  status: string;
  customer_id: string;
  plan_id: string;
  plan_name: string | null;
  amount: number | null;
  currency: string | null;
  interval: string | null;
  trial_days: number | null;
  email: string | null;
};

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]!);


/** GET /dev/checkout/:sessionId and POST /dev/checkout/:sessionId/complete (mount only in development). */
export function devCheckoutRoutes(deps: {
  sql: Sql;
  stripe: Pick<Stripe, 'checkout'>;
  /** The emulator gateway (STRIPE_API_BASE) and the key the API uses with it. */
  stripeApiBase: string;
  stripeSecretKey: string;
}): Hono {
  const { sql } = deps;
  const app = new Hono();

  async function sessionRow(sessionId: string): Promise<PageRow> {
    if (!CHECKOUT_SESSION_ID.test(sessionId)) throw new ApiError(400, 'invalid_session_id', 'sessionId must look like cs_…');
    const rows = await sql<PageRow[]>`
      SELECT s.id, s.status, s.customer_id, s.plan_id, p.name AS plan_name, p.amount, p.currency, p.interval::text AS interval,
             s.trial_days, c.email
      FROM checkout_sessions s
      LEFT JOIN plans p ON p.id = s.plan_id
      LEFT JOIN customers c ON c.id = s.customer_id
      WHERE s.id = ${sessionId}`;
    if (!rows[0]) throw new ApiError(404, 'checkout_session_not_found', `no checkout session ${sessionId} created here`);
    return rows[0];
  }

  /** The emulator's copy of the session (success/cancel URLs), or null when it no longer knows it (restarted). */
  async function emulatorSession(sessionId: string): Promise<Stripe.Checkout.Session | null> {
    try {
      return await deps.stripe.checkout.sessions.retrieve(sessionId);
    } catch {
      return null;
    }
  }

  app.get('/dev/checkout/:sessionId', async (c) => {
    const row = await sessionRow(c.req.param('sessionId'));
    const remote = await emulatorSession(row.id);
    const e = escapeHtml;
    const price = row.amount !== null && row.currency ? `${formatAmount(row.amount, row.currency)}${row.interval ? ` / ${row.interval}` : ''}` : 'unknown amount';
    const open = row.status === 'open' && remote?.status !== 'complete';
    const action = `/dev/checkout/${encodeURIComponent(row.id)}/complete`;
    const body = open
      ? remote
        ? `<form method="post" action="${e(action)}"><button type="submit">Pay with test card</button></form>
           <p class="note">Pays with the emulator's test card <code>${DEV_TEST_PAYMENT_METHOD}</code> (4242 4242 4242 4242). No money moves.</p>
           ${remote.cancel_url ? `<p><a href="${e(remote.cancel_url)}">Cancel</a></p>` : ''}`
        : `<p class="note">The Stripe emulator no longer knows this session (it keeps sessions in memory; was <code>npm run dev</code> restarted?): create a new one with POST /checkout.</p>`
      : `<p>This session is <strong>${e(remote?.status ?? row.status)}</strong>: nothing left to pay.</p>
         ${remote?.success_url ? `<p><a href="${e(successRedirectUrl(remote.success_url, row.id))}">Continue</a></p>` : ''}`;
    return c.html(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Checkout (dev) — ${e(row.plan_name ?? row.plan_id)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}
.banner{background:#fff3cd;border:1px solid #e0c36b;padding:.5rem .75rem;border-radius:4px;font-size:.9rem}
.amount{font-size:2rem;margin:.25rem 0}button{font-size:1.1rem;padding:.6rem 1.4rem;cursor:pointer}
.note{color:#555;font-size:.9rem}dt{color:#666;font-size:.85rem;margin-top:.5rem}dd{margin:0}</style></head>
<body>
<p class="banner">Development checkout on the local Stripe emulator. Never served in production.</p>
<h1>${e(row.plan_name ?? row.plan_id)}</h1>
<p class="amount">${e(price)}</p>
<dl><dt>Plan</dt><dd>${e(row.plan_id)}</dd>
${row.trial_days ? `<dt>Trial</dt><dd>${row.trial_days} days</dd>` : ''}
<dt>Customer</dt><dd>${e(row.email ?? row.customer_id)}</dd>
<dt>Session</dt><dd><code>${e(row.id)}</code></dd></dl>
${body}
</body></html>`);
  });

  app.post('/dev/checkout/:sessionId/complete', async (c) => {
    const row = await sessionRow(c.req.param('sessionId'));
    let successUrl: string | null;
    try {
      const done = await completeEmulatorCheckout({ apiBase: deps.stripeApiBase, secretKey: deps.stripeSecretKey, sessionId: row.id });
      successUrl = done.success_url;
    } catch (err) {
      if (!(err instanceof EmulatorCheckoutError)) throw err;
      // Paid already (a second click, a reload): go where the first payment went.
      const remote = await emulatorSession(row.id);
      if (remote?.status !== 'complete') {
        if (err.status === 0) throw new ApiError(503, 'stripe_unavailable', err.message);
        throw new ApiError(422, 'emulator_cannot_complete', `the Stripe emulator at ${deps.stripeApiBase} could not complete ${row.id}: ${err.message}`);
      }
      successUrl = remote.success_url;
    }
    if (!successUrl) return c.redirect(`/dev/checkout/${encodeURIComponent(row.id)}`, 303);
    return c.redirect(successRedirectUrl(successUrl, row.id), 303);
  });

  return app;
}
