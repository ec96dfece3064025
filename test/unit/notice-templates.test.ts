import { describe, expect, it } from 'vitest';
import { formatAmount, renderNotice, templateFor, type NoticeTemplateData, type TemplateKind } from '../../domain/notice-templates';

const KINDS: TemplateKind[] = [
  'payment_failed_soft',
  'payment_failed_hard',
  'action_required',
  'final_attempt_ahead',
  'recovered',
  'subscription_canceled',
  'access_suspended',
  'payment_still_due',
  'upgrade_declined',
  'trial_ending',
];

const INVOICE_URL = 'https://invoice.stripe.com/i/acct_1/test_inv_123';
const CARD_URL = 'https://billing.example.com/card-update/cus_123?sig=abc';

function data(overrides: Partial<NoticeTemplateData> = {}): NoticeTemplateData {
  return {
    customerName: 'Ann Lee',
    planName: 'Pro',
    amountMinor: 4900,
    currency: 'usd',
    invoiceId: 'in_123',
    invoiceUrl: INVOICE_URL,
    cardUpdateUrl: CARD_URL,
    nextAttemptAt: '2026-03-03T10:00:00Z',
    attempt: 1,
    maxAttempts: 4,
    declineCode: 'insufficient_funds',
    trialEndsAt: '2026-03-10T10:00:00Z',
    timeZone: 'America/New_York',
    ...overrides,
  };
}

const escapeAttr = (s: string) => s.replace(/&/g, '&amp;');

describe('formatAmount', () => {
  it('formats two-, zero- and three-decimal currencies from minor units', () => {
    expect(formatAmount(4900, 'usd')).toBe('$49.00');
    expect(formatAmount(1999, 'EUR')).toBe('€19.99');
    expect(formatAmount(1200, 'jpy')).toBe('¥1,200');
    expect(formatAmount(50000, 'krw')).toBe('₩50,000');
    expect(formatAmount(1500, 'kwd')).toBe('KWD\u00a01.500');
    expect(formatAmount(12345, 'bhd')).toBe('BHD\u00a012.345');
  });

  it('follows the locale it is given', () => {
    expect(formatAmount(1999, 'eur', 'de-DE')).toBe('19,99\u00a0€');
  });

  it('rejects something that is not a currency code', () => {
    expect(() => formatAmount(100, 'dollars')).toThrow(RangeError);
  });
});

