/**
 * Customer emails of the notice ledger: (template kind, data) → subject, plain text and HTML.
 * Pure (Intl only, no clock): the same notice renders the same email on every retry.
 */
import { normalizeFinalAction } from './dunning-policy';

/** The emails a customer can get; `templateFor` picks one for a ledger notice. */
export type TemplateKind =
  | 'payment_failed_soft'
  | 'payment_failed_hard'
  | 'action_required'
  | 'final_attempt_ahead'
  | 'recovered'
  | 'subscription_canceled'
  | 'access_suspended'
  | 'payment_still_due'
  | 'upgrade_declined'
  | 'trial_ending';

/** What a template may show. Every nullable field is left out of the email when null. No card data. */
export interface NoticeTemplateData {
  customerName: string | null;
  planName: string | null;
  /** Invoice amount in the currency's minor units (Stripe's convention). */
  amountMinor: number | null;
  /** ISO 4217 code, either case. */
  currency: string | null;
  invoiceId: string | null;
  /** Stripe's hosted invoice page: where the customer pays or confirms a payment with their bank. */
  invoiceUrl: string | null;
  /** Our stable link that opens the Stripe Billing Portal. */
  cardUpdateUrl: string;
  /** ISO time of the next automatic retry. */
  nextAttemptAt: string | null;
  attempt: number;
  maxAttempts: number;
  /** Only ever turned into a friendly phrase, never shown as is. */
  declineCode: string | null;
  /** ISO time the trial ends. */
  trialEndsAt: string | null;
  /** Whether the customer has a payment method on file (null: not known); optional for callers that predate it. */
  hasPaymentMethod?: boolean | null;
  /** What Stripe does when the trial ends without one (trial_settings.end_behavior.missing_payment_method). */
  trialEndBehavior?: 'cancel' | 'pause' | 'create_invoice' | null;
  /** IANA timezone of the customer: dates are shown in their local time. */
  timeZone: string;
}

/** One email, ready for the mailer. */
export interface RenderedEmail {
  subject: string;
  text: string;
  html: string;
}

/**
 * The template of a ledger notice. `final_notice` depends on the cycle's final action (null: the
 * default, cancel). Throws on a notice kind or final action it does not know, naming it.
 */
export function templateFor(noticeKind: string, finalAction: string | null): TemplateKind {
  switch (noticeKind) {
    case 'payment_failed':
      return 'payment_failed_soft';
    case 'update_payment_method':
      return 'payment_failed_hard';
    case 'authenticate_payment':
      return 'action_required';
    case 'final_attempt_ahead':
    case 'recovered':
    case 'upgrade_declined':
    case 'trial_ending':
      return noticeKind;
    case 'final_notice': {
      const action = finalAction === null ? 'cancel' : normalizeFinalAction(finalAction);
      if (action === 'cancel') return 'subscription_canceled';
      if (action === 'mark_uncollectible') return 'access_suspended';
      if (action === 'leave_past_due') return 'payment_still_due';
      throw new Error(`no email template for final_notice with final action "${finalAction}"`);
    }
    default:
      throw new Error(`no email template for notice kind "${noticeKind}"`);
  }
}

// Stripe's units, not ISO's: https://docs.stripe.com/currencies#zero-decimal. ISK, HUF and TWD are
// two-decimal in the API whatever they are in cash, so they take the default exponent.
const ZERO_DECIMAL = new Set(['BIF', 'CLP', 'DJF', 'GNF', 'JPY', 'KMF', 'KRW', 'MGA', 'PYG', 'RWF', 'UGX', 'VND', 'VUV', 'XAF', 'XOF', 'XPF']);
const THREE_DECIMAL = new Set(['BHD', 'JOD', 'KWD', 'OMR', 'TND']);

/**
 * An amount in minor units in the currency's own format: `formatAmount(1999, 'usd')` → "$19.99",
 * `formatAmount(1200, 'jpy')` → "¥1,200", `formatAmount(1500, 'kwd')` → "KWD 1.500".
 * Throws a RangeError for a currency that is not a three-letter code.
 */
