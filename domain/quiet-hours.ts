/**
 * Quiet hours: a notice that falls due at night in the customer's timezone waits until morning.
 * Pure (Intl only): the notice activities call it with the workflow's time, so a replay decides the same.
 */

/** Local hours [startHour, endHour) during which no email goes out; the window may wrap midnight. */
export interface QuietHours {
  startHour: number;
  endHour: number;
}

/** Parses NOTIFY_QUIET_HOURS: "21-08" → 21:00–08:00; "off" (or equal hours) → null. Throws on anything else. */
export function parseQuietHours(value: string): QuietHours | null {
  const v = value.trim();
  if (v === 'off') return null;
  const m = /^(\d{1,2})-(\d{1,2})$/.exec(v);
  const startHour = Number(m?.[1]);
  const endHour = Number(m?.[2]);
  if (!m || startHour > 23 || endHour > 23) throw new Error(`quiet hours must be "HH-HH" (e.g. 21-08) or "off", got "${value}"`);
  return startHour === endHour ? null : { startHour, endHour };
}

/** Whether `timeZone` is an IANA name this runtime knows. */
export function isKnownTimeZone(timeZone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone });
    return true;
  } catch {
    return false;
  }
}

const formatters = new Map<string, Intl.DateTimeFormat>();
function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** The wall-clock fields of `ms` in `timeZone`. */
export function localTime(ms: number, timeZone: string): { year: number; month: number; day: number; hour: number; minute: number; second: number } {
  const parts: Record<string, number> = {};
  for (const p of formatter(timeZone).formatToParts(new Date(ms))) if (p.type !== 'literal') parts[p.type] = Number(p.value);
  return { year: parts.year!, month: parts.month!, day: parts.day!, hour: parts.hour! % 24, minute: parts.minute!, second: parts.second! };
}

/** The zone's offset from UTC at `ms`, in ms (positive east of Greenwich). */
function offsetMs(ms: number, timeZone: string): number {
  const t = localTime(ms, timeZone);
  const asUtc = Date.UTC(t.year, t.month - 1, t.day, t.hour, t.minute, t.second);
  return asUtc - (ms - (ms % 1000));
}

function inWindow(hour: number, q: QuietHours): boolean {
  return q.startHour < q.endHour ? hour >= q.startHour && hour < q.endHour : hour >= q.startHour || hour < q.endHour;
}

/**
 * When a notice due at `nowMs` may go out: `null` when now is outside the quiet hours of `timeZone`,
 * else the instant the window ends (the next local `endHour`:00, across DST changes).
 */
export function quietHoursEnd(nowMs: number, timeZone: string, quiet: QuietHours | null): number | null {
  if (!quiet) return null;
  const t = localTime(nowMs, timeZone);
  if (!inWindow(t.hour, quiet)) return null;
  const minutesNow = t.hour * 60 + t.minute;
  const minutesToEnd = (quiet.endHour * 60 - minutesNow + 1440) % 1440 || 1440;
  let candidate = nowMs - t.second * 1000 - (nowMs % 1000) + minutesToEnd * 60_000;
  // A DST change inside the window shifts the wall clock: correct by the change of offset.
  candidate += offsetMs(nowMs, timeZone) - offsetMs(candidate, timeZone);
  return candidate > nowMs ? candidate : nowMs;
}
