/**
 * The failure policy of the apply path. Data and constraint errors (SQLSTATE classes 22 and 23, an
 * event that does not parse) do not heal by retrying: the event is quarantined — set aside in the
 * delivery log with its error, counted, listed and replayable — and the customer's later events flow
 * on. Everything else (connection loss, serialization failures) is transient and retried.
 */
import type { TxSql } from '../../lib/db';

/** An error that no retry can fix. */
export class DataError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DataError';
  }
}

/** True for Postgres data exceptions (22xxx), integrity violations (23xxx) and DataError. */
export function isDataError(err: unknown): boolean {
  if (err instanceof DataError) return true;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^2[23][0-9A-Z]{3}$/.test(code);
}

/** A short, storable description of the error (no payload data beyond Postgres' message). */
export function describeError(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  return `${typeof code === 'string' ? `${code}: ` : ''}${message}`.replace(/\u0000/g, '').slice(0, 2000);
}

/** Sets the event aside in the delivery log (status 'quarantined'); a replay after a fix applies it. */
export async function quarantineEvent(tx: TxSql, eventId: string, error: string): Promise<void> {
  await tx`
    UPDATE webhook_events SET status = 'quarantined', last_error = ${`apply: ${error}`}, quarantined_at = now()
    WHERE event_id = ${eventId}`;
}
