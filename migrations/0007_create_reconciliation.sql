CREATE TABLE reconciliation_runs (
  id           text PRIMARY KEY,                               -- the reconciliation workflow id
  trigger      text NOT NULL DEFAULT 'schedule',
  status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
  scanned      integer NOT NULL DEFAULT 0,
  drifted      integer NOT NULL DEFAULT 0,
  repaired     integer NOT NULL DEFAULT 0,
  flagged      integer NOT NULL DEFAULT 0,
  cursor       text,
  error        text,
  started_at   timestamptz NOT NULL DEFAULT now(),
  finished_at  timestamptz
);

CREATE TABLE reconciliation_drift (
  id             bigserial PRIMARY KEY,
  run_id         text NOT NULL REFERENCES reconciliation_runs (id),
  object_type    text NOT NULL DEFAULT 'subscription',
  object_id      text NOT NULL,
  customer_id    text,
  field          text NOT NULL,
  local_value    text,
  stripe_value   text,
  detected_at    timestamptz NOT NULL DEFAULT now(),
  repair_status  text NOT NULL DEFAULT 'pending' CHECK (repair_status IN ('pending', 'repaired', 'flagged', 'failed')),
  repaired_at    timestamptz,
  UNIQUE (run_id, object_id, field)
);
CREATE INDEX reconciliation_drift_run_idx ON reconciliation_drift (run_id, repair_status);
