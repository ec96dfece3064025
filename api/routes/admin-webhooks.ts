/** Admin: the webhook delivery log, stuck deliveries, single and bulk replay. Mounted behind the admin token. */
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import type postgres from 'postgres';
import type Stripe from 'stripe';
import type { Sql } from '../../lib/db';
import { adminAuthErrors, adminSecurity, ApiError, commonErrors, errorResponse, jsonBodyErrors } from '../errors';
import type { Ingest } from '../ingest';
import { createRouter, IsoTimeSchema, isStorableTime, jsonBody, jsonResponse } from '../validate';

/** Every delivery status (enum webhook_event_status). */
export const WEBHOOK_EVENT_STATUSES = ['received', 'dispatched', 'applied', 'ignored', 'failed', 'quarantined'] as const;

export const ListWebhookEventsQuerySchema = z.object({
  status: z.enum(WEBHOOK_EVENT_STATUSES).optional(),
  type: z.string().min(1).max(200).optional(),
  customer: z.string().min(1).max(255).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  /** Opaque cursor from the previous page's nextCursor. */
  cursor: z.string().max(500).optional(),
});

/** Query of GET /admin/webhook-events/stuck: deliveries dispatched longer than olderThanSeconds and not applied. */
export const ListStuckWebhookEventsQuerySchema = z.object({
  /** Default: STUCK_DISPATCH_THRESHOLD_MS in seconds. */
  olderThanSeconds: z.coerce.number().int().min(0).max(366 * 86_400).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  /** Opaque cursor from the previous page's nextCursor. */
  cursor: z.string().max(500).optional(),
});

export const BulkReplayBodySchema = z
  .strictObject({
    status: z.enum(['received', 'failed', 'ignored', 'dispatched', 'quarantined']).optional(),
    type: z.string().min(1).max(200).optional(),
    limit: z.number().int().min(1).max(5000).default(500),
    /** Replays per second (rate limit so a bulk replay never floods Temporal). */
    ratePerSecond: z.number().min(1).max(500).default(50),
  })
  .refine((b) => b.status || b.type, { message: 'give a status or a type to select events' })
  .openapi('BulkReplayRequest');

const summaryFields = {
  eventId: z.string(),
  type: z.string(),
  status: z.enum(WEBHOOK_EVENT_STATUSES),
  customerId: z.string().nullable(),
  attempts: z.number().int().describe('Deliveries received for this event id'),
  lastError: z.string().nullable().describe('Why it failed, was quarantined or is waiting (schema, data, lookup or dispatch error)'),
  receivedAt: IsoTimeSchema,
  dispatchedAt: IsoTimeSchema.nullable().describe('Last hand-over to the workflow (a sweeper re-send moves it)'),
  firstDispatchedAt: IsoTimeSchema.nullable().describe('When it entered dispatched: how long a stuck delivery has waited'),
  appliedAt: IsoTimeSchema.nullable(),
  quarantinedAt: IsoTimeSchema.nullable().describe('When the worker last set it aside after a data error'),
  payloadTruncated: z.boolean(),
};
const WebhookEventSummarySchema = z.object(summaryFields).openapi('WebhookEventSummary');
const WebhookEventListSchema = z
  .object({ data: z.array(WebhookEventSummarySchema), nextCursor: z.string().nullable().describe('Pass as `cursor` for the next page') })
  .openapi('WebhookEventList');
const WebhookEventSchema = z
  .object({
    ...summaryFields,
    apiVersion: z.string().nullable(),
    objectId: z.string().nullable(),
    workflowId: z.string().nullable().describe('customer:<cus_id> once dispatched'),
    lastReceivedAt: IsoTimeSchema,
    appliedOutcome: z.enum(['applied', 'stale', 'refetched', 'noop']).nullable(),
    payloadBytes: z.number().int(),
    payload: z.record(z.string(), z.unknown()).describe('The stored event (trimmed to ids when larger than the store limit)'),
  })
  .openapi('WebhookEvent');
const ReplayResultSchema = z
  .object({
    eventId: z.string(),
    result: z
      .enum(['dispatched', 'noop', 'ignored', 'failed', 'deferred'])
      .describe('noop: already applied; deferred: a Stripe lookup failed, left received for the sweeper'),
    reason: z.string().optional(),
    error: z.string().optional(),
  })
  .openapi('ReplayResult');
const BulkReplayResultSchema = z
  .object({
    selected: z.number().int(),
    results: z.record(z.string(), z.number().int()).describe('Count per outcome: dispatched, noop, ignored, failed, deferred, unavailable'),
  })
  .openapi('BulkReplayResult');
const EventIdParamsSchema = z.object({
  eventId: z.string().min(1).describe('evt_…').openapi({ param: { name: 'eventId', in: 'path' } }),
});

