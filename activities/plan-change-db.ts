/** Postgres activities of plan changes: the catalog read and the scheduled-downgrade marker. */
import type { Plan } from '../domain/plan-catalog';
import type { Sql } from '../lib/db';
import { readPlans } from '../lib/plan-catalog-sync';

export interface PlanDbDeps {
  sql: Sql;
}

/** Creates the plan database activities. */
export function createPlanDbActivities({ sql }: PlanDbDeps) {
  return {
    /** The whole plan catalog, for the customer workflow's synchronous validators. */
    async loadPlanCatalog(): Promise<Plan[]> {
      return readPlans(sql);
    },

    /** Records a scheduled downgrade on the local row (the customer workflow is its only writer). */
    async setPendingPlanChange(input: { subscriptionId: string; planId: string; effectiveAt: number | null }): Promise<void> {
      await sql`
        UPDATE subscriptions
        SET pending_plan_id = ${input.planId},
            pending_plan_effective_at = ${input.effectiveAt === null ? null : new Date(input.effectiveAt * 1000)},
            updated_at = now()
        WHERE id = ${input.subscriptionId}`;
    },

    /** Clears a scheduled downgrade, only if it is still the one given (a renewal may have applied it). */
    async clearPendingPlanChange(input: { subscriptionId: string; planId: string }): Promise<void> {
      await sql`
        UPDATE subscriptions SET pending_plan_id = NULL, pending_plan_effective_at = NULL, updated_at = now()
        WHERE id = ${input.subscriptionId} AND pending_plan_id = ${input.planId}`;
    },
  };
}

export type PlanDbActivities = ReturnType<typeof createPlanDbActivities>;
