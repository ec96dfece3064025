-- Effects are data: each applied event's effects are stored with its state change, in the same
-- transaction, keyed by (event, kind, target). Re-applying an applied event returns these rows.
CREATE TABLE applied_effects (
  event_id     text NOT NULL REFERENCES applied_events (event_id) ON DELETE CASCADE,
  kind         text NOT NULL,
  target       text NOT NULL,
  seq          integer NOT NULL,
  customer_id  text NOT NULL,
  effect       jsonb NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (event_id, kind, target)
);
CREATE INDEX applied_effects_customer_idx ON applied_effects (customer_id, created_at);

-- Remember the outcome of the original apply so a re-run after commit replays the same decisions.
ALTER TABLE applied_events DROP CONSTRAINT applied_events_outcome_check;
ALTER TABLE applied_events ADD CONSTRAINT applied_events_outcome_check
  CHECK (outcome IN ('applied', 'stale', 'refetched', 'noop', 'refused'));

-- A bad event never blocks its customer: data errors set it aside, visible and replayable.
-- (The new enum value cannot be used in this transaction; nothing here does.)
ALTER TYPE webhook_event_status ADD VALUE IF NOT EXISTS 'quarantined';
ALTER TABLE webhook_events ADD COLUMN quarantined_at timestamptz;
