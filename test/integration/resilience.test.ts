/**
 * Dependency resilience of the real entry points (worker/main.ts, api/server.ts as child processes under tsx):
 * started while Temporal or Postgres is unreachable they wait and log what they wait for; once running they
 * outlive the dependency going away and coming back; SIGTERM stops them cleanly. "Down" and "up" are a TCP
 * forwarder on a free port in front of the shared dev server / Postgres, closed (connections refused, open ones
 * cut) or listening. Also the postgres.js write-after-close crash (porsager/postgres#1208) and its guard.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { waitFor, WaitTimeoutError } from '../../lib/wait-for';
import { freePort } from '../../support/services';
import { buildTestApp, postWebhook, signPayload, stopTestDispatchers } from '../helpers/app';
import { uniqueFixture } from '../helpers/fixtures';
import { createTestDatabase, eventually, testConfig, uniqueId, TEST_ADMIN_TOKEN, TEST_WEBHOOK_SECRET, type TestDatabase } from '../helpers/services';

const ROOT = path.resolve(__dirname, '..', '..');

/** A TCP port that refuses connections until start(), and cuts every connection on stop(). */
interface Forwarder {
  port: number;
  address: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}

async function forwarder(target: { host: string; port: number }): Promise<Forwarder> {
  const port = await freePort();
  const sockets = new Set<net.Socket>();
  let server: net.Server | null = null;
  return {
    port,
    address: `127.0.0.1:${port}`,
    async start() {
      const s = net.createServer((client) => {
        const up = net.connect(target);
        sockets.add(client).add(up);
        client.pipe(up).pipe(client);
        const drop = () => {
          client.destroy();
          up.destroy();
          sockets.delete(client);
          sockets.delete(up);
        };
        client.on('error', drop).on('close', drop);
        up.on('error', drop).on('close', drop);
      });
      await new Promise<void>((resolve) => s.listen(port, '127.0.0.1', resolve));
      server = s;
    },
    async stop() {
      const s = server;
      server = null;
      if (!s) return;
      const closed = new Promise<void>((resolve) => s.close(() => resolve()));
      for (const sock of sockets) sock.destroy();
      await closed;
    },
  };
}

function hostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  return { host: address.slice(0, i), port: Number(address.slice(i + 1)) };
}

/** An entry point as a child process, its pino lines parsed as they come. */
interface Child {
  proc: ChildProcess;
  lines: () => Record<string, any>[];
  output: () => string;
  exited: () => boolean;
  /** SIGTERM; resolves with the exit code (SIGKILL and null after killAfterMs). */
  terminate(killAfterMs?: number): Promise<number | null>;
}

function startEntry(entry: string, env: Record<string, string>): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', entry], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, NODE_ENV: 'test', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d) => (stdout += d));
  proc.stderr!.on('data', (d) => (stderr += d));
  const exit = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const done = () => proc.exitCode !== null || proc.signalCode !== null;
  return {
    proc,
    lines: () =>
      stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, any>),
    output: () => `${stdout}\n${stderr}`,
    exited: done,
    async terminate(killAfterMs = 35_000) {
      if (done()) return proc.exitCode;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), killAfterMs);
      const code = await exit;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Waits for a log line, failing at once if the process exits instead. */
async function logged(child: Child, what: string, match: (l: Record<string, any>) => boolean, timeoutMs = 30_000) {
  return eventually(async () => {
    if (child.exited()) throw new Error(`exited (${child.proc.exitCode ?? child.proc.signalCode}) before "${what}":\n${child.output().slice(-3000)}`);
    return child.lines().find(match);
  }, timeoutMs, what);
}

const baseEnv = () => ({
  STRIPE_SECRET_KEY: 'sk_test_123',
  STRIPE_WEBHOOK_SECRET: TEST_WEBHOOK_SECRET,
  STRIPE_API_BASE: inject('stripeMockUrl'),
  ADMIN_TOKEN: TEST_ADMIN_TOKEN,
});

