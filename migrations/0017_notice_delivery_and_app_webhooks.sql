-- Notices are sent (issue 16): the ledger records each notice's delivery, a notice can wait (quiet
-- hours, the per-customer cooldown) in a durable timer of its workflow `notice:<dedup_key>`, and the
-- app hears about billing through signed outgoing webhooks, delivered from the app_webhooks outbox.
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check
  CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'given_up', 'canceled', 'suppressed'));
ALTER TABLE notifications
  ADD COLUMN due_at           timestamptz,          -- when it may go out (after quiet hours / the cooldown)
  ADD COLUMN deferred_by      text,                 -- quiet_hours | cooldown: why it waited last
  ADD COLUMN attempts         integer NOT NULL DEFAULT 0,
  ADD COLUMN last_error       text,
  ADD COLUMN last_attempt_at  timestamptz,
  ADD COLUMN message_id       text,                 -- the SMTP Message-ID of the email that went out
  ADD COLUMN recipient        text,
  ADD COLUMN workflow_started_at timestamptz,       -- the outbox relay started notice:<dedup_key>
  ADD COLUMN ended_at         timestamptz;          -- sent, given up or canceled
CREATE INDEX notifications_unstarted_idx ON notifications (created_at)
  WHERE status = 'queued' AND workflow_started_at IS NULL;

-- The customer's timezone for quiet hours: Stripe customer metadata `timezone` (IANA name).
ALTER TABLE customers ADD COLUMN timezone text;

-- Outgoing app webhooks: one row per event for the app, written in the transaction of the state
-- change it reports; delivered by workflow app-webhook:<id> (retries with backoff for up to 3 days).
CREATE TABLE app_webhooks (
  id                   text PRIMARY KEY,            -- aevt_…, derived from source_key: the app dedups on it
  source_key           text NOT NULL UNIQUE,        -- what produced it, e.g. access:<event id>
  customer_id          text,
  type                 text NOT NULL,
  created_at           timestamptz NOT NULL DEFAULT now(),
  data                 jsonb NOT NULL,
  status               text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'delivered', 'failed', 'given_up')),
  attempts             integer NOT NULL DEFAULT 0,
  last_status_code     integer,
  last_error           text,
  last_attempt_at      timestamptz,
  delivered_at         timestamptz,
  replays              integer NOT NULL DEFAULT 0,  -- admin replays: workflow app-webhook:<id>:replay-<n>
  workflow_started_at  timestamptz                  -- the outbox relay started the delivery workflow
);
CREATE INDEX app_webhooks_customer_idx ON app_webhooks (customer_id, created_at);
CREATE INDEX app_webhooks_created_idx ON app_webhooks (created_at);
CREATE INDEX app_webhooks_unstarted_idx ON app_webhooks (created_at)
  WHERE workflow_started_at IS NULL AND status IN ('pending', 'failed');
