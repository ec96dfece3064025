/**
 * The access state the app checks, from a customer's rows: the current subscription's status, then the
 * documented overrides, strongest last. One rule for the apply path (which writes it) and for
 * reconciliation (which checks it).
 */
import { accessStateFor, type AccessState } from '../subscription-state';
import { pickCurrentSubscription, type CurrentSubscriptionCandidate } from './current-subscription';

/** What the rule reads. */
export interface AccessFacts {
  subscriptions: readonly CurrentSubscriptionCandidate[];
  /** A dunning cycle of the customer is open. */
  inDunning: boolean;
  /** An open or lost dispute, or an actionable early fraud warning whose charge is neither refunded nor won. */
  disputed: boolean;
  /** Subscriptions with an uncollectible (written-off, unpaid) invoice. */
  writtenOffSubscriptionIds: readonly string[];
}

/**
 * active/trialing → active, past_due → grace, unpaid/paused/incomplete → restricted, canceled → suspended;
 * then: an open cycle holds active at grace; a dispute or fraud warning restricts; a written-off invoice
 * of the current subscription suspends until it is paid.
 */
export function deriveAccessState(facts: AccessFacts): AccessState {
  const current = pickCurrentSubscription(facts.subscriptions);
  let access = accessStateFor(current?.status ?? null);
  if (facts.inDunning && (access === 'active' || access === 'grace')) access = 'grace';
  if (facts.disputed && (access === 'active' || access === 'grace')) access = 'restricted';
  const writtenOff = current !== null && facts.writtenOffSubscriptionIds.includes(current.id);
  if (writtenOff && (access === 'active' || access === 'grace' || access === 'restricted')) access = 'suspended';
  return access;
}
