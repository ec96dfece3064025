-- migrate: no-transaction
-- Retention pages through settled deliveries oldest first (keyset). Built CONCURRENTLY: ingest keeps writing meanwhile.
-- No IF NOT EXISTS: after a failed build it would keep the INVALID index and record this file.
CREATE INDEX CONCURRENTLY webhook_events_retention_idx ON webhook_events (received_at, event_id)
  WHERE status IN ('applied', 'ignored');
