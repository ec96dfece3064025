/**
 * `npm run dev`: the whole service on embedded defaults. Starts PostgreSQL (unless DATABASE_URL is
 * given), the Temporal dev server with its UI on a persistent db file, a local Stripe emulator with the
 * plan catalog in it (unless STRIPE_SECRET_KEY is given), Mailpit to catch emails (unless SMTP_URL is
 * given), migrates and syncs the catalog, then runs the API and the worker until Ctrl-C.
 *
 * SIGINT, SIGTERM or SIGHUP to this process (npm forwards them: `npm run dev` execs down to it) stops
 * everything, also mid-startup: the API and worker in their own process groups first, then the services
 * in reverse order of start, each registered as soon as it is up.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createSql } from '../lib/db';
import { devCheckoutPageUrl } from '../lib/dev-checkout';
import { migrate } from '../lib/migrate';
import { loadPlanConfig, syncPlans } from '../lib/plan-catalog-sync';
import { seedLocalstripeCatalog, startEmulatorGateway } from '../support/emulator-gateway/gateway';
import {
  freePort,
  portInUse,
  ROOT,
  startLocalstripe,
  startMailpit,
  startPostgres,
  startStripeMock,
  startTemporal,
  TOOLS_BIN,
  waitForPort,
  writeJson,
  type Managed,
} from '../support/services';

// DEV_DATA_DIR: another state directory (the demo test runs a second stack beside yours).
const DATA = process.env.DEV_DATA_DIR ? path.resolve(process.env.DEV_DATA_DIR) : path.join(ROOT, '.data');
const env = process.env;
const num = (v: string | undefined, d: number) => (v ? Number(v) : d);

export const DEV_DEFAULTS = {
  apiPort: num(env.PORT, 3000),
  pgPort: num(env.DEV_PG_PORT, 54329),
  temporalPort: num(env.DEV_TEMPORAL_PORT, 7233),
  temporalUiPort: num(env.DEV_TEMPORAL_UI_PORT, 8233),
  localstripePort: num(env.DEV_LOCALSTRIPE_PORT, 8420),
  stripeMockPort: num(env.DEV_STRIPE_MOCK_PORT, 12111),
  /** support/emulator-gateway/gateway.ts, in front of localstripe (emulators only). */
  stripeGatewayPort: num(env.DEV_STRIPE_GATEWAY_PORT, 8421),
  /** Mailpit (unless SMTP_URL is given): SMTP for the worker, web UI + API for you and the demo. */
  mailpitSmtpPort: num(env.DEV_MAILPIT_SMTP_PORT, 1025),
  mailpitHttpPort: num(env.DEV_MAILPIT_HTTP_PORT, 8025),
  notifyFrom: 'Billing <billing@example.test>',
  webhookSecret: 'whsec_local_dev_only_not_a_secret',
  adminToken: 'dev-admin-token-change-me',
};

/** Where a running dev stack records its addresses (read by demo and bench). */
export const DEV_STATE_FILE = path.join(DATA, 'dev-stack.json');

/** Thrown by a startup step that finishes after a stop was requested. */
class StopRequested extends Error {}

/** How long the API and the worker get to drain after SIGTERM before their process groups are killed. */
const CHILD_GRACE_MS = 15_000;

