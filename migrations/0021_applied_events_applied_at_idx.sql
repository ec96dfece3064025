-- migrate: no-transaction
-- Retention deletes the exactly-once ledger (applied_events, its applied_effects cascade) oldest first.
CREATE INDEX CONCURRENTLY applied_events_applied_at_idx ON applied_events (applied_at, event_id);
