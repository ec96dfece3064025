/**
 * Proration arithmetic as Stripe does it: to the second, each side rounded to the nearest minor unit.
 * Pure; used to explain and cross-check previews, never instead of Stripe's own invoice.
 */

/** Input to prorateUpgrade: amounts in minor units per period, times in unix seconds, all integers. */
export interface ProrateUpgradeInput {
  oldAmount: number;
  newAmount: number;
  periodStart: number;
  periodEnd: number;
  prorationDate: number;
}

/** Credit for unused time on the old plan, charge for the remaining time on the new one, and their difference. */
export interface ProrationResult {
  credit: number;
  charge: number;
  net: number;
  secondsRemaining: number;
  periodSeconds: number;
}

/** Prorates a mid-period plan change: credit = round(old × remaining/period), charge = round(new × remaining/period), net = charge − credit. */
export function prorateUpgrade(input: ProrateUpgradeInput): ProrationResult {
  const { oldAmount, newAmount, periodStart, periodEnd, prorationDate } = input;
  const fields = { oldAmount, newAmount, periodStart, periodEnd, prorationDate };
  for (const [name, value] of Object.entries(fields)) {
    if (!Number.isSafeInteger(value)) throw new RangeError(`${name} must be a safe integer, got ${String(value)}`);
  }
  if (oldAmount < 0) throw new RangeError(`oldAmount must not be negative, got ${oldAmount}`);
  if (newAmount < 0) throw new RangeError(`newAmount must not be negative, got ${newAmount}`);
  if (periodEnd <= periodStart) {
    throw new RangeError(`periodEnd (${periodEnd}) must be after periodStart (${periodStart})`);
  }
  if (prorationDate < periodStart || prorationDate > periodEnd) {
    throw new RangeError(`prorationDate ${prorationDate} is outside the period [${periodStart}, ${periodEnd}]`);
  }
  const periodSeconds = periodEnd - periodStart;
  const secondsRemaining = periodEnd - prorationDate;
  const credit = roundedShare(oldAmount, secondsRemaining, periodSeconds);
  const charge = roundedShare(newAmount, secondsRemaining, periodSeconds);
  return { credit, charge, net: charge - credit, secondsRemaining, periodSeconds };
}

/** Compares plan ranks: a higher target rank is an upgrade (applied now), a lower one a downgrade (applied at period end). */
export function classifyPlanChange(fromRank: number, toRank: number): 'upgrade' | 'downgrade' | 'same' {
  if (toRank > fromRank) return 'upgrade';
  if (toRank < fromRank) return 'downgrade';
  return 'same';
}

/** round(amount × part / whole), half up, exact: amount × part can exceed 2^53 for yearly plans in seconds. */
function roundedShare(amount: number, part: number, whole: number): number {
  const a = BigInt(amount);
  const p = BigInt(part);
  const w = BigInt(whole);
  return Number((2n * a * p + w) / (2n * w));
}
