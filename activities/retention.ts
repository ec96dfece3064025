/**
 * Retention, one batch per call (workflows/retention.ts loops): settled rows past the row horizon are
 * deleted, settled deliveries' payloads past WEBHOOK_RETENTION_DAYS are dropped (the row stays while its
 * event id may still dedup something). Rows in flight or waiting for ops are never touched.
 */
import { log } from '@temporalio/activity';
import type { Config } from '../lib/config';
import type { Sql } from '../lib/db';
import { countInActivity } from './metrics';

/**
 * Rows that dedup something (a delivery's event id, the applied-events ledger, notice and app-webhook
 * keys) are kept at least this long, whatever WEBHOOK_RETENTION_DAYS says: Stripe redelivers for 3
 * days, and the reconciliation puts back any event of the last 30 days (how long Stripe lists them)
 * that Stripe reports undelivered and the log lacks; 5 days of margin on top.
 */
export const DEDUP_FLOOR_DAYS = 35;

/** The steps of one pass, in the order the workflow runs them (the ledger after the log rows it outlives). */
export type RetentionStep = 'webhook_events' | 'applied_events' | 'webhook_payloads' | 'app_webhooks' | 'notifications';

/** The cutoffs of one pass, fixed when it starts (ISO timestamps from the database clock). */
export interface RetentionPlan {
  retentionDays: number;
  rowRetentionDays: number;
  /** Payloads of settled deliveries received before this are dropped. */
  payloadCutoff: string;
  /** Settled rows older than this are deleted. */
  rowCutoff: string;
}

/** What a pass removed, by kind. */
export interface RetentionCounts {
  webhookEventsDeleted: number;
  payloadsPurged: number;
  payloadBytesPurged: number;
  appliedEventsDeleted: number;
  appliedEffectsDeleted: number;
  appWebhooksDeleted: number;
  notificationsDeleted: number;
}

/** Where the previous batch of a step stopped: the index key of the last row it looked at. */
export interface RetentionCursor {
  /** Timestamp as Postgres text (microseconds kept). */
  at: string;
  id: string;
}

export interface RetentionBatchResult {
  /** Rows this batch looked at, in index order; fewer than the limit: the step is done. */
  scanned: number;
  /** Rows it deleted or purged (a row looked at may be kept: active recently, locked, still in the log). */
  affected: number;
  /** Where the next batch of the step starts; null when the step is done. */
  next: RetentionCursor | null;
  counts: Partial<RetentionCounts>;
}

export interface RetentionDeps {
  sql: Sql;
  config: Pick<Config, 'WEBHOOK_RETENTION_DAYS'>;
}

interface PageRow {
  scanned: number;
  affected: number;
  last_at: string | null;
  last_id: string | null;
  bytes?: number;
  effects?: number;
}

