-- A delivery stuck in 'dispatched' must stay visible while the sweeper re-sends it: the re-send bumps
-- dispatched_at (so it is not re-sent every tick), first_dispatched_at keeps when it entered 'dispatched'.
ALTER TABLE webhook_events ADD COLUMN first_dispatched_at timestamptz;
-- Stuck gauges, GET /admin/webhook-events/stuck and the sweeper's stuck pass (rows written before this
-- column existed fall back to dispatched_at). Only in-flight rows are indexed.
CREATE INDEX webhook_events_stuck_idx ON webhook_events ((coalesce(first_dispatched_at, dispatched_at)), event_id)
  WHERE status = 'dispatched';
