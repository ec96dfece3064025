/**
 * Checkout: POST /checkout creates a Stripe Checkout Session (mode subscription) for a catalog plan;
 * GET /plans lists the active catalog; GET /admin/checkout/success-rate reports completed / (completed + expired).
 */
import { randomUUID } from 'node:crypto';
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type Stripe from 'stripe';
import { REQUEST_ID_PATTERN } from '../../domain/plan-change';
import type { Sql } from '../../lib/db';
import { readPlans } from '../../lib/plan-catalog-sync';
import { adminAuthErrors, adminSecurity, apiAuthErrors, apiSecurity, ApiError, commonErrors, errorResponse, jsonBodyErrors } from '../errors';
import { stripeApiError } from '../stripe-errors';
import { createRouter, IsoTimeSchema, jsonBody, jsonResponse } from '../validate';

/** The figure the business watches. */
export const CHECKOUT_SUCCESS_TARGET = 0.98;

/** An http(s) URL of at most 2,048 characters (redirect targets). */
export const httpUrl = (name: string) => z.url({ protocol: /^https?$/, error: `${name} must be an http(s) URL` }).max(2048);

export const CheckoutBodySchema = z.strictObject({
  planId: z.string().min(1).max(100),
  /** An existing customer of this service; otherwise give email and a Stripe customer is created or reused. */
  customerId: z.string().regex(/^cus_[A-Za-z0-9_]{1,250}$/, 'customerId must look like cus_…').optional(),
  email: z.email('email must be an email address').max(254).optional(),
  trialDays: z.number().int().min(1).max(730).optional(),
  trialWithoutCard: z
    .enum(['pause', 'cancel', 'create_invoice'], { error: 'trialWithoutCard must be pause, cancel or create_invoice' })
    .optional()
    .describe(
      'Start the trial without asking for a card (Checkout collects one only if required). At the trial end without one, Stripe pauses the subscription (resumed here once the customer adds a card), cancels it, or invoices it. Requires trialDays',
    ),
  /** May contain Stripe's {CHECKOUT_SESSION_ID} placeholder. */
  successUrl: httpUrl('successUrl'),
  cancelUrl: httpUrl('cancelUrl'),
  /** Makes the call idempotent: the same requestId returns the same session. */
  requestId: z.string().regex(REQUEST_ID_PATTERN, 'requestId must be 1-100 characters of letters, digits, _ . : -').optional(),
})
  .refine((b) => b.trialWithoutCard === undefined || b.trialDays !== undefined, { path: ['trialWithoutCard'], error: 'trialWithoutCard needs trialDays' })
  .openapi('CheckoutRequest');
export type CheckoutBody = z.infer<typeof CheckoutBodySchema>;

export const SuccessRateQuerySchema = z.object({
  windowHours: z.coerce.number().int().min(1).max(24 * 90).default(24),
});

const sessionFields = {
  sessionId: z.string().describe('cs_…'),
  url: z.string().nullable().describe('The hosted Checkout page to redirect the customer to'),
  requestId: z.string(),
  customerId: z.string(),
  planId: z.string(),
  status: z.string().describe('open, complete or expired'),
};
const CheckoutSessionSchema = z
  .object({ ...sessionFields, expiresAt: IsoTimeSchema.nullable().optional().describe('Present when the session was created by this call') })
  .openapi('CheckoutSession');

const CheckoutSessionStatusSchema = z
  .object({
    sessionId: z.string(),
    status: z.enum(['open', 'complete', 'expired']).describe('complete once checkout.session.completed has been applied'),
    customerId: z.string(),
    planId: z.string(),
    subscriptionId: z.string().nullable(),
    subscriptionStatus: z.string().nullable().describe('The subscription as the local state has it (null until its event is applied)'),
    accessState: z.string().nullable(),
    createdAt: IsoTimeSchema,
    completedAt: IsoTimeSchema.nullable(),
    expiredAt: IsoTimeSchema.nullable(),
  })
  .openapi('CheckoutSessionStatus');

const SuccessRateSchema = z
  .object({
    windowHours: z.number().int(),
    completed: z.number().int(),
    expired: z.number().int(),
    open: z.number().int(),
    successRate: z.number().nullable().describe('completed / (completed + expired); null when none ended in the window'),
    target: z.number(),
    meetsTarget: z.boolean().nullable(),
  })
  .openapi('CheckoutSuccessRate');

const PlanSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    amount: z.number().int().describe('Minor units per interval'),
    currency: z.string(),
    interval: z.string(),
    rank: z.number().int().describe('Higher is an upgrade'),
    stripePriceId: z.string(),
  })
  .openapi('Plan');

const listPlans = createRoute({
  method: 'get',
  path: '/plans',
  tags: ['checkout'],
  summary: 'The active plan catalog',
  responses: { 200: jsonResponse(z.object({ data: z.array(PlanSchema) }), 'Active plans'), ...commonErrors },
});

const createCheckout = createRoute({
  method: 'post',
  path: '/checkout',
  tags: ['checkout'],
  summary: 'Create a Stripe Checkout Session (subscription mode) for a catalog plan',
  description: 'Idempotent by requestId: the same requestId returns the same session (200).',
  security: apiSecurity,
  middleware: jsonBody(),
  request: { body: { required: true, content: { 'application/json': { schema: CheckoutBodySchema } } } },
  responses: {
    201: jsonResponse(CheckoutSessionSchema, 'Session created'),
    200: jsonResponse(CheckoutSessionSchema, 'The session already created for this requestId'),
    ...jsonBodyErrors,
    ...apiAuthErrors,
    404: errorResponse('customerId is not a known customer (customer_not_found)'),
    409: errorResponse('The customer already has a live subscription (already_subscribed), or requestId was used for another checkout (request_id_reused)'),
    422: errorResponse('Stripe refused the request (stripe_rejected)'),
    503: errorResponse('Stripe unreachable (stripe_unavailable)'),
    ...commonErrors,
  },
});

/** Checkout Session ids (Stripe `cs_test_…` / `cs_live_…`). */
const CHECKOUT_SESSION_ID = /^cs_[A-Za-z0-9_]{1,250}$/;

const getCheckoutSession = createRoute({
  method: 'get',
  path: '/checkout/sessions/{sessionId}',
  tags: ['checkout'],
  summary: "A checkout session's local status, for the app's success page",
  description: 'Local state only: poll it after the redirect until status is complete (or use the app webhooks).',
  security: apiSecurity,
  request: {
    params: z.object({
      sessionId: z.string().regex(CHECKOUT_SESSION_ID, 'sessionId must look like cs_…').describe('cs_…').openapi({ param: { name: 'sessionId', in: 'path' } }),
    }),
  },
  responses: {
    200: jsonResponse(CheckoutSessionStatusSchema, 'The session'),
    400: errorResponse('sessionId does not look like cs_… (invalid_session_id)'),
    ...apiAuthErrors,
    404: errorResponse('No checkout session of that id was created here (checkout_session_not_found)'),
    ...commonErrors,
  },
});

const successRate = createRoute({
  method: 'get',
  path: '/admin/checkout/success-rate',
  tags: ['admin: checkout'],
  summary: 'Checkout success rate over a window',
  security: adminSecurity,
  request: { query: SuccessRateQuerySchema },
  responses: {
    200: jsonResponse(SuccessRateSchema, 'The rate and its counts'),
    400: errorResponse('Invalid query (validation_error)'),
    ...adminAuthErrors,
    ...commonErrors,
  },
});

/** Subscription statuses that mean "already subscribed": changes go through PUT .../subscription/plan. */
const LIVE_STATUSES = ['trialing', 'active', 'past_due', 'unpaid', 'paused'];

type SessionRow = {
  id: string;
  customer_id: string;
  plan_id: string;
  request_id: string;
  status: string;
  url: string | null;
  created_at: Date;
};

