/**
 * Customer email over SMTP: compose (nodemailer's MailComposer) → one SMTP session per message
 * (nodemailer's SMTPConnection) → a failure says whether the server could have taken the message.
 * The session is driven here rather than through nodemailer's transport because only here is it
 * known whether the end of the message data had been handed to the server when the connection
 * broke; nodemailer reports a lost connection the same way before and after that point.
 * Logs nothing: the SMTP URL may carry a password.
 */
import { createHash } from 'node:crypto';
import { PassThrough } from 'node:stream';
import type { NodemailerError } from 'nodemailer/lib/errors';
import MailComposer from 'nodemailer/lib/mail-composer';
import { parseConnectionUrl } from 'nodemailer/lib/shared';
import SMTPConnection, { type SMTPConnectionAuth, type SMTPConnectionOptions } from 'nodemailer/lib/smtp-connection';

/** One rendered email; `messageId` is stable per notice (see `messageIdFor`). */
export interface OutgoingEmail {
  to: string;
  subject: string;
  text: string;
  html: string;
  /** RFC 5322 Message-ID, angle brackets included: a retry of the same notice carries the same one. */
  messageId: string;
  headers?: Record<string, string>;
}

/** Sends emails; `close()` ends the sessions in flight (they fail as the classification says). */
export interface Mailer {
  /** Resolves once the server accepted the message; rejects with a MailDeliveryError. */
  send(e: OutgoingEmail): Promise<{ messageId: string; response: string }>;
  close(): void;
}

/**
 * A send that failed. `definite`: the server certainly did not take the message, so sending it
 * again cannot duplicate it. Not definite: the connection broke after the whole message was sent
 * and before the server's reply; it may have been taken. `permanent`: the server refused it for
 * good (5xx except 503, nodemailer's reading of RFC 5321) or the message itself is unsendable.
 */
export class MailDeliveryError extends Error {
  override readonly name = 'MailDeliveryError';
  readonly definite: boolean;
  readonly permanent: boolean;
  /** nodemailer's code (ECONNECTION, ETIMEDOUT, EENVELOPE, EMESSAGE, EAUTH, …). */
  readonly code: string | null;
  /** The SMTP reply code, when the server replied. */
  readonly responseCode: number | null;

  constructor(
    message: string,
    fields: { definite: boolean; permanent: boolean; code: string | null; responseCode: number | null },
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.definite = fields.definite;
    this.permanent = fields.permanent;
    this.code = fields.code;
    this.responseCode = fields.responseCode;
  }
}

/**
 * A mailer for `url` (smtp:// with opportunistic STARTTLS, or smtps://; credentials and nodemailer
 * options such as `?requireTLS=true` in the URL). `timeoutMs` bounds connecting, the greeting and
 * every wait for the server (default 30 s).
 */
