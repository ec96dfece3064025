-- Decline data from the source (the PaymentIntent's last_payment_error): Stripe's advice code and the
-- card network's raw decline code, beside the issuer's decline code.
ALTER TABLE invoices ADD COLUMN last_advice_code text;
ALTER TABLE dunning_cycles ADD COLUMN last_advice_code text;
ALTER TABLE dunning_cycles ADD COLUMN last_network_decline_code text;
ALTER TABLE dunning_attempts ADD COLUMN advice_code text;
-- Invoices joined to a PaymentIntent event (payment_intent.payment_failed names no invoice since basil).
CREATE INDEX invoices_payment_intent_idx ON invoices (payment_intent_id) WHERE payment_intent_id IS NOT NULL;
