/** The `applied_effects` rows: an applied event's effects, stored with its state change. */
import type { Effect } from '../../domain/billing/effects';
import type { TxSql } from '../../lib/db';

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
