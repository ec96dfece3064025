import { describe, expect, it } from 'vitest';
import { classifyPlanChange, prorateUpgrade } from '../../domain/proration';

const DAY = 86_400;
const START = Date.UTC(2026, 0, 1) / 1000; // 2026-01-01T00:00:00Z, a 31-day month

describe('prorateUpgrade', () => {
  it('splits a 30-day period at its midpoint: $10 → $30 with 15 days left', () => {
    // credit = 1000 × 15/30 = 500; charge = 3000 × 15/30 = 1500; net = 1000
    expect(
      prorateUpgrade({ oldAmount: 1000, newAmount: 3000, periodStart: START, periodEnd: START + 30 * DAY, prorationDate: START + 15 * DAY }),
    ).toEqual({ credit: 500, charge: 1500, net: 1000, secondsRemaining: 15 * DAY, periodSeconds: 30 * DAY });
  });

  it('rounds each side to the nearest cent in a 31-day month with 10 days left', () => {
    // period = 31 × 86400 = 2,678,400 s; remaining = 10 × 86400 = 864,000 s; ratio = 10/31
    // credit = 1000 × 10/31 = 322.58… → 323
    // charge = 3000 × 10/31 = 967.74… → 968
    // net    = 968 − 323   = 645
    expect(
      prorateUpgrade({ oldAmount: 1000, newAmount: 3000, periodStart: START, periodEnd: START + 31 * DAY, prorationDate: START + 21 * DAY }),
    ).toEqual({ credit: 323, charge: 968, net: 645, secondsRemaining: 864_000, periodSeconds: 2_678_400 });
  });

  it('matches days remaining × daily price difference, up to rounding of each side', () => {
    // 30-day period, $20 → $50, upgrade with 12 days left:
    // daily difference = (5000 − 2000) / 30 = 100 per day; 12 days × 100 = 1200
    // credit = 2000 × 12/30 = 800; charge = 5000 × 12/30 = 2000; net = 1200
    const r = prorateUpgrade({ oldAmount: 2000, newAmount: 5000, periodStart: START, periodEnd: START + 30 * DAY, prorationDate: START + 18 * DAY });
    expect(r).toMatchObject({ credit: 800, charge: 2000, net: 1200 });
    expect(r.net).toBe(12 * ((5000 - 2000) / 30));
  });

  it('rounds the sides separately, so net can differ from the rounded daily difference', () => {
    // 31-day period, $15.00 → $25.00, 10 days left:
    // credit = 1500 × 10/31 = 483.87 → 484; charge = 2500 × 10/31 = 806.45 → 806; net = 806 − 484 = 322
    // 10 days × (1000/31 per day) = 322.58 → 323: Stripe rounds the two lines, not their difference
    const r = prorateUpgrade({ oldAmount: 1500, newAmount: 2500, periodStart: START, periodEnd: START + 31 * DAY, prorationDate: START + 21 * DAY });
    expect(r).toMatchObject({ credit: 484, charge: 806, net: 322 });
    expect(Math.round((10 * (2500 - 1500)) / 31)).toBe(323);
    // 1 s left in a 30-day period: both sides round to 0 although the exact difference is 0.0008 of a cent
    const tail = prorateUpgrade({ oldAmount: 1000, newAmount: 3000, periodStart: START, periodEnd: START + 30 * DAY, prorationDate: START + 30 * DAY - 1 });
    expect(tail).toMatchObject({ credit: 0, charge: 0, net: 0, secondsRemaining: 1 });
  });

  it('rounds half up', () => {
    // 1 × 1/2 = 0.5 → 1; 3 × 1/2 = 1.5 → 2
    expect(prorateUpgrade({ oldAmount: 1, newAmount: 3, periodStart: 0, periodEnd: 2, prorationDate: 1 })).toMatchObject({
      credit: 1,
      charge: 2,
      net: 1,
    });
  });

  it('gives a negative net for a downgrade applied immediately', () => {
    // 30-day period, $30 → $10 with 15 days left: credit 1500, charge 500, net −1000
    expect(
      prorateUpgrade({ oldAmount: 3000, newAmount: 1000, periodStart: START, periodEnd: START + 30 * DAY, prorationDate: START + 15 * DAY }),
    ).toMatchObject({ credit: 1500, charge: 500, net: -1000 });
  });

  it('credits the whole period at its start and nothing at its end', () => {
    const period = { oldAmount: 1000, newAmount: 3000, periodStart: START, periodEnd: START + 30 * DAY };
    expect(prorateUpgrade({ ...period, prorationDate: START })).toMatchObject({ credit: 1000, charge: 3000, net: 2000 });
    expect(prorateUpgrade({ ...period, prorationDate: START + 30 * DAY })).toMatchObject({
      credit: 0,
      charge: 0,
      net: 0,
      secondsRemaining: 0,
    });
  });

  it('stays exact for a yearly plan where amount × seconds exceeds 2^53', () => {
    // 365-day period, 50,000,000.00 → 90,000,000.00 (minor units 5e9 → 9e9), 1 s left:
    // 5e9 × 1 / 31,536,000 = 158.548… → 159; 9e9 / 31,536,000 = 285.388… → 285
    const year = 365 * DAY;
    expect(
      prorateUpgrade({ oldAmount: 5_000_000_000, newAmount: 9_000_000_000, periodStart: START, periodEnd: START + year, prorationDate: START + year - 1 }),
    ).toMatchObject({ credit: 159, charge: 285, net: 126 });
    // remaining = 364 days = 31,449,600 s; 9e9 × 31,449,600 ≈ 2.8e17 > 2^53
    // 9e9 × 364/365 = 8,975,342,465.75… → 8,975,342,466; 5e9 × 364/365 = 4,986,301,369.86… → 4,986,301,370
    expect(
      prorateUpgrade({ oldAmount: 5_000_000_000, newAmount: 9_000_000_000, periodStart: START, periodEnd: START + year, prorationDate: START + DAY }),
    ).toMatchObject({ credit: 4_986_301_370, charge: 8_975_342_466, net: 3_989_041_096 });
  });

  it.each([
    ['before the period', { prorationDate: START - 1 }],
    ['after the period', { prorationDate: START + 30 * DAY + 1 }],
    ['a negative old amount', { oldAmount: -1 }],
    ['a negative new amount', { newAmount: -1 }],
    ['an empty period', { periodEnd: START }],
    ['a reversed period', { periodEnd: START - DAY, prorationDate: START - DAY }],
    ['a fractional amount', { oldAmount: 10.5 }],
    ['a fractional time', { prorationDate: START + 0.5 }],
    ['a NaN amount', { newAmount: Number.NaN }],
  ])('throws RangeError for %s', (_label, override) => {
    const input = { oldAmount: 1000, newAmount: 3000, periodStart: START, periodEnd: START + 30 * DAY, prorationDate: START + DAY, ...override };
    expect(() => prorateUpgrade(input)).toThrow(RangeError);
  });
});

describe('classifyPlanChange', () => {
  it('calls a move to a higher rank an upgrade', () => {
    expect(classifyPlanChange(1, 2)).toBe('upgrade');
  });

  it('calls a move to a lower rank a downgrade', () => {
    expect(classifyPlanChange(3, 1)).toBe('downgrade');
  });

  it('calls an equal rank the same', () => {
    expect(classifyPlanChange(2, 2)).toBe('same');
  });
});
