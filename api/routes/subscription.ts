/**
 * Subscription changes: the preview reads Stripe directly; every change is a Workflow Update on the
 * customer workflow `customer:<id>`, whose synchronous validator rejects invalid requests before
 * anything reaches Stripe. Repeats are recognised by requestId inside the workflow (a retry joins the
 * running request or gets its result); update ids stay random, because Temporal would replay a failed
 * update's failure to every later call with the same id.
 */
import { loadCurrentSubscription } from '../../lib/subscriptions';
import { ServiceError, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError, type Client } from '@temporalio/client';
import { ApplicationFailure, WorkflowNotFoundError, type UpdateDefinition } from '@temporalio/common';
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type Stripe from 'stripe';
import { customerWorkflowId } from '../../domain/ids';
import { type ChangePlanRequest, type ChangePlanResult } from '../../domain/messages';
import { cancelPendingPlanChangeUpdate, cancelSubscriptionUpdate, changePlanUpdate, refreshPlanCatalogUpdate, resumeSubscriptionUpdate } from '../../workflows/contracts';
import { commitRejection, decidePlanChange, REQUEST_ID_PATTERN, subscriptionVersion, type PlanChangeRejection } from '../../domain/plan-change';
import { prorateUpgrade } from '../../domain/proration';
import type { Sql } from '../../lib/db';
import { readPlans } from '../../lib/plan-catalog-sync';
import { apiAuthErrors, apiSecurity, ApiError, commonErrors, errorResponse, jsonBodyErrors, temporalCallError } from '../errors';
import { stripeApiError } from '../stripe-errors';
import { createRouter, jsonBody, jsonResponse } from '../validate';
import { CustomerIdParamsSchema } from './customers';

/** The request id of a subscription change: Stripe idempotency keys and the workflow's dedup derive from it. */
export const RequestIdSchema = z.string().regex(REQUEST_ID_PATTERN, 'requestId must be 1-100 characters of letters, digits, _ . : -');
const PlanIdSchema = z.string().min(1).max(100);

/** The preview's pins a commit carries; `what` names the changes that require them (charged now). */
export const previewPinFields = (what: string) => ({
  prorationDate: z
    .number()
    .int()
    .positive()
    .optional()
    .describe(`The preview’s prorationDate, so the amount charged equals the amount previewed. Required for ${what} (422 preview_required without it)`),
  subscriptionVersion: z
    .string()
    .min(1)
    .max(100)
    .optional()
    .describe(`The preview’s subscriptionVersion: 409 subscription_changed if the subscription changed since the preview. Required for ${what}`),
});

export const PreviewPlanChangeBodySchema = z.strictObject({ planId: PlanIdSchema }).openapi('PreviewPlanChangeRequest');
export const ChangePlanBodySchema = z
  .strictObject({ planId: PlanIdSchema, requestId: RequestIdSchema, ...previewPinFields('an upgrade') })
  .openapi('ChangePlanRequest');
export const CancelSubscriptionBodySchema = z.strictObject({ atPeriodEnd: z.boolean(), requestId: RequestIdSchema }).openapi('CancelSubscriptionRequest');
export const RequestIdBodySchema = z.strictObject({ requestId: RequestIdSchema }).openapi('RequestIdRequest');

/** Unix seconds in response schemas. */
export const unix = z.number().int().describe('Unix seconds');
/** The invoice lines of a preview. */
export const PreviewLinesSchema = z.array(z.object({ description: z.string().nullable(), amount: z.number().int(), proration: z.boolean() }));
const PlanChangePreviewSchema = z
  .object({
    customerId: z.string(),
    subscriptionId: z.string(),
    kind: z.enum(['upgrade', 'downgrade']),
    fromPlanId: z.string(),
    toPlanId: z.string(),
    currency: z.string(),
    amountDueNext: z.number().int(),
    prorationDate: unix.nullable().describe('Pass to PUT …/subscription/plan so the charge equals this preview (null for a downgrade)'),
    subscriptionVersion: z.string().describe('Pass to PUT …/subscription/plan: the commit answers 409 subscription_changed if the subscription changed since'),
    amountDueNow: z.number().int().describe('Minor units invoiced at once (0 for a downgrade)'),
    effectiveAt: unix.nullable(),
    nextBillingAt: unix.nullable(),
    lines: PreviewLinesSchema,
    estimate: z
      .object({ credit: z.number().int(), charge: z.number().int(), net: z.number().int(), secondsRemaining: z.number().int(), periodSeconds: z.number().int() })
      .nullable()
      .describe('Local cross-check of Stripe’s proration (same interval only)'),
  })
  .openapi('PlanChangePreview');
