/**
 * The outbox relay (in every worker process): starts the workflow of each notice and each app webhook
 * whose row is committed but whose workflow is not started yet. The rows are written in the transaction
 * of the state change they follow from; the relay makes them run. Starting is idempotent by workflow id
 * (`notice:<dedup key>`, `app-webhook:<id>`), so two relays, or a crash between the start and the
 * bookkeeping, start nothing twice.
 */
import { appWebhookWorkflowId } from '../domain/ids';
import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import type { Sql } from '../lib/db';
import type { Logger } from '../lib/logger';

export interface OutboxRelayOptions {
  sql: Sql;
  client: Client;
  taskQueue: string;
  logger: Logger;
  pollMs: number;
  /** Start notice workflows (email configured); otherwise notices stay queued in the outbox. */
  notices: boolean;
  /** Start app-webhook workflows (APP_WEBHOOK_URL configured). */
  appWebhooks: boolean;
  /** Rows per pass and kind. */
  batch?: number;
  /** Queued notices older than this are not started: email enabled later does not send stale reminders. */
  noticeMaxAgeMs?: number;
}

export interface OutboxRelay {
  start(): void;
  /** One pass; returns how many workflows it started (tests drive it directly). */
  pass(): Promise<{ notices: number; appWebhooks: number }>;
  stop(): Promise<void>;
}


export function createOutboxRelay(opts: OutboxRelayOptions): OutboxRelay {
  const batch = opts.batch ?? 100;
  const noticeMaxAgeMs = opts.noticeMaxAgeMs ?? 3 * 24 * 3600_000;
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<unknown> | null = null;
  let stopped = false;

  async function startOnce(workflowType: string, workflowId: string, args: unknown[]): Promise<void> {
    try {
      await opts.client.workflow.start(workflowType, {
        taskQueue: opts.taskQueue,
        workflowId,
        args,
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
      });
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    }
  }

  async function relayNotices(): Promise<number> {
    const rows = await opts.sql<{ id: string; dedup_key: string }[]>`
      SELECT id, dedup_key FROM notifications
      WHERE status = 'queued' AND workflow_started_at IS NULL AND created_at > ${new Date(Date.now() - noticeMaxAgeMs)}
      ORDER BY created_at LIMIT ${batch}`;
    for (const r of rows) {
      await startOnce('noticeWorkflow', `notice:${r.dedup_key}`, [{ id: Number(r.id) }]);
      await opts.sql`UPDATE notifications SET workflow_started_at = now() WHERE id = ${r.id}`;
    }
    return rows.length;
  }

  async function relayAppWebhooks(): Promise<number> {
    const rows = await opts.sql<{ id: string; replays: number }[]>`
      SELECT id, replays FROM app_webhooks
      WHERE workflow_started_at IS NULL AND status IN ('pending', 'failed')
      ORDER BY created_at LIMIT ${batch}`;
    for (const r of rows) {
      await startOnce('appWebhookWorkflow', appWebhookWorkflowId(r.id, r.replays), [{ id: r.id }]);
      await opts.sql`UPDATE app_webhooks SET workflow_started_at = now() WHERE id = ${r.id} AND replays = ${r.replays}`;
    }
    return rows.length;
  }

  async function pass(): Promise<{ notices: number; appWebhooks: number }> {
    const notices = opts.notices ? await relayNotices() : 0;
    const appWebhooks = opts.appWebhooks ? await relayAppWebhooks() : 0;
    return { notices, appWebhooks };
  }

  function schedule(): void {
    if (stopped) return;
    timer = setTimeout(() => {
      running = pass()
        .then((n) => {
          if (n.notices + n.appWebhooks > 0) opts.logger.info(n, 'outbox relay started workflows');
        })
        .catch((err: unknown) => opts.logger.warn({ error: err instanceof Error ? err.message : String(err) }, 'outbox relay pass failed; retrying'))
        .finally(() => {
          running = null;
          schedule();
        });
    }, opts.pollMs);
    timer.unref();
  }

  return {
    start() {
      if (!opts.notices && !opts.appWebhooks) return;
      schedule();
    },
    pass,
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}
