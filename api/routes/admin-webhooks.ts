/** Admin: the webhook delivery log, single and bulk replay. Mounted behind the admin token. */
import { Hono } from 'hono';
import type Stripe from 'stripe';
import { z } from 'zod';
import type { Sql } from '../../lib/db';
import { ApiError } from '../errors';
import type { Ingest } from '../ingest';
import { isStorableTime, parseJsonBody, parseQuery } from '../validate';

const STATUSES = ['received', 'dispatched', 'applied', 'ignored', 'failed'] as const;

export const ListWebhookEventsQuerySchema = z.object({
  status: z.enum(STATUSES).optional(),
  type: z.string().min(1).max(200).optional(),
  customer: z.string().min(1).max(255).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  /** Opaque cursor from the previous page's nextCursor. */
  cursor: z.string().max(500).optional(),
});

export const BulkReplayBodySchema = z
  .object({
    status: z.enum(['received', 'failed', 'ignored', 'dispatched']).optional(),
    type: z.string().min(1).max(200).optional(),
    limit: z.number().int().min(1).max(5000).default(500),
    /** Replays per second (rate limit so a bulk replay never floods Temporal). */
    ratePerSecond: z.number().min(1).max(500).default(50),
  })
  .refine((b) => b.status || b.type, { message: 'give a status or a type to select events' });

function encodeCursor(receivedAt: Date, eventId: string): string {
  return Buffer.from(JSON.stringify([receivedAt.toISOString(), eventId])).toString('base64url');
}

function decodeCursor(cursor: string): { receivedAt: Date; eventId: string } {
  try {
    const [at, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as [string, string];
    const receivedAt = new Date(at);
    if (!isStorableTime(receivedAt) || typeof id !== 'string' || id.includes('\u0000')) throw new Error('bad');
    return { receivedAt, eventId: id };
  } catch {
    throw new ApiError(400, 'invalid_cursor', 'cursor is not valid');
  }
}

/** Admin delivery-log routes. */
export function adminWebhookRoutes(deps: { sql: Sql; ingest: Ingest; stripe?: Pick<Stripe, 'events'> }): Hono {
  const { sql, ingest } = deps;
  const app = new Hono();

  app.get('/admin/webhook-events', async (c) => {
    const q = parseQuery(c, ListWebhookEventsQuerySchema);
    const cur = q.cursor ? decodeCursor(q.cursor) : null;
    const rows = await sql<
      {
        event_id: string;
        type: string;
        status: string;
        customer_id: string | null;
        attempts: number;
        last_error: string | null;
        received_at: Date;
        dispatched_at: Date | null;
        applied_at: Date | null;
        payload_truncated: boolean;
      }[]
    >`
      SELECT event_id, type, status, customer_id, attempts, last_error, received_at, dispatched_at, applied_at, payload_truncated
      FROM webhook_events
      WHERE true
        ${q.status ? sql`AND status = ${q.status}` : sql``}
        ${q.type ? sql`AND type = ${q.type}` : sql``}
        ${q.customer ? sql`AND customer_id = ${q.customer}` : sql``}
        ${cur ? sql`AND (received_at, event_id) < (${cur.receivedAt}, ${cur.eventId})` : sql``}
      ORDER BY received_at DESC, event_id DESC
      LIMIT ${q.limit + 1}`;
    const page = rows.slice(0, q.limit);
    const last = page[page.length - 1];
    return c.json({
      data: page.map((r) => ({
        eventId: r.event_id,
        type: r.type,
        status: r.status,
        customerId: r.customer_id,
        attempts: r.attempts,
        lastError: r.last_error,
        receivedAt: r.received_at.toISOString(),
        dispatchedAt: r.dispatched_at?.toISOString() ?? null,
        appliedAt: r.applied_at?.toISOString() ?? null,
        payloadTruncated: r.payload_truncated,
      })),
      nextCursor: rows.length > q.limit && last ? encodeCursor(last.received_at, last.event_id) : null,
    });
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
      appliedAt: r.applied_at,
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