const PlanChangeResultSchema = z
  .object({
    requestId: z.string(),
    kind: z.enum(['upgrade', 'downgrade']),
    fromPlanId: z.string().nullable(),
    toPlanId: z.string(),
    status: z.enum(['confirmed', 'pending', 'scheduled', 'failed', 'canceled']),
    effectiveAt: unix.nullable(),
    invoiceId: z.string().nullable(),
    message: z.string(),
  })
  .openapi('PlanChangeResult');
const SubscriptionActionResultSchema = z
  .object({ requestId: z.string(), status: z.string(), cancelAtPeriodEnd: z.boolean(), message: z.string() })
  .openapi('SubscriptionActionResult');

/** The error answers of a subscription-change Update. */
export const updateErrors = {
  ...jsonBodyErrors,
  ...apiAuthErrors,
  404: errorResponse('No such customer or workflow (customer_not_found), or no subscription (no_subscription)'),
  409: errorResponse(
    'Rejected by the workflow’s validator: same_plan, subscription_canceled, subscription_canceling (downgrade of a subscription set to cancel: resume it first), subscription_changed (since the preview: preview again), change_in_flight, request_id_reused, …',
  ),
  422: errorResponse('unknown_plan, currency_mismatch, invalid_proration_date, preview_required (an upgrade without its preview’s prorationDate and subscriptionVersion), or Stripe refused (stripe_rejected)'),
  503: errorResponse('Temporal or Stripe unreachable, or still processing: retry with the same requestId'),
  ...commonErrors,
};
/** The request of a /customers/{customerId}/subscription… route with a JSON body. */
export const withBody = <S extends z.ZodType>(schema: S) => ({
  params: CustomerIdParamsSchema,
  body: { required: true as const, content: { 'application/json': { schema } } },
});
/** Tags, security and body checks of the subscription routes. */
export const subscriptionRouteBase = { tags: ['subscriptions'], security: apiSecurity, middleware: jsonBody() };
const base = subscriptionRouteBase;

const previewPlanChange = createRoute({
  ...base,
  method: 'post',
  path: '/customers/{customerId}/subscription/plan/preview',
  summary: 'Preview a plan change: the prorated amount due now, from Stripe',
  request: withBody(PreviewPlanChangeBodySchema),
  responses: { 200: jsonResponse(PlanChangePreviewSchema, 'The preview'), ...updateErrors },
});
const changePlan = createRoute({
  ...base,
  method: 'put',
  path: '/customers/{customerId}/subscription/plan',
  summary: 'Change plan: upgrades now with the previewed proration, downgrades at period end (a Workflow Update)',
  description:
    'An upgrade needs the prorationDate and subscriptionVersion of POST …/subscription/plan/preview: it charges exactly the previewed proration, or answers 409 subscription_changed when the subscription changed since the preview. A downgrade of a subscription set to cancel at period end is refused (409 subscription_canceling): resume it first.',
  request: withBody(ChangePlanBodySchema),
  responses: {
    200: jsonResponse(PlanChangeResultSchema, 'Applied (confirmed)'),
    202: jsonResponse(PlanChangeResultSchema, 'Accepted: awaiting payment (pending) or at period end (scheduled)'),
    402: jsonResponse(PlanChangeResultSchema, 'The payment for the upgrade failed (failed)'),
    ...updateErrors,
  },
});
const cancelPendingPlanChange = createRoute({
  ...base,
  method: 'post',
  path: '/customers/{customerId}/subscription/plan/cancel-pending',
  summary: 'Withdraw a scheduled plan change',
  request: withBody(RequestIdBodySchema),
  responses: {
    200: jsonResponse(PlanChangeResultSchema, 'Withdrawn (canceled)'),
    ...updateErrors,
    404: errorResponse('No such customer (customer_not_found) or no scheduled change (no_pending_plan_change)'),
  },
});
const cancelSubscription = createRoute({
  ...base,
  method: 'post',
  path: '/customers/{customerId}/subscription/cancel',
  summary: 'Cancel now or at period end',
  request: withBody(CancelSubscriptionBodySchema),
  responses: { 200: jsonResponse(SubscriptionActionResultSchema, 'Done'), ...updateErrors },
});
const resumeSubscription = createRoute({
  ...base,
  method: 'post',
  path: '/customers/{customerId}/subscription/resume',
  summary: 'Undo a cancel-at-period-end',
  request: withBody(RequestIdBodySchema),
  responses: { 200: jsonResponse(SubscriptionActionResultSchema, 'Done'), ...updateErrors },
});

