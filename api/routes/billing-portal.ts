/**
 * POST /customers/{customerId}/billing-portal: a Stripe Billing Portal session, where the customer
 * replaces a failing card (or cancels, per the portal's configuration in Stripe).
 */
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type Stripe from 'stripe';
import { publicBaseUrl, type Config } from '../../lib/config';
import { verifyCardUpdateToken } from '../../lib/card-update-link';
import type { Sql } from '../../lib/db';
import { apiAuthErrors, apiSecurity, ApiError, commonErrors, errorResponse, jsonBodyErrors } from '../errors';
import { stripeApiError } from '../stripe-errors';
import { createRouter, jsonBody, jsonResponse } from '../validate';
import { httpUrl } from './checkout';
import { CustomerIdParamsSchema } from './customers';

export const BillingPortalBodySchema = z
  .strictObject({
    returnUrl: httpUrl('returnUrl').describe('Where the portal sends the customer back'),
  })
  .openapi('BillingPortalRequest');

export const BillingPortalSessionSchema = z
  .object({
    customerId: z.string(),
    url: z.string().describe('The portal session: open it at once, it is single-use and expires'),
  })
  .openapi('BillingPortalSession');

const createPortalSession = createRoute({
  method: 'post',
  path: '/customers/{customerId}/billing-portal',
  tags: ['customers'],
  summary: 'A Stripe Billing Portal session: where the customer replaces a failing card',
  security: apiSecurity,
  middleware: jsonBody(),
  request: {
    params: CustomerIdParamsSchema,
    body: { required: true, content: { 'application/json': { schema: BillingPortalBodySchema } } },
  },
  responses: {
    201: jsonResponse(BillingPortalSessionSchema, 'Session created: send the customer to `url`'),
    ...jsonBodyErrors,
    ...apiAuthErrors,
    404: errorResponse('No such customer (customer_not_found)'),
    409: errorResponse('The customer was deleted in Stripe (customer_deleted)'),
    422: errorResponse('Stripe refused the request (stripe_rejected), e.g. no portal configuration in this Stripe account'),
    503: errorResponse('Stripe unreachable (stripe_unavailable)'),
    ...commonErrors,
  },
});

const cardUpdateLink = createRoute({
  method: 'get',
  path: '/billing/card-update/{token}',
  tags: ['customers'],
  summary: 'The stable card-update link of customer emails: opens a fresh Billing Portal session',
  description: 'Public: the signed token names the customer and is the credential. Each visit creates a portal session and redirects to it.',
  request: { params: z.object({ token: z.string().describe('Signed token from a notice email') }) },
  responses: {
    303: { description: 'Redirect to the Stripe Billing Portal session' },
    404: errorResponse('Invalid or forged token, or the customer is gone (link_not_found)'),
    422: errorResponse('Stripe refused the request (stripe_rejected)'),
    503: errorResponse('Stripe unreachable (stripe_unavailable)'),
    ...commonErrors,
  },
});

type LinkConfig = Pick<Config, 'LINK_SIGNING_SECRET' | 'STRIPE_WEBHOOK_SECRET' | 'PUBLIC_BASE_URL' | 'PORT' | 'CARD_UPDATE_RETURN_URL'>;

/**
 * The billing-portal routes: the app's POST, and the stable card-update link of emails
 * (GET /billing/card-update/{token}, public: the signed token is its credential), which opens a
 * fresh portal session on every visit and redirects the customer's browser to it.
 */
export function billingPortalRoutes(deps: { sql: Sql; stripe: Pick<Stripe, 'billingPortal'>; config: LinkConfig }): OpenAPIHono {
  const app = createRouter();
  app.openapi(cardUpdateLink, async (c) => {
    const customerId = verifyCardUpdateToken(c.req.valid('param').token, deps.config);
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
  app.openapi(createPortalSession, async (c) => {
    const { customerId } = c.req.valid('param');
    const body = c.req.valid('json');
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
