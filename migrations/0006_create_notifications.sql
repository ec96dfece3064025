-- Notification ledger and outbox: the unique dedup key makes every notice at-most-once.
CREATE TABLE notifications (
  id           bigserial PRIMARY KEY,
  dedup_key    text NOT NULL UNIQUE,
  customer_id  text NOT NULL,
  invoice_id   text,
  kind         text NOT NULL,
  channel      text NOT NULL DEFAULT 'outbox',
  status       text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'canceled', 'suppressed')),
  payload      jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at   timestamptz NOT NULL DEFAULT now(),
  sent_at      timestamptz
);
CREATE INDEX notifications_customer_idx ON notifications (customer_id, created_at);
CREATE INDEX notifications_outbox_idx ON notifications (created_at) WHERE status = 'queued';
