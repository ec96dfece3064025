-- Entitlements (issue 19): each plan's features, support's overrides, Stripe's active entitlements, and a
-- per-customer version the API's entitlement cache revalidates against.

-- Feature values: true/false, a non-negative limit, null (unlimited) or {"perSeat": n} (n × quantity).
ALTER TABLE plans ADD COLUMN features jsonb NOT NULL DEFAULT '{}';

-- Support's grants (POST /admin/customers/{id}/entitlement-overrides). Not billing rows: written by the
-- admin route directly, never by the customer workflow. A revoke sets revoked_at (kept for the audit).
CREATE TABLE entitlement_overrides (
  id           text PRIMARY KEY,                               -- eo_…
  customer_id  text NOT NULL REFERENCES customers (id),
  feature      text NOT NULL,
  value        jsonb NOT NULL,                                 -- true/false, a limit, or null (unlimited)
  reason       text NOT NULL,
  expires_at   timestamptz,
  revoked_at   timestamptz,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX entitlement_overrides_customer_idx ON entitlement_overrides (customer_id) WHERE revoked_at IS NULL;

-- Stripe Entitlements: the lookup keys of the customer's active entitlements, from
-- entitlements.active_entitlement_summary.updated (written by the apply transaction, watermarked by event created).
CREATE TABLE stripe_entitlements (
  customer_id         text PRIMARY KEY REFERENCES customers (id),
  lookup_keys         text[] NOT NULL DEFAULT '{}',
  stripe_updated_at   timestamptz NOT NULL,
  watermark_event_id  text,
  updated_at          timestamptz NOT NULL DEFAULT now()
);

-- A counter per customer, bumped by triggers whenever a row an entitlement answer reads changes (the
-- customer's access state, its subscriptions, overrides, Stripe entitlements), whoever writes it; the
-- row '' is bumped by any change of the plan catalog. Monotonic, so sum(version) over (customer, '')
-- changes whenever either does: the API caches an answer with that sum and revalidates with one PK read.
CREATE TABLE entitlement_versions (
  customer_id  text PRIMARY KEY,
  version      bigint NOT NULL
);

CREATE FUNCTION bump_entitlement_version(cid text) RETURNS void LANGUAGE sql AS $$
  INSERT INTO entitlement_versions (customer_id, version) VALUES (cid, 1)
  ON CONFLICT (customer_id) DO UPDATE SET version = entitlement_versions.version + 1
$$;

CREATE FUNCTION entitlement_row_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN PERFORM bump_entitlement_version(OLD.customer_id); END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND (TG_OP = 'INSERT' OR NEW.customer_id IS DISTINCT FROM OLD.customer_id) THEN
    PERFORM bump_entitlement_version(NEW.customer_id);
  END IF;
  RETURN NULL;
END $$;

CREATE FUNCTION entitlement_customer_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM bump_entitlement_version(NEW.id);
  RETURN NULL;
END $$;

CREATE FUNCTION entitlement_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM bump_entitlement_version('');
  RETURN NULL;
END $$;

CREATE TRIGGER customers_entitlement_version AFTER UPDATE ON customers
  FOR EACH ROW WHEN (OLD.access_state IS DISTINCT FROM NEW.access_state) EXECUTE FUNCTION entitlement_customer_changed();
CREATE TRIGGER subscriptions_entitlement_version AFTER INSERT OR UPDATE OR DELETE ON subscriptions
  FOR EACH ROW EXECUTE FUNCTION entitlement_row_changed();
CREATE TRIGGER entitlement_overrides_entitlement_version AFTER INSERT OR UPDATE OR DELETE ON entitlement_overrides
  FOR EACH ROW EXECUTE FUNCTION entitlement_row_changed();
CREATE TRIGGER stripe_entitlements_entitlement_version AFTER INSERT OR UPDATE OR DELETE ON stripe_entitlements
  FOR EACH ROW EXECUTE FUNCTION entitlement_row_changed();
CREATE TRIGGER plans_entitlement_version AFTER INSERT OR UPDATE OR DELETE ON plans
  FOR EACH STATEMENT EXECUTE FUNCTION entitlement_catalog_changed();
