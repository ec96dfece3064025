/** Sets the notice and app-webhook gauges from Postgres at scrape time (they are sent by the worker). */
import type { Sql } from '../lib/db';
import type { Metrics } from './metrics';

/** Recomputes the outbox gauges; label sets are reset so vanished labels do not linger. */
export async function updateOutboxGauges(sql: Sql, metrics: Metrics): Promise<void> {
  const [notices, noticeAge, hooks, hookAge] = await Promise.all([
    sql<{ kind: string; status: string; n: number }[]>`SELECT kind, status, count(*)::int AS n FROM notifications GROUP BY kind, status`,
    sql<{ age: number | null }[]>`
      SELECT extract(epoch FROM now() - min(COALESCE(due_at, created_at)))::float8 AS age
      FROM notifications WHERE status IN ('queued', 'failed') AND COALESCE(due_at, created_at) < now()`,
    sql<{ status: string; n: number }[]>`SELECT status, count(*)::int AS n FROM app_webhooks GROUP BY status`,
    sql<{ age: number | null }[]>`
      SELECT extract(epoch FROM now() - min(created_at))::float8 AS age FROM app_webhooks WHERE status IN ('pending', 'failed')`,
  ]);
  metrics.notices.reset();
  for (const r of notices) metrics.notices.set({ kind: r.kind, status: r.status }, r.n);
  metrics.noticesOverdueAge.set(Math.max(0, noticeAge[0]?.age ?? 0));
  metrics.appWebhooks.reset();
  for (const r of hooks) metrics.appWebhooks.set({ status: r.status }, r.n);
  metrics.appWebhooksOldestUndeliveredAge.set(Math.max(0, hookAge[0]?.age ?? 0));
}
