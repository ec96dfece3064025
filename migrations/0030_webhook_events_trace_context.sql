-- Tracing (lib/tracing.ts): the webhook request's W3C traceparent, stored with the delivery so the
-- dispatcher's signal and the apply transaction continue the same trace after the database hand-off.
-- NULL when tracing is off. Nullable without a default: a metadata-only change, no table rewrite.
ALTER TABLE webhook_events ADD COLUMN trace_context text;
