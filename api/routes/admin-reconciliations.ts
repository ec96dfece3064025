/** Admin: start a reconciliation run now, follow its progress, list recent runs. Mounted behind the admin token. */
import { randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { createRoute, z, type OpenAPIHono } from '@hono/zod-openapi';
import { reconciliationWorkflowId } from '../../domain/ids';
import { driftKind, type DriftField, type ReconciliationInput } from '../../domain/reconciliation';
import { BillingWorkflowKindKey } from '../../workflows/contracts';
import type { Sql } from '../../lib/db';
import { adminAuthErrors, adminSecurity, ApiError, commonErrors, errorResponse, jsonBodyErrors, temporalCallError } from '../errors';
import { createRouter, IsoTimeSchema, isStorableTime, jsonBody, jsonResponse } from '../validate';

/** Optional tuning of a manual run (defaults suit production). */
export const StartReconciliationBodySchema = z
  .object({
    pageSize: z.number().int().min(1).max(100).optional(),
    pagesPerRun: z.number().int().min(1).max(1000).optional(),
    repairWaitSeconds: z.number().int().min(0).max(3600).optional(),
  })
  .strict()
  .openapi('StartReconciliationRequest');

export const RunDriftQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  /** The last drift id of the previous page. */
  cursor: z.coerce.number().int().min(0).optional(),
});

export const ListRunsQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  /** Opaque cursor from the previous page's nextCursor. */
  cursor: z.string().max(500).optional(),
});

const runFields = {
  runId: z.string(),
  trigger: z.string().describe('schedule or manual'),
  status: z.enum(['running', 'succeeded', 'failed']),
  scanned: z.number().int(),
  drifted: z.number().int(),
  repaired: z.number().int(),
  flagged: z.number().int(),
  progress: z.object({ phase: z.string(), cursor: z.string() }).nullable(),
  error: z.string().nullable(),
  startedAt: IsoTimeSchema,
  finishedAt: IsoTimeSchema.nullable(),
  durationSeconds: z.number().nullable(),
};
const ReconciliationRunSchema = z.object(runFields).openapi('ReconciliationRun');
const ReconciliationRunListSchema = z
  .object({ data: z.array(ReconciliationRunSchema), nextCursor: z.string().nullable() })
  .openapi('ReconciliationRunList');
const ReconciliationDriftSchema = z
  .object({
    id: z.number().int(),
    subscriptionId: z.string().describe('the drifted object id, whatever its type (kept for compatibility; see objectId)'),
    objectType: z.string().describe('subscription, invoice or customer'),
    objectId: z.string(),
    customerId: z.string().nullable(),
    field: z
      .string()
      .describe('existence, status, price, current_period_end, cancel_at_period_end, quantity, customer, invoice_without_cycle, cycle_invoice_closed, access_state or pause_collection'),
    kind: z.string(),
    localValue: z.string().nullable(),
    stripeValue: z.string().nullable(),
    detectedAt: IsoTimeSchema,
    repairStatus: z.enum(['pending', 'repaired', 'flagged', 'failed']),
    repairedAt: IsoTimeSchema.nullable(),
  })
  .openapi('ReconciliationDrift');
const ReconciliationReportSchema = z
  .object({
    ...runFields,
    workflowStatus: z.string().nullable().describe('Temporal status of the run, e.g. RUNNING, COMPLETED'),
    repairs: z.object({ pending: z.number().int(), repaired: z.number().int(), flagged: z.number().int(), failed: z.number().int() }),
    drift: z.array(ReconciliationDriftSchema),
    nextCursor: z.string().nullable().describe('Pass as `cursor` for the next page of drift rows'),
  })
  .openapi('ReconciliationReport');
const ReconciliationStartedSchema = z
  .object({ runId: z.string(), status: z.literal('running'), href: z.string() })
  .openapi('ReconciliationStarted');

