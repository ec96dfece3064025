import { z } from 'zod';
import { isKnownTimeZone } from '../quiet-hours';
import { defineHandler, hasOwn, IdRefSchema, idOf, isRecord, orNull, type EventHandler } from './shared';

/** `data.object` of customer.* events: the customer itself. */
export const CustomerObjectSchema = z.looseObject({
  id: z.string().min(1),
  email: z.string().nullish(),
  name: z.string().nullish(),
  invoice_settings: z.looseObject({ default_payment_method: IdRefSchema.nullish() }).nullish(),
  // Pre-PaymentMethods integrations (and 2017-era payloads) only set default_source.
  default_source: IdRefSchema.nullish(),
  metadata: z.record(z.string(), z.unknown()).nullish(),
});
export type CustomerObject = z.infer<typeof CustomerObjectSchema>;

/** Whether `previous_attributes` records a default payment method change, and the old value. */
export function defaultPaymentMethodChange(previous: Readonly<Record<string, unknown>> | null): {
  changed: boolean;
  previousId: string | null;
} {
  const settings = previous?.invoice_settings;
  if (isRecord(settings) && hasOwn(settings, 'default_payment_method')) {
    return { changed: true, previousId: idOf(settings.default_payment_method) };
  }
  if (hasOwn(previous, 'default_source')) return { changed: true, previousId: idOf(previous?.default_source) };
  return { changed: false, previousId: null };
}

/** The customer's `metadata.timezone` when it names a known IANA zone; otherwise null (the default zone applies). */
function timeZoneOf(metadata: Record<string, unknown> | null | undefined): string | null {
  const tz = metadata?.timezone;
  return typeof tz === 'string' && tz.length <= 64 && isKnownTimeZone(tz) ? tz : null;
}

function customerHandler(options: { deleted: boolean; readPrevious: boolean }): EventHandler {
  return defineHandler(CustomerObjectSchema, (customer, context) => {
    const change = options.readPrevious
      ? defaultPaymentMethodChange(context.previousAttributes)
      : { changed: false, previousId: null };
    return {
      customerId: customer.id,
      objectId: customer.id,
      data: {
        kind: 'customer',
        email: orNull(customer.email),
        name: orNull(customer.name),
        defaultPaymentMethodId: idOf(customer.invoice_settings?.default_payment_method) ?? idOf(customer.default_source),
        deleted: options.deleted,
        timezone: timeZoneOf(customer.metadata),
        previousDefaultPaymentMethodId: change.previousId,
        defaultPaymentMethodChanged: change.changed,
      },
    };
  });
}

/** customer.created */
export const customerCreated = customerHandler({ deleted: false, readPrevious: false });
/** customer.updated: detects default payment method changes from `previous_attributes`. */
export const customerUpdated = customerHandler({ deleted: false, readPrevious: true });
/** customer.deleted: `deleted` is true. */
export const customerDeleted = customerHandler({ deleted: true, readPrevious: false });