/** Retention activities: the plan of a pass, and one batch of one step. */
export function createRetentionActivities({ sql, config }: RetentionDeps) {
  /**
   * One batch of a step: a page of at most `limit` candidates in index order after `after` (keyset: the
   * cost of a batch does not grow with the backlog, and rows kept are not looked at again), then the
   * rows of the page that qualify, locked (SKIP LOCKED) and deleted or purged. One statement: one short transaction.
   * Status lists are literals, not parameters: the partial indexes (migrations 0019-0022) must match them.
   */
  async function runStep(step: RetentionStep, cutoff: Date, limit: number, after: RetentionCursor | null): Promise<PageRow> {
    // ::text first: a timestamptz parameter would go through a JS Date and lose the microseconds.
    const from = (at: string, id: string) => (after ? sql`AND (${sql(at)}, ${sql(id)}) > (${after.at}::text::timestamptz, ${after.id})` : sql``);
    switch (step) {
      case 'webhook_events': {
        // Settled deliveries only: received / dispatched / quarantined / failed rows are work or evidence for ops.
        const [row] = await sql<PageRow[]>`
          WITH page AS (
            SELECT event_id, received_at FROM webhook_events
            WHERE status IN ('applied', 'ignored') AND received_at < ${cutoff} ${from('received_at', 'event_id')}
            ORDER BY received_at, event_id
            LIMIT ${limit}),
          doomed AS (
            SELECT w.event_id FROM webhook_events w JOIN page p USING (event_id)
            WHERE w.status IN ('applied', 'ignored') AND w.last_received_at < ${cutoff} AND coalesce(w.applied_at, w.received_at) < ${cutoff}
            FOR UPDATE OF w SKIP LOCKED),
          done AS (DELETE FROM webhook_events w USING doomed d WHERE w.event_id = d.event_id RETURNING 1),
          last AS (SELECT p.received_at::text AS at, p.event_id AS id FROM page p ORDER BY p.received_at DESC, p.event_id DESC LIMIT 1)
          SELECT (SELECT count(*) FROM page)::int AS scanned, (SELECT count(*) FROM done)::int AS affected,
                 (SELECT at FROM last) AS last_at, (SELECT id FROM last) AS last_id`;
        return row!;
      }
      case 'applied_events': {
        // Never the ledger row of a delivery still in the log: a replay of it must find it applied.
        const [row] = await sql<PageRow[]>`
          WITH page AS (
            SELECT event_id, applied_at FROM applied_events
            WHERE applied_at < ${cutoff} ${from('applied_at', 'event_id')}
            ORDER BY applied_at, event_id
            LIMIT ${limit}),
          doomed AS (
            SELECT a.event_id FROM applied_events a JOIN page p USING (event_id)
            WHERE NOT EXISTS (SELECT 1 FROM webhook_events w WHERE w.event_id = a.event_id)
            FOR UPDATE OF a SKIP LOCKED),
          effects AS (DELETE FROM applied_effects e USING doomed d WHERE e.event_id = d.event_id RETURNING 1),
          done AS (DELETE FROM applied_events a USING doomed d WHERE a.event_id = d.event_id RETURNING 1),
          last AS (SELECT p.applied_at::text AS at, p.event_id AS id FROM page p ORDER BY p.applied_at DESC, p.event_id DESC LIMIT 1)
          SELECT (SELECT count(*) FROM page)::int AS scanned, (SELECT count(*) FROM done)::int AS affected,
                 (SELECT count(*) FROM effects)::int AS effects, (SELECT at FROM last) AS last_at, (SELECT id FROM last) AS last_id`;
        return row!;
      }
      case 'webhook_payloads': {
        const [row] = await sql<PageRow[]>`
          WITH page AS (
            SELECT event_id, received_at FROM webhook_events
            WHERE status IN ('applied', 'ignored') AND payload IS NOT NULL AND received_at < ${cutoff} ${from('received_at', 'event_id')}
            ORDER BY received_at, event_id
            LIMIT ${limit}),
          doomed AS (
            SELECT w.event_id FROM webhook_events w JOIN page p USING (event_id)
            WHERE w.status IN ('applied', 'ignored') AND w.last_received_at < ${cutoff} AND coalesce(w.applied_at, w.received_at) < ${cutoff}
            FOR UPDATE OF w SKIP LOCKED),
          done AS (
            UPDATE webhook_events w SET payload = NULL, payload_purged_at = now()
            FROM doomed d WHERE w.event_id = d.event_id
            RETURNING w.payload_bytes),
          last AS (SELECT p.received_at::text AS at, p.event_id AS id FROM page p ORDER BY p.received_at DESC, p.event_id DESC LIMIT 1)
          SELECT (SELECT count(*) FROM page)::int AS scanned, (SELECT count(*) FROM done)::int AS affected,
                 (SELECT coalesce(sum(payload_bytes), 0) FROM done)::int8 AS bytes, (SELECT at FROM last) AS last_at, (SELECT id FROM last) AS last_id`;
        return row!;
      }
      case 'app_webhooks': {
        // 'pending' and 'failed' are still being delivered; a replay (last_attempt_at) counts as activity.
        const [row] = await sql<PageRow[]>`
          WITH page AS (
            SELECT id, created_at FROM app_webhooks
            WHERE status IN ('delivered', 'given_up') AND created_at < ${cutoff} ${from('created_at', 'id')}
            ORDER BY created_at, id
            LIMIT ${limit}),
          doomed AS (
            SELECT h.id FROM app_webhooks h JOIN page p USING (id)
            WHERE h.status IN ('delivered', 'given_up') AND coalesce(h.last_attempt_at, h.created_at) < ${cutoff}
            FOR UPDATE OF h SKIP LOCKED),
          done AS (DELETE FROM app_webhooks h USING doomed d WHERE h.id = d.id RETURNING 1),
          last AS (SELECT p.created_at::text AS at, p.id FROM page p ORDER BY p.created_at DESC, p.id DESC LIMIT 1)
          SELECT (SELECT count(*) FROM page)::int AS scanned, (SELECT count(*) FROM done)::int AS affected,
                 (SELECT at FROM last) AS last_at, (SELECT id FROM last) AS last_id`;
        return row!;
      }
      case 'notifications': {
        // 'queued', 'sending' and 'failed' are still going out.
        const [row] = await sql<PageRow[]>`
          WITH page AS (
            SELECT id, created_at FROM notifications
            WHERE status IN ('sent', 'canceled', 'suppressed', 'given_up') AND created_at < ${cutoff}
              ${after ? sql`AND (created_at, id) > (${after.at}::text::timestamptz, ${after.id}::bigint)` : sql``}
            ORDER BY created_at, id
            LIMIT ${limit}),
          doomed AS (
            SELECT n.id FROM notifications n JOIN page p USING (id)
            WHERE n.status IN ('sent', 'canceled', 'suppressed', 'given_up') AND coalesce(n.ended_at, n.sent_at, n.created_at) < ${cutoff}
            FOR UPDATE OF n SKIP LOCKED),
          done AS (DELETE FROM notifications n USING doomed d WHERE n.id = d.id RETURNING 1),
          last AS (SELECT p.created_at::text AS at, p.id::text AS id FROM page p ORDER BY p.created_at DESC, p.id DESC LIMIT 1)
          SELECT (SELECT count(*) FROM page)::int AS scanned, (SELECT count(*) FROM done)::int AS affected,
                 (SELECT at FROM last) AS last_at, (SELECT id FROM last) AS last_id`;
        return row!;
      }
    }
  }

  return {
    /** Fixes a pass's cutoffs from WEBHOOK_RETENTION_DAYS and the dedup floor, on the database clock. */
    async planRetention(): Promise<RetentionPlan> {
      const retentionDays = config.WEBHOOK_RETENTION_DAYS;
      const rowRetentionDays = Math.max(retentionDays, DEDUP_FLOOR_DAYS);
      const [row] = await sql<{ payload_cutoff: Date; row_cutoff: Date }[]>`
        SELECT now() - make_interval(days => ${retentionDays}) AS payload_cutoff,
               now() - make_interval(days => ${rowRetentionDays}) AS row_cutoff`;
      return { retentionDays, rowRetentionDays, payloadCutoff: row!.payload_cutoff.toISOString(), rowCutoff: row!.row_cutoff.toISOString() };
    },

    /** One batch of one step (at most `limit` rows, one short transaction); counted in billing_retention_rows. */
    async purgeRetentionBatch(input: { step: RetentionStep; plan: RetentionPlan; limit: number; after?: RetentionCursor | null }): Promise<RetentionBatchResult> {
      const step = input.step;
      const cutoff = new Date(step === 'webhook_payloads' ? input.plan.payloadCutoff : input.plan.rowCutoff);
      const limit = Math.max(1, Math.min(10_000, Math.trunc(input.limit)));
      const row = await runStep(step, cutoff, limit, input.after ?? null);
      const counts = countsOf(step, row);
      if (row.affected > 0) {
        const table = step === 'webhook_payloads' ? 'webhook_events' : step;
        const action = step === 'webhook_payloads' ? 'payload_purged' : 'deleted';
        countInActivity('retentionRows', row.affected, { table, action });
        if (row.effects) countInActivity('retentionRows', row.effects, { table: 'applied_effects', action });
        try {
          log.debug('retention batch', { step, cutoff: cutoff.toISOString(), scanned: row.scanned, ...counts });
        } catch {
          // Called outside an activity (a direct test call): no logger.
        }
      }
      const next = row.scanned === limit && row.last_at !== null && row.last_id !== null ? { at: row.last_at, id: row.last_id } : null;
      return { scanned: row.scanned, affected: row.affected, next, counts };
    },
  };
}

function countsOf(step: RetentionStep, row: PageRow): Partial<RetentionCounts> {
  switch (step) {
    case 'webhook_events':
      return { webhookEventsDeleted: row.affected };
    case 'applied_events':
      return { appliedEventsDeleted: row.affected, appliedEffectsDeleted: row.effects ?? 0 };
    case 'webhook_payloads':
      return { payloadsPurged: row.affected, payloadBytesPurged: Number(row.bytes ?? 0) };
    case 'app_webhooks':
      return { appWebhooksDeleted: row.affected };
    case 'notifications':
      return { notificationsDeleted: row.affected };
  }
}

export type RetentionActivities = ReturnType<typeof createRetentionActivities>;
