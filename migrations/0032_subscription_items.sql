-- Several items and quantities per subscription (seats), and how a trial without a card ends.
-- items: [{ "id": "si_…", "priceId": "price_…", "quantity": 3 }, …] in Stripe's order, written with the
-- subscription under its watermark; quantity is the primary (first) item's, what seats and per-seat
-- entitlements read. An event of an older worker that carries no items keeps what is stored.
ALTER TABLE subscriptions
  ADD COLUMN items jsonb NOT NULL DEFAULT '[]'::jsonb,
  ADD COLUMN quantity integer NOT NULL DEFAULT 1 CHECK (quantity >= 0),
  -- trial_settings.end_behavior.missing_payment_method: cancel | pause | create_invoice (null: not said)
  ADD COLUMN trial_missing_payment_method text;
