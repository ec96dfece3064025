/** Dunning outcome metrics computed from Postgres (`dunning_cycles`, `dunning_attempts`); read by /metrics. */
import { DECLINE_CODES } from '../domain/dunning-policy';
import type { Sql } from './db';

/** Cycle counts and recovery figures over every recorded cycle. */
export interface DunningStats {
  started: number;
  open: number;
  recovered: number;
  exhausted: number;
  canceled: number;
  /** recovered / (recovered + exhausted); null until a cycle has recovered or been exhausted. */
  recoveryRate: number | null;
  /** Recovered cycles by the attempt that succeeded; 'none' when paid without a retry of ours. */
  recoveredByAttempt: Record<string, number>;
  /** Cycles by first decline code ('unknown' when Stripe sent none, 'other' outside the decline table). */
  byDeclineCode: Record<string, { started: number; recovered: number; exhausted: number }>;
}

/** Bounded label value for a decline code. */
export function declineCodeLabel(code: string | null): string {
  if (code === null || code.trim() === '') return 'unknown';
  const key = code.trim().toLowerCase();
  return Object.hasOwn(DECLINE_CODES, key) ? key : 'other';
}

/** Computes the dunning metrics. */
export async function dunningStats(sql: Sql): Promise<DunningStats> {
  const [totals] = await sql<{ started: number; open: number; recovered: number; exhausted: number; canceled: number }[]>`
    SELECT count(*)::int AS started,
           count(*) FILTER (WHERE ended_at IS NULL)::int AS open,
           count(*) FILTER (WHERE state = 'recovered')::int AS recovered,
           count(*) FILTER (WHERE state = 'exhausted')::int AS exhausted,
           count(*) FILTER (WHERE state = 'canceled')::int AS canceled
    FROM dunning_cycles`;
  const byAttempt = await sql<{ attempt: number | null; n: number }[]>`
    SELECT a.attempt, count(*)::int AS n
    FROM dunning_cycles c
    LEFT JOIN dunning_attempts a ON a.invoice_id = c.invoice_id AND a.outcome = 'succeeded'
    WHERE c.state = 'recovered'
    GROUP BY a.attempt`;
  const byCode = await sql<{ code: string | null; state: string; n: number }[]>`
    SELECT first_decline_code AS code, state, count(*)::int AS n FROM dunning_cycles GROUP BY first_decline_code, state`;

  const t = totals ?? { started: 0, open: 0, recovered: 0, exhausted: 0, canceled: 0 };
  const decided = t.recovered + t.exhausted;
  const recoveredByAttempt: Record<string, number> = {};
  for (const row of byAttempt) {
    const label = row.attempt === null ? 'none' : String(row.attempt);
    recoveredByAttempt[label] = (recoveredByAttempt[label] ?? 0) + row.n;
  }
  const byDeclineCode: DunningStats['byDeclineCode'] = {};
  for (const row of byCode) {
    const entry = (byDeclineCode[declineCodeLabel(row.code)] ??= { started: 0, recovered: 0, exhausted: 0 });
    entry.started += row.n;
    if (row.state === 'recovered') entry.recovered += row.n;
    if (row.state === 'exhausted') entry.exhausted += row.n;
  }
  return { ...t, recoveryRate: decided === 0 ? null : t.recovered / decided, recoveredByAttempt, byDeclineCode };
}
