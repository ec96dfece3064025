/** Structured JSON logging (pino) with secret redaction. */
import { AsyncLocalStorage } from 'node:async_hooks';
import pino, { type Logger } from 'pino';

export type { Logger };

/** Fields (the HTTP request id) added to every line logged while one request is handled. */
export const logContext = new AsyncLocalStorage<Record<string, unknown>>();

/** Paths whose values never reach a log line. */
export const REDACT_PATHS = [
  'secret',
  '*.secret',
  'password',
  '*.password',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'headers["stripe-signature"]',
  'req.headers.authorization',
  'stripeSecretKey',
  '*.STRIPE_SECRET_KEY',
  '*.STRIPE_WEBHOOK_SECRET',
  '*.ADMIN_TOKEN',
  '*.API_TOKEN',
  '*.TEMPORAL_API_KEY',
  'apiKey',
  '*.apiKey',
  '*.APP_WEBHOOK_SECRET',
  '*.LINK_SIGNING_SECRET',
  '*.SMTP_URL',
  'card',
  '*.card',
  'payload',
  '*.payload',
  // Temporal adds the activity's task token to activity log lines: it can complete the activity.
  'taskToken',
];

/** Creates the process logger; `destination` lets tests capture lines. */
export function createLogger(opts: { level?: string; name?: string; destination?: pino.DestinationStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      base: { service: opts.name ?? 'billing' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      mixin: () => logContext.getStore() ?? {},
    },
    opts.destination,
  );
}
