/**
 * The gateway's shared state and plumbing: the maps of what it emulates (schedules, checkout sessions),
 * calls to localstripe, the signed webhooks it emits, and the decoration of subscription objects.
 */
import { sendWithRetry, deliverWebhook } from '../webhook-sender';
import type { EmulatorGatewayOptions } from './gateway';
import { isObj, idOf, type Obj } from './shared';

export interface Upstream {
  status: number;
  text: string;
  json: Obj | null;
}

export type GatewayContext = ReturnType<typeof createGatewayContext>;

/** The state one gateway keeps, and the helpers every translation uses. */
export function createGatewayContext(opts: EmulatorGatewayOptions) {
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
      const out = await sendWithRetry(
        async () => {
          try {
            const res = await deliverWebhook(opts.webhookUrl, secret, event);
            if (res.status < 200 || res.status >= 300) log(`[gateway] ${String(event.type)} ${String(event.id)} answered ${res.status}`);
            return res.status;
          } catch (err) {
            log(`[gateway] ${String(event.type)} ${String(event.id)} failed: ${(err as Error).message}`);
            return 0;
          }
        },
        { maxAttempts: 5, delayMs: (n) => (n === 0 ? 200 : 1000 * (n + 1)) },
      );
      if (out.status >= 200 && out.status < 300) log(`[gateway] delivered ${String(event.type)} ${String(event.id)}`);
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

  return { opts, host, baseUrl, log, schedules, scheduleBySubscription, sessions, sessionByIdempotencyKey, secret, upstream, emit, decorateSubscription, decorate, stripeError, previousAttributes };
}
