/**
 * The production build as the image runs it: `npm run build` (what the Dockerfile's build stage runs),
 * then the compiled migrate CLI, worker and API under plain node (no tsx) against the test services, the
 * image's HEALTHCHECK command against the API, a signed webhook applied by the compiled worker (whose
 * workflow bundle comes from the compiled workflows/), and a clean exit of both on SIGTERM.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parse } from 'yaml';
import { createSql, type Sql } from '../../lib/db';
import { readMigrations } from '../../lib/migrate';
import { freePort } from '../../support/services';
import { signPayload } from '../helpers/app';
import { uniqueFixture } from '../helpers/fixtures';
import { eventually, uniqueId, TEST_ADMIN_TOKEN, TEST_WEBHOOK_SECRET } from '../helpers/services';

const ROOT = path.resolve(__dirname, '..', '..');
// A child of the root, like dist/: the compiled files resolve node_modules and ../../migrations from it.
const OUT = path.join(ROOT, `.build-test-${uniqueId()}`);
const API_TOKEN = 'api-token-0123456789abcdef';
/** How long a SIGTERMed process may take to exit (the API force-exits after 10 s). */
const EXIT_BOUND_MS = 12_000;

interface Proc {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(entry: string, env: Record<string, string>): Proc {
  const child = spawn(process.execPath, [path.join(OUT, entry)], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, output: () => out, exited };
}

async function stopWithin(p: Proc, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  const t0 = Date.now();
  p.child.kill('SIGTERM');
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error(`did not exit within ${ms} ms of SIGTERM:\n${p.output().slice(-2000)}`)), ms),
  );
  const result = await Promise.race([p.exited, timeout]);
  return { ...result, ms: Date.now() - t0 };
}

/** The exec-form command of a healthcheck, as docker runs it. */
function dockerfileHealthcheck(): string[] {
  const m = /^HEALTHCHECK\b.*\\\n\s+CMD (\[.*\])$/m.exec(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));
  if (!m) throw new Error('no exec-form HEALTHCHECK in the Dockerfile');
  return JSON.parse(m[1]!) as string[];
}

function composeHealthcheck(service: string): string[] {
  const compose = parse(readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true });
  const test = compose.services[service].healthcheck.test as string[];
  expect(test[0]).toBe('CMD');
  return test.slice(1);
}

function runCheck(cmd: string[], env: Record<string, string>, rewrite: (arg: string) => string = (a) => a) {
  const [bin, ...args] = cmd;
  // The image's node is the one running these tests; the script itself is run unchanged.
  const res = spawnSync(bin === 'node' ? process.execPath : bin!, args.map(rewrite), { env: { PATH: process.env.PATH!, ...env }, timeout: 10_000 });
  return res.status;
}

