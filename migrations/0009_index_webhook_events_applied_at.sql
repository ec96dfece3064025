-- The /metrics scrape reads the rows applied since the previous scrape (webhook-to-applied lag).
CREATE INDEX webhook_events_applied_at_idx ON webhook_events (applied_at) WHERE applied_at IS NOT NULL;
