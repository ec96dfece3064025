/**
 * POST /customers/{customerId}/billing-portal: a Stripe Billing Portal session, where the customer
 * replaces a failing card (or cancels, per the portal's configuration in Stripe).
 */
import { Hono } from 'hono';
import type Stripe from 'stripe';
import { z } from 'zod';
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

/** The billing-portal route. */
export function billingPortalRoutes(deps: { sql: Sql; stripe: Pick<Stripe, 'billingPortal'> }): Hono {
  const app = new Hono();
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
