-- Acknowledge on commit: the request path only stores; a dispatcher in every API replica claims
-- 'received' rows (FOR UPDATE SKIP LOCKED), hands them to Temporal and marks them 'dispatched'.
-- A claim is a lease: a replica that dies mid-hand-over leaves rows that any replica takes again once
-- it expires (the workflow dedups by event id). A failed hand-over pushes the lease out (backoff).
ALTER TABLE webhook_events ADD COLUMN dispatch_claimed_until timestamptz;
ALTER TABLE webhook_events ADD COLUMN dispatch_attempts integer NOT NULL DEFAULT 0;

-- Wakes the dispatchers (LISTEN billing_inbox) when a transaction that inserted deliveries commits;
-- one notification per statement, and Postgres folds identical ones within a transaction.
CREATE FUNCTION billing_inbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('billing_inbox', '');
  RETURN NULL;
END
$$;
CREATE TRIGGER webhook_events_inbox_notify AFTER INSERT ON webhook_events
  FOR EACH STATEMENT EXECUTE FUNCTION billing_inbox_notify();

-- Admission control counts the workflows with deliveries dispatched but not yet applied.
CREATE INDEX webhook_events_pending_customer_idx ON webhook_events (customer_id) WHERE status = 'dispatched';
