/**
 * The checkout and subscription HTTP contract through createApp(...).request: bad input (400, 404,
 * 415), idempotent checkout, the plan list and the checkout success rate. Stripe is stripe-mock.
 */
import Stripe from 'stripe';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it, vi } from 'vitest';
import type { Plan } from '../../domain/plan-catalog';
import { subscriptionVersion } from '../../domain/plan-change';
import { syncPlans } from '../../lib/plan-catalog-sync';
import { loadCurrentSubscription } from '../../lib/subscriptions';
import { createStripe } from '../../lib/stripe';
import { buildTestApp } from '../helpers/app';
import { useTestStack } from '../helpers/harness';
import { cardUpdateToken, cardUpdateUrl } from '../../lib/card-update-link';
import { TEST_ADMIN_TOKEN, testConfig, uniqueId } from '../helpers/services';

const PLANS: Plan[] = [
  { id: 'basic-monthly', stripePriceId: 'price_api_basic', name: 'Basic', amount: 900, currency: 'usd', interval: 'month', rank: 10, active: true },
  { id: 'pro-monthly', stripePriceId: 'price_api_pro', name: 'Pro', amount: 2900, currency: 'usd', interval: 'month', rank: 20, active: true },
  { id: 'pro-yearly', stripePriceId: 'price_api_pro_y', name: 'Pro (yearly)', amount: 29000, currency: 'usd', interval: 'year', rank: 21, active: true },
  { id: 'retired', stripePriceId: 'price_api_retired', name: 'Retired', amount: 500, currency: 'usd', interval: 'month', rank: 5, active: false },
];

const URLS = { successUrl: 'https://app.example.com/ok', cancelUrl: 'https://app.example.com/no' };

type ErrorBody = { error: string; message: string; details?: { path: string; message: string }[] };

