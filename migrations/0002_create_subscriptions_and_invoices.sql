CREATE TYPE subscription_status AS ENUM (
  'trialing', 'active', 'past_due', 'canceled', 'unpaid', 'incomplete', 'incomplete_expired', 'paused'
);

CREATE TABLE subscriptions (
  id                         text PRIMARY KEY,                 -- Stripe sub_ id
  customer_id                text NOT NULL REFERENCES customers (id),
  status                     subscription_status NOT NULL,
  plan_id                    text REFERENCES plans (id),       -- null when the price is not in our catalog
  price_id                   text,
  current_period_start       timestamptz,
  current_period_end         timestamptz,
  cancel_at_period_end       boolean NOT NULL DEFAULT false,
  canceled_at                timestamptz,
  trial_end                  timestamptz,
  pending_plan_id            text REFERENCES plans (id),       -- scheduled downgrade, applied at renewal
  pending_plan_effective_at  timestamptz,
  needs_review               boolean NOT NULL DEFAULT false,   -- e.g. local-only subscription found by reconciliation
  review_reason              text,
  -- Watermark: an older event never overwrites newer state (see activities/billing-db.ts).
  stripe_updated_at          timestamptz NOT NULL,
  watermark_event_id         text,
  created_at                 timestamptz NOT NULL DEFAULT now(),
  updated_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_customer_idx ON subscriptions (customer_id);
CREATE INDEX subscriptions_status_idx ON subscriptions (status);

CREATE TABLE invoices (
  id                    text PRIMARY KEY,                      -- Stripe in_ id
  customer_id           text NOT NULL REFERENCES customers (id),
  subscription_id       text,
  status                text,
  amount_due            bigint NOT NULL DEFAULT 0,
  amount_paid           bigint NOT NULL DEFAULT 0,
  amount_refunded       bigint NOT NULL DEFAULT 0,
  currency              text NOT NULL,
  attempt_count         integer NOT NULL DEFAULT 0,
  next_payment_attempt  timestamptz,
  billing_reason        text,
  hosted_invoice_url    text,
  payment_intent_id     text,
  last_decline_code     text,
  period_end            timestamptz,
  paid_at               timestamptz,
  stripe_updated_at     timestamptz NOT NULL,
  status_rank           integer NOT NULL DEFAULT 0,            -- same-second tie-break: draft < open < terminal
  watermark_event_id    text,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoices_customer_idx ON invoices (customer_id);
CREATE INDEX invoices_subscription_idx ON invoices (subscription_id);

CREATE TABLE payment_methods (
  id           text PRIMARY KEY,                               -- pm_ id; brand and last4 only, never card data
  customer_id  text NOT NULL REFERENCES customers (id),
  type         text NOT NULL,
  card_brand   text,
  card_last4   text,
  attached     boolean NOT NULL DEFAULT true,
  updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE charges (
  id               text PRIMARY KEY,
  customer_id      text NOT NULL REFERENCES customers (id),
  invoice_id       text,
  amount           bigint NOT NULL,
  amount_refunded  bigint NOT NULL DEFAULT 0,
  currency         text NOT NULL,
  refunded         boolean NOT NULL DEFAULT false,
  updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE disputes (
  id           text PRIMARY KEY,                               -- dp_ id
  customer_id  text NOT NULL REFERENCES customers (id),
  charge_id    text,
  amount       bigint NOT NULL,
  currency     text NOT NULL,
  reason       text,
  status       text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
