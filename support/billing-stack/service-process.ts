/** The billing stack's Node services (API, worker, floor server) as child process groups, and the exit hook that reaps them. */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../services';
import { processTree } from './proc';
import type { BillingStack } from './stack';

const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');

/** Process groups we started, killed on an abnormal exit of this process. */
export const liveGroups = new Set<number>();
/** Synchronous last-resort stops (pg_ctl stop, SIGKILL) for servers of stacks not stopped normally. */
export const emergencyStops = new Set<() => void>();
/** Stacks started and not yet stopped (for a CLI's signal handler). */
export const activeStacks = new Set<BillingStack>();
let exitHookInstalled = false;
export function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const pgid of liveGroups) {
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    for (const stop of emergencyStops) {
      try {
        stop();
      } catch {
        /* best effort */
      }
    }
  });
}

/** Stops every stack this process started and has not stopped yet (Ctrl-C / SIGTERM handlers). */
export async function stopActiveStacks(): Promise<void> {
  await Promise.allSettled([...activeStacks].map((s) => s.stop()));
}

export interface ProcessExit {
  at: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  expected: boolean;
}

/** One of our Node services (API, worker, floor server) as a child process group. */
export class ServiceProcess {
  private child: ChildProcess | null = null;
  private expectingExit = false;
  private restartTimer: NodeJS.Timeout | null = null;
  /** Every exit, expected (our kill) or not (a crash). */
  readonly exits: ProcessExit[] = [];
  /** Restart automatically after an unexpected exit (like an orchestrator would). */
  supervise = false;

  constructor(
    readonly name: string,
    private readonly entry: string,
    private readonly env: NodeJS.ProcessEnv,
    private readonly logFile: string,
    private readonly onUnexpectedExit?: (name: string, exit: ProcessExit) => void,
    /** Node flags passed through tsx (e.g. --cpu-prof, which NODE_OPTIONS does not allow). */
    private readonly nodeArgs: string[] = [],
  ) {}

  /** The process group leader (the tsx wrapper), or null while stopped. */
  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  /** Every live pid of the group's tree (the wrapper and the real node process). */
  pids(): number[] {
    return this.pid ? processTree(this.pid) : [];
  }

  get running(): boolean {
    return this.child !== null;
  }

  start(): void {
    if (this.child) return;
    installExitHook();
    const fd = openSync(this.logFile, 'a');
    const child = spawn(TSX, [...this.nodeArgs, path.join(ROOT, this.entry)], { cwd: ROOT, env: this.env, stdio: ['ignore', fd, fd], detached: true });
    closeSync(fd);
    this.child = child;
    this.expectingExit = false;
    if (child.pid) liveGroups.add(child.pid);
    child.once('exit', (code, signal) => {
      if (child.pid) {
        liveGroups.delete(child.pid);
        // The wrapper may die first: take the rest of the group with it.
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          /* group already empty */
        }
      }
      const exit = { at: Date.now(), code, signal, expected: this.expectingExit };
      this.exits.push(exit);
      if (this.child === child) this.child = null;
      if (!exit.expected) {
        this.onUnexpectedExit?.(this.name, exit);
        if (this.supervise) this.restartTimer = setTimeout(() => this.start(), 1000);
      }
    });
  }

  private async signalGroup(signal: NodeJS.Signals, graceMs: number): Promise<void> {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const child = this.child;
    if (!child || !child.pid) return;
    this.expectingExit = true;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      process.kill(-child.pid, signal);
    } catch {
      /* gone */
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, graceMs);
    await exited;
    clearTimeout(timer);
  }

  /** Graceful stop (SIGTERM, SIGKILL after graceMs). */
  stop(graceMs = 15_000): Promise<void> {
    return this.signalGroup('SIGTERM', graceMs);
  }

  /** SIGKILL of the whole group: no shutdown hooks run, in-flight work is lost mid-way. */
  kill9(): Promise<void> {
    return this.signalGroup('SIGKILL', 0);
  }

  /** SIGSTOP of the whole group: it hangs (keeps its sockets, answers nothing) until resume() or a kill. */
  pause(): void {
    if (this.child?.pid) process.kill(-this.child.pid, 'SIGSTOP');
  }

  /** SIGCONT after pause(). */
  resume(): void {
    if (this.child?.pid) process.kill(-this.child.pid, 'SIGCONT');
  }
}

