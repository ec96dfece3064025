/** Admin: the webhook delivery log, stuck deliveries, single and bulk replay. Mounted behind the admin token. */
import { Hono } from 'hono';
import type postgres from 'postgres';
import type Stripe from 'stripe';
import { z } from 'zod';
import type { Sql } from '../../lib/db';
import { ApiError } from '../errors';
import type { Ingest } from '../ingest';
import { isStorableTime, parseJsonBody, parseQuery } from '../validate';

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
  .object({
    status: z.enum(['received', 'failed', 'ignored', 'dispatched', 'quarantined']).optional(),
    type: z.string().min(1).max(200).optional(),
    limit: z.number().int().min(1).max(5000).default(500),
    /** Replays per second (rate limit so a bulk replay never floods Temporal). */
    ratePerSecond: z.number().min(1).max(500).default(50),
  })
  .refine((b) => b.status || b.type, { message: 'give a status or a type to select events' });

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
  status: string;
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
export function adminWebhookRoutes(deps: { sql: Sql; ingest: Ingest; stripe?: Pick<Stripe, 'events'>; stuckThresholdMs: number }): Hono {
  const { sql, ingest } = deps;
  const app = new Hono();
  const columns = sql`
    event_id, type, status, customer_id, attempts, last_error, received_at, dispatched_at, first_dispatched_at,
    applied_at, quarantined_at, payload_truncated`;
  const utcMicros = (t: postgres.Fragment) => sql`to_char(${t} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

  app.get('/admin/webhook-events', async (c) => {
    const q = parseQuery(c, ListWebhookEventsQuerySchema);
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
    return c.json(page(rows, q.limit));
  });

  // Before '/:eventId', which would otherwise take 'stuck' for an event id.
  app.get('/admin/webhook-events/stuck', async (c) => {
    const q = parseQuery(c, ListStuckWebhookEventsQuerySchema);
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
    return c.json(page(rows, q.limit));
  });

  app.get('/admin/webhook-events/:eventId', async (c) => {
    const eventId = c.req.param('eventId');
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
    });
  });

  app.post('/admin/webhook-events/:eventId/replay', async (c) => {
    const eventId = c.req.param('eventId');
    const out = await ingest.redispatch(eventId, deps.stripe ? { stripe: deps.stripe } : {});
    if (out.status === 'not_found') throw new ApiError(404, 'event_not_found', `no delivery logged for ${eventId}`);
    if (out.status === 'unavailable') throw new ApiError(503, 'unavailable', 'Temporal is unreachable; try again');
    return c.json({ eventId, result: out.status, ...('reason' in out ? { reason: out.reason } : {}), ...('error' in out ? { error: out.error } : {}) });
  });

  app.post('/admin/webhook-events/replay', async (c) => {
    const body = await parseJsonBody(c, BulkReplayBodySchema);
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
    return c.json({ selected: rows.length, results: counts });
  });

  return app;
}
