CREATE TYPE webhook_event_status AS ENUM ('received', 'dispatched', 'applied', 'ignored', 'failed');

-- The delivery log and durable inbox: one row per Stripe event id, however often it is delivered.
CREATE TABLE webhook_events (
  event_id           text PRIMARY KEY,
  type               text NOT NULL,
  api_version        text,
  livemode           boolean NOT NULL DEFAULT false,
  stripe_created_at  timestamptz NOT NULL,
  customer_id        text,
  object_id          text,
  workflow_id        text,
  status             webhook_event_status NOT NULL DEFAULT 'received',
  payload            jsonb NOT NULL,
  payload_truncated  boolean NOT NULL DEFAULT false,
  payload_bytes      integer NOT NULL,
  attempts           integer NOT NULL DEFAULT 1,
  last_error         text,
  received_at        timestamptz NOT NULL DEFAULT now(),
  last_received_at   timestamptz NOT NULL DEFAULT now(),
  dispatched_at      timestamptz,
  applied_at         timestamptz
);
CREATE INDEX webhook_events_undispatched_idx ON webhook_events (received_at) WHERE status = 'received';
CREATE INDEX webhook_events_customer_idx ON webhook_events (customer_id, received_at);
CREATE INDEX webhook_events_status_type_idx ON webhook_events (status, type, received_at);

-- The exactly-once backstop: written in the same transaction as the state change it records.
CREATE TABLE applied_events (
  event_id     text PRIMARY KEY,
  customer_id  text NOT NULL,
  type         text NOT NULL,
  outcome      text NOT NULL CHECK (outcome IN ('applied', 'stale', 'refetched', 'noop')),
  applied_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX applied_events_customer_idx ON applied_events (customer_id);
