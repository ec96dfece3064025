/**
 * EMULATOR GLUE — for `npm run dev` / `npm run demo` on local emulators only. NEVER used in production:
 * `scripts/dev.ts` starts it only when no STRIPE_SECRET_KEY is given, and nothing under api/, worker/,
 * activities/ or workflows/ knows it exists (they just see STRIPE_API_BASE).
 *
 * A small HTTP proxy in front of localstripe (see ../shared/EMULATORS.md). Every request is forwarded to
 * localstripe unchanged, EXCEPT the ones below, which localstripe cannot serve the way Stripe does:
 *
 *  1. POST /v1/subscriptions/:id (update)
 *     - drops `proration_behavior`, `payment_behavior`, `billing_cycle_anchor`, `default_payment_method`,
 *       `pause_collection[...]` (localstripe answers 500 to them); an update left empty answers the
 *       subscription unchanged (localstripe answers 400 to an empty update);
 *     - renames `items[i][price]` to `items[i][plan]` (localstripe has Plans, no Prices; with `price`
 *       the item update would be a silent no-op);
 *     - with `proration_behavior=always_invoice` and a changed plan: creates and pays the proration
 *       invoice at once, as Stripe does (POST /v1/invoices + /pay on localstripe; amounts are
 *       localstripe's: new plan minus what was already invoiced, not time-based);
 *     - then POSTs a signed `customer.subscription.updated` (built from the resulting object, with
 *       `previous_attributes`) to our webhook endpoint — localstripe never sends that event.
 *  2. Every subscription object in a response (retrieve, list, update, cancel) gets what the pinned
 *     API version reads and localstripe lacks: `items.data[].price` (mirroring the item's plan),
 *     `items.data[].current_period_start/_end` (from the subscription), and `schedule` (see 4).
 *  3. POST /v1/invoices/:id/pay: drops `off_session` (localstripe answers 500 to it) and `payment_method`
 *     (localstripe pays with the customer's default method, which the demo sets to the new card).
 *     GET /v1/invoices?status=…: localstripe rejects `status` and `expand`: lists without them and
 *     filters by status here.
 *     POST /v1/invoices/create_preview: renames `subscription_details[items][i][price]` to `[plan]` and
 *     drops `subscription_details[proration_behavior]`; if localstripe still fails, answers a preview
 *     computed from localstripe's plan amounts (new plan, minus the current plan as "Unused time").
 *  4. /v1/subscription_schedules (create from_subscription, retrieve, update, release, cancel): kept in
 *     memory here, because localstripe has no schedules. They never run (localstripe has no clock
 *     either): a scheduled downgrade stays pending.
 *  5. POST /v1/checkout/sessions, GET /v1/checkout/sessions/:id: a fake session (`cs_test_…`, a `url`
 *     on this gateway that redirects to `checkoutPageUrl` when given: the API's dev checkout page),
 *     idempotent by Idempotency-Key. Only when asked —
 *     POST /_gateway/checkout/sessions/:id/complete (the "customer pays on the hosted page") — it
 *     attaches the card (default pm_card_visa), creates the subscription on localstripe (real webhooks
 *     follow from localstripe) and POSTs a signed `checkout.session.completed`.
 *  6. GET /v1/events?delivery_success=false: localstripe does not track deliveries, so: an empty page.
 *     GET /v1/invoice_payments?invoice=…: localstripe has none: an empty page, or, for an invoice whose
 *     decline the demo registered (POST /_gateway/invoices/:id/decline with decline_code, advice_code,
 *     network_decline_code), one invoice payment whose PaymentIntent carries that last_payment_error,
 *     the way Stripe holds a decline today (webhook invoices say nothing about it).
 *  7. GET /_gateway/health: liveness of this gateway.
 * Beside it, seedLocalstripeCatalog: the plan catalog created in localstripe (as Plans, it has no Prices).
 */
import { createHmac, randomBytes } from 'node:crypto';
import http from 'node:http';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const now = () => Math.floor(Date.now() / 1000);
const rand = (n: number) => randomBytes(n).toString('base64url').replace(/[^A-Za-z0-9]/g, '').slice(0, n);
const idOf = (v: unknown): string | null => (typeof v === 'string' ? v : isObj(v) && typeof v.id === 'string' ? v.id : null);

// ------------------------------------------------------------------------------------------ webhooks