export function formatAmount(minor: number, currency: string, locale = 'en-US'): string {
  const code = currency.trim().toUpperCase();
  if (!/^[A-Z]{3}$/.test(code)) throw new RangeError(`not an ISO 4217 currency code: "${currency}"`);
  const exponent = ZERO_DECIMAL.has(code) ? 0 : THREE_DECIMAL.has(code) ? 3 : 2;
  return new Intl.NumberFormat(locale, { style: 'currency', currency: code }).format(minor / 10 ** exponent);
}

/** Renders the email of `kind`; every interpolated value is escaped in the HTML part. */
export function renderNotice(kind: TemplateKind, data: NoticeTemplateData): RenderedEmail {
  const d = prepare(data);
  const content = TEMPLATES[kind](d);
  return { subject: content.subject, text: toText(d, content), html: toHtml(d, content) };
}

/** The data with every value made printable: control characters gone, blanks and invalid values null. */
interface Prepared {
  name: string | null;
  plan: string | null;
  /** "your Pro plan", or "your subscription" without a plan name. */
  planPhrase: string;
  amount: string | null;
  invoiceUrl: string | null;
  cardUpdateUrl: string | null;
  nextAttempt: string | null;
  trialEnds: string | null;
  declinePhrase: string | null;
  /** Known to have no payment method: the trial reminder asks for one. */
  noPaymentMethod: boolean;
  trialEndBehavior: 'cancel' | 'pause' | 'create_invoice' | null;
}

interface Link {
  label: string;
  url: string;
}

interface Content {
  subject: string;
  paragraphs: string[];
  amountLabel: string;
  /** In order of importance: the first one is the call to action. */
  links: Link[];
}

function prepare(data: NoticeTemplateData): Prepared {
  const plan = clean(data.planName);
  const currency = clean(data.currency);
  const amount =
    data.amountMinor !== null && Number.isFinite(data.amountMinor) && currency !== null && /^[a-z]{3}$/i.test(currency)
      ? formatAmount(data.amountMinor, currency)
      : null;
  return {
    name: clean(data.customerName),
    plan,
    planPhrase: plan === null ? 'your subscription' : /\bplan$/i.test(plan) ? `your ${plan}` : `your ${plan} plan`,
    amount,
    invoiceUrl: clean(data.invoiceUrl),
    cardUpdateUrl: clean(data.cardUpdateUrl),
    nextAttempt: formatDate(data.nextAttemptAt, data.timeZone),
    trialEnds: formatDate(data.trialEndsAt, data.timeZone),
    declinePhrase: data.declineCode === null ? null : (DECLINE_PHRASES[data.declineCode] ?? null),
    noPaymentMethod: data.hasPaymentMethod === false,
    trialEndBehavior: data.trialEndBehavior ?? null,
  };
}

/** What happens when the trial ends without a payment method, as one sentence. */
function trialEndWithoutCard(d: Prepared): string {
  switch (d.trialEndBehavior) {
    case 'pause':
      return `Add one before then, or your subscription will be paused until you do.`;
    case 'cancel':
      return `Add one before then, or your subscription will be canceled when the trial ends.`;
    case 'create_invoice':
      return d.amount ? `Add one before then; otherwise we'll send you an invoice for ${d.amount} to pay.` : `Add one before then; otherwise we'll send you an invoice to pay.`;
    default:
      return `Add one before then to keep your subscription going.`;
  }
}

// Only reasons that are safe and useful to tell; fraud-related codes stay a plain "declined".
const DECLINE_PHRASES: Record<string, string> = {
  insufficient_funds: 'Your bank said there were not enough funds available.',
  expired_card: 'The card on file has expired.',
  processing_error: 'There was a temporary processing error.',
  card_velocity_exceeded: 'The card has reached its spending limit.',
  withdrawal_count_limit_exceeded: 'The card has reached its spending limit.',
};