const base = { tags: ['admin: webhook deliveries'], security: adminSecurity };
const listEvents = createRoute({
  ...base,
  method: 'get',
  path: '/admin/webhook-events',
  summary: 'List the delivery log, newest first',
  request: { query: ListWebhookEventsQuerySchema },
  responses: {
    200: jsonResponse(WebhookEventListSchema, 'One page'),
    400: errorResponse('Invalid filter (validation_error) or cursor (invalid_cursor)'),
    ...adminAuthErrors,
    ...commonErrors,
  },
});
const listStuckEvents = createRoute({
  ...base,
  method: 'get',
  path: '/admin/webhook-events/stuck',
  summary: 'Deliveries dispatched but not applied for longer than olderThanSeconds, longest waiting first',
  description:
    'olderThanSeconds defaults to STUCK_DISPATCH_THRESHOLD_MS / 1000. The sweeper re-sends these once per threshold; they stay listed until applied. Same items and cursor paging as the delivery log.',
  request: { query: ListStuckWebhookEventsQuerySchema },
  responses: {
    200: jsonResponse(WebhookEventListSchema, 'One page'),
    400: errorResponse('Invalid query (validation_error) or cursor (invalid_cursor)'),
    ...adminAuthErrors,
    ...commonErrors,
  },
});
const getEvent = createRoute({
  ...base,
  method: 'get',
  path: '/admin/webhook-events/{eventId}',
  summary: 'One delivery with its payload and apply outcome',
  request: { params: EventIdParamsSchema },
  responses: { 200: jsonResponse(WebhookEventSchema, 'The delivery'), ...adminAuthErrors, ...commonErrors },
});
const replayEvent = createRoute({
  ...base,
  method: 'post',
  path: '/admin/webhook-events/{eventId}/replay',
  summary: 'Replay one delivery through its customer workflow (an applied event is a no-op)',
  request: { params: EventIdParamsSchema },
  responses: {
    200: jsonResponse(ReplayResultSchema, 'Replayed, or why not'),
    ...adminAuthErrors,
    503: errorResponse('Temporal unreachable (unavailable)'),
    ...commonErrors,
  },
});
const bulkReplay = createRoute({
  ...base,
  method: 'post',
  path: '/admin/webhook-events/replay',
  summary: 'Replay many deliveries selected by status and/or type, rate limited',
  middleware: jsonBody(),
  request: { body: { required: true, content: { 'application/json': { schema: BulkReplayBodySchema } } } },
  responses: { 200: jsonResponse(BulkReplayResultSchema, 'Counts per outcome'), ...jsonBodyErrors, ...adminAuthErrors, ...commonErrors },
});

/**
 * A cursor time as Postgres holds it (microseconds, UTC): a millisecond Date would skip or repeat rows.
 * Queries cast it `::text::timestamptz`: as a timestamptz parameter postgres.js would round it to a Date.
 */
const CURSOR_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/;

function encodeCursor(at: string, eventId: string): string {
  return Buffer.from(JSON.stringify([at, eventId])).toString('base64url');
}

