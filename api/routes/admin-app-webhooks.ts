/** Admin: the log of outgoing app webhooks (app_webhooks), one event with its payload, and replay. Mounted behind the admin token. */
import { appWebhookWorkflowId } from '../../domain/ids';
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type postgres from 'postgres';
import { APP_EVENT_TYPES } from '../../domain/app-events';
import type { Sql } from '../../lib/db';
import { adminAuthErrors, adminSecurity, ApiError, commonErrors, errorResponse } from '../errors';
import { createRouter, IsoTimeSchema, isStorableTime, jsonResponse } from '../validate';

/** Every delivery status of an app webhook (app_webhooks.status). */
export const APP_WEBHOOK_STATUSES = ['pending', 'delivered', 'failed', 'given_up'] as const;

export const ListAppWebhooksQuerySchema = z.object({
  customerId: z.string().min(1).max(255).optional(),
  status: z.enum(APP_WEBHOOK_STATUSES).optional(),
  type: z.enum(APP_EVENT_TYPES).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  /** Opaque cursor from the previous page's nextCursor. */
  cursor: z.string().max(500).optional(),
});

const summaryFields = {
  id: z.string(),
  type: z.string().describe('access.changed, subscription.changed, plan_change.completed, …'),
  customerId: z.string().nullable(),
  status: z.enum(APP_WEBHOOK_STATUSES).describe('failed: the last attempt failed and retries go on; given_up: retried for 3 days'),
  attempts: z.number().int().describe('POSTs made, replays included'),
  lastStatusCode: z.number().int().nullable().describe("The app's HTTP status on the last attempt (null: network error or timeout)"),
  lastError: z.string().nullable(),
  lastAttemptAt: IsoTimeSchema.nullable(),
  deliveredAt: IsoTimeSchema.nullable(),
  createdAt: IsoTimeSchema,
  replays: z.number().int().describe('Admin replays so far'),
};
const AppWebhookSummarySchema = z.object(summaryFields).openapi('AppWebhookSummary');
const AppWebhookListSchema = z
  .object({ data: z.array(AppWebhookSummarySchema), nextCursor: z.string().nullable().describe('Pass as `cursor` for the next page') })
  .openapi('AppWebhookList');
const AppWebhookSchema = z
  .object({ ...summaryFields, data: z.record(z.string(), z.unknown()).describe('The event payload, as the app receives it in `data`') })
  .openapi('AppWebhook');
const AppWebhookReplaySchema = z
  .object({
    id: z.string(),
    replays: z.number().int(),
    workflowId: z.string().describe('app-webhook:<id>:replay-<replays>, started by the worker’s outbox relay'),
  })
  .openapi('AppWebhookReplay');
const IdParamsSchema = z.object({
  id: z.string().min(1).describe('aevt_… (the id the app receives)').openapi({ param: { name: 'id', in: 'path' } }),
});

const base = { tags: ['admin: app webhooks'], security: adminSecurity };
const listAppWebhooks = createRoute({
  ...base,
  method: 'get',
  path: '/admin/app-webhooks',
  summary: 'List the outgoing app webhooks, newest first',
  request: { query: ListAppWebhooksQuerySchema },
  responses: {
    200: jsonResponse(AppWebhookListSchema, 'One page'),
    400: errorResponse('Invalid filter (validation_error) or cursor (invalid_cursor)'),
    ...adminAuthErrors,
    ...commonErrors,
  },
});
const getAppWebhook = createRoute({
  ...base,
  method: 'get',
  path: '/admin/app-webhooks/{id}',
  summary: 'One app webhook with its payload',
  request: { params: IdParamsSchema },
  responses: { 200: jsonResponse(AppWebhookSchema, 'The event and its delivery'), ...adminAuthErrors, ...commonErrors },
});
const replayAppWebhook = createRoute({
  ...base,
  method: 'post',
  path: '/admin/app-webhooks/{id}/replay',
  summary: 'Deliver an app webhook again (same id): sets it pending for the outbox relay',
  request: { params: IdParamsSchema },
  responses: {
    202: jsonResponse(AppWebhookReplaySchema, 'Accepted: the relay starts the replay workflow'),
    ...adminAuthErrors,
    409: errorResponse('A delivery of it is in flight (delivery_in_flight)'),
    ...commonErrors,
  },
});


/** A cursor time as Postgres holds it (microseconds, UTC), as in the Stripe delivery log. */
const CURSOR_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/;

