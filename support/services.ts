/**
 * Starts and stops the local services the project runs on: a private PostgreSQL cluster, the Temporal
 * dev server, stripe-mock, localstripe and Mailpit (SMTP catcher). Used by `npm run dev`, the test global setup, bench, chaos
 * and the demo. Every process is a real server binary from .tools/ or the system PostgreSQL package.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readdirSync, chownSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const ROOT = path.resolve(__dirname, '..');
export const TOOLS_BIN = path.join(ROOT, '.tools', 'bin');

/** Custom search attributes every namespace this project uses must have. */
export const SEARCH_ATTRIBUTES: Record<string, string> = {
  StripeCustomerId: 'Keyword',
  SubscriptionStatus: 'Keyword',
  PlanId: 'Keyword',
  DunningState: 'Keyword',
  BillingWorkflowKind: 'Keyword',
};

/** A free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Resolves once host:port accepts TCP connections, or rejects after timeoutMs. */
/** What ends a wait for a port early: a stop that was requested, or the process that should listen exiting. */
export interface WaitOptions {
  signal?: AbortSignal;
  child?: ChildProcess;
}

export async function waitForPort(port: number, host = '127.0.0.1', timeoutMs = 30_000, what = 'service', opts: WaitOptions = {}): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    opts.signal?.throwIfAborted();
    const child = opts.child;
    if (child && (child.exitCode !== null || child.signalCode !== null)) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it listened on ${host}:${port}`);
    }
    const ok = await new Promise<boolean>((resolve) => {
      const sock = net.connect({ port, host });
      sock.once('connect', () => {
        sock.destroy();
        resolve(true);
      });
      sock.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${host}:${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits for child to listen; kills it when it does not (timeout, exit, a stop requested) and rethrows. */
async function listening(child: ChildProcess, waits: Array<[port: number, host: string, timeoutMs: number, what: string]>, signal?: AbortSignal): Promise<void> {
  try {
    for (const [port, host, timeoutMs, what] of waits) await waitForPort(port, host, timeoutMs, what, { signal, child });
  } catch (err) {
    await killChild(child);
    throw err;
  }
}

export interface Managed {
  name: string;
  stop(): Promise<void>;
}

function tool(name: string): string {
  const p = path.join(TOOLS_BIN, name);
  if (!existsSync(p)) throw new Error(`${p} is missing: run \`npm run tools\` first`);
  return p;
}

function spawnLogged(name: string, cmd: string, args: string[], logDir: string, env: NodeJS.ProcessEnv = process.env): ChildProcess {
  mkdirSync(logDir, { recursive: true });
  const fd = openSync(path.join(logDir, `${name}.log`), 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env, detached: false });
  child.on('error', (err) => process.stderr.write(`[stack] ${name}: ${err.message}\n`));
  return child;
}

async function killChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------- PostgreSQL

function pgBinDir(): string {
  const fromEnv = process.env.PG_BIN_DIR;
  if (fromEnv) return fromEnv;
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    const versions = readdirSync(base)
      .filter((v) => existsSync(path.join(base, v, 'bin', 'initdb')))
      .sort((a, b) => Number(b) - Number(a));
    if (versions[0]) return path.join(base, versions[0], 'bin');
  }
  const which = spawnSync('sh', ['-c', 'command -v initdb'], { encoding: 'utf8' });
  if (which.status === 0 && which.stdout.trim()) return path.dirname(which.stdout.trim());
  throw new Error('PostgreSQL server binaries (initdb, pg_ctl) not found: install the postgresql package or set PG_BIN_DIR');
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** PostgreSQL refuses to run as root: run its tools as the `postgres` system user then. */
function pgCommand(bin: string, args: string[]): { cmd: string; args: string[] } {
  const full = path.join(pgBinDir(), bin);
  return isRoot ? { cmd: 'runuser', args: ['-u', 'postgres', '--', full, ...args] } : { cmd: full, args };
}

function runPg(bin: string, args: string[], what: string): void {
  const { cmd, args: a } = pgCommand(bin, args);
  const res = spawnSync(cmd, a, { encoding: 'utf8' });
  if (res.status !== 0) throw new Error(`${what} failed (${cmd} ${a.join(' ')}):\n${res.stdout}\n${res.stderr}`);
}

export interface PostgresHandle extends Managed {
  url: string;
  port: number;
  dataDir: string;
  restart(): Promise<void>;
  urlFor(db: string): string;
}