/** Checkout outcomes over a window: completed and expired by when they ended, open by creation. */
export async function checkoutSuccessRate(sql: Sql, windowHours: number) {
  const rows = await sql<{ completed: number; expired: number; open: number }[]>`
    SELECT
      count(*) FILTER (WHERE status = 'complete' AND completed_at >= now() - make_interval(hours => ${windowHours}))::int AS completed,
      count(*) FILTER (WHERE status = 'expired' AND expired_at >= now() - make_interval(hours => ${windowHours}))::int AS expired,
      count(*) FILTER (WHERE status = 'open' AND created_at >= now() - make_interval(hours => ${windowHours}))::int AS open
    FROM checkout_sessions`;
  const { completed, expired, open } = rows[0] ?? { completed: 0, expired: 0, open: 0 };
  const ended = completed + expired;
  const successRate = ended === 0 ? null : completed / ended;
  return { windowHours, completed, expired, open, successRate, target: CHECKOUT_SUCCESS_TARGET, meetsTarget: successRate === null ? null : successRate >= CHECKOUT_SUCCESS_TARGET };
}

async function sessionByRequestId(sql: Sql, requestId: string): Promise<SessionRow | null> {
  const rows = await sql<SessionRow[]>`
    SELECT id, customer_id, plan_id, request_id, status, url, created_at FROM checkout_sessions WHERE request_id = ${requestId}`;
  return rows[0] ?? null;
}

const sessionBody = (r: SessionRow) => ({ sessionId: r.id, url: r.url, requestId: r.request_id, customerId: r.customer_id, planId: r.plan_id, status: r.status });