function encodeCursor(at: string, id: string): string {
  return Buffer.from(JSON.stringify([at, id])).toString('base64url');
}

function decodeCursor(cursor: string): { at: string; id: string } {
  try {
    const [at, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as [unknown, unknown];
    if (typeof at !== 'string' || !CURSOR_TIME.test(at) || !isStorableTime(new Date(at))) throw new Error('bad');
    if (typeof id !== 'string' || id.includes('\u0000')) throw new Error('bad');
    return { at, id };
  } catch {
    throw new ApiError(400, 'invalid_cursor', 'cursor is not valid');
  }
}

interface SummaryRow {
  id: string;
  type: string;
  customer_id: string | null;
  status: (typeof APP_WEBHOOK_STATUSES)[number];
  attempts: number;
  last_status_code: number | null;
  last_error: string | null;
  last_attempt_at: Date | null;
  delivered_at: Date | null;
  created_at: Date;
  replays: number;
}

function toSummary(r: SummaryRow) {
  return {
    id: r.id,
    type: r.type,
    customerId: r.customer_id,
    status: r.status,
    attempts: r.attempts,
    lastStatusCode: r.last_status_code,
    lastError: r.last_error,
    lastAttemptAt: r.last_attempt_at?.toISOString() ?? null,
    deliveredAt: r.delivered_at?.toISOString() ?? null,
    createdAt: r.created_at.toISOString(),
    replays: r.replays,
  };
}

/** Admin routes of the app webhook log. */
export function adminAppWebhookRoutes(deps: { sql: Sql }): OpenAPIHono {
  const { sql } = deps;
  const app = createRouter();
  const columns = sql`id, type, customer_id, status, attempts, last_status_code, last_error, last_attempt_at, delivered_at, created_at, replays`;
  const utcMicros = (t: postgres.Fragment) => sql`to_char(${t} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

  app.openapi(listAppWebhooks, async (c) => {
    const q = c.req.valid('query');
    const cur = q.cursor ? decodeCursor(q.cursor) : null;
    const rows = await sql<(SummaryRow & { cursor_at: string })[]>`
      SELECT ${columns}, ${utcMicros(sql`created_at`)} AS cursor_at
      FROM app_webhooks
      WHERE true
        ${q.customerId ? sql`AND customer_id = ${q.customerId}` : sql``}
        ${q.status ? sql`AND status = ${q.status}` : sql``}
        ${q.type ? sql`AND type = ${q.type}` : sql``}
        ${cur ? sql`AND (created_at, id) < (${cur.at}::text::timestamptz, ${cur.id})` : sql``}
      ORDER BY created_at DESC, id DESC
      LIMIT ${q.limit + 1}`;
    const data = rows.slice(0, q.limit);
    const last = data[data.length - 1];
    return c.json({ data: data.map(toSummary), nextCursor: rows.length > q.limit && last ? encodeCursor(last.cursor_at, last.id) : null }, 200);
  });

  app.openapi(getAppWebhook, async (c) => {
    const { id } = c.req.valid('param');
    const [row] = await sql<(SummaryRow & { data: Record<string, unknown> })[]>`SELECT ${columns}, data FROM app_webhooks WHERE id = ${id}`;
    if (!row) throw new ApiError(404, 'app_webhook_not_found', `no app webhook ${id}`);
    return c.json({ ...toSummary(row), data: row.data }, 200);
  });

  app.openapi(replayAppWebhook, async (c) => {
    const { id } = c.req.valid('param');
    // One statement: the relay starts app-webhook:<id>:replay-<n> for the row it finds unstarted. A row
    // whose delivery workflow is running (started, neither delivered nor given up) is left alone.
    const [replayed] = await sql<{ replays: number }[]>`
      UPDATE app_webhooks SET status = 'pending', replays = replays + 1, workflow_started_at = NULL
      WHERE id = ${id} AND NOT (status IN ('pending', 'failed') AND workflow_started_at IS NOT NULL)
      RETURNING replays`;
    if (replayed) return c.json({ id, replays: replayed.replays, workflowId: appWebhookWorkflowId(id, replayed.replays) }, 202);
    const [row] = await sql<{ status: string }[]>`SELECT status FROM app_webhooks WHERE id = ${id}`;
    if (!row) throw new ApiError(404, 'app_webhook_not_found', `no app webhook ${id}`);
    throw new ApiError(409, 'delivery_in_flight', `app webhook ${id} is being delivered (status ${row.status}); replay it once it is delivered or given up`);
  });

  return app;
}
