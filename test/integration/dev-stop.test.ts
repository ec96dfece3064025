/**
 * `npm run dev` stops its whole stack when SIGTERM or SIGINT is sent to npm's own PID only, as an IDE or
 * a process manager does (not to the process group, as a terminal's Ctrl-C does): every process it
 * started, the detached PostgreSQL server included, is gone within the bound and every port is free.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, portInUse, tempDir } from '../../support/services';
import { eventually } from '../helpers/services';

const ROOT = path.resolve(__dirname, '..', '..');
const STOP_BOUND_MS = 15_000;

interface Proc {
  pid: number;
  ppid: number;
  args: string;
}

function processTable(): Proc[] {
  const out = spawnSync('ps', ['-eo', 'pid=,ppid=,stat=,args='], { encoding: 'utf8' }).stdout;
  return out
    .split('\n')
    .map((line) => /^\s*(\d+)\s+(\d+)\s+(\S+)\s+(.*)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && !m[3]!.startsWith('Z'))
    .map((m) => ({ pid: Number(m[1]), ppid: Number(m[2]), args: m[4]! }));
}

/** Every live descendant of pid. */
function descendants(pid: number): Proc[] {
  const table = processTable();
  const found: Proc[] = [];
  const queue = [pid];
  while (queue.length) {
    const parent = queue.shift()!;
    for (const p of table) if (p.ppid === parent) (found.push(p), queue.push(p.pid));
  }
  return found;
}

