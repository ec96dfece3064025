-- One dunning cycle per failed invoice.
CREATE TABLE dunning_cycles (
  invoice_id         text PRIMARY KEY,
  customer_id        text NOT NULL REFERENCES customers (id),
  subscription_id    text,
  workflow_id        text NOT NULL,
  state              text NOT NULL CHECK (state IN (
                       'retrying', 'awaiting_payment_method', 'awaiting_authentication',
                       'recovered', 'exhausted', 'canceled')),
  attempts_made      integer NOT NULL DEFAULT 0,
  max_attempts       integer NOT NULL,
  next_attempt_at    timestamptz,
  first_decline_code text,
  last_decline_code  text,
  decline_class      text,
  final_action       text,
  started_at         timestamptz NOT NULL DEFAULT now(),
  ended_at           timestamptz,
  updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dunning_cycles_customer_idx ON dunning_cycles (customer_id);
CREATE INDEX dunning_cycles_open_idx ON dunning_cycles (state) WHERE ended_at IS NULL;

CREATE TABLE dunning_attempts (
  id               bigserial PRIMARY KEY,
  invoice_id       text NOT NULL REFERENCES dunning_cycles (invoice_id),
  attempt          integer NOT NULL,
  trigger          text NOT NULL CHECK (trigger IN ('schedule', 'payment_method', 'manual')),
  outcome          text NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'requires_action', 'error')),
  decline_code     text,
  idempotency_key  text NOT NULL UNIQUE,
  attempted_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (invoice_id, attempt)
);
