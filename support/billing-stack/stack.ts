/**
 * A private billing stack for `npm run bench` and `npm run chaos`: its own PostgreSQL cluster, Temporal
 * dev server (on a db file, so it can be restarted), stripe-mock, and the API and worker as real child
 * processes started exactly like `npm run dev` starts them (`tsx api/server.ts`, `tsx worker/main.ts`),
 * optionally several of each (`apiReplicas`, `workerReplicas`: `api`, `api-2`, …, one Postgres, one Temporal).
 * Every child runs in its own process group so SIGKILL reaches the node process under the tsx wrapper.
 */
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { createSql, type Sql } from '../../lib/db';
import { migrate } from '../../lib/migrate';
import { createTemporalClient } from '../../lib/temporal';
import { activeStacks, emergencyStops, installExitHook, ServiceProcess, type ProcessExit } from './service-process';
import {
  ROOT,
  freePort,
  startPostgres,
  startStripeMock,
  startTemporal,
  waitForPort,
  type HttpServiceHandle,
  type PostgresHandle,
  type TemporalHandle,
} from '../services';


export { ServiceProcess, stopActiveStacks, type ProcessExit } from './service-process';
export interface BillingStackOptions {
  dir: string;
  log: (line: string) => void;
  /** fsync off etc. Default false: durable settings, as in production. */
  fastPostgres?: boolean;
  /** Given stripe-mock's URL, the Stripe API base the API and worker use (e.g. a proxy in front of it). */
  stripeApiBase?: (stripeMockUrl: string) => Promise<string> | string;
  /** Extra environment for both services. */
  env?: Record<string, string>;
  /** Extra environment for one service. */
  apiEnv?: Record<string, string>;
  workerEnv?: Record<string, string>;
  /** The worker's entry point (default worker/main.ts; the bench's experiments use scripts/bench/worker-variant.ts). */
  workerEntry?: string;
  /** The API's entry point (default api/server.ts; experiments use scripts/bench/api-variant.ts). */
  apiEntry?: string;
  /** Node flags for one service, e.g. ['--cpu-prof', '--cpu-prof-dir=…']. */
  apiNodeArgs?: string[];
  workerNodeArgs?: string[];
  /** Expose the worker's Prometheus metrics (SDK core: RPC counts, task latencies). */
  workerMetrics?: boolean;
  /**
   * SQLite journal of the Temporal dev server's db file. 'wal' (default): write-ahead log with
   * synchronous=FULL — every commit is still fsynced, but once instead of the rollback journal's
   * several times. 'wal-normal': write-ahead log with synchronous=NORMAL — no fsync per commit, only at
   * checkpoints: survives a killed process, but the last commits can be lost if the machine loses power
   * (a sensitivity run: what the engine does when Temporal's persistence is not fsync-bound).
   * 'default': the CLI's own default (rollback journal), for before/after comparisons.
   */
  temporalJournal?: TemporalJournal;
  /** Server-side eager activity dispatch (the task comes back with the workflow task completion). */
  temporalEagerActivities?: boolean;
  /** Restart API or worker automatically if they exit on their own. */
  supervise?: boolean;
  /**
   * API processes (default 1), each on its own port: `api`, `api-2`, … Each replica's Postgres sessions
   * carry application_name `billing-<name>` (so who claimed or wrote a row can be told apart).
   */
  apiReplicas?: number;
  /** Worker processes on the one task queue (default 1): `worker`, `worker-2`, … (metrics on the first only). */
  workerReplicas?: number;
  onUnexpectedExit?: (name: string, exit: ProcessExit) => void;
}

export interface BillingStack {
  dir: string;
  pg: PostgresHandle;
  temporal: TemporalHandle;
  stripeMock: HttpServiceHandle;
  stripeApiBase: string;
  databaseUrl: string;
  /** Orchestrator's own small pool on the billing database. */
  sql: Sql;
  /** Orchestrator's Temporal client (readiness, counts, starting reconciliation). */
  client: Client;
  /** The first API and worker replica. */
  api: ServiceProcess;
  worker: ServiceProcess;
  /** Every replica (apis[0] is `api`, workers[0] is `worker`); apiUrls[i] is apis[i]'s base URL. */
  apis: ServiceProcess[];
  apiUrls: string[];
  workers: ServiceProcess[];
  /** The first API's base URL and port. */
  apiUrl: string;
  apiPort: number;
  workerMetricsUrl: string | null;
  webhookSecret: string;
  adminToken: string;
  taskQueue: string;
  env: NodeJS.ProcessEnv;
  /** Starts one more service (e.g. the floor server) in the stack's process-group bookkeeping. */
  spawnService(name: string, entry: string, env: Record<string, string>, nodeArgs?: string[]): ServiceProcess;
  /** Until these API replicas (default: all) answer /readyz. */
  waitApiReady(timeoutMs?: number, which?: ServiceProcess[]): Promise<void>;
  /** Until these worker replicas (default: all) poll the task queue. */
  waitWorkerReady(timeoutMs?: number, which?: ServiceProcess[]): Promise<void>;
  stop(): Promise<void>;
}

