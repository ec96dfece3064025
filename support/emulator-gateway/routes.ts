/** Routing: which requests the gateway answers itself (translated), the rest are forwarded as they are. */
import type http from 'node:http';
import { now, type Obj } from './shared';
import type { GatewayContext } from './context';
import type { Translations } from './translate';

/** The router of one gateway: `route` answers a request it translates, or null to forward it. */
export function createRoutes(ctx: GatewayContext, t: Translations) {
  const { opts, baseUrl, schedules, sessions, upstream, stripeError } = ctx;
  const { updateSubscription, createPreview, createSchedule, updateSchedule, endSchedule, createSession, publicSession, completeSession } = t;
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

  return { declines, invoicePayments, listInvoicesByStatus, route };
}