type ApiStatus = ConstructorParameters<typeof ApiError>[0];

/** Validator rejections and handler failures of the customer workflow's updates, as HTTP errors. */
const UPDATE_FAILURES: Record<PlanChangeRejection | 'StripeRejected' | 'StripeUnavailable', [ApiStatus, string]> = {
  InvalidRequest: [400, 'validation_error'],
  UnknownPlan: [422, 'unknown_plan'],
  SamePlan: [409, 'same_plan'],
  NoSubscription: [404, 'no_subscription'],
  SubscriptionCanceled: [409, 'subscription_canceled'],
  SubscriptionNotChangeable: [409, 'subscription_not_changeable'],
  UnknownCurrentPlan: [409, 'unknown_current_plan'],
  CurrencyMismatch: [422, 'currency_mismatch'],
  InvalidProrationDate: [422, 'invalid_proration_date'],
  ChangeInFlight: [409, 'change_in_flight'],
  RequestIdReused: [409, 'request_id_reused'],
  NotCanceling: [409, 'not_canceling'],
  PreviewRequired: [422, 'preview_required'],
  SubscriptionChanged: [409, 'subscription_changed'],
  SubscriptionCanceling: [409, 'subscription_canceling'],
  SameQuantity: [409, 'same_quantity'],
  InvalidQuantity: [400, 'invalid_quantity'],
  StripeRejected: [422, 'stripe_rejected'],
  StripeUnavailable: [503, 'stripe_unavailable'],
};

/** The HTTP error for a rule rejection (also used by the preview, which runs the same rules). */
export function rejectionError(type: string, message: string): ApiError {
  const known = UPDATE_FAILURES[type as keyof typeof UPDATE_FAILURES];
  return known ? new ApiError(known[0], known[1], message) : new ApiError(503, 'update_failed', message);
}

/** Maps a failed Workflow Update call to an ApiError; rethrows what it does not recognise. */
export function updateError(err: unknown, customerId: string): never {
  if (err instanceof WorkflowNotFoundError) {
    throw new ApiError(404, 'customer_not_found', `no billing workflow for ${customerId}; it starts with the customer's first Stripe event`);
  }
  if (err instanceof WorkflowUpdateFailedError) {
    const cause = err.cause;
    if (cause instanceof ApplicationFailure && cause.type) throw rejectionError(cause.type, cause.message);
    throw new ApiError(503, 'update_failed', cause?.message ?? err.message);
  }
  if (err instanceof WorkflowUpdateRPCTimeoutOrCancelledError) {
    throw new ApiError(503, 'still_processing', 'the change is still being processed; repeat the request with the same requestId for its result');
  }
  if (err instanceof ServiceError) temporalCallError(err, 'retry with the same requestId');
  throw err;
}