/** POST /checkout and GET /plans (app-facing). */
export function checkoutRoutes(deps: {
  sql: Sql;
  stripe: Pick<Stripe, 'checkout' | 'customers'>;
  /** Development on the emulators only: the local page that stands in for Stripe's hosted one (api/routes/dev-checkout.ts). */
  checkoutPageUrl?: (sessionId: string) => string;
}): OpenAPIHono {
  const { sql, stripe } = deps;
  const app = createRouter();

  app.openapi(listPlans, async (c) => {
    const plans = await readPlans(sql, { activeOnly: true });
    return c.json({
      data: plans.map((p) => ({ id: p.id, name: p.name, amount: p.amount, currency: p.currency, interval: p.interval, rank: p.rank, stripePriceId: p.stripePriceId })),
    }, 200);
  });

  /** Reuses the given (known) customer, or one with this email, or creates a Stripe customer. */
  async function resolveCustomer(body: CheckoutBody, requestId: string): Promise<string> {
    let customerId: string | null = null;
    if (body.customerId) {
      const rows = await sql<{ id: string }[]>`SELECT id FROM customers WHERE id = ${body.customerId} AND NOT deleted`;
      if (!rows[0]) throw new ApiError(404, 'customer_not_found', `no customer ${body.customerId}`);
      customerId = body.customerId;
    } else if (body.email) {
      const rows = await sql<{ id: string }[]>`
        SELECT id FROM customers WHERE lower(email) = lower(${body.email}) AND NOT deleted ORDER BY created_at DESC LIMIT 1`;
      customerId = rows[0]?.id ?? null;
    }
    if (customerId) {
      const live = await sql<{ id: string; status: string }[]>`
        SELECT id, status FROM subscriptions WHERE customer_id = ${customerId} AND status::text = ANY(${LIVE_STATUSES}) LIMIT 1`;
      if (live[0]) {
        throw new ApiError(409, 'already_subscribed', `customer ${customerId} already has subscription ${live[0].id} (${live[0].status}); change its plan with PUT /customers/${customerId}/subscription/plan`);
      }
      return customerId;
    }
    try {
      const created = await stripe.customers.create(
        { email: body.email, metadata: { checkout_request_id: requestId } },
        { idempotencyKey: `checkout:${requestId}:customer` },
      );
      return created.id;
    } catch (err) {
      return stripeApiError(err, 'create customer');
    }
  }

  app.openapi(createCheckout, async (c) => {
    const body = c.req.valid('json');
    const problems: { path: string; message: string }[] = [];
    if (!body.customerId && !body.email) problems.push({ path: 'customerId', message: 'give customerId (an existing customer) or email' });
    const plan = (await readPlans(sql, { activeOnly: true })).find((p) => p.id === body.planId);
    if (!plan) problems.push({ path: 'planId', message: `unknown plan ${body.planId}` });
    if (problems.length > 0 || !plan) throw new ApiError(400, 'validation_error', 'request body is invalid', problems);

    const requestId = body.requestId ?? randomUUID();
    if (body.requestId) {
      const prior = await sessionByRequestId(sql, requestId);
      if (prior) {
        if (prior.plan_id !== body.planId || (body.customerId && prior.customer_id !== body.customerId)) {
          throw new ApiError(409, 'request_id_reused', `requestId ${requestId} was used for another checkout (plan ${prior.plan_id})`);
        }
        return c.json(sessionBody(prior), 200);
      }
    }

    const customerId = await resolveCustomer(body, requestId);
    const metadata = { plan_id: plan.id, request_id: requestId };
    let session: Stripe.Checkout.Session;
    try {
      session = await stripe.checkout.sessions.create(
        {
          mode: 'subscription',
          customer: customerId,
          line_items: [{ price: plan.stripePriceId, quantity: 1 }],
          success_url: body.successUrl,
          cancel_url: body.cancelUrl,
          client_reference_id: requestId,
          metadata,
          subscription_data: {
            metadata,
            ...(body.trialDays ? { trial_period_days: body.trialDays } : {}),
            ...(body.trialWithoutCard ? { trial_settings: { end_behavior: { missing_payment_method: body.trialWithoutCard } } } : {}),
          },
          ...(body.trialWithoutCard ? { payment_method_collection: 'if_required' as const } : {}),
        },
        { idempotencyKey: `checkout:${requestId}` },
      );
    } catch (err) {
      return stripeApiError(err, 'create checkout session');
    }
    // The emulator's session URL is no page a browser can open: in development the local one stands in.
    const url = deps.checkoutPageUrl ? deps.checkoutPageUrl(session.id) : session.url;
    // A concurrent request with the same requestId may have recorded first: its row wins.
    await sql`
      INSERT INTO checkout_sessions (id, customer_id, plan_id, request_id, status, url, trial_days)
      VALUES (${session.id}, ${customerId}, ${plan.id}, ${requestId}, 'open', ${url}, ${body.trialDays ?? null})
      ON CONFLICT DO NOTHING`;
    const row = await sessionByRequestId(sql, requestId);
    if (!row) throw new ApiError(409, 'request_id_reused', `checkout session ${session.id} is recorded under another request`);
    return c.json({ ...sessionBody(row), expiresAt: session.expires_at ? new Date(session.expires_at * 1000).toISOString() : null }, row.id === session.id ? 201 : 200);
  });

  // The app's success page: what the local state says now (checkout.session.completed applied or not).
  app.openapi(getCheckoutSession, async (c) => {
    const { sessionId } = c.req.valid('param');
    const rows = await deps.sql<
      {
        id: string;
        customer_id: string;
        plan_id: string;
        status: string;
        subscription_id: string | null;
        created_at: Date;
        completed_at: Date | null;
        expired_at: Date | null;
        access_state: string | null;
        subscription_status: string | null;
      }[]
    >`
      SELECT s.id, s.customer_id, s.plan_id, s.status, s.subscription_id, s.created_at, s.completed_at, s.expired_at,
             c.access_state, sub.status AS subscription_status
      FROM checkout_sessions s
      LEFT JOIN customers c ON c.id = s.customer_id
      LEFT JOIN subscriptions sub ON sub.id = s.subscription_id
      WHERE s.id = ${sessionId}`;
    const row = rows[0];
    if (!row) throw new ApiError(404, 'checkout_session_not_found', `no checkout session ${sessionId} created here`);
    const iso = (d: Date | null) => (d ? d.toISOString() : null);
    return c.json({
      sessionId: row.id,
      status: row.status as 'open' | 'complete' | 'expired',
      customerId: row.customer_id,
      planId: row.plan_id,
      subscriptionId: row.subscription_id,
      subscriptionStatus: row.subscription_status,
      accessState: row.access_state,
      createdAt: row.created_at.toISOString(),
      completedAt: iso(row.completed_at),
      expiredAt: iso(row.expired_at),
    }, 200);
  });

  return app;
}

/** GET /admin/checkout/success-rate (mount behind the admin guard). */
export function adminCheckoutRoutes(deps: { sql: Sql }): OpenAPIHono {
  const app = createRouter();
  app.openapi(successRate, async (c) => {
    const q = c.req.valid('query');
    return c.json(await checkoutSuccessRate(deps.sql, q.windowHours), 200);
  });
  return app;
}
