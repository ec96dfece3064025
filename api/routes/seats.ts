/**
 * Seats (the subscription's quantity): the preview reads Stripe's proration for the new quantity; the
 * change is the customer workflow's changeQuantity Update, with the same rules as a plan change — an
 * increase is charged now and needs its preview's prorationDate and subscriptionVersion; a decrease takes
 * effect at the renewal (SEAT_DECREASE_AT=period_end, the default) or now with a credit (now).
 */
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type { Client } from '@temporalio/client';
import type Stripe from 'stripe';
import type { ChangeQuantityRequest } from '../../domain/messages';
import { currentPlanOf, subscriptionVersion } from '../../domain/plan-change';
import { decideSeatChange, MAX_SEATS, SEAT_DECREASE_POLICIES, type SeatDecreaseAt } from '../../domain/seats';
import type { Sql } from '../../lib/db';
import { readPlans } from '../../lib/plan-catalog-sync';
import { loadCurrentSubscription } from '../../lib/subscriptions';
import { changeQuantityUpdate } from '../../workflows/contracts';
import { errorResponse } from '../errors';
import { stripeApiError } from '../stripe-errors';
import { createRouter, jsonResponse } from '../validate';
import {
  changePlanStatus,
  previewLines,
  PreviewLinesSchema,
  previewPinFields,
  rejectionError,
  RequestIdSchema,
  requireCustomer,
  runCustomerUpdate,
  subscriptionRouteBase,
  unix,
  updateErrors,
  withBody,
} from './subscription';

const QuantitySchema = z.number().int().min(1).max(MAX_SEATS).describe(`Seats: the quantity of the subscription's plan item (1 … ${MAX_SEATS})`);

export const PreviewQuantityBodySchema = z.strictObject({ quantity: QuantitySchema }).openapi('PreviewQuantityChangeRequest');
export const ChangeQuantityBodySchema = z
  .strictObject({ quantity: QuantitySchema, requestId: RequestIdSchema, ...previewPinFields('an increase') })
  .openapi('ChangeQuantityRequest');

const QuantityChangePreviewSchema = z
  .object({
    customerId: z.string(),
    subscriptionId: z.string(),
    planId: z.string().nullable(),
    fromQuantity: z.number().int(),
    toQuantity: z.number().int(),
    kind: z.enum(['increase', 'decrease']),
    decreaseAt: z.enum(SEAT_DECREASE_POLICIES).nullable().describe('When a decrease takes effect (SEAT_DECREASE_AT); null for an increase'),
    currency: z.string(),
    amountDueNow: z.number().int().describe('Minor units invoiced at once: the prorated increase (0 for a decrease)'),
    amountDueNext: z
      .number()
      .int()
      .describe('Minor units of the next renewal: Stripe’s upcoming invoice, credit included, for a decrease made now; else the price × the new quantity, before discounts and tax'),
    prorationDate: unix.nullable().describe('Pass to PUT …/subscription/quantity so the charge or credit equals this preview (null when nothing is prorated now)'),
    subscriptionVersion: z.string().describe('Pass to PUT …/subscription/quantity: the commit answers 409 subscription_changed if the subscription (its seats included) changed since'),
    effectiveAt: unix.nullable().describe('When the new quantity applies: now (the proration date) or the renewal'),
    nextBillingAt: unix.nullable(),
    lines: PreviewLinesSchema,
  })
  .openapi('QuantityChangePreview');
const QuantityChangeResultSchema = z
  .object({
    requestId: z.string(),
    kind: z.enum(['increase', 'decrease']),
    subscriptionId: z.string(),
    planId: z.string().nullable(),
    fromQuantity: z.number().int(),
    toQuantity: z.number().int(),
    status: z.enum(['confirmed', 'pending', 'scheduled', 'failed']),
    effectiveAt: unix.nullable(),
    invoiceId: z.string().nullable(),
    message: z.string(),
  })
  .openapi('QuantityChangeResult');

const seatErrors = {
  ...updateErrors,
  400: errorResponse(`Body is not valid JSON (invalid_json) or fails the schema (validation_error: quantity must be an integer from 1 to ${MAX_SEATS}; unknown fields are rejected)`),
  409: errorResponse(
    'Rejected by the workflow’s validator: same_quantity, subscription_canceled, subscription_canceling (resume it first), subscription_not_changeable, subscription_changed (since the preview: preview again), change_in_flight (another change awaits payment or the renewal), request_id_reused',
  ),
  422: errorResponse('preview_required (an increase without its preview’s prorationDate and subscriptionVersion), invalid_proration_date, or Stripe refused (stripe_rejected)'),
};

