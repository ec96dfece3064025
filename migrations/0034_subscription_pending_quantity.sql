-- A seat decrease scheduled for the renewal (SEAT_DECREASE_AT=period_end), like pending_plan_id for a
-- downgrade: set by the customer workflow when Stripe's schedule is in place, cleared when a subscription
-- write shows the new quantity (the renewal's webhook), when the subscription ends, or when it is withdrawn.
ALTER TABLE subscriptions
  ADD COLUMN pending_quantity integer CHECK (pending_quantity >= 1),
  ADD COLUMN pending_quantity_effective_at timestamptz;
