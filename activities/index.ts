/** Composes every activity from its dependencies; the worker registers the result. */
import type { Client } from '@temporalio/client';
import type Stripe from 'stripe';
import type { Config } from '../lib/config';
import type { Sql } from '../lib/db';
import { createBillingDbActivities, type ApplyFaults } from './billing-db';
import { parseRetrySchedule } from '../domain/dunning-policy';
import { createCustomerSignalActivities } from './customer-signal';
import { createDunningActivities } from './dunning';
import { createNotifyActivities, type Notifier } from './notify';
import { createPlanChangeStripeActivities } from './plan-change';
import { createPlanDbActivities } from './plans';
import { createReconciliationActivities } from './reconciliation';
import { createStripeReadActivities } from './stripe';

export interface ActivityDeps {
  sql: Sql;
  stripe: Stripe;
  config: Config;
  /** Client for signals sent from activities (reconciliation repairs). */
  temporalClient?: Client;
  /** Delivery channel for dunning notices; default: the notifications outbox (see activities/notify.ts). */
  notifier?: Notifier;
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
    ...createBillingDbActivities({ sql: deps.sql, dunningMaxAttempts: dunningMaxAttempts(deps.config), faults: deps.faults }),
    ...createStripeReadActivities({ stripe: deps.stripe }),
    ...createPlanDbActivities({ sql: deps.sql }),
    ...createPlanChangeStripeActivities({ stripe: deps.stripe }),
    ...createDunningActivities({ sql: deps.sql, stripe: deps.stripe, config: deps.config }),
    ...createNotifyActivities({ sql: deps.sql, notifier: deps.notifier }),
    ...createCustomerSignalActivities({ temporalClient: deps.temporalClient, config: deps.config }),
    ...createReconciliationActivities({ sql: deps.sql, stripe: deps.stripe, config: deps.config, temporalClient: deps.temporalClient }),
  };
}

export type Activities = ReturnType<typeof createActivities>;