const previewQuantityChange = createRoute({
  ...subscriptionRouteBase,
  method: 'post',
  path: '/customers/{customerId}/subscription/quantity/preview',
  summary: 'Preview a seat change: the prorated amount due now, from Stripe',
  request: withBody(PreviewQuantityBodySchema),
  responses: { 200: jsonResponse(QuantityChangePreviewSchema, 'The preview'), ...seatErrors },
});
const changeQuantity = createRoute({
  ...subscriptionRouteBase,
  method: 'put',
  path: '/customers/{customerId}/subscription/quantity',
  summary: 'Change seats: increases now with the previewed proration, decreases at the renewal or now with a credit (a Workflow Update)',
  description:
    'An increase needs the prorationDate and subscriptionVersion of POST …/subscription/quantity/preview and charges exactly the previewed proration (409 subscription_changed when the subscription changed since). A decrease takes effect at the renewal (a Subscription Schedule; `pendingQuantity` in GET /customers/{customerId} until then) or, with SEAT_DECREASE_AT=now, at once with a credit on the next invoice. A scheduled decrease is withdrawn with POST …/subscription/plan/cancel-pending.',
  request: withBody(ChangeQuantityBodySchema),
  responses: {
    200: jsonResponse(QuantityChangeResultSchema, 'Applied (confirmed)'),
    202: jsonResponse(QuantityChangeResultSchema, 'Accepted: awaiting payment (pending) or at the renewal (scheduled)'),
    402: jsonResponse(QuantityChangeResultSchema, 'The payment for the increase failed (failed)'),
    ...seatErrors,
  },
});

export interface SeatRouteDeps {
  sql: Sql;
  temporal: Client;
  stripe: Pick<Stripe, 'subscriptions' | 'invoices'>;
  /** SEAT_DECREASE_AT: what the preview shows and the commit asks the workflow for. */
  seatDecreaseAt: SeatDecreaseAt;
  /** How long an HTTP request waits for the workflow (default 30 s); the change continues regardless. */
  updateTimeoutMs?: number;
}

/** Seat preview and change routes. */
export function seatRoutes(deps: SeatRouteDeps): OpenAPIHono {
  const { sql, temporal, stripe, seatDecreaseAt } = deps;
  const timeoutMs = deps.updateTimeoutMs ?? 30_000;
  const app = createRouter();

  app.openapi(previewQuantityChange, async (c) => {
    const { customerId } = c.req.valid('param');
    const { quantity } = c.req.valid('json');
    await requireCustomer(sql, customerId);
    const sub = await loadCurrentSubscription(sql, customerId);
    const prorationDate = Math.floor(Date.now() / 1000);
    // The workflow validator's rules, on the row a commit is compared with.
    const decision = decideSeatChange({ subscription: sub, quantity, now: prorationDate });
    if (!decision.ok) throw rejectionError(decision.type, decision.message);
    if (!sub) throw rejectionError('NoSubscription', 'the customer has no subscription');
    const { kind, from, to } = decision;
    const plan = currentPlanOf(sub, await readPlans(sql));
    const atRenewal = kind === 'decrease' && seatDecreaseAt === 'period_end';
    const base = {
      customerId,
      subscriptionId: sub.id,
      planId: sub.planId,
      fromQuantity: from,
      toQuantity: to,
      kind,
      decreaseAt: kind === 'decrease' ? seatDecreaseAt : null,
      subscriptionVersion: subscriptionVersion(sub),
      nextBillingAt: sub.currentPeriodEnd,
    };
    const renewal = { prorationDate: null, amountDueNow: 0, effectiveAt: sub.currentPeriodEnd, lines: [] };
    if (atRenewal && plan) return c.json({ ...base, ...renewal, currency: plan.currency, amountDueNext: plan.amount * to }, 200);
    try {
      const stripeSub = await stripe.subscriptions.retrieve(sub.id);
      const item = stripeSub.items.data.find((i) => i.price.id === sub.priceId) ?? stripeSub.items.data[0];
      if (!item) throw rejectionError('UnknownCurrentPlan', `subscription ${sub.id} has no items in Stripe`);
      // A price outside the catalog: Stripe's unit amount.
      const unitAmount = plan?.amount ?? item.price.unit_amount ?? 0;
      if (atRenewal) return c.json({ ...base, ...renewal, currency: item.price.currency, amountDueNext: unitAmount * to }, 200);
      const invoice = await stripe.invoices.createPreview({
        customer: customerId,
        subscription: sub.id,
        subscription_details: {
          // The commit sends the same: the quantity on the existing item, at this proration date.
          items: [{ id: item.id, quantity: to }],
          proration_behavior: kind === 'increase' ? 'always_invoice' : 'create_prorations',
          proration_date: prorationDate,
        },
      });
      return c.json(
        {
          ...base,
          currency: invoice.currency,
          prorationDate,
          effectiveAt: prorationDate,
          // An increase is invoiced now (this preview is that invoice); a decrease's credit lands on the next one (this preview).
          amountDueNow: kind === 'increase' ? invoice.amount_due : 0,
          amountDueNext: kind === 'increase' ? unitAmount * to : invoice.amount_due,
          lines: previewLines(invoice),
        },
        200,
      );
    } catch (err) {
      return stripeApiError(err, 'preview seat change');
    }
  });

  app.openapi(changeQuantity, async (c) => {
    const { customerId } = c.req.valid('param');
    const body = c.req.valid('json');
    const req: ChangeQuantityRequest = {
      quantity: body.quantity,
      requestId: body.requestId,
      ...(body.prorationDate ? { prorationDate: body.prorationDate } : {}),
      ...(body.subscriptionVersion ? { subscriptionVersion: body.subscriptionVersion } : {}),
      decreaseAt: seatDecreaseAt,
    };
    const result = await runCustomerUpdate(temporal, timeoutMs, customerId, changeQuantityUpdate, req);
    return c.json(result, changePlanStatus(result));
  });

  return app;
}