/** HTTP status of a plan or seat change result: applied 200, awaiting payment or renewal 202, declined 402. */
export function changePlanStatus(result: Pick<ChangePlanResult, 'status'>): 200 | 202 | 402 {
  if (result.status === 'failed') return 402;
  return result.status === 'pending' || result.status === 'scheduled' ? 202 : 200;
}

/**
 * Runs an Update on the customer workflow `customer:<id>`; failures become ApiErrors (updateError). The
 * request waits at most `timeoutMs`; the change itself continues and a retry with the same requestId joins it.
 */
export async function runCustomerUpdate<Ret, Arg>(temporal: Client, timeoutMs: number, customerId: string, def: UpdateDefinition<Ret, [Arg]>, arg: Arg): Promise<Ret> {
  const handle = temporal.workflow.getHandle(customerWorkflowId(customerId));
  try {
    return await temporal.withAbortSignal(AbortSignal.timeout(timeoutMs), () => handle.executeUpdate(def, { args: [arg] }));
  } catch (err) {
    return updateError(err, customerId);
  }
}

/** 404 customer_not_found unless the customer is known locally (previews read the local row). */
export async function requireCustomer(sql: Sql, customerId: string): Promise<void> {
  const known = await sql`SELECT 1 FROM customers WHERE id = ${customerId}`;
  if (known.length === 0) throw new ApiError(404, 'customer_not_found', `no customer ${customerId}`);
}

/** A preview invoice's lines, each flagged when it is a proration. */
export function previewLines(invoice: Stripe.Invoice): { description: string | null; amount: number; proration: boolean }[] {
  return invoice.lines.data.map((l) => ({
    description: l.description,
    amount: l.amount,
    proration: l.parent?.subscription_item_details?.proration ?? l.parent?.invoice_item_details?.proration ?? false,
  }));
}

export interface SubscriptionRouteDeps {
  sql: Sql;
  temporal: Client;
  stripe: Pick<Stripe, 'subscriptions' | 'invoices'>;
  /** How long an HTTP request waits for the workflow (default 30 s); the change continues regardless. */
  updateTimeoutMs?: number;
}

