/** Postgres activities of plan and seat changes: the catalog read and the scheduled-change markers. */
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

    /** Records a seat decrease scheduled for the renewal on the local row (the customer workflow is its only writer). */
    async setPendingQuantityChange(input: { subscriptionId: string; quantity: number; effectiveAt: number | null }): Promise<void> {
      await sql`
        UPDATE subscriptions
        SET pending_quantity = ${input.quantity},
            pending_quantity_effective_at = ${input.effectiveAt === null ? null : new Date(input.effectiveAt * 1000)},
            updated_at = now()
        WHERE id = ${input.subscriptionId}`;
    },

    /** Clears a scheduled seat decrease, only if it is still the one given (the renewal may have applied it). */
    async clearPendingQuantityChange(input: { subscriptionId: string; quantity: number }): Promise<void> {
      await sql`
        UPDATE subscriptions SET pending_quantity = NULL, pending_quantity_effective_at = NULL, updated_at = now()
        WHERE id = ${input.subscriptionId} AND pending_quantity = ${input.quantity}`;
    },
  };
}

export type PlanDbActivities = ReturnType<typeof createPlanDbActivities>;
