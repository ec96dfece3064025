-- migrate: no-transaction
-- Retention deletes notices that ended (sent, canceled, suppressed, given up) oldest first.
CREATE INDEX CONCURRENTLY notifications_retention_idx ON notifications (created_at, id)
  WHERE status IN ('sent', 'canceled', 'suppressed', 'given_up');
