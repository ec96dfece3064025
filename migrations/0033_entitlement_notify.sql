-- Entitlement cache invalidation by LISTEN/NOTIFY: every bump of entitlement_versions (migration 0031's
-- triggers, whoever writes the rows) also notifies channel 'entitlements_changed' with the customer id;
-- '' (the catalog row) means every customer. Postgres delivers a notification only when its transaction
-- commits, and one per distinct payload per transaction: the apply transaction is what invalidates the
-- API's caches, once per customer it touched. The versions stay: a reader whose LISTEN is down revalidates by them.
CREATE OR REPLACE FUNCTION bump_entitlement_version(cid text) RETURNS void LANGUAGE sql AS $$
  INSERT INTO entitlement_versions (customer_id, version) VALUES (cid, 1)
  ON CONFLICT (customer_id) DO UPDATE SET version = entitlement_versions.version + 1;
  SELECT pg_notify('entitlements_changed', cid);
$$;
