/** Composes every activity from its dependencies; the worker registers the result. */
import type { Client } from '@temporalio/client';
import type Stripe from 'stripe';
import { appWebhooksEnabled, type Config } from '../lib/config';
import type { Sql } from '../lib/db';
import { createBillingDbActivities, type ApplyFaults } from './billing-db';
import { parseRetrySchedule } from '../domain/dunning-policy';
import { createCustomerSignalActivities } from './customer-signal';
import { createDunningActivities } from './dunning';
import { createAppWebhookActivities } from './app-webhooks';
import { recordAppEvents } from './db/app-events';
import { createNotifyActivities } from './notify';
import type { Mailer } from '../lib/mailer';
import { createPlanChangeStripeActivities } from './plan-change';
import { createPlanDbActivities } from './plan-change-db';
import { createReconciliationActivities } from './reconciliation';
import { createRetentionActivities } from './retention';
import { createSeatStripeActivities } from './seats';
import { createStripeReadActivities } from './stripe';
import { createTrialActivities } from './trial';

export interface ActivityDeps {
  sql: Sql;
  stripe: Stripe;
  config: Config;
  /** Client for signals sent from activities (reconciliation repairs). */
  temporalClient?: Client;
  /** The SMTP sender of notices; default: built from SMTP_URL / NOTIFY_FROM (see activities/notify.ts). */
  mailer?: Mailer;
  /** Test-only fault hooks of the apply path (simulation, chaos). */
  faults?: ApplyFaults;
}

/** The configured schedule's length; the default schedule's when the setting does not parse (the dunning child reports it loudly). */
function dunningMaxAttempts(config: Config): number {
  try {
    return parseRetrySchedule(config.DUNNING_RETRY_DAYS).length;
  } catch {
    return 4;
  }
}

/** All activities, keyed by their registered names. */
export function createActivities(deps: ActivityDeps) {
  return {
    ...createBillingDbActivities({
      sql: deps.sql,
      dunningMaxAttempts: dunningMaxAttempts(deps.config),
      faults: deps.faults,
      appEvents: appWebhooksEnabled(deps.config),
    }),
    ...createStripeReadActivities({ stripe: deps.stripe }),
    ...createTrialActivities({ stripe: deps.stripe }),
    ...createPlanDbActivities({ sql: deps.sql }),
    ...createPlanChangeStripeActivities({
      stripe: deps.stripe,
      recordAppEvent: appWebhooksEnabled(deps.config) ? (draft) => deps.sql.begin((tx) => recordAppEvents(tx, [draft])).then(() => undefined) : undefined,
    }),
    ...createSeatStripeActivities({ stripe: deps.stripe }),
    ...createDunningActivities({ sql: deps.sql, stripe: deps.stripe, config: deps.config }),
    ...createNotifyActivities({ sql: deps.sql, config: deps.config, mailer: deps.mailer }),
    ...createAppWebhookActivities({ sql: deps.sql, config: deps.config }),
    ...createCustomerSignalActivities({ temporalClient: deps.temporalClient, config: deps.config }),
    ...createReconciliationActivities({ sql: deps.sql, stripe: deps.stripe, config: deps.config, temporalClient: deps.temporalClient }),
    ...createRetentionActivities({ sql: deps.sql, config: deps.config }),
  };
}

export type Activities = ReturnType<typeof createActivities>;