const TEMPLATES: Record<TemplateKind, (d: Prepared) => Content> = {
  payment_failed_soft: (d) => ({
    subject: `Payment failed for ${d.planPhrase}`,
    paragraphs: [
      sentences(`We couldn't collect the payment for ${d.planPhrase}.`, d.declinePhrase),
      d.nextAttempt ? `We'll retry automatically on ${d.nextAttempt}. If you'd like us to use a different card, you can update it any time before then.` : `We'll retry automatically. If you'd like us to use a different card, you can update it any time.`,
    ],
    amountLabel: 'Amount due',
    links: [card(d, 'Update your card'), invoice(d, 'View the invoice')].filter(isLink),
  }),
  payment_failed_hard: (d) => ({
    subject: `Your card was declined for ${d.planPhrase}`,
    paragraphs: [
      sentences(`Your card was declined when we tried to collect the payment for ${d.planPhrase}.`, d.declinePhrase),
      `Please update your card; we'll try the payment again once it's updated.`,
    ],
    amountLabel: 'Amount due',
    links: [card(d, 'Update your card'), invoice(d, 'View the invoice')].filter(isLink),
  }),
  action_required: (d) => ({
    subject: `Confirm your payment for ${d.planPhrase}`,
    paragraphs: [
      `Your bank needs you to confirm the payment for ${d.planPhrase}.`,
      d.invoiceUrl ? `It only takes a moment: open the invoice and follow your bank's steps.` : `It only takes a moment: open the link below and follow your bank's steps.`,
    ],
    amountLabel: 'Amount due',
    links: [invoice(d, 'Confirm the payment'), card(d, 'Update your card')].filter(isLink),
  }),
  final_attempt_ahead: (d) => ({
    subject: `Final payment attempt coming up for ${d.planPhrase}`,
    paragraphs: [
      `We still couldn't collect the payment for ${d.planPhrase}.`,
      sentences(d.nextAttempt ? `We'll try one last time on ${d.nextAttempt}.` : `We'll try one last time soon.`, 'To keep your subscription, please update your card before then.'),
    ],
    amountLabel: 'Amount due',
    links: [card(d, 'Update your card'), invoice(d, 'Pay the invoice now')].filter(isLink),
  }),
  recovered: (d) => ({
    subject: `Payment received for ${d.planPhrase}`,
    paragraphs: [`Thanks, your payment for ${d.planPhrase} went through. There's nothing else you need to do.`],
    amountLabel: 'Amount paid',
    links: [invoice(d, 'View the invoice'), card(d, 'Manage your card')].filter(isLink),
  }),
  subscription_canceled: (d) => ({
    subject: `${capitalize(d.planPhrase)} has been canceled`,
    paragraphs: [
      `We couldn't collect the payment for ${d.planPhrase} after several attempts, so it has been canceled.`,
      `If you'd like to continue, update your card and subscribe again.`,
    ],
    amountLabel: 'Unpaid amount',
    links: [card(d, 'Update your card'), invoice(d, 'View the invoice')].filter(isLink),
  }),
  access_suspended: (d) => ({
    subject: `Access to ${d.planPhrase} is paused`,
    paragraphs: [
      `We couldn't collect the payment for ${d.planPhrase} after several attempts, so access is paused.`,
      `Paying the invoice restores it right away.`,
    ],
    amountLabel: 'Amount due',
    links: [invoice(d, 'Pay the invoice'), card(d, 'Update your card')].filter(isLink),
  }),
  payment_still_due: (d) => ({
    subject: `Payment still due for ${d.planPhrase}`,
    paragraphs: [
      `We couldn't collect the payment for ${d.planPhrase}, and we've stopped retrying automatically.`,
      `The invoice is still due: please pay it or update your card.`,
    ],
    amountLabel: 'Amount due',
    links: [invoice(d, 'Pay the invoice'), card(d, 'Update your card')].filter(isLink),
  }),
  upgrade_declined: (d) => ({
    subject: `Your plan upgrade didn't go through`,
    paragraphs: [
      sentences(`The payment for your plan upgrade was declined, so your plan hasn't changed.`, d.declinePhrase),
      `You can update your card and try the upgrade again.`,
    ],
    amountLabel: 'Upgrade amount',
    links: [card(d, 'Update your card'), invoice(d, 'View the invoice')].filter(isLink),
  }),
  trial_ending: (d) => {
    const trial = d.plan === null ? 'your trial' : `your ${d.plan} trial`;
    return {
      subject: d.trialEnds ? `${capitalize(trial)} ends on ${d.trialEnds}` : `${capitalize(trial)} is ending soon`,
      paragraphs: [
        d.trialEnds ? `${capitalize(trial)} ends on ${d.trialEnds}.` : `${capitalize(trial)} is ending soon.`,
        d.noPaymentMethod
          ? sentences(`You haven't added a payment method yet.`, trialEndWithoutCard(d))
          : sentences(d.amount ? `After that, we'll charge ${d.amount} to your card on file.` : `After that, we'll charge your card on file.`, 'Please make sure it is up to date.'),
      ],
      amountLabel: 'First payment',
      links: [card(d, d.noPaymentMethod ? 'Add a payment method' : 'Update your card'), invoice(d, 'View the invoice')].filter(isLink),
    };
  },
};