describe('renderNotice', () => {
  const currencies = [
    { currency: 'usd', amountMinor: 4900, shown: '$49.00' },
    { currency: 'EUR', amountMinor: 1999, shown: '€19.99' },
    { currency: 'jpy', amountMinor: 1200, shown: '¥1,200' },
    { currency: 'kwd', amountMinor: 1500, shown: 'KWD\u00a01.500' },
  ];

  for (const kind of KINDS) {
    for (const { currency, amountMinor, shown } of currencies) {
      it(`${kind} shows the plan, ${currency.toUpperCase()} amount and both links in text and HTML`, () => {
        const email = renderNotice(kind, data({ currency, amountMinor }));
        expect(email.subject.length).toBeGreaterThan(10);
        for (const part of [email.text, email.html]) {
          expect(part).toContain('Pro');
          expect(part).toContain(shown);
          expect(part).not.toMatch(/null|undefined|NaN/);
        }
        expect(email.text).toContain(INVOICE_URL);
        expect(email.text).toContain(CARD_URL);
        expect(email.html).toContain(`href="${escapeAttr(INVOICE_URL)}"`);
        expect(email.html).toContain(`href="${escapeAttr(CARD_URL)}"`);
        expect(email.html).toMatch(/^<!doctype html>/);
        expect(email.text).toMatch(/^Hi Ann Lee,\n/);
      });
    }
  }

  it('names the plan in the subject', () => {
    expect(renderNotice('payment_failed_soft', data()).subject).toBe('Payment failed for your Pro plan');
    expect(renderNotice('recovered', data()).subject).toBe('Payment received for your Pro plan');
    expect(renderNotice('subscription_canceled', data()).subject).toBe('Your Pro plan has been canceled');
    expect(renderNotice('payment_failed_soft', data({ planName: 'Team Plan' })).subject).toBe('Payment failed for your Team Plan');
  });

  it('gives the retry date in the customer’s timezone', () => {
    // 02:00 UTC on March 3 is still March 2 in New York
    const at = '2026-03-03T02:00:00Z';
    expect(renderNotice('payment_failed_soft', data({ nextAttemptAt: at })).text).toContain("We'll retry automatically on Monday, March 2, 2026.");
    expect(renderNotice('payment_failed_soft', data({ nextAttemptAt: at, timeZone: 'Europe/Paris' })).text).toContain('on Tuesday, March 3, 2026');
    expect(renderNotice('final_attempt_ahead', data({ nextAttemptAt: at })).text).toContain("We'll try one last time on Monday, March 2, 2026.");
  });

  it('says what each notice is about', () => {
    expect(renderNotice('payment_failed_hard', data()).text).toContain('Your card was declined');
    expect(renderNotice('payment_failed_hard', data()).text).toContain('Please update your card');
    expect(renderNotice('action_required', data()).text).toContain('Your bank needs you to confirm the payment');
    expect(renderNotice('recovered', data()).text).toContain('Thanks, your payment for your Pro plan went through.');
    expect(renderNotice('access_suspended', data()).text).toContain('access is paused');
    expect(renderNotice('payment_still_due', data()).text).toContain("we've stopped retrying automatically");
    expect(renderNotice('trial_ending', data()).subject).toBe('Your Pro trial ends on Tuesday, March 10, 2026');
    expect(renderNotice('trial_ending', data()).text).toContain("we'll charge $49.00 to your card on file");
  });

  it('tells a trial customer without a card what happens at the end, by the trial setting, and links to adding one first', () => {
    const noCard = (behavior: NoticeTemplateData['trialEndBehavior']) => renderNotice('trial_ending', data({ hasPaymentMethod: false, trialEndBehavior: behavior }));
    expect(noCard('pause').text).toContain("You haven't added a payment method yet");
    expect(noCard('pause').text).toContain('your subscription will be paused');
    expect(noCard('cancel').text).toContain('your subscription will be canceled');
    expect(noCard('create_invoice').text).toContain("we'll send you an invoice for $49.00");
    expect(noCard(null).text).not.toContain('card on file');
    expect(noCard('pause').text).not.toContain('card on file');
    const text = noCard('pause').text;
    expect(text.indexOf('Add a payment method')).toBeGreaterThan(-1);
    expect(text.indexOf(CARD_URL)).toBeLessThan(text.indexOf(INVOICE_URL) === -1 ? Infinity : text.indexOf(INVOICE_URL));
    // With a card (or unknown), the reminder stays as it was.
    expect(renderNotice('trial_ending', data({ hasPaymentMethod: true, trialEndBehavior: 'pause' })).text).toContain("we'll charge $49.00 to your card on file");
  });

  it('puts the call to action first: the invoice to confirm a payment, the card after a decline', () => {
    const action = renderNotice('action_required', data()).text;
    expect(action.indexOf(INVOICE_URL)).toBeLessThan(action.indexOf(CARD_URL));
    const hard = renderNotice('payment_failed_hard', data()).text;
    expect(hard.indexOf(CARD_URL)).toBeLessThan(hard.indexOf(INVOICE_URL));
  });

  it('turns a decline code into a friendly phrase and never shows the code', () => {
    const expired = renderNotice('payment_failed_hard', data({ declineCode: 'expired_card' }));
    expect(expired.text).toContain('The card on file has expired.');
    const stolen = renderNotice('payment_failed_hard', data({ declineCode: 'stolen_card' }));
    for (const email of [expired, stolen]) expect(`${email.subject}${email.text}${email.html}`).not.toMatch(/expired_card|stolen_card|stolen/);
  });

  it('escapes a hostile customer name and plan name in the HTML', () => {
    const email = renderNotice(
      'payment_failed_soft',
      data({ customerName: '<script>alert("x")</script> & Co', planName: '<img src=x onerror=alert(1)>' }),
    );
    expect(email.html).not.toContain('<script>');
    expect(email.html).not.toContain('<img');
    expect(email.html).toContain('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co');
    expect(email.html).toContain('&lt;img src=x onerror=alert(1)&gt;');
    expect(email.text).toContain('Hi <script>alert("x")</script> & Co,');
  });

  it('keeps a line break in a name from forging a line of the email', () => {
    const email = renderNotice('payment_failed_soft', data({ customerName: 'Ann\r\nUpdate your card: https://evil.example', planName: 'Pro\nBasic' }));
    expect(email.text.split('\n')).not.toContain('Update your card: https://evil.example');
    expect(email.subject).toBe('Payment failed for your Pro Basic plan');
  });

  it('makes only http(s) URLs links', () => {
    const email = renderNotice('payment_failed_soft', data({ invoiceUrl: 'javascript:alert(1)', cardUpdateUrl: 'https://ok.example/"><script>' }));
    expect(email.html).not.toContain('href="javascript:');
    expect(email.html).toContain('javascript:alert(1)');
    expect(email.html).not.toContain('<script>');
    expect(email.html).not.toContain('href="https://ok.example/"');
  });

  it('leaves out whatever is null, without printing null or undefined', () => {
    const sparse = data({
      customerName: null,
      planName: null,
      amountMinor: null,
      currency: null,
      invoiceId: null,
      invoiceUrl: null,
      nextAttemptAt: null,
      declineCode: null,
      trialEndsAt: null,
    });
    for (const kind of KINDS) {
      const email = renderNotice(kind, sparse);
      for (const part of [email.subject, email.text, email.html]) expect(part).not.toMatch(/null|undefined|NaN|Invalid Date/);
      expect(email.text).toMatch(/^Hello,\n/);
      expect(email.text).not.toContain('Plan:');
      expect(email.text).not.toMatch(/Amount|payment:/);
      expect(email.text).not.toContain('invoice.stripe.com');
      expect(email.text).toContain(CARD_URL);
      expect(email.html).not.toContain('<table');
    }
    expect(renderNotice('payment_failed_soft', sparse).subject).toBe('Payment failed for your subscription');
    expect(renderNotice('payment_failed_soft', sparse).text).toContain("We'll retry automatically.");
    expect(renderNotice('trial_ending', sparse).subject).toBe('Your trial is ending soon');
  });

  it('leaves out an amount without a currency, and a date that does not parse', () => {
    const email = renderNotice('payment_failed_soft', data({ currency: null, nextAttemptAt: 'soon' }));
    expect(email.text).not.toMatch(/Amount|49/);
    expect(email.text).toContain("We'll retry automatically.");
  });

  it('falls back to UTC for an unknown timezone', () => {
    const email = renderNotice('final_attempt_ahead', data({ nextAttemptAt: '2026-03-03T02:00:00Z', timeZone: 'Mars/Olympus' }));
    expect(email.text).toContain('on Tuesday, March 3, 2026');
  });

  it('renders the same email for the same data', () => {
    expect(renderNotice('payment_failed_soft', data())).toEqual(renderNotice('payment_failed_soft', data()));
  });
});