/** Creates (if needed) and starts a private cluster in dataDir, trust auth on 127.0.0.1:port. */
export async function startPostgres(opts: { dataDir: string; port: number; fast?: boolean; logDir: string }): Promise<PostgresHandle> {
  const { dataDir, port } = opts;
  mkdirSync(dataDir, { recursive: true });
  if (isRoot) {
    const pw = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    if (pw.status !== 0) throw new Error('running as root but no `postgres` system user exists to run PostgreSQL');
    const uid = Number(pw.stdout.trim());
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
    chownSync(dataDir, uid, gid);
    mkdirSync(opts.logDir, { recursive: true });
  }
  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
    runPg('initdb', ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-instructions'], 'initdb');
    const conf = [
      `listen_addresses = '127.0.0.1'`,
      `unix_socket_directories = ''`,
      `max_connections = 200`,
      `shared_buffers = 128MB`,
      ...(opts.fast ? ['fsync = off', 'synchronous_commit = off', 'full_page_writes = off'] : []),
    ].join('\n');
    const { cmd, args } = isRoot
      ? { cmd: 'runuser', args: ['-u', 'postgres', '--', 'sh', '-c', `cat >> '${dataDir}/postgresql.auto.conf'`] }
      : { cmd: 'sh', args: ['-c', `cat >> '${dataDir}/postgresql.auto.conf'`] };
    const res = spawnSync(cmd, args, { input: `${conf}\n`, encoding: 'utf8' });
    if (res.status !== 0) throw new Error(`could not configure the cluster: ${res.stderr}`);
  }
  const logFile = path.join(dataDir, 'server.log');
  const start = () => runPg('pg_ctl', ['-D', dataDir, '-o', `-p ${port}`, '-l', logFile, '-w', '-t', '60', 'start'], 'pg_ctl start');
  const stop = () => runPg('pg_ctl', ['-D', dataDir, '-m', 'fast', '-w', 'stop'], 'pg_ctl stop');
  // A cluster left running by a killed parent: stop it first so we own the port.
  if (existsSync(path.join(dataDir, 'postmaster.pid'))) {
    try {
      stop();
    } catch {
      /* not running: stale pid file, pg_ctl start handles it */
    }
  }
  start();
  await waitForPort(port, '127.0.0.1', 30_000, 'PostgreSQL');
  const urlFor = (db: string) => `postgres://postgres@127.0.0.1:${port}/${db}`;
  return {
    name: 'postgres',
    url: urlFor('postgres'),
    port,
    dataDir,
    urlFor,
    async restart() {
      stop();
      start();
      await waitForPort(port, '127.0.0.1', 30_000, 'PostgreSQL');
    },
    async stop() {
      try {
        stop();
      } catch (err) {
        process.stderr.write(`[stack] postgres stop: ${(err as Error).message}\n`);
      }
    },
  };
}

// ---------------------------------------------------------------- Temporal dev server

export interface TemporalHandle extends Managed {
  address: string;
  port: number;
  uiPort: number | null;
  /** Stops the server process (for fault injection); start() brings it back on the same db file. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  start(): Promise<void>;
}

/** Starts `temporal server start-dev` with this project's search attributes registered. */
export async function startTemporal(opts: {
  port: number;
  uiPort?: number | null;
  dbFile?: string | null;
  logDir: string;
  /** Appended to the command line, e.g. `--sqlite-pragma journal_mode=wal` (bench, chaos). */
  extraArgs?: string[];
  /** Aborting it ends a start still waiting for the server and stops the process. */
  signal?: AbortSignal;
}): Promise<TemporalHandle> {
  const bin = tool('temporal');
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(opts.port), '--log-level', 'warn', '--namespace', 'default'];
  if (opts.uiPort) args.push('--ui-port', String(opts.uiPort), '--ui-ip', '127.0.0.1');
  else args.push('--headless');
  if (opts.dbFile) {
    mkdirSync(path.dirname(opts.dbFile), { recursive: true });
    args.push('--db-filename', opts.dbFile);
  }
  for (const [k, v] of Object.entries(SEARCH_ATTRIBUTES)) args.push('--search-attribute', `${k}=${v}`);
  args.push(
    '--dynamic-config-value', 'frontend.enableUpdateWorkflowExecution=true',
    '--dynamic-config-value', 'frontend.enableUpdateWorkflowExecutionAsyncAccepted=true',
    '--dynamic-config-value', 'frontend.workerVersioningDataAPIs=true',
    '--dynamic-config-value', 'system.enableEagerWorkflowStart=true',
    '--dynamic-config-value', 'frontend.enableExecuteMultiOperation=true',
  );
  if (opts.extraArgs) args.push(...opts.extraArgs);
  let child: ChildProcess | null = null;
  const handle: TemporalHandle = {
    name: 'temporal',
    address: `127.0.0.1:${opts.port}`,
    port: opts.port,
    uiPort: opts.uiPort ?? null,
    async start() {
      const spawned = spawnLogged('temporal', bin, args, opts.logDir);
      child = spawned;
      try {
        await listening(
          spawned,
          [[opts.port, '127.0.0.1', 60_000, 'Temporal dev server'], ...(opts.uiPort ? [[opts.uiPort, '127.0.0.1', 60_000, 'Temporal UI'] as [number, string, number, string]] : [])],
          opts.signal,
        );
      } catch (err) {
        child = null;
        throw err;
      }
    },
    async kill(signal: NodeJS.Signals = 'SIGTERM') {
      if (child) await killChild(child, signal);
      child = null;
    },
    async stop() {
      await handle.kill('SIGTERM');
    },
  };
  await handle.start();
  return handle;
}

