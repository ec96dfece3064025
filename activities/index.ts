/** Composes every activity from its dependencies; the worker registers the result. */
import type Stripe from 'stripe';
import type { Config } from '../lib/config';
import type { Sql } from '../lib/db';
import { createBillingDbActivities } from './billing-db';
import { createStripeReadActivities } from './stripe';

export interface ActivityDeps {
  sql: Sql;
  stripe: Stripe;
  config: Config;
}

/** All activities, keyed by their registered names. */
export function createActivities(deps: ActivityDeps) {
  return {
    ...createBillingDbActivities({ sql: deps.sql }),
    ...createStripeReadActivities({ stripe: deps.stripe }),
  };
}

export type Activities = ReturnType<typeof createActivities>;