/** The Stripe-Signature header for `payload` (what Stripe and localstripe send: `t=…,v1=HMAC(secret, "t.payload")`). */
export function signWebhookPayload(payload: string, secret: string, timestamp = now()): string {
  const v1 = createHmac('sha256', secret).update(`${timestamp}.${payload}`).digest('hex');
  return `t=${timestamp},v1=${v1}`;
}

/** One delivery of a signed event to a webhook endpoint; returns the status and the JSON answer. */
export async function deliverWebhook(url: string, secret: string, event: Obj): Promise<{ status: number; body: Obj }> {
  const payload = JSON.stringify(event, null, 2);
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json; charset=utf-8', 'Stripe-Signature': signWebhookPayload(payload, secret) },
    body: payload,
  });
  const text = await res.text();
  let body: Obj = {};
  try {
    body = JSON.parse(text) as Obj;
  } catch {
    body = { text };
  }
  return { status: res.status, body };
}

/** An event envelope as Stripe sends it. */
export function eventEnvelope(type: string, object: Obj, opts: { apiVersion?: string; previousAttributes?: Obj; idempotencyKey?: string | null } = {}): Obj {
  return {
    id: `evt_gw${rand(20)}`,
    object: 'event',
    api_version: opts.apiVersion ?? '2017-08-15',
    created: now(),
    data: { object, ...(opts.previousAttributes ? { previous_attributes: opts.previousAttributes } : {}) },
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: opts.idempotencyKey ?? null },
    type,
  };
}

// ------------------------------------------------------------------------------------------ form bodies

/** `a[b][0][c]=v` form encoding → nested objects and arrays (what Stripe's SDK sends). */
export function parseForm(params: URLSearchParams): Obj {
  const root: Obj = {};
  for (const [key, value] of params) {
    const parts = key.replace(/\]/g, '').split('[');
    let node: Obj = root;
    parts.forEach((part, i) => {
      const last = i === parts.length - 1;
      const k = part === '' ? String(Object.keys(node).length) : part;
      if (last) node[k] = value;
      else node = (isObj(node[k]) ? node[k] : (node[k] = {})) as Obj;
    });
  }
  const arrays = (v: unknown): unknown => {
    if (!isObj(v)) return v;
    const keys = Object.keys(v);
    if (keys.length > 0 && keys.every((k) => /^\d+$/.test(k))) return keys.sort((a, b) => Number(a) - Number(b)).map((k) => arrays(v[k]));
    return Object.fromEntries(keys.map((k) => [k, arrays(v[k])]));
  };
  return arrays(root) as Obj;
}

const num = (v: unknown): number | null => (v === undefined || v === null || v === '' ? null : Number(v));

// ------------------------------------------------------------------------------------------ plan catalog

/** A catalog plan, as config/plans.json or GET /plans describe it. */
export interface EmulatorCatalogPlan {
  id: string;
  stripePriceId: string;
  name: string;
  amount: number;
  currency: string;
  interval: string;
}

/**
 * Creates each catalog plan in localstripe as a Product + a Plan whose id is the catalog's
 * stripePriceId (localstripe has Plans, not Prices; the gateway reads `price` as `plan`). Idempotent:
 * a plan already there is left as it is (localstripe answers 409 to a second create of an id).
 */
export async function seedLocalstripeCatalog(opts: {
  localstripeUrl: string;
  secretKey: string;
  plans: EmulatorCatalogPlan[];
}): Promise<{ created: string[]; present: string[] }> {
  const call = async (method: string, path: string, params?: Record<string, string>) => {
    const res = await fetch(`${opts.localstripeUrl}${path}`, {
      method,
      headers: { Authorization: `Bearer ${opts.secretKey}`, ...(params ? { 'Content-Type': 'application/x-www-form-urlencoded' } : {}) },
      body: params ? new URLSearchParams(params).toString() : undefined,
      signal: AbortSignal.timeout(15_000),
    });
    return { status: res.status, text: await res.text() };
  };
  const result = { created: [] as string[], present: [] as string[] };
  for (const p of opts.plans) {
    const planPath = `/v1/plans/${encodeURIComponent(p.stripePriceId)}`;
    if ((await call('GET', planPath)).status === 200) {
      result.present.push(p.stripePriceId);
      continue;
    }
    const product = `prod_${p.id.replace(/[^A-Za-z0-9_]/g, '_')}`;
    const prod = await call('POST', '/v1/products', { id: product, name: p.name, type: 'service' });
    if (prod.status !== 200 && prod.status !== 409) throw new Error(`localstripe: creating product ${product} answered ${prod.status} ${prod.text.slice(0, 200)}`);
    const plan = await call('POST', '/v1/plans', {
      id: p.stripePriceId,
      product,
      amount: String(p.amount),
      currency: p.currency,
      interval: p.interval,
      nickname: p.name,
      'metadata[plan_id]': p.id,
    });
    if (plan.status === 409) result.present.push(p.stripePriceId);
    else if (plan.status === 200) result.created.push(p.stripePriceId);
    else throw new Error(`localstripe: creating plan ${p.stripePriceId} answered ${plan.status} ${plan.text.slice(0, 200)}`);
  }
  return result;
}

