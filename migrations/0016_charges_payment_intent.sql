-- A charge's PaymentIntent (charge.succeeded, payment_intent.succeeded): since basil the only link from a
-- charge towards its invoice, and the sign that the PaymentIntent succeeded (a decline of it arriving later is old).
ALTER TABLE charges ADD COLUMN payment_intent_id text;
CREATE INDEX charges_payment_intent_idx ON charges (payment_intent_id) WHERE payment_intent_id IS NOT NULL;