const base = { tags: ['admin: reconciliation'], security: adminSecurity };
const startRun = createRoute({
  ...base,
  method: 'post',
  path: '/admin/reconciliations',
  summary: 'Start a reconciliation run now (the body is optional)',
  middleware: jsonBody({ optional: true }),
  request: { body: { required: false, content: { 'application/json': { schema: StartReconciliationBodySchema } } } },
  responses: {
    202: jsonResponse(ReconciliationStartedSchema, 'Started'),
    ...jsonBodyErrors,
    ...adminAuthErrors,
    422: errorResponse('Temporal refused the request (temporal_rejected)'),
    503: errorResponse('Temporal unreachable (temporal_unavailable)'),
    ...commonErrors,
  },
});
const listRuns = createRoute({
  ...base,
  method: 'get',
  path: '/admin/reconciliations',
  summary: 'Recent reconciliation runs, newest first',
  request: { query: ListRunsQuerySchema },
  responses: {
    200: jsonResponse(ReconciliationRunListSchema, 'One page'),
    400: errorResponse('Invalid query (validation_error) or cursor (invalid_cursor)'),
    ...adminAuthErrors,
    ...commonErrors,
  },
});
const getRun = createRoute({
  ...base,
  method: 'get',
  path: '/admin/reconciliations/{runId}',
  summary: 'One run with its drift report',
  request: {
    params: z.object({ runId: z.string().min(1).describe('reconciliation:… (the workflow id)').openapi({ param: { name: 'runId', in: 'path' } }) }),
    query: RunDriftQuerySchema,
  },
  responses: {
    200: jsonResponse(ReconciliationReportSchema, 'The run and one page of drift rows'),
    400: errorResponse('Invalid query (validation_error)'),
    ...adminAuthErrors,
    ...commonErrors,
  },
});

interface RunRow {
  id: string;
  trigger: string;
  status: 'running' | 'succeeded' | 'failed';
  scanned: number;
  drifted: number;
  repaired: number;
  flagged: number;
  cursor: string | null;
  error: string | null;
  started_at: Date;
  finished_at: Date | null;
}

function runView(r: RunRow) {
  const sep = r.cursor?.indexOf(':') ?? -1;
  return {
    runId: r.id,
    trigger: r.trigger,
    status: r.status,
    scanned: r.scanned,
    drifted: r.drifted,
    repaired: r.repaired,
    flagged: r.flagged,
    // Stored as `<phase>:<last id>` by the scan activities.
    progress: r.cursor && sep > 0 ? { phase: r.cursor.slice(0, sep), cursor: r.cursor.slice(sep + 1) } : null,
    error: r.error,
    startedAt: r.started_at.toISOString(),
    finishedAt: r.finished_at?.toISOString() ?? null,
    durationSeconds: r.finished_at ? (r.finished_at.getTime() - r.started_at.getTime()) / 1000 : null,
  };
}

function encodeCursor(startedAt: Date, id: string): string {
  return Buffer.from(JSON.stringify([startedAt.toISOString(), id])).toString('base64url');
}