// ------------------------------------------------------------------------------------------ the gateway

export interface EmulatorGatewayOptions {
  port: number;
  host?: string;
  /** localstripe, e.g. http://localhost:8420 */
  upstream: string;
  /** Where the signed events this gateway emits go (our POST /webhooks/stripe). */
  webhookUrl: string;
  webhookSecret: string;
  /** The page a browser opening a session's `url` is sent to (npm run dev: the API's /dev/checkout/:id). */
  checkoutPageUrl?: (sessionId: string) => string;
  log?: (line: string) => void;
}

export interface EmulatorGatewayHandle {
  name: string;
  port: number;
  baseUrl: string;
  stop(): Promise<void>;
}

interface Upstream {
  status: number;
  text: string;
  json: Obj | null;
}

/** Starts the gateway; resolves once it listens. */
export async function startEmulatorGateway(opts: EmulatorGatewayOptions): Promise<EmulatorGatewayHandle> {
  const host = opts.host ?? '127.0.0.1';
  const baseUrl = `http://${host}:${opts.port}`;
  const log = opts.log ?? (() => {});
  const schedules = new Map<string, Obj>();
  const scheduleBySubscription = new Map<string, string>();
  const sessions = new Map<string, Obj>();
  const sessionByIdempotencyKey = new Map<string, string>();
  // The secret localstripe is registered with; during rotation the first one signs.
  const secret = opts.webhookSecret.split(',')[0]!.trim();

  async function upstream(method: string, path: string, auth: string | undefined, form?: URLSearchParams): Promise<Upstream> {
    const res = await fetch(`${opts.upstream}${path}`, {
      method,
      headers: {
        ...(auth ? { Authorization: auth } : {}),
        ...(form ? { 'Content-Type': 'application/x-www-form-urlencoded' } : {}),
      },
      body: form ? form.toString() : undefined,
    });
    const text = await res.text();
    let json: Obj | null = null;
    try {
      const parsed: unknown = JSON.parse(text);
      json = isObj(parsed) ? parsed : null;
    } catch {
      json = null;
    }
    return { status: res.status, text, json };
  }

  /** Emits a signed event to our webhook endpoint, retrying like Stripe does (a few times, here quickly). */
  function emit(event: Obj): void {
    void (async () => {
      for (let attempt = 1; attempt <= 5; attempt++) {
        await new Promise((r) => setTimeout(r, attempt === 1 ? 200 : 1000 * attempt));
        try {
          const out = await deliverWebhook(opts.webhookUrl, secret, event);
          if (out.status >= 200 && out.status < 300) {
            log(`[gateway] delivered ${String(event.type)} ${String(event.id)}`);
            return;
          }
          log(`[gateway] ${String(event.type)} ${String(event.id)} answered ${out.status}`);
        } catch (err) {
          log(`[gateway] ${String(event.type)} ${String(event.id)} failed: ${(err as Error).message}`);
        }
      }
    })();
  }

  /** Adds the fields the pinned API version reads and localstripe lacks (translation 2). */
  function decorateSubscription(sub: Obj): Obj {
    const items = isObj(sub.items) && Array.isArray(sub.items.data) ? (sub.items.data as unknown[]) : [];
    for (const item of items) {
      if (!isObj(item)) continue;
      const plan = isObj(item.plan) ? item.plan : null;
      if (plan && item.price === undefined) {
        item.price = {
          id: plan.id,
          object: 'price',
          active: plan.active ?? true,
          currency: plan.currency,
          unit_amount: plan.amount,
          product: plan.product,
          nickname: plan.nickname ?? null,
          metadata: plan.metadata ?? {},
          recurring: { interval: plan.interval, interval_count: plan.interval_count ?? 1, usage_type: plan.usage_type ?? 'licensed' },
          type: 'recurring',
        };
      }
      if (item.current_period_start === undefined) item.current_period_start = sub.current_period_start ?? null;
      if (item.current_period_end === undefined) item.current_period_end = sub.current_period_end ?? null;
    }
    if (typeof sub.id === 'string') sub.schedule = scheduleBySubscription.get(sub.id) ?? sub.schedule ?? null;
    return sub;
  }

  function decorate(body: Obj | null): Obj | null {
    if (!body) return body;
    if (body.object === 'subscription') return decorateSubscription(body);
    if (body.object === 'list' && Array.isArray(body.data)) {
      for (const o of body.data) if (isObj(o) && o.object === 'subscription') decorateSubscription(o);
    }
    return body;
  }

  function stripeError(status: number, message: string, extra: Obj = {}): { status: number; body: Obj } {
    return { status, body: { error: { type: status === 404 ? 'invalid_request_error' : 'api_error', message, ...extra } } };
  }

  /** What changed between two subscription objects, as Stripe's previous_attributes. */
  function previousAttributes(before: Obj, after: Obj): Obj {
    const prev: Obj = {};
    for (const key of ['status', 'cancel_at_period_end', 'cancel_at', 'canceled_at', 'current_period_start', 'current_period_end', 'metadata', 'trial_end']) {
      if (JSON.stringify(before[key]) !== JSON.stringify(after[key])) prev[key] = before[key] ?? null;
    }
    const planOf = (s: Obj) => idOf(s.plan);
    if (planOf(before) !== planOf(after)) {
      prev.plan = before.plan ?? null;
      prev.items = before.items ?? null;
    }
    return prev;
  }

  // ---- 1. subscription update
  async function updateSubscription(id: string, auth: string | undefined, form: URLSearchParams, idempotencyKey: string | null) {
    const before = await upstream('GET', `/v1/subscriptions/${encodeURIComponent(id)}`, auth);
    if (before.status !== 200 || !before.json) return { status: before.status, body: before.json ?? { error: { message: before.text } } };
    const alwaysInvoice = form.get('proration_behavior') === 'always_invoice';
    const out = new URLSearchParams();
    for (const [key, value] of form) {
      if (/^(proration_behavior|payment_behavior|billing_cycle_anchor|default_payment_method)$/.test(key) || key.startsWith('pause_collection')) continue;
      const price = /^items\[(\d+)\]\[price\]$/.exec(key);
      out.append(price ? `items[${price[1]}][plan]` : key, value);
    }
    const expand = [...out.entries()].filter(([k]) => k.startsWith('expand')).map(([, v]) => v);
    // Nothing localstripe can apply is left (e.g. only default_payment_method): it answers 400 to an
    // empty update, Stripe would answer the subscription. The customer's default method stands in.
    if ([...out.keys()].every((k) => k.startsWith('expand'))) return { status: 200, body: decorateSubscription(before.json) };
    const updated = await upstream('POST', `/v1/subscriptions/${encodeURIComponent(id)}`, auth, out);
    if (updated.status !== 200 || !updated.json) return { status: updated.status, body: updated.json ?? { error: { message: updated.text } } };
    let after = updated.json;
    const planChanged = idOf(before.json.plan) !== idOf(after.plan);
    if (planChanged && alwaysInvoice) {
      // Stripe invoices the proration at once; localstripe only leaves pending invoice items.
      const customer = idOf(after.customer) ?? '';
      const invoice = await upstream('POST', '/v1/invoices', auth, new URLSearchParams({ customer, subscription: id }));
      const invoiceId = invoice.json ? idOf(invoice.json) : null;
      // Paying also finalizes a zero-amount invoice (a downgrade's credit).
      if (invoiceId) await upstream('POST', `/v1/invoices/${invoiceId}/pay`, auth);
      const q = new URLSearchParams(expand.map((e, i): [string, string] => [`expand[${i}]`, e]));
      const again = await upstream('GET', `/v1/subscriptions/${encodeURIComponent(id)}${expand.length ? `?${q}` : ''}`, auth);
      if (again.json) after = again.json;
    }
    decorateSubscription(after);
    const plain = structuredClone(after);
    if (isObj(plain.latest_invoice)) plain.latest_invoice = plain.latest_invoice.id;
    emit(eventEnvelope('customer.subscription.updated', plain, { previousAttributes: previousAttributes(decorateSubscription(before.json), plain), idempotencyKey }));
    return { status: 200, body: after };
  }

  // ---- 3. invoice preview
  async function createPreview(auth: string | undefined, form: URLSearchParams) {
    const out = new URLSearchParams();
    for (const [key, value] of form) {
      if (key === 'subscription_details[proration_behavior]') continue;
      const price = /^subscription_details\[items\]\[(\d+)\]\[price\]$/.exec(key);
      out.append(price ? `subscription_details[items][${price[1]}][plan]` : key, value);
    }
    const res = await upstream('POST', '/v1/invoices/create_preview', auth, out);
    if (res.status === 200 && res.json) return { status: 200, body: res.json };
    // Fallback: the new plan minus the current plan, from localstripe's own plan amounts.
    const params = parseForm(form);
    const details = isObj(params.subscription_details) ? params.subscription_details : {};
    const items = Array.isArray(details.items) ? (details.items as Obj[]) : [];
    const newPlanId = String(items[0]?.price ?? items[0]?.plan ?? '');
    const subId = String(params.subscription ?? '');
    const sub = await upstream('GET', `/v1/subscriptions/${encodeURIComponent(subId)}`, auth);
    const plan = await upstream('GET', `/v1/plans/${encodeURIComponent(newPlanId)}`, auth);
    if (!sub.json || !plan.json || sub.status !== 200 || plan.status !== 200) return { status: res.status, body: res.json ?? { error: { message: res.text } } };
    const oldPlan = isObj(sub.json.plan) ? sub.json.plan : {};
    const lines = [
      { object: 'line_item', amount: Number(plan.json.amount), currency: plan.json.currency, description: String(plan.json.name ?? plan.json.id), proration: false },
      { object: 'line_item', amount: -Number(oldPlan.amount ?? 0), currency: plan.json.currency, description: 'Unused time', proration: true },
    ];
    const total = Math.max(0, lines.reduce((s, l) => s + l.amount, 0));
    return {
      status: 200,
      body: { id: `upcoming_in_gw${rand(14)}`, object: 'invoice', customer: params.customer, subscription: subId, currency: plan.json.currency, amount_due: total, total, subtotal: total, lines: { object: 'list', data: lines, has_more: false } },
    };
  }

  // ---- 4. subscription schedules
  async function createSchedule(auth: string | undefined, form: URLSearchParams) {
    const params = parseForm(form);
    const subId = typeof params.from_subscription === 'string' ? params.from_subscription : null;
    if (!subId) return stripeError(400, 'emulator gateway: only subscription schedules created from_subscription are emulated');
    const existing = scheduleBySubscription.get(subId);
    if (existing) return stripeError(400, `subscription ${subId} is already managed by schedule ${existing}`);
    const sub = await upstream('GET', `/v1/subscriptions/${encodeURIComponent(subId)}`, auth);
    if (sub.status !== 200 || !sub.json) return { status: sub.status, body: sub.json ?? {} };
    const start = num(sub.json.current_period_start);
    const end = num(sub.json.current_period_end);
    const schedule: Obj = {
      id: `sub_sched_gw${rand(14)}`,
      object: 'subscription_schedule',
      created: now(),
      customer: sub.json.customer,
      subscription: subId,
      status: 'active',
      end_behavior: 'release',
      current_phase: { start_date: start, end_date: end },
      phases: [{ start_date: start, end_date: end, items: [{ price: idOf(sub.json.plan), quantity: sub.json.quantity ?? 1 }] }],
      metadata: {},
      released_at: null,
      released_subscription: null,
      livemode: false,
    };
    schedules.set(schedule.id as string, schedule);
    scheduleBySubscription.set(subId, schedule.id as string);
    return { status: 200, body: schedule };
  }

  function updateSchedule(id: string, form: URLSearchParams) {
    const schedule = schedules.get(id);
    if (!schedule) return stripeError(404, `No such subscription_schedule: '${id}'`);
    const params = parseForm(form);
    if (Array.isArray(params.phases)) {
      let cursor = num((schedule.current_phase as Obj | undefined)?.start_date);
      schedule.phases = (params.phases as Obj[]).map((p) => {
        const start = num(p.start_date) ?? cursor;
        const items = Array.isArray(p.items) ? (p.items as Obj[]).map((i) => ({ price: i.price ?? i.plan, quantity: num(i.quantity) ?? 1 })) : [];
        const end = num(p.end_date);
        cursor = end;
        return { start_date: start, end_date: end, items, ...(isObj(p.duration) ? { duration: p.duration } : {}) };
      });
      const first = (schedule.phases as Obj[])[0];
      if (first) schedule.current_phase = { start_date: first.start_date, end_date: first.end_date };
    }
    if (typeof params.end_behavior === 'string') schedule.end_behavior = params.end_behavior;
    if (isObj(params.metadata)) schedule.metadata = { ...(schedule.metadata as Obj), ...params.metadata };
    return { status: 200, body: schedule };
  }

  function endSchedule(id: string, how: 'release' | 'cancel') {
    const schedule = schedules.get(id);
    if (!schedule) return stripeError(404, `No such subscription_schedule: '${id}'`);
    if (schedule.status !== 'active' && schedule.status !== 'not_started') return stripeError(400, `schedule ${id} is ${String(schedule.status)}`);
    schedule.status = how === 'release' ? 'released' : 'canceled';
    if (how === 'release') {
      schedule.released_at = now();
      schedule.released_subscription = schedule.subscription;
    }
    scheduleBySubscription.delete(String(schedule.subscription));
    return { status: 200, body: schedule };
  }

  // ---- 5. checkout sessions
  async function createSession(auth: string | undefined, form: URLSearchParams, idempotencyKey: string | null) {
    if (idempotencyKey) {
      const prior = sessionByIdempotencyKey.get(idempotencyKey);
      if (prior && sessions.has(prior)) return { status: 200, body: sessions.get(prior)! };
    }
    const params = parseForm(form);
    const customer = typeof params.customer === 'string' ? params.customer : null;
    if (!customer) return stripeError(400, 'emulator gateway: checkout sessions need an existing customer');
    const cus = await upstream('GET', `/v1/customers/${encodeURIComponent(customer)}`, auth);
    if (cus.status !== 200) return { status: cus.status, body: cus.json ?? {} };
    const lineItems = Array.isArray(params.line_items) ? (params.line_items as Obj[]) : [];
    const price = String(lineItems[0]?.price ?? '');
    const plan = await upstream('GET', `/v1/plans/${encodeURIComponent(price)}`, auth);
    if (plan.status !== 200 || !plan.json) return stripeError(400, `No such price: '${price}'`, { code: 'resource_missing', param: 'line_items[0][price]' });
    const id = `cs_test_gw${rand(40)}`;
    const session: Obj = {
      id,
      object: 'checkout.session',
      mode: params.mode ?? 'subscription',
      status: 'open',
      payment_status: 'unpaid',
      customer,
      customer_email: null,
      client_reference_id: params.client_reference_id ?? null,
      metadata: isObj(params.metadata) ? params.metadata : {},
      success_url: params.success_url ?? null,
      cancel_url: params.cancel_url ?? null,
      url: `${baseUrl}/_gateway/checkout/sessions/${id}`,
      amount_total: Number(plan.json.amount ?? 0),
      amount_subtotal: Number(plan.json.amount ?? 0),
      currency: plan.json.currency ?? 'usd',
      subscription: null,
      invoice: null,
      created: now(),
      expires_at: now() + 24 * 3600,
      livemode: false,
      _line_items: lineItems,
      _subscription_data: isObj(params.subscription_data) ? params.subscription_data : {},
    };
    sessions.set(id, session);
    if (idempotencyKey) sessionByIdempotencyKey.set(idempotencyKey, id);
    return { status: 200, body: publicSession(session) };
  }

  function publicSession(s: Obj): Obj {
    return Object.fromEntries(Object.entries(s).filter(([k]) => !k.startsWith('_')));
  }

  async function completeSession(id: string, auth: string | undefined, paymentMethod: string) {
    const session = sessions.get(id);
    if (!session) return stripeError(404, `No such checkout.session: '${id}'`);
    if (session.status !== 'open') return stripeError(400, `checkout session ${id} is ${String(session.status)}`);
    const customer = String(session.customer);
    // What the hosted page does: save the card as the default, then start the subscription.
    const pm = await upstream('POST', `/v1/payment_methods/${encodeURIComponent(paymentMethod)}/attach`, auth, new URLSearchParams({ customer }));
    if (pm.status !== 200 || !pm.json) return { status: pm.status, body: pm.json ?? { error: { message: pm.text } } };
    const pmId = String(pm.json.id);
    await upstream('POST', `/v1/customers/${customer}`, auth, new URLSearchParams({ 'invoice_settings[default_payment_method]': pmId }));
    const data = session._subscription_data as Obj;
    const subForm = new URLSearchParams({ customer, 'items[0][plan]': String((session._line_items as Obj[])[0]?.price ?? '') });
    for (const [k, v] of Object.entries(isObj(data.metadata) ? data.metadata : {})) subForm.append(`metadata[${k}]`, String(v));
    if (data.trial_period_days) subForm.append('trial_period_days', String(data.trial_period_days));
    const sub = await upstream('POST', '/v1/subscriptions', auth, subForm);
    if (sub.status !== 200 || !sub.json) return { status: sub.status, body: sub.json ?? { error: { message: sub.text } } };
    Object.assign(session, {
      status: 'complete',
      payment_status: data.trial_period_days ? 'no_payment_required' : 'paid',
      subscription: sub.json.id,
      invoice: idOf(sub.json.latest_invoice),
      url: null,
    });
    emit(eventEnvelope('checkout.session.completed', publicSession(session), { apiVersion: '2025-03-31.basil' }));
    return { status: 200, body: { ...publicSession(session), payment_method: pmId } };
  }

  // ---- routing
  /** Declines registered by the demo, by invoice id (what Stripe would hold on the invoice's PaymentIntent). */
  const declines = new Map<string, Obj>();

  function invoicePayments(params: URLSearchParams): { status: number; body: Obj } {
    const invoiceId = params.get('invoice');
    const decline = invoiceId ? declines.get(invoiceId) : undefined;
    const empty = { object: 'list', data: [], has_more: false, url: '/v1/invoice_payments' };
    if (!invoiceId || !decline) return { status: 200, body: empty };
    // stripe-node sends arrays with indices (expand[0]=…).
    const expanded = [...params.entries()].some(([k, v]) => k.startsWith('expand') && v === 'data.payment.payment_intent');
    const intent = {
      id: `pi_gw_${invoiceId}`,
      object: 'payment_intent',
      status: 'requires_payment_method',
      last_payment_error: { type: 'card_error', code: 'card_declined', ...decline },
    };
    const payment = {
      id: `inpay_gw_${invoiceId}`,
      object: 'invoice_payment',
      created: now(),
      invoice: invoiceId,
      is_default: true,
      status: 'open',
      payment: { type: 'payment_intent', payment_intent: expanded ? intent : intent.id },
    };
    return { status: 200, body: { ...empty, data: [payment] } };
  }

  async function listInvoicesByStatus(auth: string | undefined, params: URLSearchParams): Promise<{ status: number; body: Obj }> {
    const wanted = params.get('status');
    const q = new URLSearchParams();
    for (const key of ['customer', 'subscription', 'limit', 'starting_after']) if (params.has(key)) q.set(key, params.get(key)!);
    const res = await upstream('GET', `/v1/invoices${q.size ? `?${q}` : ''}`, auth);
    if (!res.json) return { status: res.status, body: { error: { type: 'api_error', message: res.text } } };
    const data = Array.isArray(res.json.data) ? (res.json.data as Obj[]).filter((i) => i.status === wanted) : [];
    return { status: res.status, body: { ...res.json, data } };
  }

  async function route(req: http.IncomingMessage, raw: string): Promise<{ status: number; body: Obj; location?: string } | null> {
    const url = new URL(req.url ?? '/', baseUrl);
    const method = req.method ?? 'GET';
    const auth = req.headers.authorization;
    const idem = typeof req.headers['idempotency-key'] === 'string' ? req.headers['idempotency-key'] : null;
    const form = new URLSearchParams(method === 'GET' || method === 'DELETE' ? url.search : raw);
    const p = url.pathname;
    let m: RegExpExecArray | null;

    if (p === '/_gateway/health') return { status: 200, body: { status: 'ok', upstream: opts.upstream } };
    if (method === 'POST' && (m = /^\/v1\/subscriptions\/([^/]+)$/.exec(p))) return updateSubscription(decodeURIComponent(m[1]!), auth, form, idem);
    if (method === 'POST' && (m = /^\/v1\/invoices\/([^/]+)\/pay$/.exec(p))) {
      form.delete('off_session');
      form.delete('payment_method');
      const res = await upstream('POST', `/v1/invoices/${m[1]}/pay`, auth, [...form].length ? form : undefined);
      return { status: res.status, body: res.json ?? { error: { type: 'api_error', message: res.text } } };
    }
    if (method === 'POST' && p === '/v1/invoices/create_preview') return createPreview(auth, form);
    if (p === '/v1/subscription_schedules' && method === 'POST') return createSchedule(auth, form);
    if ((m = /^\/v1\/subscription_schedules\/([^/]+)$/.exec(p))) {
      if (method === 'GET') return schedules.has(m[1]!) ? { status: 200, body: schedules.get(m[1]!)! } : stripeError(404, `No such subscription_schedule: '${m[1]}'`);
      if (method === 'POST') return updateSchedule(m[1]!, form);
    }
    if (method === 'POST' && (m = /^\/v1\/subscription_schedules\/([^/]+)\/(release|cancel)$/.exec(p))) return endSchedule(m[1]!, m[2] as 'release' | 'cancel');
    if (method === 'POST' && p === '/v1/checkout/sessions') return createSession(auth, form, idem);
    if (method === 'GET' && (m = /^\/v1\/checkout\/sessions\/([^/]+)$/.exec(p))) {
      const s = sessions.get(m[1]!);
      return s ? { status: 200, body: publicSession(s) } : stripeError(404, `No such checkout.session: '${m[1]}'`);
    }
    if (method === 'GET' && (m = /^\/_gateway\/checkout\/sessions\/([^/]+)$/.exec(p))) {
      // A browser opening the session's url: there is no hosted page here (localstripe would answer 401).
      if (opts.checkoutPageUrl) return { status: 302, body: {}, location: opts.checkoutPageUrl(decodeURIComponent(m[1]!)) };
      return stripeError(404, 'emulator gateway: no hosted checkout page here; complete the session with POST /_gateway/checkout/sessions/:id/complete');
    }
    if (method === 'POST' && (m = /^\/_gateway\/checkout\/sessions\/([^/]+)\/complete$/.exec(p))) {
      let pm = 'pm_card_visa';
      try {
        const body = raw ? (JSON.parse(raw) as Obj) : {};
        if (typeof body.payment_method === 'string') pm = body.payment_method;
      } catch {
        pm = form.get('payment_method') ?? pm;
      }
      return completeSession(m[1]!, auth ?? 'Bearer sk_test_emulator_gateway', pm);
    }
    if (method === 'GET' && p === '/v1/events' && url.searchParams.has('delivery_success')) {
      return { status: 200, body: { object: 'list', data: [], has_more: false, url: '/v1/events' } };
    }
    if (method === 'POST' && (m = /^\/_gateway\/invoices\/([^/]+)\/decline$/.exec(p))) {
      const body = raw ? (JSON.parse(raw) as Obj) : {};
      declines.set(decodeURIComponent(m[1]!), { decline_code: body.decline_code ?? null, advice_code: body.advice_code ?? null, network_decline_code: body.network_decline_code ?? null });
      return { status: 200, body: { ok: true } };
    }
    if (method === 'GET' && p === '/v1/invoice_payments') return invoicePayments(url.searchParams);
    if (method === 'GET' && p === '/v1/invoices' && url.searchParams.has('status')) return listInvoicesByStatus(auth, url.searchParams);
    return null;
  }

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      void (async () => {
        try {
          const handled = await route(req, raw);
          if (handled) {
            const body = decorate(handled.body) ?? handled.body;
            res.writeHead(handled.status, {
              'Content-Type': 'application/json',
              'X-Emulator-Gateway': 'translated',
              ...(handled.location ? { Location: handled.location } : {}),
            });
            res.end(JSON.stringify(body));
            return;
          }
          // Everything else: forwarded to localstripe as is (subscription objects decorated).
          const headers: Record<string, string> = {};
          for (const h of ['authorization', 'content-type', 'idempotency-key', 'stripe-version']) {
            const v = req.headers[h];
            if (typeof v === 'string') headers[h] = v;
          }
          const up = await fetch(`${opts.upstream}${req.url ?? '/'}`, {
            method: req.method,
            headers,
            body: req.method === 'GET' || req.method === 'HEAD' || raw === '' ? undefined : raw,
          });
          const text = await up.text();
          let out = text;
          if ((up.headers.get('content-type') ?? '').includes('json')) {
            try {
              const parsed: unknown = JSON.parse(text);
              if (isObj(parsed)) out = JSON.stringify(decorate(parsed));
            } catch {
              /* pass through */
            }
          }
          res.writeHead(up.status, { 'Content-Type': up.headers.get('content-type') ?? 'text/plain' });
          res.end(out);
        } catch (err) {
          log(`[gateway] ${req.method} ${req.url}: ${(err as Error).message}`);
          res.writeHead(502, { 'Content-Type': 'application/json' });
          res.end(JSON.stringify({ error: { type: 'api_error', message: `emulator gateway: ${(err as Error).message}` } }));
        }
      })();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, host, () => resolve());
  });
  return {
    name: 'emulator-gateway',
    port: opts.port,
    baseUrl,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
