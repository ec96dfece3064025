-- Early fraud warnings (radar.early_fraud_warning.created): the issuer reported a charge as fraud.
-- Access is restricted while an actionable warning's charge is neither refunded nor won in a dispute.
CREATE TABLE fraud_warnings (
  id           text PRIMARY KEY,
  customer_id  text NOT NULL REFERENCES customers (id),
  charge_id    text,
  actionable   boolean NOT NULL,
  fraud_type   text,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fraud_warnings_customer_idx ON fraud_warnings (customer_id);
CREATE INDEX IF NOT EXISTS disputes_customer_idx ON disputes (customer_id);
