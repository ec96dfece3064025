-- Scratch table of one reconciliation run: every subscription already compared in this run.
-- The local-only sweep anti-joins against it, so the workflow never holds 100k ids in memory.
-- Rows are deleted when the run finishes.
CREATE TABLE reconciliation_seen (
  run_id     text NOT NULL REFERENCES reconciliation_runs (id) ON DELETE CASCADE,
  object_id  text NOT NULL,
  source     text NOT NULL CHECK (source IN ('stripe_list', 'local_sweep')),
  seen_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (run_id, object_id)
);
