import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { renderNotice } from '../../domain/notice-templates';
import { createMailer, MailDeliveryError, messageIdFor, type Mailer, type OutgoingEmail } from '../../lib/mailer';
import { startSmtpSink, type SmtpSink } from '../helpers/smtp-sink';

const FROM = 'Acme Billing <billing@acme.test>';

let sink: SmtpSink;
let mailer: Mailer;
let seq = 0;

beforeAll(async () => {
  sink = await startSmtpSink();
  mailer = createMailer({ url: sink.url, from: FROM, timeoutMs: 5_000 });
});

afterEach(() => sink.clear());

afterAll(async () => {
  mailer.close();
  await sink.close();
});

function email(overrides: Partial<OutgoingEmail> = {}): OutgoingEmail {
  seq += 1;
  return {
    to: 'ann@example.com',
    subject: `Notice ${seq}`,
    text: `Plain text ${seq}\n`,
    html: `<p>HTML ${seq}</p>`,
    messageId: messageIdFor(`test:${seq}:${Date.now()}`, FROM),
    ...overrides,
  };
}

async function failure(p: Promise<unknown>): Promise<MailDeliveryError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MailDeliveryError);
  return err as MailDeliveryError;
}

/** A port on 127.0.0.1 that nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** A TCP server that accepts connections and never says anything. */
async function silentServer(): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `smtp://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Greets and answers EHLO, then drops the connection when the client starts the envelope. */
async function dropAtMailFrom(): Promise<{ url: string; close(): Promise<void> }> {
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.write('220 test ESMTP\r\n');
    socket.on('data', (chunk: Buffer) => {
      if (/^EHLO /im.test(chunk.toString())) socket.write('250 test\r\n');
      if (/^MAIL FROM:/im.test(chunk.toString())) socket.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return { url: `smtp://127.0.0.1:${port}`, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe('mailer over SMTP', () => {
  it('delivers the message with the given Message-ID, subject, text and HTML parts', async () => {
    const rendered = renderNotice('payment_failed_soft', {
      customerName: 'Zoë <Ann> Lee',
      planName: 'Pro',
      amountMinor: 1999,
      currency: 'eur',
      invoiceId: 'in_123',
      invoiceUrl: 'https://invoice.stripe.com/i/acct_1/test_123',
      cardUpdateUrl: 'https://billing.example.com/card-update/cus_1?sig=a&b=c',
      nextAttemptAt: '2026-03-03T10:00:00Z',
      attempt: 1,
      maxAttempts: 4,
      declineCode: null,
      trialEndsAt: null,
      timeZone: 'Europe/Paris',
    });
    const messageId = messageIdFor('notice:in_123:payment_failed:1', FROM);
    const sent = await mailer.send({ to: 'ann@example.com', ...rendered, messageId, headers: { 'X-Notice-Kind': 'payment_failed' } });

    expect(sent.messageId).toBe(messageId);
    expect(sent.response).toMatch(/^250 /);
    const [received] = await sink.waitFor(1);
    expect(received).toMatchObject({ from: 'billing@acme.test', to: ['ann@example.com'], messageId, subject: rendered.subject });
    expect(received!.text.trim()).toBe(rendered.text.trim());
    expect(received!.html.trim()).toBe(rendered.html.trim());
    expect(received!.text).toContain('€19.99');
    expect(received!.headers['message-id']).toBe(messageId);
    expect(received!.headers['x-notice-kind']).toBe('payment_failed');
    expect(received!.headers.from).toBe(FROM);
  });

  it('sends a retry of the same notice with the same Message-ID', async () => {
    const messageId = messageIdFor('notice:in_456:final_notice:3', FROM);
    sink.rejectNext(1);
    const err = await failure(mailer.send(email({ messageId })));
    expect(err.definite).toBe(true);
    await mailer.send(email({ messageId }));
    const received = await sink.waitFor(1);
    expect(received.map((m) => m.messageId)).toEqual([messageId]);
  });

  it('reports a 451 reply to the data as definite and transient', async () => {
    sink.rejectNext(1);
    const err = await failure(mailer.send(email()));
    expect(err).toMatchObject({ definite: true, permanent: false, responseCode: 451, code: 'EMESSAGE' });
    expect(err.message).toContain('451');
    expect(sink.messages).toHaveLength(0);
  });

  it('reports a 550 reply to the data as definite and permanent', async () => {
    sink.rejectNext(1, 550);
    const err = await failure(mailer.send(email()));
    expect(err).toMatchObject({ definite: true, permanent: true, responseCode: 550, code: 'EMESSAGE' });
    expect(sink.messages).toHaveLength(0);
  });

  it('rejects only as many messages as asked, then accepts again', async () => {
    sink.rejectNext(2, 452);
    await failure(mailer.send(email()));
    await failure(mailer.send(email()));
    await mailer.send(email());
    expect(await sink.waitFor(1)).toHaveLength(1);
  });

  it('reports a refused connection as definite and transient', async () => {
    const refused = createMailer({ url: `smtp://127.0.0.1:${await closedPort()}`, from: FROM, timeoutMs: 5_000 });
    try {
      const err = await failure(refused.send(email()));
      expect(err).toMatchObject({ definite: true, permanent: false, responseCode: null, code: 'ESOCKET' });
      expect(err.cause).toMatchObject({ originalCode: 'ECONNREFUSED' });
    } finally {
      refused.close();
    }
  });

  it('reports a server that never greets as definite once the timeout passes', async () => {
    const silent = await silentServer();
    const mute = createMailer({ url: silent.url, from: FROM, timeoutMs: 300 });
    try {
      const err = await failure(mute.send(email()));
      expect(err).toMatchObject({ definite: true, permanent: false, code: 'ETIMEDOUT' });
    } finally {
      mute.close();
      await silent.close();
    }
  });

  it('reports a connection dropped after the data and before the reply as an unknown outcome', async () => {
    sink.dropNextAfterData(1);
    const err = await failure(mailer.send(email()));
    expect(err).toMatchObject({ definite: false, permanent: false, responseCode: null, code: 'ECONNECTION' });
    expect(err.message).toContain('outcome unknown');
    expect(sink.messages).toHaveLength(0);
    // the next message goes through as usual
    await mailer.send(email());
    expect(await sink.waitFor(1)).toHaveLength(1);
  });

  it('reports a connection dropped before the data as definite, though nodemailer reports it alike', async () => {
    const dropping = await dropAtMailFrom();
    const early = createMailer({ url: dropping.url, from: FROM, timeoutMs: 5_000 });
    try {
      const err = await failure(early.send(email()));
      expect(err).toMatchObject({ definite: true, permanent: false, responseCode: null, code: 'ECONNECTION' });
    } finally {
      early.close();
      await dropping.close();
    }
  });

  it('refuses a message without a valid recipient as definite and permanent, before the server sees it', async () => {
    const err = await failure(mailer.send(email({ to: 'not an address' })));
    expect(err).toMatchObject({ definite: true, permanent: true, code: 'EENVELOPE' });
  });

  it('keeps the password of the SMTP URL out of its errors', async () => {
    const port = await closedPort();
    const secret = createMailer({ url: `smtp://billing:hunter2-secret@127.0.0.1:${port}`, from: FROM, timeoutMs: 5_000 });
    try {
      const err = await failure(secret.send(email()));
      expect(`${err.message} ${err.stack} ${String(err.cause)}`).not.toContain('hunter2');
    } finally {
      secret.close();
    }
  });

  it('refuses to send once closed', async () => {
    const closed = createMailer({ url: sink.url, from: FROM });
    closed.close();
    const err = await failure(closed.send(email()));
    expect(err).toMatchObject({ definite: true, code: 'ECLOSED' });
  });
});

describe('smtp sink', () => {
  it('rejects waitFor with a clear message when too few messages arrive', async () => {
    await expect(sink.waitFor(1, 100)).rejects.toThrow('smtp sink: expected 1 message(s) within 100 ms, received 0');
  });
});

describe('messageIdFor', () => {
  it('is deterministic per dedup key and uses the domain of the From address', () => {
    const id = messageIdFor('notice:in_1:payment_failed:1', FROM);
    expect(id).toMatch(/^<notice\.[0-9a-f]{24}@acme\.test>$/);
    expect(messageIdFor('notice:in_1:payment_failed:1', 'billing@acme.test')).toBe(id);
    expect(messageIdFor('notice:in_1:payment_failed:2', FROM)).not.toBe(id);
  });

  it('falls back to billing.local when the From has no usable domain', () => {
    expect(messageIdFor('k', 'Billing')).toMatch(/^<notice\.[0-9a-f]{24}@billing\.local>$/);
    expect(messageIdFor('k', 'x@bad domain>')).toMatch(/@billing\.local>$/);
  });
});
