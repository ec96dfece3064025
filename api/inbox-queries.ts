/**
 * The dispatcher's statements on the inbox (webhook_events): the admission reading, claims under a
 * lease, and the outcomes of a hand-over. Every one only touches rows still 'received', except the
 * reading.
 */
import type { Sql } from '../lib/db';
import type { Envelope } from './payload';

/** A claimed row, with what resolving it needs. */
export interface ClaimedRow {
  event_id: string;
  customer_id: string | null;
  payload: Envelope;
  payload_truncated: boolean;
  received_at: Date;
  /** The webhook request's W3C traceparent (null when tracing was off); continued by the dispatch span. */
  trace_context: string | null;
}

/** The inbox statements, for a lease length and the age past which a dispatched row is the stuck sweeper's. */
export function createInboxQueries(sql: Sql, o: { leaseMs: number; stuckThresholdMs: number }) {
  /** Workflows with deliveries dispatched but not applied (stuck ones excluded), and the oldest one's age. */
  async function pending(): Promise<{ pendingWorkflows: number; oldestPendingMs: number }> {
    const [row] = await sql<{ workflows: number; oldest_ms: number }[]>`
      SELECT count(DISTINCT customer_id)::int AS workflows,
             coalesce(EXTRACT(EPOCH FROM now() - min(coalesce(first_dispatched_at, dispatched_at))) * 1000, 0)::float8 AS oldest_ms
      FROM webhook_events
      WHERE status = 'dispatched'
        AND coalesce(first_dispatched_at, dispatched_at) > now() - ${o.stuckThresholdMs / 1000} * interval '1 second'`;
    return { pendingWorkflows: row?.workflows ?? 0, oldestPendingMs: row?.oldest_ms ?? 0 };
  }

  /** Age of the oldest delivery stored and not yet handed over (0 when none). */
  async function oldestReceivedMs(): Promise<number> {
    const [row] = await sql<{ ms: number }[]>`
      SELECT coalesce(EXTRACT(EPOCH FROM now() - min(received_at)) * 1000, 0)::float8 AS ms FROM webhook_events WHERE status = 'received'`;
    return row?.ms ?? 0;
  }

  /**
   * Claims, for one lease, the oldest claimable rows of at most `maxWorkflows` customers among the
   * `scan` oldest claimable rows (rows without a customer yet, looked up later, always come along).
   * Rows of other customers are only locked for the statement: no payload is read for them.
   */
  async function claim(scan: number, maxWorkflows: number): Promise<ClaimedRow[]> {
    const rows = await sql<ClaimedRow[]>`
      WITH candidates AS (
        SELECT event_id, customer_id, received_at FROM webhook_events
        WHERE status = 'received' AND (dispatch_claimed_until IS NULL OR dispatch_claimed_until < now())
        ORDER BY received_at
        LIMIT ${scan}
        FOR UPDATE SKIP LOCKED),
      admitted AS (
        SELECT customer_id FROM candidates WHERE customer_id IS NOT NULL
        GROUP BY customer_id ORDER BY min(received_at) LIMIT ${maxWorkflows})
      UPDATE webhook_events w
      SET dispatch_claimed_until = now() + ${o.leaseMs / 1000} * interval '1 second', dispatch_attempts = w.dispatch_attempts + 1
      FROM candidates c
      WHERE w.event_id = c.event_id AND (c.customer_id IS NULL OR c.customer_id IN (SELECT customer_id FROM admitted))
      RETURNING w.event_id, w.customer_id, w.payload, w.payload_truncated, w.received_at, w.trace_context`;
    return [...rows].sort((a, b) => a.received_at.getTime() - b.received_at.getTime() || (a.event_id < b.event_id ? -1 : 1));
  }

  /** Gives claimed rows back: at once (unused), or after a delay with the error (failed hand-over). */
  async function release(eventIds: string[], delayMs: number, error: string | null): Promise<void> {
    if (eventIds.length === 0) return;
    await sql`
      UPDATE webhook_events
      SET dispatch_claimed_until = ${delayMs > 0 ? sql`now() + ${delayMs / 1000} * interval '1 second'` : null},
          last_error = coalesce(${error === null ? null : `dispatch: ${error}`.slice(0, 1000)}, last_error)
      WHERE event_id = ANY(${eventIds}::text[]) AND status = 'received'`;
  }

  async function markDispatched(done: { eventId: string; workflowId: string }[]): Promise<void> {
    if (done.length === 0) return;
    // Only rows still 'received': an apply that already finished (status 'applied') is never undone.
    await sql`
      UPDATE webhook_events w
      SET status = 'dispatched', dispatched_at = now(), first_dispatched_at = now(), workflow_id = u.workflow_id,
          last_error = NULL, dispatch_claimed_until = NULL
      FROM unnest(${done.map((d) => d.eventId)}::text[], ${done.map((d) => d.workflowId)}::text[]) AS u(event_id, workflow_id)
      WHERE w.event_id = u.event_id AND w.status = 'received'`;
  }

  async function markRejected(eventIds: string[], error: string): Promise<void> {
    await sql`
      UPDATE webhook_events SET status = 'failed', last_error = ${`dispatch rejected by Temporal: ${error}`.slice(0, 1000)}, dispatch_claimed_until = NULL
      WHERE event_id = ANY(${eventIds}::text[]) AND status = 'received'`;
  }

  return { pending, oldestReceivedMs, claim, release, markDispatched, markRejected };
}
