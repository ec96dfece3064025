/**
 * Entitlements: GET /customers/{customerId}/entitlements answers "may this customer do X" from local state
 * through the process's cached reader (api/entitlement-reader.ts: invalidated by LISTEN/NOTIFY from the
 * version triggers); support's overrides under /admin.
 */
import { randomUUID } from 'node:crypto';
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { OverrideValueSchema } from '../../domain/entitlements';
import { FeatureKeySchema } from '../../domain/plan-catalog';
import type { Sql } from '../../lib/db';
import type { EntitlementReader } from '../entitlement-reader';
import { adminAuthErrors, adminSecurity, apiAuthErrors, apiSecurity, ApiError, commonErrors, errorResponse, jsonBodyErrors } from '../errors';
import { createRouter, IsoTimeSchema, jsonBody, jsonResponse } from '../validate';
import { CustomerIdParamsSchema } from './customers';

const FeatureValueResponseSchema = z.union([z.boolean(), z.number().int(), z.null()]).describe('A flag, a limit, or null for unlimited');

const OverrideSummarySchema = z.object({
  id: z.string(),
  feature: z.string(),
  value: FeatureValueResponseSchema,
  reason: z.string(),
  expiresAt: IsoTimeSchema.nullable(),
  createdAt: IsoTimeSchema,
});

export const EntitlementsSchema = z
  .object({
    customerId: z.string(),
    accessState: z.string(),
    entitled: z.boolean().describe('false unless accessState is active or grace: then features is empty'),
    planId: z.string().nullable(),
    quantity: z.number().int().describe('Seats of the current subscription (1: quantities are not stored yet)'),
    features: z.record(z.string(), FeatureValueResponseSchema),
    stripeLookupKeys: z.array(z.string()).describe('Active Stripe Entitlements lookup keys (true in features)'),
    overrides: z.array(OverrideSummarySchema).describe('Live overrides, newest first'),
    computedAt: IsoTimeSchema,
  })
  .openapi('Entitlements');

const getEntitlements = createRoute({
  method: 'get',
  path: '/customers/{customerId}/entitlements',
  tags: ['customers'],
  summary: 'What the customer may do: plan features × quantity, gated by access state, Stripe Entitlements, overrides',
  security: apiSecurity,
  request: { params: CustomerIdParamsSchema },
  responses: {
    200: jsonResponse(EntitlementsSchema, 'The resolved entitlements'),
    400: errorResponse('customerId does not look like cus_… (invalid_customer_id)'),
    ...apiAuthErrors,
    404: errorResponse('No such customer (customer_not_found)'),
    ...commonErrors,
  },
});

/** GET /customers/{customerId}/entitlements (behind the API token). */
export function entitlementRoutes(deps: { reader: EntitlementReader }): OpenAPIHono {
  const app = createRouter();
  app.openapi(getEntitlements, async (c) => {
    const { customerId } = c.req.valid('param');
    const body = await deps.reader.read(customerId);
    if (!body) throw new ApiError(404, 'customer_not_found', `no customer ${customerId}`);
    return c.json(body, 200);
  });
  return app;
}

export const CreateOverrideBodySchema = z
  .strictObject({
    feature: FeatureKeySchema,
    value: OverrideValueSchema.describe('true/false, a non-negative limit, or null for unlimited'),
    reason: z.string().trim().min(1).max(500),
    expiresAt: z.iso.datetime({ offset: true }).optional().describe('ISO 8601; absent: until revoked'),
  })
  .openapi('CreateEntitlementOverride');

const OverrideSchema = OverrideSummarySchema.extend({
  customerId: z.string(),
  revokedAt: IsoTimeSchema.nullable(),
  expired: z.boolean(),
}).openapi('EntitlementOverride');

const OverrideParamsSchema = CustomerIdParamsSchema.extend({
  overrideId: z.string().min(1).max(100).openapi({ param: { name: 'overrideId', in: 'path' } }),
});

type OverrideRow = { id: string; customer_id: string; feature: string; value: boolean | number | null; reason: string; expires_at: Date | null; created_at: Date; revoked_at: Date | null };

const overrideBody = (r: OverrideRow) => ({
  id: r.id,
  customerId: r.customer_id,
  feature: r.feature,
  value: r.value,
  reason: r.reason,
  expiresAt: r.expires_at?.toISOString() ?? null,
  createdAt: r.created_at.toISOString(),
  revokedAt: r.revoked_at?.toISOString() ?? null,
  expired: r.expires_at !== null && r.expires_at.getTime() <= Date.now(),
});