export const BENCH_WEBHOOK_SECRET = 'whsec_bench_only_not_a_secret';
const ADMIN_TOKEN = 'bench-admin-token-0123456789';

/** Starts everything and waits until the API answers /readyz and the worker polls its task queue. */
export async function startBillingStack(opts: BillingStackOptions): Promise<BillingStack> {
  const { dir, log } = opts;
  installExitHook();
  const cleanups: (() => Promise<void>)[] = [];
  const emergencies: (() => void)[] = [];
  let stack: BillingStack | null = null;
  const cleanup = async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    cleanups.length = 0;
    for (const e of emergencies) emergencyStops.delete(e);
    if (stack) activeStacks.delete(stack);
  };
  // Registered at once: stop() runs its synchronous part (pg_ctl stop, kill) before its first await.
  const onEmergency = (stop: () => unknown) => {
    const e = () => void stop();
    emergencies.push(e);
    emergencyStops.add(e);
  };
  try {
    const apiReplicas = Math.max(1, opts.apiReplicas ?? 1);
    const workerReplicas = Math.max(1, opts.workerReplicas ?? 1);
    const ports = await Promise.all(Array.from({ length: 4 + apiReplicas }, () => freePort()));
    const [pgPort, temporalPort, stripeMockPort, metricsPort] = ports as [number, number, number, number];
    const apiPorts = ports.slice(4);
    const t0 = Date.now();
    const [pg, temporal, stripeMock] = await Promise.all([
      startPostgres({ dataDir: path.join(dir, 'pg'), port: pgPort, fast: opts.fastPostgres ?? false, logDir: dir }).then((h) => {
        cleanups.push(() => h.stop());
        onEmergency(() => h.stop());
        return h;
      }),
      startTemporal({
        port: temporalPort,
        dbFile: path.join(dir, 'temporal', 'temporal.db'),
        logDir: dir,
        extraArgs: [
          ...temporalSqliteArgs(opts.temporalJournal ?? 'wal'),
          ...(opts.temporalEagerActivities ? ['--dynamic-config-value', 'system.enableActivityEagerExecution=true'] : []),
        ],
      }).then((h) => {
        cleanups.push(() => h.stop());
        onEmergency(() => h.kill('SIGKILL'));
        return h;
      }),
      startStripeMock({ port: stripeMockPort, logDir: dir }).then((h) => {
        cleanups.push(() => h.stop());
        onEmergency(() => h.stop());
        return h;
      }),
    ]);
    log(`postgres :${pgPort} (${opts.fastPostgres ? 'fsync off' : 'durable'}), temporal ${temporal.address}, stripe-mock :${stripeMockPort} up in ${Date.now() - t0} ms`);

    const admin = createSql(pg.url, { max: 1 });
    await admin.unsafe('CREATE DATABASE billing');
    await admin.end();
    const databaseUrl = pg.urlFor('billing');
    const sql = createSql(databaseUrl, { max: 4, applicationName: 'bench-orchestrator' });
    cleanups.push(() => sql.end({ timeout: 5 }));
    await migrate(sql);

    const client = await createTemporalClient({ address: temporal.address, namespace: 'default' });
    cleanups.push(() => client.connection.close());

    const stripeApiBase = opts.stripeApiBase ? await opts.stripeApiBase(stripeMock.baseUrl) : stripeMock.baseUrl;
    const taskQueue = 'billing';
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      NODE_ENV: 'production',
      DATABASE_URL: databaseUrl,
      TEMPORAL_ADDRESS: temporal.address,
      TEMPORAL_NAMESPACE: 'default',
      TEMPORAL_TASK_QUEUE: taskQueue,
      STRIPE_SECRET_KEY: 'sk_test_bench',
      STRIPE_API_BASE: stripeApiBase,
      STRIPE_WEBHOOK_SECRET: BENCH_WEBHOOK_SECRET,
      ADMIN_TOKEN,
      // Production mode wants an API token for /checkout and /customers/*; the stack's callers are local.
      API_AUTH: 'none',
      LOG_LEVEL: 'info',
      SWEEPER_INTERVAL_MS: '2000',
      // Never let the daily schedule fire in the middle of a measurement.
      RECONCILIATION_CRON: '0 3 1 1 *',
      ...opts.env,
    };
    const services: ServiceProcess[] = [];
    const spawnService = (name: string, entry: string, extra: Record<string, string>, nodeArgs: string[] = []) => {
      const svc = new ServiceProcess(name, entry, { ...env, ...extra }, path.join(dir, `${name}.log`), opts.onUnexpectedExit, nodeArgs);
      services.push(svc);
      return svc;
    };
    const replicaName = (kind: string, i: number) => (i === 0 ? kind : `${kind}-${i + 1}`);
    // The name in the replica's sessions (pg_stat_activity, audit triggers); the URL's parameter wins over the code's.
    const tagged = (name: string) => {
      const u = new URL(env.DATABASE_URL!);
      u.searchParams.set('application_name', `billing-${name}`);
      return u.toString();
    };
    const workers = Array.from({ length: workerReplicas }, (_, i) => {
      const name = replicaName('worker', i);
      return spawnService(name, opts.workerEntry ?? 'worker/main.ts', {
        DATABASE_URL: tagged(name),
        ...(opts.workerMetrics && i === 0 ? { WORKER_METRICS_ADDRESS: `127.0.0.1:${metricsPort}` } : {}),
        ...opts.workerEnv,
      }, opts.workerNodeArgs);
    });
    const apis = apiPorts.map((port, i) => {
      const name = replicaName('api', i);
      return spawnService(name, opts.apiEntry ?? 'api/server.ts', { DATABASE_URL: tagged(name), PORT: String(port), ...opts.apiEnv }, opts.apiNodeArgs);
    });
    const worker = workers[0]!;
    const api = apis[0]!;
    const apiPort = apiPorts[0]!;
    cleanups.push(async () => {
      await Promise.all(services.map((s) => s.stop()));
    });
    for (const svc of [...workers, ...apis]) svc.supervise = opts.supervise ?? false;

    const apiUrls = apiPorts.map((port) => `http://127.0.0.1:${port}`);
    const apiUrl = apiUrls[0]!;
    stack = {
      dir,
      pg,
      temporal,
      stripeMock,
      stripeApiBase,
      databaseUrl,
      sql,
      client,
      api,
      worker,
      apis,
      apiUrls,
      workers,
      apiUrl,
      apiPort,
      workerMetricsUrl: opts.workerMetrics ? `http://127.0.0.1:${metricsPort}/metrics` : null,
      webhookSecret: BENCH_WEBHOOK_SECRET,
      adminToken: ADMIN_TOKEN,
      taskQueue,
      env,
      spawnService,
      async waitApiReady(timeoutMs = 90_000, which = apis) {
        await Promise.all(
          which.map(async (svc) => {
            const i = apis.indexOf(svc);
            await waitForPort(apiPorts[i]!, '127.0.0.1', timeoutMs, svc.name);
            const deadline = Date.now() + timeoutMs;
            for (;;) {
              const ok = await fetch(`${apiUrls[i]}/readyz`).then((r) => r.ok, () => false);
              if (ok) return;
              if (Date.now() > deadline) throw new Error(`${svc.name} not ready within ${timeoutMs} ms (see ${dir}/${svc.name}.log)`);
              await sleep(200);
            }
          }),
        );
      },
      async waitWorkerReady(timeoutMs = 120_000, which = workers) {
        const deadline = Date.now() + timeoutMs;
        let waiting = which;
        for (;;) {
          // Ready = a poller whose identity (`<pid>@<host>`) is one of the worker's current processes.
          const res = await client.workflowService
            .describeTaskQueue({ namespace: 'default', taskQueue: { name: taskQueue }, taskQueueType: 1 })
            .catch(() => null);
          const polling = new Set((res?.pollers ?? []).map((p) => String(p.identity ?? '').split('@')[0] ?? ''));
          waiting = waiting.filter((w) => !w.pids().some((pid) => polling.has(String(pid))));
          if (waiting.length === 0) return;
          const dead = waiting.find((w) => !w.running && !w.supervise);
          if (dead) throw new Error(`${dead.name} exited during startup (see ${dir}/${dead.name}.log)`);
          if (Date.now() > deadline) throw new Error(`${waiting.map((w) => w.name).join(', ')} not polling within ${timeoutMs} ms (see ${dir}/${waiting[0]!.name}.log)`);
          await sleep(250);
        }
      },
      stop: cleanup,
    };
    activeStacks.add(stack);
    const t1 = Date.now();
    for (const w of workers) w.start();
    for (const a of apis) a.start();
    await Promise.all([stack.waitApiReady(), stack.waitWorkerReady()]);
    const replicas = apis.length > 1 || workers.length > 1 ? ` (${apis.length} API and ${workers.length} worker replicas)` : '';
    log(`api ${apiUrls.join(', ')} and worker (task queue ${taskQueue}) ready in ${Date.now() - t1} ms${replicas}; logs in ${dir}`);
    return stack;
  } catch (err) {
    await cleanup();
    throw err;
  }
}

export type TemporalJournal = 'wal' | 'wal-normal' | 'default';

/** Command-line flags for the dev server's SQLite journal (see BillingStackOptions.temporalJournal). */
export function temporalSqliteArgs(journal: TemporalJournal): string[] {
  if (journal === 'default') return [];
  return ['--sqlite-pragma', 'journal_mode=wal', '--sqlite-pragma', `synchronous=${journal === 'wal' ? 'full' : 'normal'}`];
}

/** Resolves after ms. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
