-- Customers mirrored from Stripe. Written only by the customer workflow's activities.
CREATE TABLE customers (
  id                         text PRIMARY KEY,                 -- Stripe cus_ id
  email                      text,
  name                       text,
  default_payment_method_id  text,
  deleted                    boolean NOT NULL DEFAULT false,
  -- What the app should grant: active → grace (in dunning) → restricted → suspended.
  access_state               text NOT NULL DEFAULT 'none'
                             CHECK (access_state IN ('none', 'active', 'grace', 'restricted', 'suspended')),
  stripe_updated_at          timestamptz,                      -- watermark: Stripe event `created`
  watermark_event_id         text,
  created_at                 timestamptz NOT NULL DEFAULT now(),
  updated_at                 timestamptz NOT NULL DEFAULT now()
);

-- The plan catalog: a stable plan id mapped to a Stripe price; rank orders upgrades and downgrades.
CREATE TABLE plans (
  id               text PRIMARY KEY,                           -- e.g. pro-monthly
  stripe_price_id  text NOT NULL UNIQUE,
  name             text NOT NULL,
  amount           bigint NOT NULL CHECK (amount >= 0),        -- minor units
  currency         text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
  interval         text NOT NULL CHECK (interval IN ('day', 'week', 'month', 'year')),
  rank             integer NOT NULL,
  active           boolean NOT NULL DEFAULT true,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
