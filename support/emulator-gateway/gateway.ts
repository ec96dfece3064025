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
import http from 'node:http';
import { createGatewayContext } from './context';
import { createRoutes } from './routes';
import { isObj } from './shared';
import { createTranslations } from './translate';

// Signing and one delivery: support/webhook-sender.ts (re-exported here for the gateway's users).
export { deliverWebhook, signWebhookPayload } from '../webhook-sender';
export { eventEnvelope, parseForm } from './shared';
export { seedLocalstripeCatalog, type EmulatorCatalogPlan } from './catalog';

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

/** Starts the gateway; resolves once it listens. */
export async function startEmulatorGateway(opts: EmulatorGatewayOptions): Promise<EmulatorGatewayHandle> {
  const ctx = createGatewayContext(opts);
  const { host, baseUrl, log, decorate } = ctx;
  const { route } = createRoutes(ctx, createTranslations(ctx));

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
