/** GET /customers/{customerId}: the app's read model, straight from Postgres. */
import type { SubscriptionItem, SubscriptionStatus } from '../../domain/billing-event';
import { compareCurrentSubscription } from '../../domain/billing/current-subscription';
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type { Sql } from '../../lib/db';
import { apiAuthErrors, apiSecurity, ApiError, commonErrors, errorResponse } from '../errors';
import { createRouter, IsoTimeSchema, jsonResponse } from '../validate';

const CUSTOMER_ID = /^cus_[A-Za-z0-9_]{1,250}$/;

/** Path parameters of every /customers/{customerId} route (a mismatch answers 400 invalid_customer_id). */
export const CustomerIdParamsSchema = z.object({
  customerId: z.string().regex(CUSTOMER_ID, 'customerId must look like cus_…').openapi({ param: { name: 'customerId', in: 'path' } }),
});

const iso = (d: Date | null) => (d ? d.toISOString() : null);

/** Reads one customer's billing state. */
export async function readCustomer(sql: Sql, customerId: string) {
  const customers = await sql<{ id: string; email: string | null; access_state: string; deleted: boolean }[]>`
    SELECT id, email, access_state, deleted FROM customers WHERE id = ${customerId}`;
  const customer = customers[0];
  if (!customer) return null;
  const subs = await sql<
    {
      id: string;
      status: SubscriptionStatus;
      plan_id: string | null;
      price_id: string | null;
      current_period_end: Date | null;
      cancel_at_period_end: boolean;
      pending_plan_id: string | null;
      pending_quantity: number | null;
      needs_review: boolean;
      quantity: number;
      items: (SubscriptionItem & { planId: string | null })[];
      trial_end: Date | null;
      stripe_updated_at: Date | null;
      updated_at: Date | null;
    }[]
  >`
    SELECT s.id, s.status, s.plan_id, s.price_id, s.current_period_end, s.cancel_at_period_end, s.pending_plan_id,
      s.pending_quantity, s.needs_review, s.quantity, s.trial_end, s.stripe_updated_at, s.updated_at,
      -- Each item with the catalog plan of its price (null for a price not in the catalog).
      COALESCE((SELECT json_agg(json_build_object('id', i->>'id', 'priceId', i->>'priceId', 'quantity', (i->>'quantity')::int,
          'planId', (SELECT p.id FROM plans p WHERE p.stripe_price_id = i->>'priceId')) ORDER BY n)
        FROM jsonb_array_elements(s.items) WITH ORDINALITY AS e(i, n)), '[]'::json) AS items
    FROM subscriptions s WHERE s.customer_id = ${customerId}`;
  const cycles = await sql<{ state: string; attempts_made: number; next_attempt_at: Date | null; last_decline_code: string | null; last_advice_code: string | null; invoice_id: string }[]>`
    SELECT state, attempts_made, next_attempt_at, last_decline_code, last_advice_code, invoice_id FROM dunning_cycles
    WHERE customer_id = ${customerId} ORDER BY (ended_at IS NULL) DESC, started_at DESC LIMIT 1`;
  // The one rule the workflow uses too (domain/billing/current-subscription.ts): the current one first.
  const ordered = subs
    .map((row) => ({ ...row, stripeUpdatedAt: row.stripe_updated_at?.getTime() ?? null, updatedAt: row.updated_at?.getTime() ?? null }))
    .sort(compareCurrentSubscription);
  const view = (s: (typeof ordered)[number]) => ({
    id: s.id,
    status: s.status,
    planId: s.plan_id,
    priceId: s.price_id,
    quantity: s.quantity,
    items: s.items.map((i) => ({ id: i.id, priceId: i.priceId, planId: i.planId, quantity: i.quantity })),
    currentPeriodEnd: iso(s.current_period_end),
    trialEnd: iso(s.trial_end),
    cancelAtPeriodEnd: s.cancel_at_period_end,
    pendingPlanId: s.pending_plan_id,
    pendingQuantity: s.pending_quantity,
    needsReview: s.needs_review,
  });
  const s = ordered[0];
  const d = cycles[0];
  return {
    customerId: customer.id,
    email: customer.email,
    accessState: customer.access_state,
    deleted: customer.deleted,
    subscription: s ? view(s) : null,
    subscriptions: ordered.map(view),
    dunning: d
      ? {
          invoiceId: d.invoice_id,
          state: d.state,
          attempt: d.attempts_made,
          nextAttemptAt: iso(d.next_attempt_at),
          lastDeclineCode: d.last_decline_code,
          lastAdviceCode: d.last_advice_code,
        }
      : null,
  };
}

const SubscriptionViewSchema = z
  .object({
    id: z.string(),
    status: z.string(),
    planId: z.string().nullable().describe('The catalog plan of the primary item'),
    priceId: z.string().nullable(),
    quantity: z.number().int().describe('Seats: the primary item’s quantity'),
    items: z.array(
      z.object({
        id: z.string().nullable(),
        priceId: z.string().nullable(),
        planId: z.string().nullable().describe('Null when the price is not in the catalog'),
        quantity: z.number().int(),
      }),
    ),
    currentPeriodEnd: IsoTimeSchema.nullable(),
    trialEnd: IsoTimeSchema.nullable(),
    cancelAtPeriodEnd: z.boolean(),
    pendingPlanId: z.string().nullable(),
    pendingQuantity: z.number().int().nullable().describe('Seats from the renewal on: a decrease scheduled for the period end (null when none)'),
    needsReview: z.boolean(),
  })
  .openapi('Subscription');

export const CustomerSchema = z
  .object({
    customerId: z.string(),
    email: z.string().nullable(),
    accessState: z.string().describe('active → grace → restricted → suspended'),
    deleted: z.boolean(),
    subscription: SubscriptionViewSchema.nullable().describe('The current subscription (the first of `subscriptions`), kept for compatibility'),
    subscriptions: z.array(SubscriptionViewSchema).describe('Every subscription of the customer, the current one first, ended ones last'),
    dunning: z
      .object({
        invoiceId: z.string(),
        state: z.string(),
        attempt: z.number().int(),
        nextAttemptAt: IsoTimeSchema.nullable(),
        lastDeclineCode: z.string().nullable(),
        /** Stripe's advice on the last decline: do_not_try_again, try_again_later, confirm_card_data. */
        lastAdviceCode: z.string().nullable(),
      })
      .nullable(),
  })
  .openapi('Customer');

const getCustomer = createRoute({
  method: 'get',
  path: '/customers/{customerId}',
  tags: ['customers'],
  summary: 'The customer’s billing state from the local read model',
  security: apiSecurity,
  request: { params: CustomerIdParamsSchema },
  responses: {
    200: jsonResponse(CustomerSchema, 'The customer'),
    400: errorResponse('customerId does not look like cus_… (invalid_customer_id)'),
    ...apiAuthErrors,
    404: errorResponse('No such customer (customer_not_found)'),
    ...commonErrors,
  },
});

/** Customer read routes. */
export function customerRoutes(deps: { sql: Sql }): OpenAPIHono {
  const app = createRouter();
  app.openapi(getCustomer, async (c) => {
    const { customerId } = c.req.valid('param');
    const body = await readCustomer(deps.sql, customerId);
    if (!body) throw new ApiError(404, 'customer_not_found', `no customer ${customerId}`);
    return c.json(body, 200);
  });
  return app;
}