describe('the production build (npm run build → node dist/…)', () => {
  let admin: Sql;
  let sql: Sql;
  const dbName = `t_build_${uniqueId()}`;
  const procs: Proc[] = [];
  let buildMs = 0;

  beforeAll(async () => {
    const t0 = Date.now();
    // npm appends the arguments to the build script: tsc -p tsconfig.build.json --outDir <OUT>.
    const build = spawnSync('npm', ['run', 'build', '--', '--outDir', OUT], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    buildMs = Date.now() - t0;
    if (build.status !== 0) throw new Error(`npm run build failed (${build.status}):\n${build.stdout}\n${build.stderr}`);
    admin = createSql(inject('pgAdminUrl'), { max: 1 });
    // An empty database: the compiled migrate CLI must find migrations/ on its own.
    await admin.unsafe(`CREATE DATABASE ${dbName}`);
    sql = createSql(`postgres://postgres@127.0.0.1:${inject('pgPort')}/${dbName}`, { max: 2 });
  }, 150_000);

  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    await sql?.end({ timeout: 5 });
    await admin?.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => {});
    await admin?.end();
    rmSync(OUT, { recursive: true, force: true });
  });

  const databaseUrl = () => `postgres://postgres@127.0.0.1:${inject('pgPort')}/${dbName}`;

  it('compiles every entry point the image runs, with the plan catalog beside them', () => {
    for (const file of ['api/server.js', 'worker/main.js', 'lib/migrate-cli.js', 'workflows/index.js', 'config/plans.json']) {
      expect(() => readFileSync(path.join(OUT, file)), file).not.toThrow();
    }
    expect(JSON.parse(readFileSync(path.join(OUT, 'config/plans.json'), 'utf8'))).toEqual(JSON.parse(readFileSync(path.join(ROOT, 'config/plans.json'), 'utf8')));
    process.stdout.write(`[build.test] npm run build took ${buildMs} ms\n`);
  });

  it('migrates an empty database with the compiled migrate CLI', async () => {
    const res = spawnSync(process.execPath, [path.join(OUT, 'lib/migrate-cli.js')], {
      cwd: ROOT,
      env: { PATH: process.env.PATH!, NODE_ENV: 'production', DATABASE_URL: databaseUrl() },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(res.status, res.stderr).toBe(0);
    const files = readMigrations();
    expect(res.stdout).toContain(`applied: ${files[0]!.name}`);
    const rows = await sql<{ version: string }[]>`SELECT version FROM schema_migrations ORDER BY version`;
    expect(rows.map((r) => r.version)).toEqual(files.map((f) => f.version));
  });

  it('runs the compiled worker and API: ready, healthchecks pass, a signed webhook is applied, both exit cleanly on SIGTERM', async () => {
    const [apiPort, metricsPort] = await Promise.all([freePort(), freePort()]);
    const env = {
      PATH: process.env.PATH!,
      NODE_ENV: 'production',
      DATABASE_URL: databaseUrl(),
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: 'default',
      TEMPORAL_TASK_QUEUE: uniqueId('tq-build-'),
      STRIPE_SECRET_KEY: 'sk_test_123',
      STRIPE_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
      STRIPE_API_BASE: inject('stripeMockUrl'),
      ADMIN_TOKEN: TEST_ADMIN_TOKEN,
      API_TOKEN,
      LOG_LEVEL: 'info',
      PORT: String(apiPort),
      WORKER_METRICS_ADDRESS: `127.0.0.1:${metricsPort}`,
    };
    const worker = start('worker/main.js', env);
    const api = start('api/server.js', env);
    procs.push(worker, api);

    const t0 = Date.now();
    const ready = await eventually(async () => {
      for (const p of [worker, api]) if (p.child.exitCode !== null) throw new Error(`exited ${p.child.exitCode}:\n${p.output()}`);
      const res = await fetch(`http://127.0.0.1:${apiPort}/readyz`);
      return res.status === 200 ? ((await res.json()) as { status: string }) : null;
    }, 30_000, 'the compiled API to answer /readyz 200');
    expect(ready.status).toBe('ready');
    const readyMs = Date.now() - t0;

    // The image's HEALTHCHECK, as docker would run it inside the API container.
    expect(runCheck(dockerfileHealthcheck(), { PORT: String(apiPort) })).toBe(0);
    expect(runCheck(composeHealthcheck('api-1'), {}, (a) => a.replace('127.0.0.1:3000', `127.0.0.1:${apiPort}`))).toBe(0);

    const { envelope } = uniqueFixture('customer.created');
    const body = JSON.stringify(envelope);
    const res = await fetch(`http://127.0.0.1:${apiPort}/webhooks/stripe`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Stripe-Signature': signPayload(body) },
      body,
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ received: true, eventId: envelope.id, duplicate: false });
    // Applied by the compiled worker: its bundle was built from the compiled workflows/.
    const outcome = await eventually(async () => {
      if (worker.child.exitCode !== null) throw new Error(`worker exited ${worker.child.exitCode}:\n${worker.output()}`);
      const [row] = await sql<{ outcome: string }[]>`SELECT outcome FROM applied_events WHERE event_id = ${envelope.id}`;
      return row?.outcome;
    }, 30_000, 'the webhook to be applied by the compiled worker');
    expect(outcome).toBe('applied');

    // The worker container's healthcheck (docker-compose.yml) against this worker's metrics port.
    expect(runCheck(composeHealthcheck('worker'), {}, (a) => a.replace('127.0.0.1:9464', `127.0.0.1:${metricsPort}`))).toBe(0);

    const [apiStop, workerStop] = await Promise.all([stopWithin(api, EXIT_BOUND_MS), stopWithin(worker, EXIT_BOUND_MS)]);
    expect({ code: apiStop.code, signal: apiStop.signal }, api.output().slice(-2000)).toEqual({ code: 0, signal: null });
    expect({ code: workerStop.code, signal: workerStop.signal }, worker.output().slice(-2000)).toEqual({ code: 0, signal: null });
    process.stdout.write(`[build.test] ready after ${readyMs} ms; SIGTERM → exit: api ${apiStop.ms} ms, worker ${workerStop.ms} ms\n`);
  }, 90_000);
});