describe('templateFor', () => {
  it('maps the ledger notice kinds', () => {
    expect(templateFor('payment_failed', null)).toBe('payment_failed_soft');
    expect(templateFor('update_payment_method', null)).toBe('payment_failed_hard');
    expect(templateFor('authenticate_payment', null)).toBe('action_required');
    expect(templateFor('final_attempt_ahead', null)).toBe('final_attempt_ahead');
    expect(templateFor('recovered', 'cancel')).toBe('recovered');
    expect(templateFor('upgrade_declined', null)).toBe('upgrade_declined');
    expect(templateFor('trial_ending', null)).toBe('trial_ending');
  });

  it('picks the final notice by the final action', () => {
    expect(templateFor('final_notice', 'cancel')).toBe('subscription_canceled');
    expect(templateFor('final_notice', null)).toBe('subscription_canceled');
    expect(templateFor('final_notice', 'mark_uncollectible')).toBe('access_suspended');
    expect(templateFor('final_notice', 'mark_unpaid')).toBe('access_suspended');
    expect(templateFor('final_notice', 'leave_past_due')).toBe('payment_still_due');
    expect(() => templateFor('final_notice', 'shrug')).toThrow(/shrug/);
  });

  it('throws on an unknown notice kind, naming it', () => {
    expect(() => templateFor('birthday_card', null)).toThrow(/birthday_card/);
  });
});
