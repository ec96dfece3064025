/** Request translation: the calls localstripe cannot serve the way Stripe does (numbered as in gateway.ts's header). */
import { isObj, now, rand, idOf, num, eventEnvelope, parseForm, type Obj } from './shared';
import type { GatewayContext } from './context';

export type Translations = ReturnType<typeof createTranslations>;

/** The translated calls of one gateway, over its context. */
export function createTranslations(ctx: GatewayContext) {
  const { baseUrl, schedules, scheduleBySubscription, sessions, sessionByIdempotencyKey, upstream, emit, decorateSubscription, stripeError, previousAttributes } = ctx;
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

  return { updateSubscription, createPreview, createSchedule, updateSchedule, endSchedule, createSession, publicSession, completeSession };
}
