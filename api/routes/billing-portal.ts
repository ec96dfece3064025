/**
 * POST /customers/{customerId}/billing-portal: a Stripe Billing Portal session, where the customer
 * replaces a failing card (or cancels, per the portal's configuration in Stripe).
 */
import { Hono } from 'hono';
import type Stripe from 'stripe';
import { z } from 'zod';
import { publicBaseUrl, type Config } from '../../lib/config';
import { verifyCardUpdateToken } from '../../lib/card-update-link';
import type { Sql } from '../../lib/db';
import { ApiError } from '../errors';
import { stripeApiError } from '../stripe-errors';
import { parseJsonBody } from '../validate';
import { httpUrl } from './checkout';
import { parseCustomerId } from './customers';

export const BillingPortalBodySchema = z.object({
  returnUrl: httpUrl('returnUrl').describe('Where the portal sends the customer back'),
});

export const BillingPortalSessionSchema = z.object({
  customerId: z.string(),
  url: z.string().describe('The portal session: open it at once, it is single-use and expires'),
});

type LinkConfig = Pick<Config, 'LINK_SIGNING_SECRET' | 'STRIPE_WEBHOOK_SECRET' | 'PUBLIC_BASE_URL' | 'PORT' | 'CARD_UPDATE_RETURN_URL'>;

/**
 * The billing-portal routes: the app's POST, and the stable card-update link of emails
 * (GET /billing/card-update/{token}, public: the signed token is its credential), which opens a
 * fresh portal session on every visit and redirects the customer's browser to it.
 */
export function billingPortalRoutes(deps: { sql: Sql; stripe: Pick<Stripe, 'billingPortal'>; config: LinkConfig }): Hono {
  const app = new Hono();
  app.get('/billing/card-update/:token', async (c) => {
    const customerId = verifyCardUpdateToken(c.req.param('token'), deps.config);
    if (!customerId) throw new ApiError(404, 'link_not_found', 'this card-update link is not valid');
    const [customer] = await deps.sql<{ deleted: boolean }[]>`SELECT deleted FROM customers WHERE id = ${customerId}`;
    if (!customer || customer.deleted) throw new ApiError(404, 'link_not_found', 'this card-update link is no longer valid');
    let session: Stripe.BillingPortal.Session;
    try {
      session = await deps.stripe.billingPortal.sessions.create({
        customer: customerId,
        return_url: deps.config.CARD_UPDATE_RETURN_URL ?? publicBaseUrl(deps.config),
      });
    } catch (err) {
      stripeApiError(err, 'open the billing portal');
    }
    c.header('Cache-Control', 'no-store');
    c.header('Referrer-Policy', 'no-referrer');
    return c.redirect(session.url, 303);
  });
  app.post('/customers/:customerId/billing-portal', async (c) => {
    const customerId = parseCustomerId(c.req.param('customerId'));
    const body = await parseJsonBody(c, BillingPortalBodySchema);
    const [customer] = await deps.sql<{ deleted: boolean }[]>`SELECT deleted FROM customers WHERE id = ${customerId}`;
    if (!customer) throw new ApiError(404, 'customer_not_found', `no customer ${customerId} here`);
    if (customer.deleted) throw new ApiError(409, 'customer_deleted', `customer ${customerId} was deleted in Stripe`);
    let session: Stripe.BillingPortal.Session;
    try {
      session = await deps.stripe.billingPortal.sessions.create({ customer: customerId, return_url: body.returnUrl });
    } catch (err) {
      stripeApiError(err, 'create the billing portal session');
    }
    return c.json({ customerId, url: session.url } satisfies z.infer<typeof BillingPortalSessionSchema>, 201);
  });
  return app;
}