/** A process that exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

describe('npm run dev', () => {
  let npm: ChildProcess | undefined;
  let tracked: number[] = [];
  let dataDir = '';

  afterEach(() => {
    // Whatever a failed run left behind: the npm group, every process seen, the PostgreSQL server.
    if (npm?.pid) {
      try {
        process.kill(-npm.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const pid of tracked) if (alive(pid)) process.kill(pid, 'SIGKILL');
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    npm = undefined;
    tracked = [];
  });

  const PORT_VARIABLES = [
    'PORT',
    'DEV_PG_PORT',
    'DEV_TEMPORAL_PORT',
    'DEV_TEMPORAL_UI_PORT',
    'DEV_LOCALSTRIPE_PORT',
    'DEV_STRIPE_MOCK_PORT',
    'DEV_STRIPE_GATEWAY_PORT',
    'DEV_MAILPIT_SMTP_PORT',
    'DEV_MAILPIT_HTTP_PORT',
  ];

  /** `npm run dev` on free ports and a fresh data directory, in its own process group. */
  async function startDev() {
    dataDir = tempDir('dev-stop');
    const ports = Object.fromEntries(await Promise.all(PORT_VARIABLES.map(async (n) => [n, String(await freePort())] as const)));
    let output = '';
    // Its own process group (like a process manager's child), so a signal to its PID reaches npm alone.
    const child = spawn('npm', ['run', 'dev'], {
      cwd: ROOT,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/root', DEV_DATA_DIR: dataDir, ...ports },
    });
    npm = child;
    child.stdout!.on('data', (d) => (output += d));
    child.stderr!.on('data', (d) => (output += d));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    return { child, ports, exited, output: () => output };
  }

  /** Signals npm's PID, records every process of the stack until npm is gone, then what is still alive. */
  async function signalAndCollect(dev: Awaited<ReturnType<typeof startDev>>, signal: NodeJS.Signals) {
    const seen = new Map<number, string>(descendants(dev.child.pid!).map((p) => [p.pid, p.args]));
    const pgPidFile = path.join(dataDir, 'pg', 'postmaster.pid');
    const postgres = () => (existsSync(pgPidFile) ? Number(readFileSync(pgPidFile, 'utf8').split('\n')[0]) : null);
    const pg = postgres();
    if (pg) seen.set(pg, 'postgres');
    const t0 = Date.now();
    process.kill(dev.child.pid!, signal);
    // Processes a startup step launches after the signal are recorded too.
    while (dev.child.exitCode === null && dev.child.signalCode === null && Date.now() - t0 < STOP_BOUND_MS) {
      for (const p of descendants(dev.child.pid!)) seen.set(p.pid, p.args);
      const pgNow = postgres();
      if (pgNow) seen.set(pgNow, 'postgres');
      await new Promise((r) => setTimeout(r, 50));
    }
    tracked = [dev.child.pid!, ...seen.keys()];
    const survivors = await eventually(
      async () => {
        const left = [...seen.keys()].filter(alive);
        return left.length === 0 ? [] : Date.now() - t0 > STOP_BOUND_MS ? left : null;
      },
      STOP_BOUND_MS + 2_000,
      'the stack to stop',
    );
    await Promise.race([dev.exited, new Promise((r) => setTimeout(r, 1_000))]);
    const busyPorts: string[] = [];
    for (const [name, port] of Object.entries(dev.ports)) if (await portInUse(Number(port))) busyPorts.push(`${name}=${port}`);
    return { survivors: survivors.map((pid) => seen.get(pid) ?? String(pid)), busyPorts, npmExited: dev.child.exitCode !== null || dev.child.signalCode !== null, seen, ms: Date.now() - t0 };
  }

  it.each(['SIGTERM', 'SIGINT'] as const)('stops the whole stack on %s sent to its PID alone', async (signal) => {
    const t0 = Date.now();
    const dev = await startDev();
    await eventually(async () => {
      if (dev.child.exitCode !== null) throw new Error(`npm run dev exited ${dev.child.exitCode}:\n${dev.output()}`);
      const res = await fetch(`http://127.0.0.1:${dev.ports.PORT}/healthz`).catch(() => null);
      return res?.ok && dev.output().includes('[dev] billing engine is up');
    }, 90_000, 'the dev stack to be up');
    const upMs = Date.now() - t0;

    const stack = descendants(dev.child.pid!);
    // The stack really is there: every kind of process this test expects to see stopped.
    for (const part of ['scripts/dev.ts', 'temporal server start-dev', 'localstripe', 'stripe-mock', 'mailpit', 'api/server.ts', 'worker/main.ts']) {
      expect(stack.some((p) => p.args.includes(part)), `${part} among\n${stack.map((p) => p.args).join('\n')}`).toBe(true);
    }
    expect(existsSync(path.join(dataDir, 'pg', 'postmaster.pid'))).toBe(true);

    const result = await signalAndCollect(dev, signal);
    expect(result.survivors, dev.output().slice(-3000)).toEqual([]);
    expect(result.busyPorts).toEqual([]);
    expect(result.npmExited).toBe(true);
    expect(dev.output()).toContain('[dev] stopping');
    process.stdout.write(`[dev-stop.test] ${signal}: stack up in ${upMs} ms (${result.seen.size + 1} processes), all gone ${result.ms} ms after the signal\n`);
  }, 150_000);

  it('stops what it already started when SIGTERM comes mid-startup', async () => {
    const dev = await startDev();
    // PostgreSQL is up (a detached server), the Temporal dev server is starting.
    await eventually(async () => {
      if (dev.child.exitCode !== null) throw new Error(`npm run dev exited ${dev.child.exitCode}:\n${dev.output()}`);
      return dev.output().includes('[dev] PostgreSQL');
    }, 60_000, 'PostgreSQL to be up');
    const result = await signalAndCollect(dev, 'SIGTERM');
    expect(result.survivors, dev.output().slice(-3000)).toEqual([]);
    expect(result.busyPorts).toEqual([]);
    expect(result.npmExited).toBe(true);
    expect([...result.seen.values()]).toContain('postgres');
    expect(dev.output()).not.toContain('[dev] billing engine is up');
    process.stdout.write(`[dev-stop.test] mid-startup SIGTERM: ${result.seen.size + 1} processes seen, all gone ${result.ms} ms after the signal\n`);
  }, 150_000);
});