describe('checkout and subscription HTTP API', () => {
  const stripe = createStripe({ secretKey: 'sk_test_123', apiBase: inject('stripeMockUrl'), maxNetworkRetries: 0 });
  const stack = useTestStack({ activities: false, app: { stripe }, seed: ({ sql }) => syncPlans(sql, PLANS).then(() => undefined) });
  const { config } = stack;

  beforeEach(() => {
    vi.restoreAllMocks();
  });


  const send = (method: string, path: string, body: unknown, headers: Record<string, string> = { 'Content-Type': 'application/json' }) =>
    stack.app.request(path, { method, headers, body: typeof body === 'string' ? body : JSON.stringify(body) });

  async function customerWith(status: string | null): Promise<string> {
    const customerId = `cus_${uniqueId()}`;
    await stack.sql`INSERT INTO customers (id, email) VALUES (${customerId}, ${`${customerId}@example.com`})`;
    if (status) {
      await stack.sql`
        INSERT INTO subscriptions (id, customer_id, status, plan_id, price_id, current_period_start, current_period_end, stripe_updated_at)
        VALUES (${`sub_${uniqueId()}`}, ${customerId}, ${status}, 'basic-monthly', 'price_api_basic', now() - interval '5 days', now() + interval '25 days', now())`;
    }
    return customerId;
  }

  describe('GET /plans', () => {
    it('lists active plans by rank, without retired ones', async () => {
      const res = await stack.app.request('/plans');
      expect(res.status).toBe(200);
      const body = (await res.json()) as { data: { id: string; amount: number; interval: string }[] };
      expect(body.data.map((p) => p.id)).toEqual(['basic-monthly', 'pro-monthly', 'pro-yearly']);
      expect(body.data[1]).toMatchObject({ id: 'pro-monthly', amount: 2900, currency: 'usd', interval: 'month', rank: 20 });
    });
  });

  describe('POST /checkout', () => {
    it('creates a session, records it open, and returns sessionId and url', async () => {
      const requestId = uniqueId('ck-');
      const res = await send('POST', '/checkout', { planId: 'basic-monthly', email: 'buyer@example.com', requestId, ...URLS });
      expect(res.status).toBe(201);
      const body = (await res.json()) as { sessionId: string; url: string; requestId: string };
      expect(body).toMatchObject({ sessionId: expect.stringMatching(/^cs_/), url: expect.stringMatching(/^https:\/\//), requestId });
      const rows = await stack.sql`SELECT plan_id, status, request_id, url FROM checkout_sessions WHERE id = ${body.sessionId}`;
      expect(rows[0]).toMatchObject({ plan_id: 'basic-monthly', status: 'open', request_id: requestId, url: body.url });
    });

    it('returns the same session for the same requestId without a second Stripe session', async () => {
      const create = vi.spyOn(stripe.checkout.sessions, 'create');
      const requestId = uniqueId('ck-');
      const body = { planId: 'pro-monthly', email: 'twice@example.com', requestId, ...URLS };
      const first = await send('POST', '/checkout', body);
      const second = await send('POST', '/checkout', body);
      expect([first.status, second.status]).toEqual([201, 200]);
      const [a, b] = (await Promise.all([first.json(), second.json()])) as { sessionId: string; url: string }[];
      expect(b!.sessionId).toBe(a!.sessionId);
      expect(b!.url).toBe(a!.url);
      expect(create).toHaveBeenCalledTimes(1);
      const count = await stack.sql`SELECT count(*)::int AS n FROM checkout_sessions WHERE request_id = ${requestId}`;
      expect(count[0]!.n).toBe(1);
    });

    it('answers 409 when a requestId is reused for another plan', async () => {
      const requestId = uniqueId('ck-');
      expect((await send('POST', '/checkout', { planId: 'basic-monthly', email: 'r@example.com', requestId, ...URLS })).status).toBe(201);
      const res = await send('POST', '/checkout', { planId: 'pro-monthly', email: 'r@example.com', requestId, ...URLS });
      expect(res.status).toBe(409);
      expect(((await res.json()) as ErrorBody).error).toBe('request_id_reused');
    });

    it('reuses a known customer instead of creating one', async () => {
      const customerId = await customerWith(null);
      const createCustomer = vi.spyOn(stripe.customers, 'create');
      const res = await send('POST', '/checkout', { planId: 'pro-monthly', customerId, ...URLS });
      expect(res.status).toBe(201);
      expect(((await res.json()) as { customerId: string }).customerId).toBe(customerId);
      expect(createCustomer).not.toHaveBeenCalled();
    });

    it.each([
      ['an unknown plan', { planId: 'platinum', email: 'a@example.com', ...URLS }, ['planId']],
      ['a retired plan', { planId: 'retired', email: 'a@example.com', ...URLS }, ['planId']],
      ['neither customerId nor email', { planId: 'basic-monthly', ...URLS }, ['customerId']],
      ['invalid URLs', { planId: 'basic-monthly', email: 'a@example.com', successUrl: 'ftp://x.example.com', cancelUrl: 'not a url' }, ['successUrl', 'cancelUrl']],
      ['a malformed email and customer id', { planId: 'basic-monthly', email: 'nope', customerId: 'user_1', ...URLS }, ['customerId', 'email']],
      ['a zero trial', { planId: 'basic-monthly', email: 'a@example.com', trialDays: 0, ...URLS }, ['trialDays']],
      ['a bad requestId', { planId: 'basic-monthly', email: 'a@example.com', requestId: 'has spaces', ...URLS }, ['requestId']],
    ])('answers 400 with field errors for %s', async (_label, body, paths) => {
      const create = vi.spyOn(stripe.checkout.sessions, 'create');
      const res = await send('POST', '/checkout', body);
      expect(res.status).toBe(400);
      const err = (await res.json()) as ErrorBody;
      expect(err.error).toBe('validation_error');
      expect(err.details!.map((d) => d.path).sort()).toEqual([...paths].sort());
      expect(create).not.toHaveBeenCalled();
    });

    it('answers 400 for a body that is not JSON', async () => {
      const res = await send('POST', '/checkout', '{"planId":');
      expect(res.status).toBe(400);
      expect(((await res.json()) as ErrorBody).error).toBe('invalid_json');
    });

    it('answers 400 naming an unknown field, and creates nothing', async () => {
      const create = vi.spyOn(stripe.checkout.sessions, 'create');
      const res = await send('POST', '/checkout', { planId: 'basic-monthly', email: 'a@example.com', trial_days: 7, ...URLS });
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({
        error: 'validation_error',
        message: 'request body is invalid',
        details: [{ path: 'trial_days', message: 'trial_days is not a known field' }],
      });
      expect(create).not.toHaveBeenCalled();
    });

    it('answers 400 with one plain message per field, not zod wording', async () => {
      const res = await send('POST', '/checkout', { planId: 7, email: 'a@example.com', trialDays: 'soon' });
      expect(res.status).toBe(400);
      const err = (await res.json()) as ErrorBody;
      expect(err.details).toEqual(
        expect.arrayContaining([
          { path: 'planId', message: 'planId must be a string' },
          { path: 'trialDays', message: 'trialDays must be a number' },
          { path: 'successUrl', message: 'successUrl is required' },
          { path: 'cancelUrl', message: 'cancelUrl is required' },
        ]),
      );
      expect(err.details).toHaveLength(4);
      expect(JSON.stringify(err)).not.toMatch(/Invalid input|expected|received/);
    });

    it('answers 405 with Allow: POST for another method', async () => {
      for (const method of ['GET', 'PUT', 'DELETE']) {
        const res = await stack.app.request('/checkout', { method });
        expect(res.status, method).toBe(405);
        expect(res.headers.get('allow'), method).toBe('POST');
        expect(((await res.json()) as ErrorBody).error).toBe('method_not_allowed');
      }
    });

    it('answers 415 for a non-JSON content type', async () => {
      const res = await send('POST', '/checkout', 'planId=basic-monthly', { 'Content-Type': 'application/x-www-form-urlencoded' });
      expect(res.status).toBe(415);
    });

    it('answers 404 for a customer this service does not know', async () => {
      const res = await send('POST', '/checkout', { planId: 'basic-monthly', customerId: 'cus_NeverSeen', ...URLS });
      expect(res.status).toBe(404);
      expect(((await res.json()) as ErrorBody).error).toBe('customer_not_found');
    });

    it('answers 409 for a customer who already has a live subscription', async () => {
      const customerId = await customerWith('active');
      const res = await send('POST', '/checkout', { planId: 'pro-monthly', customerId, ...URLS });
      expect(res.status).toBe(409);
      expect(((await res.json()) as ErrorBody).error).toBe('already_subscribed');
    });
  });

  describe('GET /checkout/sessions/{id}', () => {
    it("answers the session's local status: open, then complete with its subscription and the customer's access", async () => {
      const customerId = await customerWith(null);
      const sessionId = `cs_test_${uniqueId().replace(/-/g, '')}`;
      // Dated outside the success-rate windows another test here counts.
      await stack.sql`
        INSERT INTO checkout_sessions (id, customer_id, plan_id, status, created_at)
        VALUES (${sessionId}, ${customerId}, 'pro-monthly', 'open', now() - interval '10 days')`;
      const open = await stack.app.request(`/checkout/sessions/${sessionId}`);
      expect(open.status).toBe(200);
      expect(await open.json()).toMatchObject({ sessionId, status: 'open', customerId, planId: 'pro-monthly', subscriptionId: null, subscriptionStatus: null, completedAt: null });

      // What applying checkout.session.completed and the subscription's events leaves behind.
      const subscriptionId = `sub_${uniqueId()}`;
      await stack.sql`
        INSERT INTO subscriptions (id, customer_id, status, plan_id, price_id, current_period_start, current_period_end, stripe_updated_at)
        VALUES (${subscriptionId}, ${customerId}, 'active', 'pro-monthly', 'price_api_pro', now(), now() + interval '30 days', now())`;
      await stack.sql`UPDATE customers SET access_state = 'active' WHERE id = ${customerId}`;
      await stack.sql`UPDATE checkout_sessions SET status = 'complete', subscription_id = ${subscriptionId}, completed_at = now() - interval '10 days' WHERE id = ${sessionId}`;
      const done = await stack.app.request(`/checkout/sessions/${sessionId}`);
      expect(await done.json()).toMatchObject({ status: 'complete', subscriptionId, subscriptionStatus: 'active', accessState: 'active', completedAt: expect.any(String) });
    });

    it('answers 404 for a session not created here and 400 for an id that is not a session id', async () => {
      const missing = await stack.app.request('/checkout/sessions/cs_test_nothere');
      expect(missing.status).toBe(404);
      expect(((await missing.json()) as ErrorBody).error).toBe('checkout_session_not_found');
      expect((await stack.app.request('/checkout/sessions/sub_123')).status).toBe(400);
    });
  });

  describe('POST /customers/{id}/billing-portal', () => {
    it('creates a Stripe Billing Portal session for a known customer, with the return URL the app gave', async () => {
      const customerId = await customerWith('past_due');
      const create = vi.spyOn(stripe.billingPortal.sessions, 'create');
      const res = await send('POST', `/customers/${customerId}/billing-portal`, { returnUrl: 'https://app.example.com/account' });
      expect(res.status).toBe(201);
      const body = (await res.json()) as { customerId: string; url: string };
      expect(body.customerId).toBe(customerId);
      expect(body.url).toMatch(/^https?:\/\//);
      expect(create).toHaveBeenCalledWith({ customer: customerId, return_url: 'https://app.example.com/account' });
    });

    it('answers 404 for an unknown customer, 409 for a deleted one and 400 for a bad return URL, without calling Stripe', async () => {
      const create = vi.spyOn(stripe.billingPortal.sessions, 'create');
      const unknown = await send('POST', `/customers/cus_${uniqueId()}/billing-portal`, { returnUrl: 'https://app.example.com/' });
      expect(unknown.status).toBe(404);
      expect(((await unknown.json()) as ErrorBody).error).toBe('customer_not_found');

      const deleted = await customerWith(null);
      await stack.sql`UPDATE customers SET deleted = true WHERE id = ${deleted}`;
      const gone = await send('POST', `/customers/${deleted}/billing-portal`, { returnUrl: 'https://app.example.com/' });
      expect(gone.status).toBe(409);
      expect(((await gone.json()) as ErrorBody).error).toBe('customer_deleted');

      const customerId = await customerWith('active');
      for (const returnUrl of ['javascript:alert(1)', 'not a url', undefined]) {
        const bad = await send('POST', `/customers/${customerId}/billing-portal`, returnUrl === undefined ? {} : { returnUrl });
        expect(bad.status, String(returnUrl)).toBe(400);
      }
      expect((await send('POST', '/customers/bad-id/billing-portal', { returnUrl: 'https://a.example/' })).status).toBe(400);
      expect(create).not.toHaveBeenCalled();
    });

    it('answers 503 when Stripe cannot be reached', async () => {
      const customerId = await customerWith('active');
      vi.spyOn(stripe.billingPortal.sessions, 'create').mockRejectedValueOnce(
        new Stripe.errors.StripeConnectionError({ message: 'connect ECONNREFUSED' } as never),
      );
      const res = await send('POST', `/customers/${customerId}/billing-portal`, { returnUrl: 'https://app.example.com/' });
      expect(res.status).toBe(503);
      expect(((await res.json()) as ErrorBody).error).toBe('stripe_unavailable');
    });
  });

  describe('GET /billing/card-update/{token} (the stable link in emails)', () => {
    it('opens a fresh Billing Portal session on every visit, without the API token, returning to PUBLIC_BASE_URL', async () => {
      const customerId = await customerWith('past_due');
      const guarded = buildTestApp({ sql: stack.sql, temporal: stack.client, config: testConfig({ API_TOKEN: 'app-token-0123456789abcdef', PUBLIC_BASE_URL: 'https://billing.example.com' }), stripe, dispatch: false }).app;
      const create = vi.spyOn(stripe.billingPortal.sessions, 'create');
      const url = cardUpdateUrl(customerId, testConfig({ PUBLIC_BASE_URL: 'https://billing.example.com' }));
      expect(url).toMatch(/^https:\/\/billing\.example\.com\/billing\/card-update\//);
      const path = new URL(url).pathname;
      for (let visit = 0; visit < 2; visit++) {
        const res = await guarded.request(path);
        expect(res.status).toBe(303);
        expect(res.headers.get('location')).toMatch(/^https?:\/\//);
        expect(res.headers.get('cache-control')).toBe('no-store');
      }
      expect(create).toHaveBeenCalledTimes(2);
      expect(create).toHaveBeenCalledWith({ customer: customerId, return_url: 'https://billing.example.com' });
    });

    it('answers 404 for a forged, tampered or foreign token, and for a deleted customer, without calling Stripe', async () => {
      const customerId = await customerWith('active');
      const other = await customerWith('active');
      const create = vi.spyOn(stripe.billingPortal.sessions, 'create');
      const token = cardUpdateToken(customerId, config);
      const [, mac] = token.split('.');
      const forged = `${Buffer.from(other).toString('base64url')}.${mac}`;
      const otherKey = cardUpdateToken(customerId, testConfig({ LINK_SIGNING_SECRET: 'another-secret-0123456789' }));
      for (const bad of [forged, otherKey, `${token}x`, 'nope', `${token.slice(0, -1)}A`]) {
        const res = await stack.app.request(`/billing/card-update/${bad}`);
        expect(res.status, bad).toBe(404);
        expect(((await res.json()) as ErrorBody).error).toBe('link_not_found');
      }
      await stack.sql`UPDATE customers SET deleted = true WHERE id = ${customerId}`;
      expect((await stack.app.request(`/billing/card-update/${token}`)).status).toBe(404);
      expect(create).not.toHaveBeenCalled();
    });
  });

  describe('subscription routes on bad input', () => {
    it('answers 400 for a malformed customer id', async () => {
      const res = await send('PUT', '/customers/not-a-customer/subscription/plan', { planId: 'pro-monthly', requestId: 'r1' });
      expect(res.status).toBe(400);
      expect(((await res.json()) as ErrorBody).error).toBe('invalid_customer_id');
    });

    it.each([
      ['PUT', 'plan', { planId: 'pro-monthly' }, ['requestId']],
      ['PUT', 'plan', { requestId: 'r1' }, ['planId']],
      ['PUT', 'plan', { planId: 'pro-monthly', requestId: 'r1', prorationDate: 'yesterday' }, ['prorationDate']],
      ['POST', 'cancel', { atPeriodEnd: 'yes', requestId: 'r1' }, ['atPeriodEnd']],
      ['POST', 'resume', {}, ['requestId']],
      ['POST', 'plan/preview', {}, ['planId']],
    ])('answers 400 for %s %s with a bad body', async (method, suffix, body, paths) => {
      const res = await send(method, `/customers/cus_BadBody01/subscription/${suffix}`, body);
      expect(res.status).toBe(400);
      expect(((await res.json()) as ErrorBody).details!.map((d) => d.path)).toEqual(paths);
    });

    it('answers 415 for a plan change that is not JSON', async () => {
      const res = await send('PUT', '/customers/cus_Form01/subscription/plan', 'planId=pro', { 'Content-Type': 'text/plain' });
      expect(res.status).toBe(415);
    });

    it('answers 404 when the customer has no billing workflow', async () => {
      const res = await send('PUT', `/customers/cus_${uniqueId()}/subscription/plan`, { planId: 'pro-monthly', requestId: 'r1' });
      expect(res.status).toBe(404);
      const err = (await res.json()) as ErrorBody;
      expect(err.error).toBe('customer_not_found');
      expect(err.message).toContain('no billing workflow');
    });

    it('answers 404 to a preview for an unknown customer or one without a subscription', async () => {
      const unknown = await send('POST', '/customers/cus_NoSuchCustomer/subscription/plan/preview', { planId: 'pro-monthly' });
      expect(unknown.status).toBe(404);
      expect(((await unknown.json()) as ErrorBody).error).toBe('customer_not_found');
      const bare = await customerWith(null);
      const none = await send('POST', `/customers/${bare}/subscription/plan/preview`, { planId: 'pro-monthly' });
      expect(none.status).toBe(404);
      expect(((await none.json()) as ErrorBody).error).toBe('no_subscription');
    });

    it('answers 422 to a preview of an unknown plan and 409 to the current plan', async () => {
      const customerId = await customerWith('active');
      const unknown = await send('POST', `/customers/${customerId}/subscription/plan/preview`, { planId: 'platinum' });
      expect(unknown.status).toBe(422);
      expect(((await unknown.json()) as ErrorBody).error).toBe('unknown_plan');
      const same = await send('POST', `/customers/${customerId}/subscription/plan/preview`, { planId: 'basic-monthly' });
      expect(same.status).toBe(409);
      expect(((await same.json()) as ErrorBody).error).toBe('same_plan');
    });

    it('previews a downgrade as nothing due now and the new price from the period end', async () => {
      const customerId = await customerWith('active');
      await stack.sql`UPDATE subscriptions SET plan_id = 'pro-monthly', price_id = 'price_api_pro' WHERE customer_id = ${customerId}`;
      const res = await send('POST', `/customers/${customerId}/subscription/plan/preview`, { planId: 'basic-monthly' });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { kind: string; amountDueNow: number; amountDueNext: number; effectiveAt: number };
      const end = await stack.sql`SELECT floor(extract(epoch FROM current_period_end))::int AS t FROM subscriptions WHERE customer_id = ${customerId}`;
      expect(body).toMatchObject({ kind: 'downgrade', amountDueNow: 0, amountDueNext: 900, effectiveAt: end[0]!.t });
    });

    it('bills every seat at the new price in a downgrade preview', async () => {
      const customerId = await customerWith('active');
      await stack.sql`UPDATE subscriptions SET plan_id = 'pro-monthly', price_id = 'price_api_pro', quantity = 3 WHERE customer_id = ${customerId}`;
      const res = await send('POST', `/customers/${customerId}/subscription/plan/preview`, { planId: 'basic-monthly' });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ kind: 'downgrade', amountDueNext: 3 * 900 });
    });

    it('returns the prorationDate and subscriptionVersion the commit must carry', async () => {
      const customerId = await customerWith('active');
      const version = subscriptionVersion((await loadCurrentSubscription(stack.sql, customerId))!);
      const before = Math.floor(Date.now() / 1000);
      const up = await send('POST', `/customers/${customerId}/subscription/plan/preview`, { planId: 'pro-monthly' });
      expect(up.status).toBe(200);
      const body = (await up.json()) as { kind: string; prorationDate: number; subscriptionVersion: string };
      expect(body).toMatchObject({ kind: 'upgrade', subscriptionVersion: version });
      expect(body.prorationDate).toBeGreaterThanOrEqual(before);
      // Any change of the row the preview read gives another version.
      await stack.sql`UPDATE subscriptions SET current_period_end = current_period_end + interval '1 month' WHERE customer_id = ${customerId}`;
      const again = (await (await send('POST', `/customers/${customerId}/subscription/plan/preview`, { planId: 'pro-monthly' })).json()) as { subscriptionVersion: string };
      expect(again.subscriptionVersion).not.toBe(version);
    });

    it('answers 409 subscription_canceling to a downgrade preview of a subscription set to cancel at period end', async () => {
      const customerId = await customerWith('active');
      await stack.sql`UPDATE subscriptions SET plan_id = 'pro-monthly', price_id = 'price_api_pro', cancel_at_period_end = true WHERE customer_id = ${customerId}`;
      const res = await send('POST', `/customers/${customerId}/subscription/plan/preview`, { planId: 'basic-monthly' });
      expect(res.status).toBe(409);
      const err = (await res.json()) as ErrorBody;
      expect(err.error).toBe('subscription_canceling');
      expect(err.message).toContain('resume it first');
    });
  });

  describe('checkout success rate', () => {
    it('reports completed / (completed + expired) in the window on the admin API and as a gauge', async () => {
      const insert = (status: string, endedHoursAgo: number) => stack.sql`
        INSERT INTO checkout_sessions (id, customer_id, plan_id, request_id, status, completed_at, expired_at, created_at)
        VALUES (${`cs_${uniqueId()}`}, 'cus_rate', 'basic-monthly', ${uniqueId('rate-')}, ${status},
          ${status === 'complete' ? stack.sql`now() - make_interval(hours => ${endedHoursAgo})` : null},
          ${status === 'expired' ? stack.sql`now() - make_interval(hours => ${endedHoursAgo})` : null},
          now() - make_interval(hours => ${endedHoursAgo + 1}))`;
      await insert('complete', 1);
      await insert('complete', 2);
      await insert('complete', 3);
      await insert('expired', 4);
      await insert('expired', 48); // outside a 24 h window
      const auth = { Authorization: `Bearer ${TEST_ADMIN_TOKEN}` };

      const res = await stack.app.request('/admin/checkout/success-rate?windowHours=24', { headers: auth });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ windowHours: 24, completed: 3, expired: 1, successRate: 0.75, target: 0.98, meetsTarget: false });
      const wide = (await (await stack.app.request('/admin/checkout/success-rate?windowHours=72', { headers: auth })).json()) as { successRate: number };
      expect(wide.successRate).toBe(0.6);

      expect((await stack.app.request('/admin/checkout/success-rate')).status).toBe(401);
      expect((await stack.app.request('/admin/checkout/success-rate?windowHours=0', { headers: auth })).status).toBe(400);

      const metrics = await (await stack.app.request('/metrics')).text();
      expect(metrics).toMatch(/^billing_checkout_success_rate 0\.75$/m);
      expect(metrics).toMatch(/^billing_checkout_sessions\{outcome="expired"\} 1$/m);
    });
  });
});
