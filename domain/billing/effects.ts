/**
 * Effects are data: what must follow from a state transition, decided by the reducer, stored with the
 * state in one transaction (`applied_effects`), and run by the customer workflow idempotently by key.
 */
import type { DunningEvent } from '../messages';

/** Open a dunning cycle for a failed, unpaid invoice: child workflow `dunning:<invoiceId>` (started once). */
export interface StartDunningEffect {
  kind: 'start_dunning';
  target: string;
  invoiceId: string;
  subscriptionId: string;
  failure: { eventId: string; declineCode: string | null; at: number };
}

/** Tell an open cycle something new (another failure, a new payment method); deduped by event id in the child. */
export interface SignalDunningEffect {
  kind: 'signal_dunning';
  target: string;
  invoiceId: string;
  event: DunningEvent;
}

/** End an open cycle: its invoice was paid, voided or written off, or its subscription ended. */
export interface EndDunningEffect {
  kind: 'end_dunning';
  target: string;
  invoiceId: string;
  reason: 'paid' | 'voided' | 'uncollectible' | 'subscription_ended';
  event: DunningEvent;
}

/**
 * Tell the customer something that is not part of a dunning cycle: a declined upgrade (about its
 * proration invoice), or a trial ending (`invoiceId` then names the subscription: the ledger's subject).
 */
export interface NotifyEffect {
  kind: 'notify';
  target: string;
  notice: 'upgrade_declined' | 'trial_ending';
  invoiceId: string;
}

/** Void an invoice in Stripe (the proration invoice of an upgrade whose payment window expired). */
export interface VoidInvoiceEffect {
  kind: 'void_invoice';
  target: string;
  invoiceId: string;
  reason: string;
}

/**
 * Resume a subscription that Stripe paused because its trial ended without a payment method
 * (`trial_settings.end_behavior.missing_payment_method: pause`), now that the customer has one.
 * `paymentMethodId` becomes the subscription's default when it has none (null: the customer's default).
 */
export interface ResumeSubscriptionEffect {
  kind: 'resume_subscription';
  target: string;
  subscriptionId: string;
  paymentMethodId: string | null;
}

export type Effect = StartDunningEffect | SignalDunningEffect | EndDunningEffect | NotifyEffect | VoidInvoiceEffect | ResumeSubscriptionEffect;
export type EffectKind = Effect['kind'];

/** The idempotency key of an effect within its event: `<kind>:<target>`. */
export const effectKey = (e: Pick<Effect, 'kind' | 'target'>): string => `${e.kind}:${e.target}`;