async function main(): Promise<void> {
  const stack: Managed[] = [];
  const children: ChildProcess[] = [];
  let stopping = false;
  // Aborted by a stop: a startup step still waiting for a service to listen ends at once, stopping it.
  const abort = new AbortController();
  const signal = abort.signal;
  let startup: Promise<void> = Promise.resolve();
  /** Ends the startup once a stop was requested (between steps; a step waiting on a port is aborted). */
  const checkpoint = () => {
    if (stopping) throw new StopRequested();
  };
  /** Registers a service that is up, so that a stop stops it, also one requested while it was starting. */
  const started = <T extends Managed>(service: T): T => {
    stack.push(service);
    checkpoint();
    return service;
  };
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    abort.abort(new StopRequested());
    process.stdout.write('\n[dev] stopping…\n');
    // A stop mid-startup: the step under way ends (a wait is aborted, what it spawned is stopped), then
    // everything registered before it is stopped below.
    await startup;
    await Promise.all(children.map((c) => stopChild(c, CHILD_GRACE_MS)));
    for (const s of stack.reverse()) await s.stop().catch(() => {});
    process.exit(code);
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => void stopAll(0));

  startup = start().catch((err: unknown) => {
    if (err instanceof StopRequested || stopping) return;
    process.stderr.write(`[dev] failed: ${err instanceof Error ? err.message : String(err)}\n`);
    void stopAll(1);
  });

  async function start(): Promise<void> {
    let databaseUrl = env.DATABASE_URL;
    if (!databaseUrl) {
      const pg = started(await startPostgres({ dataDir: path.join(DATA, 'pg'), port: DEV_DEFAULTS.pgPort, logDir: DATA }));
      const admin = createSql(pg.url, { max: 1 });
      const exists = await admin`SELECT 1 FROM pg_database WHERE datname = 'billing'`;
      if (exists.length === 0) await admin.unsafe('CREATE DATABASE billing');
      await admin.end();
      databaseUrl = pg.urlFor('billing');
      process.stdout.write(`[dev] PostgreSQL ${databaseUrl} (data in .data/pg)\n`);
    }
    const temporal = started(
      await startTemporal({
        port: DEV_DEFAULTS.temporalPort,
        uiPort: DEV_DEFAULTS.temporalUiPort,
        dbFile: path.join(DATA, 'temporal.db'),
        logDir: DATA,
        signal,
      }),
    );

    // The catalog the worker syncs (PLANS_JSON, else PLANS_FILE, else config/plans.json): read here too, so
    // the emulator and Postgres both have it before the API takes its first POST /checkout.
    const plans = loadPlanConfig({ PLANS_JSON: env.PLANS_JSON?.trim() || undefined, PLANS_FILE: env.PLANS_FILE?.trim() || undefined });
    const nodeEnv = env.NODE_ENV ?? 'development';
    const publicBase = (env.PUBLIC_BASE_URL?.trim() || `http://localhost:${DEV_DEFAULTS.apiPort}`).replace(/\/+$/, '');

    let stripeKey = env.STRIPE_SECRET_KEY;
    let stripeBase = env.STRIPE_API_BASE;
    let emulator: string | null = null;
    let localstripeUrl: string | null = null;
    if (!stripeKey) {
      const ls = started(await startLocalstripe({ port: DEV_DEFAULTS.localstripePort, logDir: DATA, signal }));
      const sm = started(await startStripeMock({ port: DEV_DEFAULTS.stripeMockPort, logDir: DATA, signal }));
      stripeKey = 'sk_test_local_emulator';
      localstripeUrl = ls.baseUrl;
      // Emulator glue (dev/demo only): translates the requests localstripe cannot serve, see its header.
      const gateway = started(await startEmulatorGateway({
        port: DEV_DEFAULTS.stripeGatewayPort,
        upstream: ls.baseUrl,
        webhookUrl: `http://127.0.0.1:${DEV_DEFAULTS.apiPort}/webhooks/stripe`,
        webhookSecret: env.STRIPE_WEBHOOK_SECRET ?? DEV_DEFAULTS.webhookSecret,
        // The API serves the dev checkout page in development only (lib/dev-checkout.ts).
        ...(nodeEnv === 'development' ? { checkoutPageUrl: (id: string) => devCheckoutPageUrl(publicBase, id) } : {}),
        log: (line) => process.stdout.write(`${line}\n`),
      }));
      stripeBase = gateway.baseUrl;
      // Without it the first POST /checkout answers "No such price" (the demo used to create it in its step 1).
      const seeded = await seedLocalstripeCatalog({ localstripeUrl: ls.baseUrl, secretKey: stripeKey, plans });
      process.stdout.write(`[dev] plan catalog in localstripe: ${seeded.created.length} created, ${seeded.present.length} already there\n`);
      emulator = `localstripe ${ls.baseUrl} (stateful, sends webhooks) behind the emulator gateway ${gateway.baseUrl}; stripe-mock ${sm.baseUrl} (request validation)`;
    }

    let smtpUrl = env.SMTP_URL?.trim() || null;
    let mailpitUrl: string | null = null;
    if (!smtpUrl && env.DEV_MAILPIT !== 'off') {
      if (!existsSync(path.join(TOOLS_BIN, 'mailpit'))) {
        process.stderr.write('[dev] .tools/bin/mailpit is missing (run `npm run tools`): emails stay in the outbox\n');
      } else {
        // Defaults taken (another dev stack, the demo test's): any free ports; explicit ones must be free.
        const pick = async (port: number, variable: string) => {
          if (!(await portInUse(port))) return port;
          if (env[variable]) throw new Error(`${variable}=${port} is already in use`);
          return freePort();
        };
        const smtpPort = await pick(DEV_DEFAULTS.mailpitSmtpPort, 'DEV_MAILPIT_SMTP_PORT');
        const httpPort = await pick(DEV_DEFAULTS.mailpitHttpPort, 'DEV_MAILPIT_HTTP_PORT');
        const mailpit = started(await startMailpit({ smtpPort, httpPort, logDir: DATA, signal }));
        smtpUrl = mailpit.smtpUrl;
        mailpitUrl = mailpit.baseUrl;
      }
    }

    const webhookSecret = env.STRIPE_WEBHOOK_SECRET ?? DEV_DEFAULTS.webhookSecret;
    const adminToken = env.ADMIN_TOKEN ?? DEV_DEFAULTS.adminToken;

    const sql = createSql(databaseUrl, { max: 1 });
    const applied = await migrate(sql);
    // The worker syncs it again at startup (idempotent); this way GET /plans and POST /checkout have it at once.
    await syncPlans(sql, plans);
    await sql.end();
    process.stdout.write(`[dev] migrations: ${applied.length ? applied.join(', ') : 'up to date'}\n`);

    const childEnv: NodeJS.ProcessEnv = {
      // The stack's own plaintext dev server: Cloud or TLS settings in the developer's shell would not reach it.
      ...Object.fromEntries(Object.entries(env).filter(([k]) => !/^TEMPORAL_(API_KEY|PROFILE|CONFIG_FILE|TLS.*|GRPC_META_.*)$/.test(k))),
      NODE_ENV: nodeEnv,
      PORT: String(DEV_DEFAULTS.apiPort),
      DATABASE_URL: databaseUrl,
      TEMPORAL_ADDRESS: temporal.address,
      TEMPORAL_NAMESPACE: env.TEMPORAL_NAMESPACE ?? 'default',
      TEMPORAL_TASK_QUEUE: env.TEMPORAL_TASK_QUEUE ?? 'billing',
      STRIPE_SECRET_KEY: stripeKey,
      STRIPE_API_BASE: stripeBase ?? '',
      STRIPE_WEBHOOK_SECRET: webhookSecret,
      ADMIN_TOKEN: adminToken,
      TEMPORAL_UI_URL: `http://localhost:${DEV_DEFAULTS.temporalUiPort}`,
      SWEEPER_INTERVAL_MS: env.SWEEPER_INTERVAL_MS ?? '5000',
      ...(smtpUrl ? { SMTP_URL: smtpUrl, NOTIFY_FROM: env.NOTIFY_FROM ?? DEV_DEFAULTS.notifyFrom } : {}),
    };
    checkpoint();
    for (const [name, entry] of [['worker', 'worker/main.ts'], ['api', 'api/server.ts']] as const) {
      // node with the tsx loader (no tsx CLI in between), in its own process group: a stop signals the
      // whole group, so nothing the process started outlives it.
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, entry)], {
        env: childEnv,
        stdio: ['ignore', 'inherit', 'inherit'],
        detached: true,
      });
      child.on('exit', (code, signal) => {
        if (!stopping) {
          process.stderr.write(`[dev] ${name} exited (${code ?? signal}); stopping the stack\n`);
          void stopAll(1);
        }
      });
      children.push(child);
    }
    await waitForPort(DEV_DEFAULTS.apiPort, '127.0.0.1', 60_000, 'API', { signal });

    if (emulator) {
      // localstripe delivers signed webhooks to our endpoint, like Stripe would.
      const res = await fetch(`${localstripeUrl ?? stripeBase}/_config/webhooks/billing-dev`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${stripeKey}`, 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ url: `http://127.0.0.1:${DEV_DEFAULTS.apiPort}/webhooks/stripe`, secret: webhookSecret }),
      });
      if (!res.ok) throw new Error(`could not register the localstripe webhook: ${res.status} ${await res.text()}`);
    }

    const state = {
      apiUrl: `http://127.0.0.1:${DEV_DEFAULTS.apiPort}`,
      temporalAddress: temporal.address,
      temporalUiUrl: `http://localhost:${DEV_DEFAULTS.temporalUiPort}`,
      databaseUrl,
      stripeApiBase: stripeBase ?? null,
      localstripeUrl,
      mailpitUrl,
      dunningRetryDays: childEnv.DUNNING_RETRY_DAYS ?? null,
      stripeSecretKey: emulator ? stripeKey : null,
      webhookSecret: emulator || !env.STRIPE_WEBHOOK_SECRET ? webhookSecret : null,
      adminToken: env.ADMIN_TOKEN ? null : adminToken,
      taskQueue: childEnv.TEMPORAL_TASK_QUEUE,
      pid: process.pid,
    };
    writeJson(DEV_STATE_FILE, state);
    process.stdout.write(
      [
        '',
        '[dev] billing engine is up',
        `  API            ${state.apiUrl}   (health: /healthz, ready: /readyz, metrics: /metrics)`,
        `  API docs       ${state.apiUrl}/docs`,
        `  Temporal UI    ${state.temporalUiUrl}`,
        `  Temporal       ${temporal.address}  (namespace default, task queue ${childEnv.TEMPORAL_TASK_QUEUE})`,
        `  Postgres       ${databaseUrl}`,
        emulator ? `  Stripe         local emulator — no Stripe account used: ${emulator}` : `  Stripe         ${stripeBase ?? 'api.stripe.com'}`,
        emulator && nodeEnv === 'development'
          ? `  Checkout       POST /checkout answers ${publicBase}/dev/checkout/{sessionId}: a local page with "Pay with test card"`
          : null,
        mailpitUrl
          ? `  Mailpit        ${mailpitUrl}   (emails the worker sends via ${smtpUrl}, from ${childEnv.NOTIFY_FROM})`
          : `  Email          ${smtpUrl ? `SMTP_URL ${smtpUrl.replace(/\/\/[^@/]*@/, '//…@')}` : 'not sent (no SMTP_URL, no Mailpit)'}`,
        env.ADMIN_TOKEN ? '  Admin token    from ADMIN_TOKEN' : `  Admin token    ${adminToken} (dev default)`,
        '  Ctrl-C stops everything.',
        '',
      ]
        .filter((line) => line !== null)
        .join('\n'),
    );
  }
}

/** SIGTERM to the child's process group; SIGKILL to it if the child has not exited after graceMs. */
async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  const signalGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      /* the group is gone */
    }
  };
  if (child.pid === undefined) return;
  const exited = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => child.once('exit', () => r()));
  signalGroup('SIGTERM');
  const timer = setTimeout(() => signalGroup('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
  // What the child left in its group (e.g. tsx's esbuild service) goes with it.
  signalGroup('SIGKILL');
}

if (require.main === module) void main();