const adminBase = { tags: ['admin: entitlements'], security: adminSecurity };
const basePath = '/admin/customers/{customerId}/entitlement-overrides';

const createOverride = createRoute({
  ...adminBase,
  method: 'post',
  path: basePath,
  summary: 'Grant an entitlement override (wins over the plan and Stripe until it expires or is revoked)',
  middleware: [jsonBody()] as const,
  request: { params: CustomerIdParamsSchema, body: { required: true, content: { 'application/json': { schema: CreateOverrideBodySchema } } } },
  responses: {
    201: jsonResponse(OverrideSchema, 'The override'),
    ...adminAuthErrors,
    404: errorResponse('No such customer (customer_not_found)'),
    ...jsonBodyErrors,
    ...commonErrors,
  },
});

const listOverrides = createRoute({
  ...adminBase,
  method: 'get',
  path: basePath,
  summary: 'The customer’s overrides not revoked (expired ones included, flagged), newest first',
  request: { params: CustomerIdParamsSchema },
  responses: {
    200: jsonResponse(z.object({ data: z.array(OverrideSchema) }).openapi('EntitlementOverrideList'), 'The overrides'),
    400: errorResponse('customerId does not look like cus_… (invalid_customer_id)'),
    ...adminAuthErrors,
    404: errorResponse('No such customer (customer_not_found)'),
    ...commonErrors,
  },
});

const revokeOverride = createRoute({
  ...adminBase,
  method: 'delete',
  path: `${basePath}/{overrideId}`,
  summary: 'Revoke an override (kept, with revokedAt, for the audit)',
  request: { params: OverrideParamsSchema },
  responses: {
    200: jsonResponse(OverrideSchema, 'The revoked override'),
    400: errorResponse('customerId does not look like cus_… (invalid_customer_id)'),
    ...adminAuthErrors,
    404: errorResponse('No such override of this customer, or already revoked (override_not_found)'),
    ...commonErrors,
  },
});

/**
 * Support's overrides (behind the admin token). These rows are support's writes, not billing rows: they
 * are written here, not through the customer workflow; the version trigger's NOTIFY invalidates every replica's cache.
 */
export function adminEntitlementRoutes(deps: { sql: Sql; reader: EntitlementReader }): OpenAPIHono {
  const { sql } = deps;
  const app = createRouter();
  const customerExists = async (customerId: string) => (await sql`SELECT 1 FROM customers WHERE id = ${customerId}`).length > 0;

  app.openapi(createOverride, async (c) => {
    const { customerId } = c.req.valid('param');
    const body = c.req.valid('json');
    const expiresAt = body.expiresAt ? new Date(body.expiresAt) : null;
    const [row] = await sql<OverrideRow[]>`
      INSERT INTO entitlement_overrides (id, customer_id, feature, value, reason, expires_at)
      SELECT ${`eo_${randomUUID().replace(/-/g, '')}`}, c.id, ${body.feature}, ${JSON.stringify(body.value)}::text::jsonb, ${body.reason}, ${expiresAt}
      FROM customers c WHERE c.id = ${customerId}
      RETURNING id, customer_id, feature, value, reason, expires_at, created_at, revoked_at`;
    if (!row) throw new ApiError(404, 'customer_not_found', `no customer ${customerId}`);
    deps.reader.invalidate(customerId);
    return c.json(overrideBody(row), 201);
  });

  app.openapi(listOverrides, async (c) => {
    const { customerId } = c.req.valid('param');
    if (!(await customerExists(customerId))) throw new ApiError(404, 'customer_not_found', `no customer ${customerId}`);
    const rows = await sql<OverrideRow[]>`
      SELECT id, customer_id, feature, value, reason, expires_at, created_at, revoked_at FROM entitlement_overrides
      WHERE customer_id = ${customerId} AND revoked_at IS NULL ORDER BY created_at DESC, id DESC`;
    return c.json({ data: rows.map(overrideBody) }, 200);
  });

  app.openapi(revokeOverride, async (c) => {
    const { customerId, overrideId } = c.req.valid('param');
    const [row] = await sql<OverrideRow[]>`
      UPDATE entitlement_overrides SET revoked_at = now()
      WHERE id = ${overrideId} AND customer_id = ${customerId} AND revoked_at IS NULL
      RETURNING id, customer_id, feature, value, reason, expires_at, created_at, revoked_at`;
    if (!row) throw new ApiError(404, 'override_not_found', `no override ${overrideId} of ${customerId}`);
    deps.reader.invalidate(customerId);
    return c.json(overrideBody(row), 200);
  });
  return app;
}