function decodeCursor(cursor: string): { startedAt: Date; id: string } {
  try {
    const [at, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as [string, string];
    const startedAt = new Date(at);
    if (!isStorableTime(startedAt) || typeof id !== 'string' || id.includes('\u0000')) throw new Error('bad');
    return { startedAt, id };
  } catch {
    throw new ApiError(400, 'invalid_cursor', 'cursor is not valid');
  }
}

/** Admin reconciliation routes. */
export function adminReconciliationRoutes(deps: { sql: Sql; temporal: Client; taskQueue: string }): OpenAPIHono {
  const { sql, temporal } = deps;
  const app = createRouter();

  app.openapi(startRun, async (c) => {
    // The body is optional: a bare POST (no Content-Type) starts a run with the defaults.
    const body = c.req.valid('json');
    const runId = reconciliationWorkflowId(`manual-${randomUUID()}`);
    // The row exists before the workflow so GET answers at once; the workflow's insert is a no-op.
    await sql`INSERT INTO reconciliation_runs (id, trigger) VALUES (${runId}, 'manual')`;
    const input: ReconciliationInput = { ...body, trigger: 'manual' };
    try {
      await temporal.workflow.start('reconciliationWorkflow', {
        workflowId: runId,
        taskQueue: deps.taskQueue,
        args: [input],
        typedSearchAttributes: [{ key: BillingWorkflowKindKey, value: 'reconciliation' }],
      });
    } catch (err) {
      await sql`DELETE FROM reconciliation_runs WHERE id = ${runId}`.catch(() => {});
      temporalCallError(err, 'try again');
    }
    return c.json({ runId, status: 'running' as const, href: `/admin/reconciliations/${encodeURIComponent(runId)}` }, 202);
  });

  app.openapi(listRuns, async (c) => {
    const q = c.req.valid('query');
    const cur = q.cursor ? decodeCursor(q.cursor) : null;
    const rows = await sql<RunRow[]>`
      SELECT id, trigger, status, scanned, drifted, repaired, flagged, cursor, error, started_at, finished_at
      FROM reconciliation_runs
      ${cur ? sql`WHERE (started_at, id) < (${cur.startedAt}, ${cur.id})` : sql``}
      ORDER BY started_at DESC, id DESC
      LIMIT ${q.limit + 1}`;
    const page = rows.slice(0, q.limit);
    const last = page[page.length - 1];
    return c.json({
      data: page.map(runView),
      nextCursor: rows.length > q.limit && last ? encodeCursor(last.started_at, last.id) : null,
    }, 200);
  });

  app.openapi(getRun, async (c) => {
    const { runId } = c.req.valid('param');
    const q = c.req.valid('query');
    const runs = await sql<RunRow[]>`
      SELECT id, trigger, status, scanned, drifted, repaired, flagged, cursor, error, started_at, finished_at
      FROM reconciliation_runs WHERE id = ${runId}`;
    const run = runs[0];
    if (!run) throw new ApiError(404, 'run_not_found', `no reconciliation run ${runId}`);
    // Live, per subscription: repairs can land after the run closed its counts.
    const repairs = await sql<{ repair_status: string; n: number }[]>`
      SELECT repair_status, count(DISTINCT object_id)::int AS n
      FROM reconciliation_drift WHERE run_id = ${runId} GROUP BY repair_status`;
    const drift = await sql<
      {
        id: number;
        object_id: string;
        object_type: string;
        customer_id: string | null;
        field: DriftField;
        local_value: string | null;
        stripe_value: string | null;
        detected_at: Date;
        repair_status: string;
        repaired_at: Date | null;
      }[]
    >`
      SELECT id, object_type, object_id, customer_id, field, local_value, stripe_value, detected_at, repair_status, repaired_at
      FROM reconciliation_drift
      WHERE run_id = ${runId} ${q.cursor !== undefined ? sql`AND id > ${q.cursor}` : sql``}
      ORDER BY id
      LIMIT ${q.limit + 1}`;
    const page = drift.slice(0, q.limit);
    const byStatus = Object.fromEntries(repairs.map((r) => [r.repair_status, r.n]));
    return c.json({
      ...runView(run),
      workflowStatus: await temporal.workflow
        .getHandle(runId)
        .describe()
        .then((d) => d.status.name)
        .catch(() => null),
      repairs: {
        pending: byStatus.pending ?? 0,
        repaired: byStatus.repaired ?? 0,
        flagged: byStatus.flagged ?? 0,
        failed: byStatus.failed ?? 0,
      },
      drift: page.map((d) => ({
        id: d.id,
        // subscriptionId is kept for existing clients; it names the object whatever its type.
        subscriptionId: d.object_id,
        objectType: d.object_type,
        objectId: d.object_id,
        customerId: d.customer_id,
        field: d.field,
        kind: driftKind({ field: d.field, localValue: d.local_value, stripeValue: d.stripe_value }),
        localValue: d.local_value,
        stripeValue: d.stripe_value,
        detectedAt: d.detected_at.toISOString(),
        repairStatus: d.repair_status as 'pending' | 'repaired' | 'flagged' | 'failed',
        repairedAt: d.repaired_at?.toISOString() ?? null,
      })),
      nextCursor: drift.length > q.limit && page.length ? String(page[page.length - 1]!.id) : null,
    }, 200);
  });

  return app;
}
