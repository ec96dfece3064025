-- Acknowledge on commit: the request path only stores; a dispatcher in every API replica claims
-- 'received' rows (FOR UPDATE SKIP LOCKED), hands them to Temporal and marks them 'dispatched'.
-- A claim is a lease: a replica that dies mid-hand-over leaves rows that any replica takes again once
-- it expires (the workflow dedups by event id). A failed hand-over pushes the lease out (backoff).
ALTER TABLE webhook_events ADD COLUMN dispatch_claimed_until timestamptz;
ALTER TABLE webhook_events ADD COLUMN dispatch_attempts integer NOT NULL DEFAULT 0;

-- The dispatchers LISTEN on billing_inbox. The NOTIFY is sent apart from the inserts (lib/inbox.ts),
-- coalesced: a NOTIFY inside each insert's transaction serializes every commit on the notify lock.

-- Admission control counts the workflows with deliveries dispatched but not yet applied.
CREATE INDEX webhook_events_pending_customer_idx ON webhook_events (customer_id) WHERE status = 'dispatched';
