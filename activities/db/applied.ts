/**
 * The exactly-once ledger: `applied_events` (one row per applied event, its outcome) and
 * `applied_effects` (the effects decided for it), written in the transaction of the state change.
 */
import type { Effect } from '../../domain/billing/effects';
import type { TxSql } from '../../lib/db';

/** An event already in the ledger: what its first apply decided, and its recorded effects. */
export interface AlreadyApplied {
  outcome: 'duplicate';
  firstOutcome: string | null;
  effects: Effect[];
}

/**
 * Records the event in `applied_events` (with a provisional outcome), or, when it is there already,
 * returns what its first apply decided and its effects, so a re-run replays them.
 */
export async function claimEvent(
  tx: TxSql,
  event: { eventId: string; customerId: string; type: string },
  outcome: 'applied' | 'refetched',
): Promise<AlreadyApplied | null> {
  const inserted = await tx`
    INSERT INTO applied_events (event_id, customer_id, type, outcome)
    VALUES (${event.eventId}, ${event.customerId}, ${event.type}, ${outcome})
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id`;
  if (inserted.length > 0) return null;
  const [first] = await tx<{ outcome: string }[]>`SELECT outcome FROM applied_events WHERE event_id = ${event.eventId}`;
  return { outcome: 'duplicate', firstOutcome: first?.outcome ?? null, effects: await loadEffects(tx, event.eventId) };
}

/** Sets the outcome the reducer decided (stale, noop) in place of the provisional one. */
export async function setOutcome(tx: TxSql, eventId: string, outcome: string): Promise<void> {
  await tx`UPDATE applied_events SET outcome = ${outcome} WHERE event_id = ${eventId}`;
}

/** Marks the delivery applied in the delivery log. */
export async function markDelivered(tx: TxSql, eventId: string): Promise<void> {
  await tx`
    UPDATE webhook_events SET status = 'applied', applied_at = now(), last_error = NULL
    WHERE event_id = ${eventId} AND status <> 'applied'`;
}

/** Stores the effects decided for an event (same transaction as its applied_events row). */
export async function storeEffects(tx: TxSql, eventId: string, customerId: string, effects: Effect[]): Promise<void> {
  for (const [seq, effect] of effects.entries()) {
    await tx`
      INSERT INTO applied_effects (event_id, kind, target, seq, customer_id, effect)
      VALUES (${eventId}, ${effect.kind}, ${effect.target}, ${seq}, ${customerId}, ${tx.json(effect as never)})
      ON CONFLICT (event_id, kind, target) DO NOTHING`;
  }
}

/** The effects recorded when the event was first applied, in their original order. */
export async function loadEffects(tx: TxSql, eventId: string): Promise<Effect[]> {
  const rows = await tx<{ effect: Effect }[]>`SELECT effect FROM applied_effects WHERE event_id = ${eventId} ORDER BY seq`;
  return rows.map((r) => r.effect);
}
