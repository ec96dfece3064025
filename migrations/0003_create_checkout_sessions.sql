CREATE TABLE checkout_sessions (
  id               text PRIMARY KEY,                           -- Stripe cs_ id
  customer_id      text NOT NULL,
  plan_id          text NOT NULL REFERENCES plans (id),
  request_id       text UNIQUE,
  status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'complete', 'expired')),
  url              text,
  subscription_id  text,
  trial_days       integer,
  created_at       timestamptz NOT NULL DEFAULT now(),
  completed_at     timestamptz,
  expired_at       timestamptz
);
CREATE INDEX checkout_sessions_outcome_idx ON checkout_sessions (status, created_at);