function decodeCursor(cursor: string): { at: string; eventId: string } {
  try {
    const [at, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as [unknown, unknown];
    if (typeof at !== 'string' || !CURSOR_TIME.test(at) || !isStorableTime(new Date(at))) throw new Error('bad');
    if (typeof id !== 'string' || id.includes('\u0000')) throw new Error('bad');
    return { at, eventId: id };
  } catch {
    throw new ApiError(400, 'invalid_cursor', 'cursor is not valid');
  }
}

interface SummaryRow {
  event_id: string;
  type: string;
  status: (typeof WEBHOOK_EVENT_STATUSES)[number];
  customer_id: string | null;
  attempts: number;
  last_error: string | null;
  received_at: Date;
  dispatched_at: Date | null;
  first_dispatched_at: Date | null;
  applied_at: Date | null;
  quarantined_at: Date | null;
  payload_truncated: boolean;
  /** The sort key of the page, as exact text for the next cursor. */
  cursor_at: string;
}

function toSummary(r: SummaryRow) {
  return {
    eventId: r.event_id,
    type: r.type,
    status: r.status,
    customerId: r.customer_id,
    attempts: r.attempts,
    lastError: r.last_error,
    receivedAt: r.received_at.toISOString(),
    dispatchedAt: r.dispatched_at?.toISOString() ?? null,
    firstDispatchedAt: (r.first_dispatched_at ?? r.dispatched_at)?.toISOString() ?? null,
    appliedAt: r.applied_at?.toISOString() ?? null,
    quarantinedAt: r.quarantined_at?.toISOString() ?? null,
    payloadTruncated: r.payload_truncated,
  };
}

/** One page of summaries and the cursor of the next (null on the last page). */
function page(rows: SummaryRow[], limit: number) {
  const data = rows.slice(0, limit);
  const last = data[data.length - 1];
  return { data: data.map(toSummary), nextCursor: rows.length > limit && last ? encodeCursor(last.cursor_at, last.event_id) : null };
}

/** Admin delivery-log routes. */
export function adminWebhookRoutes(deps: { sql: Sql; ingest: Ingest; stripe?: Pick<Stripe, 'events'>; stuckThresholdMs: number }): OpenAPIHono {
  const { sql, ingest } = deps;
  const app = createRouter();
  const columns = sql`
    event_id, type, status, customer_id, attempts, last_error, received_at, dispatched_at, first_dispatched_at,
    applied_at, quarantined_at, payload_truncated`;
  const utcMicros = (t: postgres.Fragment) => sql`to_char(${t} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

  app.openapi(listEvents, async (c) => {
    const q = c.req.valid('query');
    const cur = q.cursor ? decodeCursor(q.cursor) : null;
    const rows = await sql<SummaryRow[]>`
      SELECT ${columns}, ${utcMicros(sql`received_at`)} AS cursor_at
      FROM webhook_events
      WHERE true
        ${q.status ? sql`AND status = ${q.status}` : sql``}
        ${q.type ? sql`AND type = ${q.type}` : sql``}
        ${q.customer ? sql`AND customer_id = ${q.customer}` : sql``}
        ${cur ? sql`AND (received_at, event_id) < (${cur.at}::text::timestamptz, ${cur.eventId})` : sql``}
      ORDER BY received_at DESC, event_id DESC
      LIMIT ${q.limit + 1}`;
    return c.json(page(rows, q.limit), 200);
  });

  // Before '/:eventId', which would otherwise take 'stuck' for an event id.
  app.openapi(listStuckEvents, async (c) => {
    const q = c.req.valid('query');
    const cur = q.cursor ? decodeCursor(q.cursor) : null;
    const olderThanSeconds = q.olderThanSeconds ?? deps.stuckThresholdMs / 1000;
    // The expression of webhook_events_stuck_idx (migration 0011): when the row entered 'dispatched'.
    const since = sql`coalesce(first_dispatched_at, dispatched_at)`;
    const rows = await sql<SummaryRow[]>`
      SELECT ${columns}, ${utcMicros(since)} AS cursor_at
      FROM webhook_events
      WHERE status = 'dispatched' AND ${since} < now() - ${olderThanSeconds} * interval '1 second'
        ${cur ? sql`AND (${since}, event_id) > (${cur.at}::text::timestamptz, ${cur.eventId})` : sql``}
      ORDER BY ${since}, event_id
      LIMIT ${q.limit + 1}`;
    return c.json(page(rows, q.limit), 200);
  });

  app.openapi(getEvent, async (c) => {
    const { eventId } = c.req.valid('param');
    const rows = await sql`
      SELECT w.*, a.outcome AS applied_outcome, a.applied_at AS applied_recorded_at
      FROM webhook_events w LEFT JOIN applied_events a USING (event_id)
      WHERE w.event_id = ${eventId}`;
    const r = rows[0] as Record<string, unknown> | undefined;
    if (!r) throw new ApiError(404, 'event_not_found', `no delivery logged for ${eventId}`);
    return c.json({
      eventId: r.event_id,
      type: r.type,
      status: r.status,
      apiVersion: r.api_version,
      customerId: r.customer_id,
      objectId: r.object_id,
      workflowId: r.workflow_id,
      attempts: r.attempts,
      lastError: r.last_error,
      receivedAt: r.received_at,
      lastReceivedAt: r.last_received_at,
      dispatchedAt: r.dispatched_at,
      firstDispatchedAt: r.first_dispatched_at ?? r.dispatched_at,
      appliedAt: r.applied_at,
      quarantinedAt: r.quarantined_at,
      appliedOutcome: r.applied_outcome ?? null,
      payloadTruncated: r.payload_truncated,
      payloadBytes: r.payload_bytes,
      payload: r.payload,
    } as z.infer<typeof WebhookEventSchema>, 200);
  });

  app.openapi(replayEvent, async (c) => {
    const { eventId } = c.req.valid('param');
    const out = await ingest.redispatch(eventId, deps.stripe ? { stripe: deps.stripe } : {});
    if (out.status === 'not_found') throw new ApiError(404, 'event_not_found', `no delivery logged for ${eventId}`);
    if (out.status === 'unavailable') throw new ApiError(503, 'unavailable', 'Temporal is unreachable; try again');
    const body = { eventId, result: out.status, ...('reason' in out ? { reason: out.reason } : {}), ...('error' in out ? { error: out.error } : {}) };
    return c.json(body as z.infer<typeof ReplayResultSchema>, 200);
  });

  app.openapi(bulkReplay, async (c) => {
    const body = c.req.valid('json');
    const rows = await sql<{ event_id: string }[]>`
      SELECT event_id FROM webhook_events
      WHERE true
        ${body.status ? sql`AND status = ${body.status}` : sql``}
        ${body.type ? sql`AND type = ${body.type}` : sql``}
      ORDER BY received_at LIMIT ${body.limit}`;
    const counts: Record<string, number> = {};
    const intervalMs = 1000 / body.ratePerSecond;
    for (const [i, r] of rows.entries()) {
      if (i > 0) await new Promise((res) => setTimeout(res, intervalMs));
      const out = await ingest.redispatch(r.event_id, deps.stripe ? { stripe: deps.stripe } : {});
      counts[out.status] = (counts[out.status] ?? 0) + 1;
      if (out.status === 'unavailable') break;
    }
    return c.json({ selected: rows.length, results: counts }, 200);
  });

  return app;
}
