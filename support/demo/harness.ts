/**
 * What every demo step shares: the stack's clients (API, admin, localstripe, Postgres), the story's
 * state carried from step to step, polling, step reporting, and the signed fixture events.
 */
import { randomBytes } from 'node:crypto';
import { FIXTURE_CHARGE_ID, FIXTURE_CUSTOMER_ID, FIXTURE_INVOICE_ID, FIXTURE_PAYMENT_INTENT_ID, FIXTURE_PRICE_ID, FIXTURE_SUBSCRIPTION_ID, loadFixtureText } from '../fixtures';
import { createSql } from '../../lib/db';
import { deliverWebhook } from '../emulator-gateway/gateway';
import type { DemoOptions, DemoStack, Obj, StepResult } from './types';

export type { Obj } from './types';

export type DemoHarness = ReturnType<typeof createDemoHarness>;

export class StepFailure extends Error {}

export const DAY_MS = 86_400_000;
export const money = (minor: number, currency = 'usd') => `${currency === 'usd' ? '$' : `${currency.toUpperCase()} `}${(minor / 100).toFixed(2)}`;
export const day = (unix: number | null | undefined) => (unix ? new Date(unix * 1000).toISOString().slice(0, 10) : 'n/a');
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const tag = () => randomBytes(4).toString('hex');

/** The harness of one demo run: its Postgres pool, run tag, state and helpers. */
export function createDemoHarness(stack: DemoStack, options: DemoOptions) {
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

  return { stack, options, stepTimeoutMs, print, sql, steps, run, ctx, http, api, admin, ls, expectOk, waitFor, customer, describe, link, postEvent, step, fixtureEvent, DECLINES, paymentFailedEvent, pendingDeclines, registerDecline };
}
