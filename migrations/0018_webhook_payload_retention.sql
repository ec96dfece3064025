-- Retention (activities/retention.ts): a delivery's payload is dropped at WEBHOOK_RETENTION_DAYS while the
-- row, whose event id dedups redeliveries, may stay longer. A purged row keeps payload NULL and says when.
ALTER TABLE webhook_events ALTER COLUMN payload DROP NOT NULL;
ALTER TABLE webhook_events ADD COLUMN payload_purged_at timestamptz;
