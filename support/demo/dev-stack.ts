/**
 * The demo's view of a dev stack (`npm run dev`): find a running one through its state file and
 * GET /healthz, or start scripts/dev.ts in the background (its own process group) and stop it again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { ROOT, TOOLS_BIN } from '../services';

/** What scripts/dev.ts writes to `<data dir>/dev-stack.json`. */
export interface DevStackState {
  apiUrl: string;
  temporalAddress: string;
  temporalUiUrl: string;
  databaseUrl: string;
  /** What the API and worker use as Stripe: the emulator gateway (dev on emulators), or null (api.stripe.com). */
  stripeApiBase: string | null;
  /** localstripe itself (absent in state files written before the emulator gateway existed). */
  localstripeUrl?: string | null;
  /** Mailpit's web UI and API (null: emails not caught locally; absent in older state files). */
  mailpitUrl?: string | null;
  stripeSecretKey: string | null;
  webhookSecret: string | null;
  adminToken: string | null;
  /** DUNNING_RETRY_DAYS given to the worker; null: the default (1,3,5,7 days). */
  dunningRetryDays?: string | null;
  taskQueue?: string;
  pid?: number;
}

/** The dev stack's state directory: DEV_DATA_DIR or `.data`. */
export function devDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.DEV_DATA_DIR ? path.resolve(env.DEV_DATA_DIR) : path.join(ROOT, '.data');
}

export const stateFileIn = (dataDir: string): string => path.join(dataDir, 'dev-stack.json');

export function readDevState(file: string): DevStackState | null {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as DevStackState;
  } catch {
    return null;
  }
}

/** GET /healthz answers 200 within 2 s. */
export async function apiHealthy(apiUrl: string): Promise<boolean> {
  try {
    const res = await fetch(`${apiUrl}/healthz`, { signal: AbortSignal.timeout(2000) });
    return res.ok;
  } catch {
    return false;
  }
}

/** The running stack described by the state file, if its API answers. */
export async function findRunningStack(dataDir = devDataDir()): Promise<DevStackState | null> {
  const state = readDevState(stateFileIn(dataDir));
  if (!state) return null;
  return (await apiHealthy(state.apiUrl)) ? state : null;
}

export interface StartedStack {
  state: DevStackState;
  logFile: string;
  pid: number;
  /** SIGTERM to dev.ts (it stops what it started), then SIGKILL to its process group if it lingers. */
  stop(): Promise<void>;
}

/**
 * Starts `tsx scripts/dev.ts` in the background with `env` added to this process's environment,
 * waits for a fresh state file and a healthy API. Output goes to `<data dir>/demo-dev-stack.log`.
 */
export async function startDevStack(opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; log?: (line: string) => void } = {}): Promise<StartedStack> {
  // A key given as undefined is removed (e.g. the developer's STRIPE_SECRET_KEY).
  const env = Object.fromEntries(Object.entries({ ...process.env, ...opts.env }).filter(([, v]) => v !== undefined)) as NodeJS.ProcessEnv;
  const dataDir = devDataDir(env);
  mkdirSync(dataDir, { recursive: true });
  const logFile = path.join(dataDir, 'demo-dev-stack.log');
  const stateFile = stateFileIn(dataDir);
  if (!existsSync(path.join(TOOLS_BIN, 'temporal'))) {
    opts.log?.('[demo] installing the pinned tools first (npm run tools)…');
    await new Promise<void>((resolve, reject) => {
      const t = spawn('bash', [path.join(ROOT, 'scripts', 'tools.sh')], { stdio: 'inherit', cwd: ROOT });
      t.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`scripts/tools.sh exited ${code}`))));
    });
  }
  const startedAt = Date.now();
  const fd = openSync(logFile, 'a');
  const child: ChildProcess = spawn(path.join(ROOT, 'node_modules', '.bin', 'tsx'), [path.join(ROOT, 'scripts', 'dev.ts')], {
    cwd: ROOT,
    env,
    stdio: ['ignore', fd, fd],
    // Its own process group: stop() can end everything it started, and only that.
    detached: true,
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error('could not spawn scripts/dev.ts');
  let exited: number | string | null = null;
  const exitPromise = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exited = code ?? signal ?? 'unknown';
      resolve();
    }),
  );

  const stop = async (): Promise<void> => {
    if (exited !== null) return;
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, 30_000);
    await exitPromise;
    clearTimeout(timer);
  };

  const deadline = Date.now() + (opts.timeoutMs ?? 180_000);
  for (;;) {
    if (exited !== null) throw new Error(`scripts/dev.ts exited (${exited}) before the stack was up; see ${logFile}:\n${tail(logFile)}`);
    const fresh = existsSync(stateFile) && statSync(stateFile).mtimeMs >= startedAt - 1000;
    const state = fresh ? readDevState(stateFile) : null;
    if (state && (await apiHealthy(state.apiUrl))) return { state, logFile, pid, stop };
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`the dev stack was not up within ${Math.round((opts.timeoutMs ?? 180_000) / 1000)} s; see ${logFile}:\n${tail(logFile)}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
