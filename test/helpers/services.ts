/** Per-test-file access to the shared real services started by global-setup. */
import { randomBytes } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Runtime, Worker, DefaultLogger, makeTelemetryFilterString, type WorkerOptions } from '@temporalio/worker';
import { inject } from 'vitest';
import { createActivities, type Activities } from '../../activities';
import { loadConfig, type Config } from '../../lib/config';
import { createSql, type Sql } from '../../lib/db';
import { createStripe } from '../../lib/stripe';

export const TEST_WEBHOOK_SECRET = 'whsec_test_secret_for_billing_engine';
export const TEST_ADMIN_TOKEN = 'admin-token-0123456789abcdef';

let runtimeInstalled = false;
/** Installs a quiet SDK runtime once per test process. */
export function installQuietRuntime(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  try {
    // Tests make activities fail and replay tampered histories on purpose: the SDK's WARN lines about
    // that are expected noise. Errors still print; core's own lines go through the same logger.
    Runtime.install({
      logger: new DefaultLogger(process.env.TEST_SDK_LOG_LEVEL === 'WARN' ? 'WARN' : 'ERROR'),
      telemetryOptions: { logging: { filter: makeTelemetryFilterString({ core: 'ERROR' }), forward: {} } },
      shutdownSignals: [],
    });
  } catch {
    /* already installed in this process */
  }
}

/** A unique suffix for workflow ids, task queues and database names. */
export function uniqueId(prefix = ''): string {
  return `${prefix}${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

export interface TestDatabase {
  sql: Sql;
  url: string;
  name: string;
  drop(): Promise<void>;
}

/** A fresh, migrated database cloned from the template. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `t_${uniqueId()}`;
  const admin = createSql(inject('pgAdminUrl'), { max: 1 });
  await admin.unsafe(`CREATE DATABASE ${name} TEMPLATE ${inject('templateDb')}`);
  await admin.end();
  const url = `postgres://postgres@127.0.0.1:${inject('pgPort')}/${name}`;
  const sql = createSql(url, { max: 10 });
  return {
    sql,
    url,
    name,
    async drop() {
      await sql.end({ timeout: 5 });
      const a = createSql(inject('pgAdminUrl'), { max: 1 });
      await a.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await a.end();
    },
  };
}

/** A config as the entry points would build it, pointed at the test services. */
export function testConfig(overrides: Record<string, string> = {}): Config {
  return loadConfig({
    NODE_ENV: 'test',
    DATABASE_URL: `postgres://postgres@127.0.0.1:${inject('pgPort')}/postgres`,
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    TEMPORAL_NAMESPACE: 'default',
    TEMPORAL_TASK_QUEUE: uniqueId('tq-'),
    STRIPE_SECRET_KEY: 'sk_test_123',
    STRIPE_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
    STRIPE_API_BASE: inject('stripeMockUrl'),
    ADMIN_TOKEN: TEST_ADMIN_TOKEN,
    LOG_LEVEL: 'silent',
    // Tests that are about quiet hours set them; elsewhere the wall clock must not defer a notice.
    NOTIFY_QUIET_HOURS: 'off',
    ...overrides,
  });
}

/** A Temporal client on the shared dev server. */
export async function testClient(): Promise<Client> {
  const connection = await Connection.connect({ address: inject('temporalAddress') });
  return new Client({ connection, namespace: 'default' });
}

export interface RunningWorker {
  worker: Worker;
  taskQueue: string;
  stop(): Promise<void>;
}

/** Starts a worker on the shared dev server with the pre-built workflow bundle. */
export async function startTestWorker(opts: {
  taskQueue: string;
  activities: Partial<Activities> & Record<string, unknown>;
  workerOptions?: Partial<WorkerOptions>;
  address?: string;
}): Promise<RunningWorker> {
  installQuietRuntime();
  const connection = await NativeConnection.connect({ address: opts.address ?? inject('temporalAddress') });
  const worker = await Worker.create({
    connection,
    namespace: 'default',
    taskQueue: opts.taskQueue,
    workflowBundle: { codePath: inject('workflowBundlePath') },
    activities: opts.activities,
    shutdownGraceTime: '2 seconds',
    ...opts.workerOptions,
  });
  const running = worker.run();
  return {
    worker,
    taskQueue: opts.taskQueue,
    async stop() {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running.catch(() => {});
      await connection.close().catch(() => {});
    },
  };
}

/** The real activities wired to a test database and a Stripe client (stripe-mock by default). */
export function realActivities(sql: Sql, config: Config, stripeApiBase = inject('stripeMockUrl')): Activities {
  const stripe = createStripe({ secretKey: config.STRIPE_SECRET_KEY, apiBase: stripeApiBase, maxNetworkRetries: 0 });
  return createActivities({ sql, stripe, config });
}

/** Polls fn until it returns a truthy value or the timeout passes. */
export async function eventually<T>(fn: () => Promise<T | null | undefined | false>, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastErr ? `: ${String(lastErr)}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