describe('waitFor', () => {
  const recorder = () => {
    const lines: { level: string; msg: string }[] = [];
    return {
      lines,
      logger: { warn: (_o: object, msg: string) => lines.push({ level: 'warn', msg }), info: (_o: object, msg: string) => lines.push({ level: 'info', msg }) },
    };
  };

  it('retries with a doubling, capped delay, logging what it waits for and why, until fn succeeds', async () => {
    const log = recorder();
    let calls = 0;
    const value = await waitFor('postgres at db:5432/billing', async () => {
      if (++calls < 5) throw new Error(`connect ECONNREFUSED (${calls})`);
      return 'up';
    }, { logger: log.logger, initialDelayMs: 200, maxDelayMs: 400 });
    expect(value).toBe('up');
    expect(log.lines.slice(0, 4).map((l) => l.msg.replace(/retrying in [\d.]+s/, 'retrying in Xs'))).toEqual(
      [1, 2, 3, 4].map((n) => `waiting for postgres at db:5432/billing: connect ECONNREFUSED (${n}); retrying in Xs`),
    );
    expect(log.lines[4]).toEqual({ level: 'info', msg: 'postgres at db:5432/billing is reachable' });
    // Delays are base/2..base with base 200, 400, 400, 400 ms: doubling, then never above the cap.
    const delays = log.lines.slice(0, 4).map((l) => Number(/retrying in ([\d.]+)s/.exec(l.msg)![1]));
    expect(delays[0]).toBeLessThanOrEqual(0.2);
    expect(delays.slice(1).every((d) => d >= 0.2 && d <= 0.4)).toBe(true);
  });

  it('gives up after timeoutMs with the last error as the cause', async () => {
    const started = Date.now();
    const err = await waitFor('temporal at t:7233', async () => {
      throw new Error('unavailable');
    }, { initialDelayMs: 20, timeoutMs: 150 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WaitTimeoutError);
    expect((err as Error).message).toBe('gave up waiting for temporal at t:7233 after 0 s: unavailable');
    expect(((err as Error).cause as Error).message).toBe('unavailable');
    expect(Date.now() - started).toBeLessThan(1000);
  });
});

describe('dependency resilience of the API and the worker', () => {
  let db: TestDatabase;
  const children: Child[] = [];
  const forwarders: Forwarder[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
  });

  afterEach(async () => {
    await Promise.all(children.splice(0).map((c) => c.terminate(5_000)));
    await Promise.all(forwarders.splice(0).map((f) => f.stop()));
  });

  afterAll(async () => {
    await stopTestDispatchers();
    await db?.drop();
  });

  const applied = (eventId: string, timeoutMs = 30_000) =>
    eventually(async () => (await db.sql`SELECT 1 FROM applied_events WHERE event_id = ${eventId}`).length > 0, timeoutMs, `event ${eventId} applied`);

  it('a worker started while Temporal is down waits, starts once it is up, applies what was acknowledged meanwhile, and outlives a Temporal outage', async () => {
    const temporal = await forwarder(hostPort(inject('temporalAddress')));
    forwarders.push(temporal);
    const config = testConfig({ TEMPORAL_ADDRESS: temporal.address });
    // The API side, already running: it acknowledges on commit whether or not Temporal answers.
    const client = new Client({ connection: Connection.lazy({ address: temporal.address }), namespace: 'default' });
    const api = buildTestApp({ sql: db.sql, temporal: client, config });
    try {
      const worker = startEntry('worker/main.ts', { ...baseEnv(), DATABASE_URL: db.url, TEMPORAL_ADDRESS: temporal.address, TEMPORAL_TASK_QUEUE: config.TEMPORAL_TASK_QUEUE });
      children.push(worker);
      const first = uniqueFixture('customer.subscription.created').envelope;
      expect((await postWebhook(api.app, first)).status).toBe(200);

      const waiting = await logged(worker, 'the worker waiting for Temporal', (l) => /^waiting for temporal at /.test(l.msg));
      expect(waiting.msg).toContain(`waiting for temporal at ${temporal.address} (namespace default, plaintext): `);
      expect(waiting.msg).toMatch(/; retrying in \d+\.\ds$/);
      await new Promise((r) => setTimeout(r, 1500));
      expect(worker.exited()).toBe(false);
      expect((await db.sql`SELECT 1 FROM applied_events WHERE event_id = ${first.id}`).length).toBe(0);

      await temporal.start();
      await logged(worker, 'the worker started', (l) => l.msg === 'worker started');
      await applied(first.id);

      // Temporal goes away under the running worker (connections cut, new ones refused), then returns.
      await temporal.stop();
      const during = uniqueFixture('customer.subscription.created').envelope;
      expect((await postWebhook(api.app, during)).status).toBe(200);
      await new Promise((r) => setTimeout(r, 4000));
      await temporal.start();
      await applied(during.id);
      expect(worker.exited()).toBe(false);

      expect(await worker.terminate()).toBe(0);
      expect(worker.lines().some((l) => l.msg === 'worker stopped')).toBe(true);
    } finally {
      await api.close();
      await client.connection.close();
    }
  }, 90_000);

  it('an API started while Postgres is down waits, serves once it is up, and outlives a Postgres outage', async () => {
    const pg = await forwarder({ host: '127.0.0.1', port: inject('pgPort') });
    forwarders.push(pg);
    const port = await freePort();
    const api = startEntry('api/server.ts', {
      ...baseEnv(),
      DATABASE_URL: `postgres://postgres@${pg.address}/${db.name}`,
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_TASK_QUEUE: uniqueId('tq-resilience-'),
      PORT: String(port),
    });
    children.push(api);
    const waiting = await logged(api, 'the API waiting for Postgres', (l) => /^waiting for postgres at /.test(l.msg));
    expect(waiting.msg).toContain(`waiting for postgres at ${pg.address}/${db.name}: `);
    expect(JSON.stringify(waiting)).not.toContain('postgres://');
    await new Promise((r) => setTimeout(r, 1500));
    expect(api.exited()).toBe(false);

    await pg.start();
    await logged(api, 'the API listening', (l) => l.msg === 'api listening');
    // The HTTP status, or 'network error' when the connection was cut without an answer: for Stripe both
    // mean "not acknowledged, deliver again" (a request caught mid-flight by the pool's reconnect can end so).
    const webhook = async (): Promise<number | 'network error'> => {
      const payload = JSON.stringify(uniqueFixture('customer.subscription.created').envelope);
      const res = await fetch(`http://127.0.0.1:${port}/webhooks/stripe`, {
        method: 'POST',
        body: payload,
        headers: { 'Content-Type': 'application/json', 'Stripe-Signature': signPayload(payload) },
      }).catch(() => null);
      return res ? res.status : 'network error';
    };
    expect(await webhook()).toBe(200);

    // Postgres goes away under the running API (pool connections cut), then returns: no exit, and it serves again.
    await pg.stop();
    expect(await webhook()).not.toBe(200);
    await new Promise((r) => setTimeout(r, 2000));
    await pg.start();
    await eventually(async () => (await webhook()) === 200, 20_000, 'a webhook acknowledged after Postgres returned').catch((err: Error) => {
      // What the API said meanwhile, to tell a stuck pool from a slow reconnect.
      throw new Error(`${err.message}; the API ${api.exited() ? `exited (${api.proc.exitCode ?? api.proc.signalCode})` : 'still runs'}; its output ends:\n${api.output().slice(-4000)}`);
    });
    expect(api.exited()).toBe(false);

    const t0 = Date.now();
    expect(await api.terminate(15_000)).toBe(0);
    expect(Date.now() - t0).toBeLessThan(10_000);
  }, 60_000);

  describe('postgres.js: a write to a connection closed under it (porsager/postgres#1208)', () => {
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(path.join(os.tmpdir(), 'pg-crash-'));
      // The upstream reproduction: the backend of a transaction is terminated while a query is in flight, and
      // sql.begin's ROLLBACK is written to the dead connection from a setImmediate.
      writeFileSync(
        path.join(dir, 'crash.ts'),
        `
import { createSql, installPostgresCrashGuard } from ${JSON.stringify(path.join(ROOT, 'lib', 'db'))};
(async () => {
  if (process.env.GUARD === '1') installPostgresCrashGuard({ error: (_o, msg) => console.log(JSON.stringify({ msg })) });
  const sql = createSql(process.env.DATABASE_URL!, { max: 2 });
  const admin = createSql(process.env.DATABASE_URL!, { max: 1 });
  let pid: number | null = null;
  const tx = sql.begin(async (t) => {
    pid = (await t\`SELECT pg_backend_pid() AS pid\`)[0]!.pid as number;
    await t\`SELECT pg_sleep(3)\`;
  });
  while (pid === null) await new Promise((r) => setTimeout(r, 20));
  await admin\`SELECT pg_terminate_backend(\${pid})\`;
  const txError = await tx.then(() => 'committed', (e: { code?: string }) => e.code);
  await new Promise((r) => setTimeout(r, 200));
  // Every slot of the pool must work again: 3 rounds of more queries than connections.
  const rounds: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await Promise.allSettled(Array.from({ length: 6 }, (_, n) => sql\`SELECT \${n}::int AS n\`));
    rounds.push(r.map((x) => (x.status === 'fulfilled' ? 'ok' : (x.reason as Error).message)).join(','));
  }
  console.log(JSON.stringify({ msg: 'result', txError, rounds }));
  await sql.end({ timeout: 1 });
  await admin.end();
})();
`,
      );
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    const run = (guard: boolean) =>
      new Promise<{ code: number | null; out: string; lines: Record<string, any>[] }>((resolve) => {
        const proc = spawn(process.execPath, ['--import', 'tsx', path.join(dir, 'crash.ts')], {
          cwd: ROOT,
          env: { PATH: process.env.PATH, DATABASE_URL: db.url, GUARD: guard ? '1' : '0' },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        proc.stdout!.on('data', (d) => (out += d));
        proc.stderr!.on('data', (d) => (out += d));
        const timer = setTimeout(() => proc.kill('SIGKILL'), 40_000);
        proc.once('exit', (code) => {
          clearTimeout(timer);
          const lines = out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, any>);
          resolve({ code, out, lines });
        });
      });

    it('still crashes an unguarded process with postgres 3.4.9 (when this fails, upstream fixed it: drop the guard)', async () => {
      const r = await run(false);
      expect(r.code, r.out).toBe(1);
      // Usually the write to the nulled socket; under load (CI) sometimes the close's own CONNECTION_CLOSED,
      // uncaught: the same race, and both forms are what the guard contains (test/unit/postgres-crash-guard.test.ts).
      const nullWrite = r.out.includes("TypeError: Cannot read properties of null (reading 'write')") && /at (Immediate\.)?nextWrite \(.*postgres[\\/]cjs[\\/]src[\\/]connection\.js/.test(r.out);
      const closedUncaught = /Error: write CONNECTION_CLOSED/.test(r.out) && /at (Socket\.)?closed \(.*postgres[\\/]cjs[\\/]src[\\/]connection\.js/.test(r.out);
      expect(nullWrite || closedUncaught, r.out).toBe(true);
    }, 45_000);

    it('is contained by installPostgresCrashGuard: the process lives on and every query after it succeeds', async () => {
      const r = await run(true);
      expect(r.code, r.out).toBe(0);
      expect(r.lines.map((l) => l.msg)).toContain('postgres.js wrote to a closed connection; contained, new queries use fresh connections');
      const result = r.lines.find((l) => l.msg === 'result');
      expect(result, r.out).toMatchObject({ txError: 'CONNECTION_CLOSED' });
      expect(result!.rounds).toEqual(Array(3).fill(Array(6).fill('ok').join(',')));
    }, 45_000);
  });
});