function toText(d: Prepared, c: Content): string {
  const details = [d.plan && `Plan: ${d.plan}`, d.amount && `${c.amountLabel}: ${d.amount}`].filter(isString);
  const blocks = [
    d.name ? `Hi ${d.name},` : 'Hello,',
    ...c.paragraphs,
    details.join('\n'),
    c.links.map((l) => `${l.label}: ${l.url}`).join('\n'),
  ];
  return `${blocks.filter((b) => b !== '').join('\n\n')}\n`;
}

function toHtml(d: Prepared, c: Content): string {
  const details = [d.plan && row('Plan', d.plan), d.amount && row(c.amountLabel, d.amount)].filter(isString);
  const [action, ...others] = c.links;
  return [
    '<!doctype html>',
    '<html lang="en">',
    `<head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${escapeHtml(c.subject)}</title></head>`,
    '<body style="margin:0;padding:24px;font-family:-apple-system,BlinkMacSystemFont,\'Segoe UI\',Helvetica,Arial,sans-serif;font-size:15px;line-height:1.5;color:#1a1a1a;">',
    `<p>${escapeHtml(d.name ? `Hi ${d.name},` : 'Hello,')}</p>`,
    ...c.paragraphs.map((p) => `<p>${escapeHtml(p)}</p>`),
    details.length ? `<table role="presentation" style="border-collapse:collapse;margin:16px 0;">${details.join('')}</table>` : '',
    action ? `<p style="margin:24px 0;">${linkHtml(action, 'display:inline-block;padding:10px 18px;background:#1a1a1a;color:#ffffff;border-radius:6px;text-decoration:none;')}</p>` : '',
    ...others.map((l) => `<p>${linkHtml(l, 'color:#1a1a1a;')}</p>`),
    '</body>',
    '</html>',
    '',
  ]
    .filter((line) => line !== '')
    .join('\n');
}

function row(label: string, value: string): string {
  return `<tr><td style="padding:2px 16px 2px 0;color:#666666;">${escapeHtml(label)}</td><td style="padding:2px 0;">${escapeHtml(value)}</td></tr>`;
}

/** Only an http(s) URL becomes a link; anything else is shown as inert text. */
function linkHtml(link: Link, style: string): string {
  if (!/^https?:\/\/[^\s<>"'`]+$/i.test(link.url)) return `${escapeHtml(link.label)}: ${escapeHtml(link.url)}`;
  return `<a href="${escapeHtml(link.url)}" style="${style}">${escapeHtml(link.label)}</a>`;
}

function card(d: Prepared, label: string): Link | null {
  return d.cardUpdateUrl === null ? null : { label, url: d.cardUpdateUrl };
}

function invoice(d: Prepared, label: string): Link | null {
  return d.invoiceUrl === null ? null : { label, url: d.invoiceUrl };
}

function isLink(l: Link | null): l is Link {
  return l !== null;
}

function isString(s: string | null): s is string {
  return typeof s === 'string';
}

function sentences(...parts: Array<string | null>): string {
  return parts.filter(isString).join(' ');
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** Control characters (a line break in a name could forge a line of the email) become spaces; blank is null. */
function clean(value: string | null | undefined): string | null {
  if (typeof value !== 'string') return null;
  const v = value.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').trim();
  return v === '' ? null : v;
}

/** "Tuesday, March 3, 2026" in the customer's timezone (UTC if it is unknown); null for a missing or invalid time. */
function formatDate(iso: string | null, timeZone: string): string | null {
  if (iso === null) return null;
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return null;
  const options: Intl.DateTimeFormatOptions = { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' };
  try {
    return new Intl.DateTimeFormat('en-US', { ...options, timeZone }).format(t);
  } catch {
    return new Intl.DateTimeFormat('en-US', { ...options, timeZone: 'UTC' }).format(t);
  }
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
