/**
 * The one place that reads the environment. Entry points call loadConfig(process.env); everything
 * else receives a typed Config.
 */
import { existsSync } from 'node:fs';
import { loadClientConfigProfile, type ClientConfigProfile, type ClientConfigTLS } from '@temporalio/envconfig';
import { z } from 'zod';

const nonEmpty = (name: string) => z.string({ error: `${name} is required` }).trim().min(1, `${name} is required`);

const optionalNonEmpty = z
  .string()
  .trim()
  .optional()
  .transform((v) => (v === undefined || v === '' ? undefined : v));

/** Whether `name` is a timezone this runtime knows (IANA). */
export function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

export const ConfigSchema = z
  .object({
    NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
    PORT: z.coerce.number().int().min(0).max(65535).default(3000),
    DATABASE_URL: nonEmpty('DATABASE_URL').refine((v) => /^postgres(ql)?:\/\//.test(v), {
      message: 'DATABASE_URL must be a postgres:// or postgresql:// URL',
    }),
    DATABASE_POOL_MAX: z.coerce.number().int().min(1).max(200).default(10),
    TEMPORAL_ADDRESS: z.string().trim().min(1).default('127.0.0.1:7233'),
    TEMPORAL_NAMESPACE: z.string().trim().min(1).default('default'),
    TEMPORAL_TASK_QUEUE: z.string().trim().min(1).default('billing'),
    /**
     * The Temporal connection beyond address and namespace, read by @temporalio/envconfig (lib/temporal.ts):
     * a TOML file of profiles (default ~/.config/temporalio/temporal.toml when it exists) and the profile in it;
     * every TEMPORAL_* variable wins over the profile.
     */
    TEMPORAL_CONFIG_FILE: optionalNonEmpty,
    TEMPORAL_PROFILE: optionalNonEmpty,
    /** Temporal Cloud API key (sent as a bearer token); turns TLS on. */
    TEMPORAL_API_KEY: optionalNonEmpty,
    /** true: TLS with the system roots (or the CA below); false: plaintext even if the profile says TLS. */
    TEMPORAL_TLS: optionalNonEmpty.pipe(z.enum(['true', 'false', '1', '0'], { error: 'TEMPORAL_TLS must be true or false' }).optional()),
    TEMPORAL_TLS_SERVER_CA_CERT_PATH: optionalNonEmpty,
    TEMPORAL_TLS_SERVER_CA_CERT_DATA: optionalNonEmpty,
    /** mTLS: the client certificate and its key (both, as paths or PEM data). */
    TEMPORAL_TLS_CLIENT_CERT_PATH: optionalNonEmpty,
    TEMPORAL_TLS_CLIENT_CERT_DATA: optionalNonEmpty,
    TEMPORAL_TLS_CLIENT_KEY_PATH: optionalNonEmpty,
    TEMPORAL_TLS_CLIENT_KEY_DATA: optionalNonEmpty,
    /** The name the server certificate is checked against, when it differs from the address's host. */
    TEMPORAL_TLS_SERVER_NAME: optionalNonEmpty,
    STRIPE_SECRET_KEY: nonEmpty('STRIPE_SECRET_KEY').refine((v) => /^(sk|rk)_(test|live)_/.test(v) || /^sk_/.test(v), {
      message: 'STRIPE_SECRET_KEY must start with sk_ or rk_',
    }),
    /** One secret, or several separated by commas while rotating (new first). */
    STRIPE_WEBHOOK_SECRET: nonEmpty('STRIPE_WEBHOOK_SECRET').refine(
      (v) => v.split(',').every((s) => s.trim().startsWith('whsec_')),
      { message: 'STRIPE_WEBHOOK_SECRET must be one or more comma-separated whsec_ secrets' },
    ),
    STRIPE_API_BASE: optionalNonEmpty.pipe(
      z
        .string()
        .url({ message: 'STRIPE_API_BASE must be a URL such as http://127.0.0.1:12111' })
        .refine((v) => /^https?:\/\//.test(v), { message: 'STRIPE_API_BASE must use http or https' })
        .optional(),
    ),
    ADMIN_TOKEN: optionalNonEmpty.pipe(z.string().min(16, 'ADMIN_TOKEN must be at least 16 characters').optional()),
    API_TOKEN: optionalNonEmpty.pipe(z.string().min(16, 'API_TOKEN must be at least 16 characters').optional()),
    /** `token` (default): app-facing endpoints need API_TOKEN, required in production. `none`: open, for a private network only (logged loudly). */
    API_AUTH: z.enum(['token', 'none'], { error: 'API_AUTH must be "token" or "none"' }).default('token'),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    WEBHOOK_MAX_BODY_BYTES: z.coerce.number().int().min(1024).default(1024 * 1024),
    WEBHOOK_PAYLOAD_STORE_LIMIT_BYTES: z.coerce.number().int().min(1024).default(256 * 1024),
    SWEEPER_INTERVAL_MS: z.coerce.number().int().min(100).default(15_000),
    /** false: this API replica only stores webhooks, other replicas dispatch (default true). */
    DISPATCH_ENABLED: z
      .enum(['true', 'false'])
      .default('true')
      .transform((v) => v === 'true'),
    /** The dispatcher (api/dispatcher.ts): signals in flight, admission window bounds and lag target, signal size. */
    DISPATCH_MAX_IN_FLIGHT: z.coerce.number().int().min(1).max(256).default(16),
    DISPATCH_MAX_PENDING_WORKFLOWS: z.coerce.number().int().min(1).default(200),
    DISPATCH_TARGET_LAG_MS: z.coerce.number().int().min(100).default(2000),
    DISPATCH_BATCH_MAX_EVENTS: z.coerce.number().int().min(1).max(1000).default(100),
    DISPATCH_BATCH_MAX_BYTES: z.coerce.number().int().min(1024).max(1024 * 1024).default(256 * 1024),
    /** The dispatcher's fallback wake-up when no LISTEN notification arrives. */
    DISPATCH_POLL_MS: z.coerce.number().int().min(10).default(1000),
    /** Ingest first: the dispatcher holds back while this many webhook requests are in flight (0: never)… */
    DISPATCH_YIELD_IN_FLIGHT: z.coerce.number().int().min(0).default(8),
    /** …unless the oldest stored delivery has waited this long. */
    DISPATCH_MAX_DEFER_MS: z.coerce.number().int().min(0).default(10_000),
    /** How long a replica's claim holds a row: rows of a replica that died are taken over after it. */
    DISPATCH_LEASE_MS: z.coerce.number().int().min(1000).default(30_000),
    /** A delivery 'dispatched' but not applied for longer is stuck: counted, listed and re-sent by the sweeper. */
    STUCK_DISPATCH_THRESHOLD_MS: z.coerce.number().int().min(1000).default(300_000),
    DUNNING_RETRY_DAYS: z.string().default('1,3,5,7'),
    /** cancel | mark_uncollectible | leave_past_due; the retired 'mark_unpaid' reads as mark_uncollectible. */
    DUNNING_FINAL_ACTION: z
      .enum(['cancel', 'mark_uncollectible', 'leave_past_due', 'mark_unpaid'])
      .default('cancel')
      .transform((v) => (v === 'mark_unpaid' ? 'mark_uncollectible' : v)),
    RECONCILIATION_CRON: z.string().default('0 3 * * *'),
    RECONCILIATION_TIMEZONE: z.string().default('UTC'),
    RECONCILIATION_CATCHUP_WINDOW: z.string().default('1 hour'),
    STRIPE_RATE_LIMIT_PER_SECOND: z.coerce.number().positive().default(20),
    WORKER_METRICS_ADDRESS: optionalNonEmpty,
    TEMPORAL_UI_URL: z.string().default('http://localhost:8233'),
    /** The plan catalog as inline JSON (wins over PLANS_FILE); see lib/plan-catalog-sync.ts. */
    PLANS_JSON: optionalNonEmpty,
    /** Path of a plan catalog JSON file; default config/plans.json. */
    PLANS_FILE: optionalNonEmpty,
    /** Email over SMTP (nodemailer), e.g. smtp://127.0.0.1:1025 (Mailpit) or smtps://user:pass@host:465. Unset: notices stay in the outbox. */
    SMTP_URL: optionalNonEmpty.pipe(
      z
        .string()
        .refine((v) => /^smtps?:\/\//.test(v), { message: 'SMTP_URL must be an smtp:// or smtps:// URL' })
        .optional(),
    ),
    /** The From of customer emails, e.g. "Acme Billing <billing@acme.test>". */
    NOTIFY_FROM: optionalNonEmpty,
    /** Quiet hours in the customer's local time, "HH-HH" (start inclusive, end exclusive; may wrap midnight), or "off". */
    NOTIFY_QUIET_HOURS: z
      .string()
      .trim()
      .default('21-08')
      .refine((v) => v === 'off' || /^([01]?\d|2[0-3])-([01]?\d|2[0-3])$/.test(v), {
        message: 'NOTIFY_QUIET_HOURS must be "HH-HH" (e.g. 21-08) or "off"',
      }),
    /** Timezone of customers whose Stripe metadata has no valid `timezone` (IANA name). */
    NOTIFY_TIMEZONE: z
      .string()
      .trim()
      .default('UTC')
      .refine((v) => isTimeZone(v), { message: 'NOTIFY_TIMEZONE must be an IANA timezone such as Europe/Paris' }),
    /** Where this service is reachable from customers' browsers: base of the card-update link in emails and of the dev checkout page. */
    PUBLIC_BASE_URL: optionalNonEmpty.pipe(z.string().url({ message: 'PUBLIC_BASE_URL must be a URL' }).optional()),
    /** Where the Billing Portal sends the customer back after a card update from an email link. */
    CARD_UPDATE_RETURN_URL: optionalNonEmpty.pipe(z.string().url({ message: 'CARD_UPDATE_RETURN_URL must be a URL' }).optional()),
    /** HMAC key of the card-update links in emails; unset: derived from STRIPE_WEBHOOK_SECRET. */
    LINK_SIGNING_SECRET: optionalNonEmpty.pipe(z.string().min(16, 'LINK_SIGNING_SECRET must be at least 16 characters').optional()),
    /** Signed outgoing webhooks to the app (Billing-Signature header). Unset: no app events are recorded. */
    APP_WEBHOOK_URL: optionalNonEmpty.pipe(
      z
        .string()
        .url({ message: 'APP_WEBHOOK_URL must be a URL' })
        .refine((v) => /^https?:\/\//.test(v), { message: 'APP_WEBHOOK_URL must use http or https' })
        .optional(),
    ),
    APP_WEBHOOK_SECRET: optionalNonEmpty.pipe(z.string().min(16, 'APP_WEBHOOK_SECRET must be at least 16 characters').optional()),
    /** Time limit of one delivery attempt to APP_WEBHOOK_URL. */
    APP_WEBHOOK_TIMEOUT_MS: z.coerce.number().int().min(100).max(60_000).default(10_000),
    /** How often the worker's outbox relay looks for notices and app webhooks whose workflow is not started yet. */
    OUTBOX_RELAY_POLL_MS: z.coerce.number().int().min(50).default(500),
    /** Window of the checkout success-rate gauge. */
    CHECKOUT_SUCCESS_WINDOW_HOURS: z.coerce.number().int().min(1).max(24 * 90).default(24),
    /** When a seat decrease takes effect: at the renewal (a Subscription Schedule) or now, with a credit proration. */
    SEAT_DECREASE_AT: z.enum(['period_end', 'now'], { error: 'SEAT_DECREASE_AT must be "period_end" or "now"' }).default('period_end'),
    /** Days the `retention-daily` schedule keeps delivery-log payloads and settled rows (rows that dedup something: at least 35). */
    WEBHOOK_RETENTION_DAYS: z.coerce
      .number()
      .int()
      .min(7, 'WEBHOOK_RETENTION_DAYS must be at least 7 (Stripe redelivers an event for up to 3 days; keep a margin)')
      .max(36_500)
      .default(90),
  })
  .superRefine((c, ctx) => {
    if (c.NODE_ENV === 'production' && !c.ADMIN_TOKEN) {
      ctx.addIssue({ code: 'custom', path: ['ADMIN_TOKEN'], message: 'ADMIN_TOKEN is required when NODE_ENV=production' });
    }

    if (c.APP_WEBHOOK_URL && !c.APP_WEBHOOK_SECRET) {
      ctx.addIssue({ code: 'custom', path: ['APP_WEBHOOK_SECRET'], message: 'APP_WEBHOOK_SECRET is required when APP_WEBHOOK_URL is set' });
    }
    if (c.SMTP_URL && !c.NOTIFY_FROM) {
      ctx.addIssue({ code: 'custom', path: ['NOTIFY_FROM'], message: 'NOTIFY_FROM is required when SMTP_URL is set' });
    }
  });

export type Config = z.infer<typeof ConfigSchema>;

/** Thrown for a missing or invalid environment variable; the message names every offending variable. */
export class ConfigError extends Error {
  constructor(readonly variables: string[], message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Parses the environment; throws ConfigError naming each bad variable. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE default from the envconfig profile, then to the local dev server.
  const temporal = checkTemporalProfile(env);
  const parsed = ConfigSchema.safeParse({
    ...env,
    TEMPORAL_ADDRESS: env.TEMPORAL_ADDRESS ?? temporal.profile?.address,
    TEMPORAL_NAMESPACE: env.TEMPORAL_NAMESPACE ?? temporal.profile?.namespace,
  });
  if (parsed.success && temporal.issues.length === 0) return parsed.data;
  const issues = [...temporal.issues, ...(parsed.success ? [] : parsed.error.issues.map((i) => ({ name: String(i.path[0] ?? 'environment'), message: i.message })))];
  const variables: string[] = [];
  const lines = issues.map(({ name, message }) => {
    if (!variables.includes(name)) variables.push(name);
    const msg = message.includes(name) ? message : `${name}: ${message}`;
    return `  - ${msg}`;
  });
  throw new ConfigError(variables, `Invalid configuration:\n${lines.join('\n')}`);
}

/** The environment envconfig reads: empty values dropped (an empty TEMPORAL_API_KEY would otherwise turn TLS on). */
export function temporalEnv(env: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => typeof e[1] === 'string' && e[1].trim() !== ''));
}

/**
 * The Temporal profile (TOML file, then TEMPORAL_* variables, as @temporalio/envconfig merges them), with what
 * envconfig would accept silently but must not: a named config file that does not exist, half a client key pair,
 * an unreadable certificate file.
 */
function checkTemporalProfile(env: Record<string, string | undefined>): { profile?: ClientConfigProfile; issues: { name: string; message: string }[] } {
  const e = temporalEnv(env);
  const file = e.TEMPORAL_CONFIG_FILE;
  if (file && !existsSync(file)) return { issues: [{ name: 'TEMPORAL_CONFIG_FILE', message: `TEMPORAL_CONFIG_FILE: no such file: ${file}` }] };
  let profile: ClientConfigProfile;
  try {
    profile = loadClientConfigProfile({ overrideEnvVars: e });
  } catch (err) {
    const name = /profile/i.test((err as Error).message) && e.TEMPORAL_PROFILE ? 'TEMPORAL_PROFILE' : 'TEMPORAL_CONFIG_FILE';
    return { issues: [{ name, message: `${name}: ${(err as Error).message}` }] };
  }
  const issues: { name: string; message: string }[] = [];
  const tls = profile.tls;
  if (tls && !tls.disabled) {
    if (Boolean(tls.clientCert) !== Boolean(tls.clientKey)) {
      const name = tls.clientCert ? 'TEMPORAL_TLS_CLIENT_KEY_PATH' : 'TEMPORAL_TLS_CLIENT_CERT_PATH';
      issues.push({ name, message: `${name}: mTLS needs both a client certificate and its key (TEMPORAL_TLS_CLIENT_CERT_* and TEMPORAL_TLS_CLIENT_KEY_*)` });
    }
    const files: [string, ClientConfigTLS['clientCert']][] = [
      ['TEMPORAL_TLS_SERVER_CA_CERT_PATH', tls.serverCACert],
      ['TEMPORAL_TLS_CLIENT_CERT_PATH', tls.clientCert],
      ['TEMPORAL_TLS_CLIENT_KEY_PATH', tls.clientKey],
    ];
    for (const [name, source] of files) {
      if (source && 'path' in source && !existsSync(source.path)) issues.push({ name, message: `${name}: no such file: ${source.path}` });
    }
  }
  return { profile, issues };
}

/** The parsed list of webhook signing secrets (more than one during rotation). */
export function webhookSecrets(config: Pick<Config, 'STRIPE_WEBHOOK_SECRET'>): string[] {
  return config.STRIPE_WEBHOOK_SECRET.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Runs an entry point's config load, printing one clear message and exiting on failure. */
export function loadConfigOrExit(env: Record<string, string | undefined> = process.env): Config {
  try {
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
}

/** Whether customer emails are sent (SMTP_URL and NOTIFY_FROM set); otherwise notices stay in the outbox. */
export function emailEnabled(config: Pick<Config, 'SMTP_URL' | 'NOTIFY_FROM'>): boolean {
  return Boolean(config.SMTP_URL && config.NOTIFY_FROM);
}

/** Whether app events are recorded and delivered (APP_WEBHOOK_URL set). */
export function appWebhooksEnabled(config: Pick<Config, 'APP_WEBHOOK_URL' | 'APP_WEBHOOK_SECRET'>): boolean {
  return Boolean(config.APP_WEBHOOK_URL && config.APP_WEBHOOK_SECRET);
}

/** Base URL of links in emails and dev pages: PUBLIC_BASE_URL, else this API on localhost. */
export function publicBaseUrl(config: Pick<Config, 'PUBLIC_BASE_URL' | 'PORT'>): string {
  return (config.PUBLIC_BASE_URL ?? `http://localhost:${config.PORT}`).replace(/\/+$/, '');
}

/**
 * The API refuses to start in production with its app-facing endpoints open by accident: API_TOKEN is
 * required unless API_AUTH=none says so explicitly. Throws a ConfigError naming API_TOKEN.
 */
export function assertApiAuthConfigured(config: Pick<Config, 'NODE_ENV' | 'API_AUTH' | 'API_TOKEN'>): void {
  if (config.NODE_ENV === 'production' && config.API_AUTH === 'token' && !config.API_TOKEN) {
    throw new ConfigError(
      ['API_TOKEN'],
      'Invalid configuration:\n  - API_TOKEN is required when NODE_ENV=production (set API_AUTH=none only to leave /checkout and /customers/* open on a private network)',
    );
  }
}
