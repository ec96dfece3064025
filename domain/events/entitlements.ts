import { z } from 'zod';
import { defineHandler } from './shared';

/**
 * `data.object` of entitlements.active_entitlement_summary.updated: the customer's whole set of active
 * entitlements (not a delta), so the stored set is replaced. The object has no id of its own.
 */
export const ActiveEntitlementSummarySchema = z.looseObject({
  customer: z.string().min(1),
  entitlements: z.looseObject({
    data: z.array(z.looseObject({ lookup_key: z.string().min(1) })),
  }),
});

/** entitlements.active_entitlement_summary.updated: the active lookup keys, sorted and distinct. */
export const entitlementsActiveEntitlementSummaryUpdated = defineHandler(ActiveEntitlementSummarySchema, (summary) => ({
  customerId: summary.customer,
  objectId: summary.customer,
  data: {
    kind: 'entitlement_summary',
    lookupKeys: [...new Set(summary.entitlements.data.map((e) => e.lookup_key))].sort(),
  },
}));
