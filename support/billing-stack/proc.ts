/**
 * Linux /proc readers for the benchmark: CPU time of whole process trees (a tsx wrapper and its node
 * child, the postmaster and its backends), resident memory, and machine-wide CPU utilisation.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';

/** Kernel clock ticks per second (USER_HZ), almost always 100. */
export const CLOCK_TICKS = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout?.trim());
  return Number.isFinite(n) && n > 0 ? n : 100;
})();

interface ProcStat {
  pid: number;
  ppid: number;
  /** utime + stime + cutime + cstime, in clock ticks (reaped children included). */
  ticks: number;
}

function readStat(pid: number): ProcStat | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may contain spaces and parentheses: fields start after the last ')'.
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    const n = (i: number) => Number(rest[i] ?? 0);
    return { pid, ppid: n(1), ticks: n(11) + n(12) + n(13) + n(14) };
  } catch {
    return null;
  }
}

function allStats(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (st) out.push(st);
  }
  return out;
}

/** The pid and all its live descendants. */
export function processTree(rootPid: number, stats: ProcStat[] = allStats()): number[] {
  const children = new Map<number, number[]>();
  for (const s of stats) {
    const list = children.get(s.ppid) ?? [];
    list.push(s.pid);
    children.set(s.ppid, list);
  }
  const alive = new Set(stats.map((s) => s.pid));
  const out: number[] = [];
  const stack = [rootPid];
  while (stack.length) {
    const p = stack.pop()!;
    if (!alive.has(p)) continue;
    out.push(p);
    stack.push(...(children.get(p) ?? []));
  }
  return out;
}

/** Resident memory of one process from /proc/<pid>/status (kB), or null if it is gone. */
export function memoryOf(pid: number): { rssKb: number; hwmKb: number } | null {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? 0);
    return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
  } catch {
    return null;
  }
}

/** The process of a tree with the largest resident set (the real node process under a tsx wrapper). */
export function heaviestProcess(rootPid: number): { pid: number; rssKb: number; hwmKb: number } | null {
  let best: { pid: number; rssKb: number; hwmKb: number } | null = null;
  for (const pid of processTree(rootPid)) {
    const m = memoryOf(pid);
    if (m && (!best || m.rssKb > best.rssKb)) best = { pid, ...m };
  }
  return best;
}

/** First pid whose command line contains every fragment (used for servers we did not fork directly). */
export function findPid(fragments: string[]): number | null {
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (fragments.every((f) => cmd.includes(f))) return Number(name);
    } catch {
      /* exited */
    }
  }
  return null;
}

/** Reads the postmaster pid of a data directory. */
export function postmasterPid(dataDir: string): number | null {
  try {
    const pid = Number(readFileSync(`${dataDir}/postmaster.pid`, 'utf8').split('\n')[0]);
    return Number.isFinite(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already inside user)
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

/** A point-in-time CPU snapshot of named process trees and of the whole machine. */
export interface CpuSnapshot {
  at: number;
  trees: Record<string, number>;
  machine: { busy: number; total: number };
}

/** CPU use between two snapshots, in percent of ONE core (200% = both cores of a 2-core box). */
export interface CpuUsage {
  seconds: number;
  /** Per named tree, % of one core. */
  processes: Record<string, number>;
  /** Everything else on the machine (other engineers' tests, the kernel), % of one core. */
  other: number;
  /** Whole machine busy, % of all cores (100 = saturated). */
  machineBusyPct: number;
  cores: number;
}

/**
 * Samples CPU of named process trees; the pid functions are re-evaluated because processes restart.
 * `self` names a process counted alone (its own CPU, not its children's), e.g. the orchestrator that
 * spawned every other server.
 */
export class CpuSampler {
  constructor(
    private readonly roots: Record<string, () => number | null>,
    private readonly self: Record<string, number> = {},
  ) {}

  snapshot(): CpuSnapshot {
    const stats = allStats();
    const byPid = new Map(stats.map((s) => [s.pid, s]));
    const trees: Record<string, number> = {};
    for (const [name, pidOf] of Object.entries(this.roots)) {
      const pid = pidOf();
      trees[name] = pid ? processTree(pid, stats).reduce((a, p) => a + (byPid.get(p)?.ticks ?? 0), 0) : 0;
    }
    for (const [name, pid] of Object.entries(this.self)) {
      const st = readStat(pid);
      trees[name] = st ? st.ticks - this.childTicks(pid) : 0;
    }
    return { at: Date.now(), trees, machine: machineTicks() };
  }

  /** cutime + cstime of a process (its reaped children), to count the process alone. */
  private childTicks(pid: number): number {
    try {
      const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
      return Number(rest[13] ?? 0) + Number(rest[14] ?? 0);
    } catch {
      return 0;
    }
  }

  static usage(a: CpuSnapshot, b: CpuSnapshot): CpuUsage {
    const seconds = Math.max(0.001, (b.at - a.at) / 1000);
    const pct = (ticks: number) => Math.round(((ticks / CLOCK_TICKS / seconds) * 100) * 10) / 10;
    const processes: Record<string, number> = {};
    let ours = 0;
    for (const name of Object.keys(b.trees)) {
      // A restarted process has a new tree: never report a negative delta.
      const d = Math.max(0, (b.trees[name] ?? 0) - (a.trees[name] ?? 0));
      processes[name] = pct(d);
      ours += d;
    }
    const busy = b.machine.busy - a.machine.busy;
    const total = Math.max(1, b.machine.total - a.machine.total);
    const cores = os.cpus().length;
    const machineBusyPct = Math.round((busy / total) * 1000) / 10;
    const busyOneCore = (machineBusyPct / 100) * cores * 100;
    return { seconds, processes, other: Math.max(0, Math.round((busyOneCore - pct(ours)) * 10) / 10), machineBusyPct, cores };
  }
}