export function createMailer(opts: { url: string; from: string; timeoutMs?: number }): Mailer {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const { auth, ...fromUrl } = parseConnectionUrl(opts.url) as SMTPConnectionOptions & { auth?: { user: string; pass: string } };
  const connection: SMTPConnectionOptions = {
    ...fromUrl,
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs,
    dnsTimeout: timeoutMs,
    socketCloseTimeout: Math.min(timeoutMs, 5_000),
    // whatever the URL's query says: traffic logs would carry the AUTH exchange
    logger: false,
    debug: false,
    transactionLog: false,
  };
  const login: SMTPConnectionAuth | null = auth ? { user: auth.user, pass: auth.pass } : null;
  const open = new Set<SMTPConnection>();
  let closed = false;

  async function send(e: OutgoingEmail): Promise<{ messageId: string; response: string }> {
    if (closed) throw new MailDeliveryError('mailer is closed', { definite: true, permanent: false, code: 'ECLOSED', responseCode: null });
    const message = new MailComposer({
      from: opts.from,
      to: e.to,
      subject: e.subject,
      text: e.text,
      html: e.html,
      headers: e.headers,
      // set after the custom headers, so it wins over a Message-ID among them
      messageId: e.messageId,
      disableFileAccess: true,
      disableUrlAccess: true,
    }).compile();
    let raw: Buffer;
    try {
      raw = await message.build();
    } catch (err) {
      throw classify(err, false);
    }
    const response = await deliver(message.getEnvelope(), raw);
    return { messageId: e.messageId, response };
  }

  function deliver(envelope: { from: string | false; to: string[] }, raw: Buffer): Promise<string> {
    return new Promise((resolve, reject) => {
      const conn = new SMTPConnection(connection);
      open.add(conn);
      // Set once the whole message has gone into nodemailer's data stream, just before the
      // terminating "<CRLF>.<CRLF>": from here on only the server's reply says what happened.
      let dataSent = false;
      let settled = false;
      const fail = (err: unknown): void => {
        if (settled) return;
        settled = true;
        open.delete(conn);
        conn.close();
        reject(classify(err, dataSent));
      };
      conn.on('error', fail);
      // the session ended without an error or a reply, e.g. close() while sending
      conn.once('end', () => fail(Object.assign(new Error('Connection closed'), { code: 'ECONNECTION' })));
      conn.connect((err) => {
        if (err) return fail(err);
        const sendMessage = (err: NodemailerError | null): void => {
          if (err) return fail(err);
          const body = new PassThrough();
          // nodemailer pipes the body only after the server's 354 to DATA
          body.once('end', () => {
            dataSent = true;
          });
          body.end(raw);
          conn.send(envelope, body, (err, info) => {
            if (err) return fail(err);
            if (settled) return;
            settled = true;
            open.delete(conn);
            conn.quit();
            resolve(info.response ?? '');
          });
        };
        if (login && conn.allowsAuth) conn.login(login, (err) => sendMessage(err));
        else sendMessage(null);
      });
    });
  }

  return {
    send,
    close() {
      closed = true;
      for (const conn of open) conn.close();
      open.clear();
    },
  };
}

/** Classifies nodemailer's error; `dataSent`: the end of the message data had been handed to the socket. */
function classify(err: unknown, dataSent: boolean): MailDeliveryError {
  const e = (err ?? {}) as NodemailerError;
  const code = typeof e.code === 'string' ? e.code : null;
  const responseCode = typeof e.responseCode === 'number' ? e.responseCode : null;
  // a 4xx/5xx reply, to any command or to the data, is a refusal: the message was not taken
  const refused = responseCode !== null && responseCode >= 400 && responseCode < 600;
  // nodemailer refused it before asking the server (no recipients, bad address, too large)
  const unsendable = e.command === 'API' && (code === 'EENVELOPE' || code === 'EMESSAGE');
  const definite = refused || !dataSent;
  const permanent = refused ? (e.permanent ?? responseCode >= 500) : unsendable;
  const message = e instanceof Error ? e.message : String(err);
  return new MailDeliveryError(`email not sent${definite ? '' : ' (outcome unknown)'}: ${message}`, { definite, permanent, code, responseCode }, { cause: err });
}

/**
 * The Message-ID of a notice: `<notice.<24 hex of sha256(dedupKey)>@<domain of from>>`, the domain
 * falling back to billing.local. Deterministic, so a resent notice is recognisably the same email.
 */
export function messageIdFor(dedupKey: string, from: string): string {
  const hash = createHash('sha256').update(dedupKey).digest('hex').slice(0, 24);
  return `<notice.${hash}@${domainOf(from)}>`;
}

function domainOf(from: string): string {
  const address = /<([^<>]*)>\s*$/.exec(from)?.[1] ?? from;
  const at = address.lastIndexOf('@');
  const domain = at < 0 ? '' : address.slice(at + 1).trim().toLowerCase();
  return /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$/.test(domain) ? domain : 'billing.local';
}