/** Plan change, preview, cancel and resume routes. */
export function subscriptionRoutes(deps: SubscriptionRouteDeps): OpenAPIHono {
  const { sql, temporal, stripe } = deps;
  const timeoutMs = deps.updateTimeoutMs ?? 30_000;
  const app = createRouter();

  const runUpdate = <Ret, Arg>(customerId: string, def: UpdateDefinition<Ret, [Arg]>, arg: Arg) => runCustomerUpdate(temporal, timeoutMs, customerId, def, arg);

  async function refreshCatalog(customerId: string): Promise<void> {
    const handle = temporal.workflow.getHandle(customerWorkflowId(customerId));
    try {
      await temporal.withAbortSignal(AbortSignal.timeout(timeoutMs), () => handle.executeUpdate(refreshPlanCatalogUpdate));
    } catch (err) {
      updateError(err, customerId);
    }
  }

  app.openapi(previewPlanChange, async (c) => {
    const { customerId } = c.req.valid('param');
    const body = c.req.valid('json');
    await requireCustomer(sql, customerId);
    const sub = await loadCurrentSubscription(sql, customerId);
    const prorationDate = Math.floor(Date.now() / 1000);
    const decision = decidePlanChange({ catalog: await readPlans(sql), subscription: sub, planId: body.planId, now: prorationDate });
    if (!decision.ok) throw rejectionError(decision.type, decision.message);
    if (!sub) throw rejectionError('NoSubscription', 'the customer has no subscription');
    const { kind, from, to } = decision;
    // Same commit rules as the workflow's validator (a downgrade of a canceling subscription is refused); the
    // preview itself supplies what an upgrade needs.
    const refused = commitRejection({ kind, subscription: sub, local: sub, prorationDate, subscriptionVersion: subscriptionVersion(sub) });
    if (refused) throw rejectionError(refused.type, refused.message);
    const base = {
      customerId,
      subscriptionId: sub.id,
      subscriptionVersion: subscriptionVersion(sub),
      kind,
      fromPlanId: from.id,
      toPlanId: to.id,
      currency: to.currency,
      // Per seat × seats: the next renewal bills the new price for every seat.
      amountDueNext: to.amount * (sub.quantity ?? 1),
    };
    if (kind === 'downgrade') {
      return c.json({ ...base, prorationDate: null, amountDueNow: 0, effectiveAt: sub.currentPeriodEnd, nextBillingAt: sub.currentPeriodEnd, lines: [], estimate: null }, 200);
    }
    try {
      const stripeSub = await stripe.subscriptions.retrieve(sub.id);
      const item = stripeSub.items.data.find((i) => i.price.id === from.stripePriceId) ?? stripeSub.items.data[0];
      if (!item) throw new ApiError(409, 'unknown_current_plan', `subscription ${sub.id} has no items in Stripe`);
      const invoice = await stripe.invoices.createPreview({
        customer: customerId,
        subscription: sub.id,
        subscription_details: {
          items: [{ id: item.id, price: to.stripePriceId }],
          proration_behavior: 'always_invoice',
          proration_date: prorationDate,
        },
      });
      const sameInterval = from.interval === to.interval;
      let estimate = null;
      if (sameInterval) {
        try {
          const seats = item.quantity ?? 1;
          estimate = prorateUpgrade({ oldAmount: from.amount * seats, newAmount: to.amount * seats, periodStart: item.current_period_start, periodEnd: item.current_period_end, prorationDate });
        } catch {
          // A period from Stripe that does not contain "now" (test clocks, emulators): no local estimate.
        }
      }
      return c.json({
        ...base,
        prorationDate,
        amountDueNow: invoice.amount_due,
        effectiveAt: prorationDate,
        // Changing the interval restarts the billing cycle at the change.
        nextBillingAt: sameInterval ? item.current_period_end : null,
        lines: previewLines(invoice),
        estimate,
      }, 200);
    } catch (err) {
      return stripeApiError(err, 'preview plan change');
    }
  });

  app.openapi(changePlan, async (c) => {
    const { customerId } = c.req.valid('param');
    const body = c.req.valid('json');
    const req: ChangePlanRequest = {
      planId: body.planId,
      requestId: body.requestId,
      ...(body.prorationDate ? { prorationDate: body.prorationDate } : {}),
      ...(body.subscriptionVersion ? { subscriptionVersion: body.subscriptionVersion } : {}),
    };
    let result: ChangePlanResult;
    try {
      result = await runUpdate(customerId, changePlanUpdate, req);
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 'unknown_plan')) throw err;
      const active = await sql`SELECT 1 FROM plans WHERE id = ${body.planId} AND active`;
      if (active.length === 0) throw err;
      // Added to the catalog after this workflow loaded it: refresh once and retry.
      await refreshCatalog(customerId);
      result = await runUpdate(customerId, changePlanUpdate, req);
    }
    return c.json(result, changePlanStatus(result));
  });

  app.openapi(cancelPendingPlanChange, async (c) => {
    const { customerId } = c.req.valid('param');
    const body = c.req.valid('json');
    const result = await runUpdate(customerId, cancelPendingPlanChangeUpdate, { requestId: body.requestId });
    if (!result) throw new ApiError(404, 'no_pending_plan_change', `customer ${customerId} has no scheduled plan change`);
    return c.json(result, 200);
  });

  app.openapi(cancelSubscription, async (c) => {
    const { customerId } = c.req.valid('param');
    const body = c.req.valid('json');
    return c.json(await runUpdate(customerId, cancelSubscriptionUpdate, body), 200);
  });

  app.openapi(resumeSubscription, async (c) => {
    const { customerId } = c.req.valid('param');
    const body = c.req.valid('json');
    return c.json(await runUpdate(customerId, resumeSubscriptionUpdate, { requestId: body.requestId }), 200);
  });

  return app;
}
