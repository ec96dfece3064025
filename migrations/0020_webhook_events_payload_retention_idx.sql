-- migrate: no-transaction
-- Retention drops the payloads of settled deliveries oldest first; a purged row leaves this index, so
-- each run starts at the first payload still there instead of walking the purged rows kept for dedup.
CREATE INDEX CONCURRENTLY webhook_events_payload_retention_idx ON webhook_events (received_at, event_id)
  WHERE status IN ('applied', 'ignored') AND payload IS NOT NULL;
