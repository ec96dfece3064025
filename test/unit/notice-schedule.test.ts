import { describe, expect, it } from 'vitest';
import { DEFAULT_DUNNING_POLICY, type NoticeKind } from '../../domain/dunning-policy';
import { isSuperseded, noticeDueAt, overCycleCap } from '../../domain/notice-schedule';
import { localTime, parseQuietHours, quietHoursEnd } from '../../domain/quiet-hours';

const HOUR = 3_600_000;
const at = (iso: string) => Date.parse(iso);
const NIGHT = parseQuietHours('21-08');

describe('parseQuietHours', () => {
  it('reads HH-HH, off, and equal hours as off', () => {
    expect(parseQuietHours('21-08')).toEqual({ startHour: 21, endHour: 8 });
    expect(parseQuietHours('0-6')).toEqual({ startHour: 0, endHour: 6 });
    expect(parseQuietHours('off')).toBeNull();
    expect(parseQuietHours('9-9')).toBeNull();
  });
  it.each(['21', '25-08', 'night', '21-08-09', ''])('refuses %j', (v) => {
    expect(() => parseQuietHours(v)).toThrow(/HH-HH/);
  });
});

describe('quietHoursEnd', () => {
  it('is null outside the window and the next end hour inside it, on either side of midnight', () => {
    expect(quietHoursEnd(at('2026-11-28T12:00:00Z'), 'UTC', NIGHT)).toBeNull();
    expect(quietHoursEnd(at('2026-11-28T20:59:59Z'), 'UTC', NIGHT)).toBeNull();
    expect(quietHoursEnd(at('2026-11-28T21:00:00Z'), 'UTC', NIGHT)).toBe(at('2026-11-29T08:00:00Z'));
    expect(quietHoursEnd(at('2026-11-28T23:30:00Z'), 'UTC', NIGHT)).toBe(at('2026-11-29T08:00:00Z'));
    expect(quietHoursEnd(at('2026-11-29T07:59:30Z'), 'UTC', NIGHT)).toBe(at('2026-11-29T08:00:00Z'));
    expect(quietHoursEnd(at('2026-11-29T08:00:00Z'), 'UTC', NIGHT)).toBeNull();
  });
  it('uses the customer timezone', () => {
    // 03:00 UTC is 22:00 in New York (EST): held until 08:00 local = 13:00 UTC.
    expect(quietHoursEnd(at('2026-11-28T03:00:00Z'), 'America/New_York', NIGHT)).toBe(at('2026-11-28T13:00:00Z'));
    // 03:00 UTC is 12:00 in Tokyo: not quiet.
    expect(quietHoursEnd(at('2026-11-28T03:00:00Z'), 'Asia/Tokyo', NIGHT)).toBeNull();
  });
  it('ends at 08:00 local across a DST change inside the window', () => {
    // Paris springs forward on 2026-03-29 at 02:00: 08:00 local is 06:00 UTC that morning.
    expect(quietHoursEnd(at('2026-03-29T00:30:00Z'), 'Europe/Paris', NIGHT)).toBe(at('2026-03-29T06:00:00Z'));
    // New York falls back on 2026-11-01: 08:00 EST is 13:00 UTC.
    expect(quietHoursEnd(at('2026-11-01T04:30:00Z'), 'America/New_York', NIGHT)).toBe(at('2026-11-01T13:00:00Z'));
    expect(localTime(at('2026-11-01T13:00:00Z'), 'America/New_York').hour).toBe(8);
  });
  it('does nothing when quiet hours are off', () => {
    expect(quietHoursEnd(at('2026-11-28T23:00:00Z'), 'UTC', null)).toBeNull();
  });
});

describe('noticeDueAt', () => {
  const base = { kind: 'payment_failed' as NoticeKind, minIntervalMs: 48 * HOUR, quiet: NIGHT, timeZone: 'UTC' };
  it('sends at once when nothing holds it', () => {
    const nowMs = at('2026-11-28T12:00:00Z');
    expect(noticeDueAt({ ...base, nowMs, previousOutAtMs: null })).toEqual({ dueAtMs: nowMs, deferredBy: null });
    expect(noticeDueAt({ ...base, nowMs, previousOutAtMs: nowMs - 48 * HOUR })).toEqual({ dueAtMs: nowMs, deferredBy: null });
  });
  it('defers inside the cooldown to its end, rather than dropping', () => {
    const nowMs = at('2026-11-28T12:00:00Z');
    expect(noticeDueAt({ ...base, nowMs, previousOutAtMs: nowMs - 40 * HOUR })).toEqual({ dueAtMs: nowMs + 8 * HOUR, deferredBy: 'cooldown' });
  });
  it('moves a cooldown end that falls at night to the morning', () => {
    const nowMs = at('2026-11-28T12:00:00Z');
    // previous at 2026-11-26T23:00 → cooldown ends 2026-11-28T23:00, inside 21-08 → 2026-11-29T08:00.
    expect(noticeDueAt({ ...base, nowMs, previousOutAtMs: at('2026-11-26T23:00:00Z') })).toEqual({
      dueAtMs: at('2026-11-29T08:00:00Z'),
      deferredBy: 'quiet_hours',
    });
  });
  it.each<NoticeKind>(['final_notice', 'recovered'])('lets %s through the cooldown but not through quiet hours', (kind) => {
    const day = at('2026-11-28T12:00:00Z');
    expect(noticeDueAt({ ...base, kind, nowMs: day, previousOutAtMs: day - HOUR })).toEqual({ dueAtMs: day, deferredBy: null });
    const night = at('2026-11-28T22:00:00Z');
    expect(noticeDueAt({ ...base, kind, nowMs: night, previousOutAtMs: night - HOUR })).toEqual({ dueAtMs: at('2026-11-29T08:00:00Z'), deferredBy: 'quiet_hours' });
  });
});

describe('overCycleCap', () => {
  const p = { maxNoticesPerCycle: 3 };
  it.each<NoticeKind>(['payment_failed', 'update_payment_method', 'authenticate_payment', 'final_attempt_ahead'])('caps %s at the per-cycle limit', (kind) => {
    expect(overCycleCap(kind, 2, p)).toBe(false);
    expect(overCycleCap(kind, 3, p)).toBe(true);
  });
  it.each<NoticeKind>(['final_notice', 'recovered'])('never caps %s', (kind) => {
    expect(overCycleCap(kind, 99, { maxNoticesPerCycle: 0 })).toBe(false);
  });
  it('uses the default policy of 4 per cycle', () => {
    expect(overCycleCap('payment_failed', 4, DEFAULT_DUNNING_POLICY)).toBe(true);
  });
});

describe('isSuperseded', () => {
  it('drops reminders of a closed invoice, keeps outcome notices', () => {
    for (const status of ['paid', 'void', 'uncollectible']) {
      expect(isSuperseded('payment_failed', status)).toBe(true);
      expect(isSuperseded('update_payment_method', status)).toBe(true);
      expect(isSuperseded('final_notice', status)).toBe(false);
      expect(isSuperseded('recovered', status)).toBe(false);
    }
    expect(isSuperseded('payment_failed', 'open')).toBe(false);
    expect(isSuperseded('payment_failed', null)).toBe(false);
  });
});
