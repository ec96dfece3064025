/** Builds the real HTTP app for tests (requests go through app.request, no sockets). */
import type { Tracer } from '@opentelemetry/api';
import type { Client } from '@temporalio/client';
import Stripe from 'stripe';
import { inject } from 'vitest';
import { createApp } from '../../api/app';
import { createDispatcher, dispatcherOptions, type DispatcherOptions } from '../../api/dispatcher';
import type { EntitlementReader } from '../../api/entitlement-reader';
import { createIngest } from '../../api/ingest';
import { createMetrics } from '../../api/metrics';
import type { Config } from '../../lib/config';
import type { Sql } from '../../lib/db';
import { createInboxNotifier } from '../../lib/inbox';
import { createLogger, type Logger } from '../../lib/logger';
import { createStripe } from '../../lib/stripe';
import { TEST_WEBHOOK_SECRET } from './services';

/** Every dispatcher a test app started: stopped by `stopTestDispatchers` (global teardown of each file). */
const running = new Set<{ stop(): Promise<void> }>();

/**
 * Creates app + its services against the given database and Temporal client. The app's dispatcher
 * runs (woken by the app's own inserts, polling every 50 ms) unless `dispatch: false`: then tests drive
 * it with `dispatcher.pass()`.
 */
export function buildTestApp(opts: {
  sql: Sql;
  temporal: Client;
  config: Config;
  stripe?: Stripe;
  logger?: Logger;
  dispatch?: boolean;
  dispatcherOptions?: Partial<DispatcherOptions>;
  /** Tracing on (lib/tracing.ts initTracing): the webhook and dispatch spans use it. */
  tracer?: Tracer;
  /** The entitlement reader (default: createApp's, which revalidates every hit). */
  entitlements?: EntitlementReader;
}) {
  const logger = opts.logger ?? createLogger({ level: 'silent' });
  const metrics = createMetrics();
  const stripe = opts.stripe ?? createStripe({ secretKey: 'sk_test_123', apiBase: inject('stripeMockUrl'), maxNetworkRetries: 0 });
  const ingest = createIngest({
    sql: opts.sql,
    temporal: opts.temporal,
    taskQueue: opts.config.TEMPORAL_TASK_QUEUE,
    logger,
    metrics,
    payloadStoreLimitBytes: opts.config.WEBHOOK_PAYLOAD_STORE_LIMIT_BYTES,
    stripe,
    tracer: opts.tracer,
    onStored: () => {
      dispatcher.wake();
      notifier.notify();
    },
  });
  const notifier = createInboxNotifier(opts.sql, logger);
  const dispatcher = createDispatcher({
    sql: opts.sql,
    ingest,
    webhookInFlight: () => ingest.load.recentPeak(),
    logger,
    metrics,
    options: { ...dispatcherOptions(opts.config), listen: false, pollMs: 50, ...opts.dispatcherOptions },
  });
  const app = createApp({ config: opts.config, sql: opts.sql, temporal: opts.temporal, stripe, logger, metrics, ingest, dispatcher, entitlements: opts.entitlements });
  const started = opts.dispatch === false ? Promise.resolve() : dispatcher.start();
  running.add(dispatcher);
  /** Stops the dispatcher (before the test closes its database). */
  const close = async () => {
    notifier.stop();
    await started;
    await dispatcher.stop();
    running.delete(dispatcher);
  };
  return { app, ingest, metrics, stripe, logger, dispatcher, close };
}

/** Stops every dispatcher test apps started in this file (call before closing their databases). */
export async function stopTestDispatchers(): Promise<void> {
  await Promise.all([...running].map((d) => d.stop()));
  running.clear();
}

/** Signs a raw body the way Stripe does (t=…,v1=HMAC). */
export function signPayload(payload: string, secret = TEST_WEBHOOK_SECRET, timestamp?: number): string {
  return Stripe.webhooks.generateTestHeaderString({ payload, secret, ...(timestamp !== undefined ? { timestamp } : {}) });
}

/** POSTs a signed webhook to the app. */
export async function postWebhook(
  app: { request: (path: string, init?: RequestInit) => Response | Promise<Response> },
  body: unknown,
  opts: { secret?: string; timestamp?: number; signature?: string | null } = {},
): Promise<Response> {
  const payload = typeof body === 'string' ? body : JSON.stringify(body);
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  const sig = opts.signature === undefined ? signPayload(payload, opts.secret, opts.timestamp) : opts.signature;
  if (sig !== null) headers['Stripe-Signature'] = sig;
  return app.request('/webhooks/stripe', { method: 'POST', body: payload, headers });
}