// ---------------------------------------------------------------- Stripe emulators

export interface HttpServiceHandle extends Managed {
  port: number;
  baseUrl: string;
}

/** stripe-mock: stateless, validates every request against Stripe's OpenAPI spec. */
export async function startStripeMock(opts: { port: number; logDir: string; signal?: AbortSignal }): Promise<HttpServiceHandle> {
  const child = spawnLogged('stripe-mock', tool('stripe-mock'), ['-http-addr', `127.0.0.1:${opts.port}`, '-https-addr', '127.0.0.1:0'], opts.logDir);
  await listening(child, [[opts.port, '127.0.0.1', 30_000, 'stripe-mock']], opts.signal);
  return { name: 'stripe-mock', port: opts.port, baseUrl: `http://127.0.0.1:${opts.port}`, stop: () => killChild(child) };
}

/** localstripe: stateful, sends signed webhooks, speaks a 2017-era API (see README limits). */
export async function startLocalstripe(opts: { port: number; logDir: string; signal?: AbortSignal }): Promise<HttpServiceHandle> {
  const child = spawnLogged('localstripe', tool('localstripe'), ['--port', String(opts.port), '--from-scratch'], opts.logDir);
  // localstripe binds [::]; IPv4 loopback reaches it on dual-stack hosts.
  const wait = { signal: opts.signal, child };
  try {
    await waitForPort(opts.port, '127.0.0.1', 30_000, 'localstripe', wait).catch((err: unknown) => {
      if (opts.signal?.aborted || child.exitCode !== null || child.signalCode !== null) throw err;
      return waitForPort(opts.port, '::1', 5_000, 'localstripe', wait);
    });
  } catch (err) {
    await killChild(child);
    throw err;
  }
  return { name: 'localstripe', port: opts.port, baseUrl: `http://localhost:${opts.port}`, stop: () => killChild(child) };
}

// ---------------------------------------------------------------- Mailpit (email)

export interface MailpitHandle extends Managed {
  smtpPort: number;
  httpPort: number;
  /** What the worker sends through: smtp://127.0.0.1:<smtpPort>. */
  smtpUrl: string;
  /** The web UI; its HTTP API is under /api/v1 (e.g. GET /api/v1/messages). */
  baseUrl: string;
}

/** Mailpit: catches every email sent to smtpPort (any recipient, any or no login), shows them on httpPort. */
export async function startMailpit(opts: { smtpPort: number; httpPort: number; logDir: string; signal?: AbortSignal }): Promise<MailpitHandle> {
  const args = [
    '--smtp', `127.0.0.1:${opts.smtpPort}`,
    '--listen', `127.0.0.1:${opts.httpPort}`,
    // Local only: no call to GitHub for a newer release, no reverse DNS of the sender.
    '--disable-version-check',
    '--smtp-disable-rdns',
    // An SMTP_URL with user:pass (as a real relay needs) works against it unchanged.
    '--smtp-auth-accept-any',
    '--smtp-auth-allow-insecure',
  ];
  const child = spawnLogged('mailpit', tool('mailpit'), args, opts.logDir);
  await listening(
    child,
    [
      [opts.smtpPort, '127.0.0.1', 30_000, 'Mailpit SMTP'],
      [opts.httpPort, '127.0.0.1', 30_000, 'Mailpit UI'],
    ],
    opts.signal,
  );
  return {
    name: 'mailpit',
    smtpPort: opts.smtpPort,
    httpPort: opts.httpPort,
    smtpUrl: `smtp://127.0.0.1:${opts.smtpPort}`,
    baseUrl: `http://127.0.0.1:${opts.httpPort}`,
    stop: () => killChild(child),
  };
}

/** Whether something already listens on 127.0.0.1:port. */
export async function portInUse(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

/** A fresh temp directory for throwaway state (test clusters, logs). */
export function tempDir(prefix: string): string {
  const dir = path.join(os.tmpdir(), `${prefix}-${process.pid}-${Date.now().toString(36)}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Writes a small JSON file (used to hand service addresses to other processes). */
export function writeJson(file: string, value: unknown): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(value, null, 2));
}
