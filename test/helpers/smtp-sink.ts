/**
 * A real SMTP server for tests (smtp-server on 127.0.0.1, a free port, no TLS, no auth required):
 * it parses what it accepts (mailparser) and can refuse or drop the next messages on demand.
 */
import type { Socket } from 'node:net';
import { simpleParser } from 'mailparser';
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';

/** One accepted message: the envelope, the parsed content and its header lines. */
export interface ReceivedMail {
  /** Envelope sender (MAIL FROM). */
  from: string;
  /** Envelope recipients (RCPT TO). */
  to: string[];
  subject: string;
  text: string;
  html: string;
  /** The Message-ID header, angle brackets included. */
  messageId: string;
  /** Header lines keyed by lower-case name, values unfolded and not decoded; the first of a repeated name. */
  headers: Record<string, string>;
  receivedAt: number;
}

export interface SmtpSink {
  /** smtp://127.0.0.1:<port> */
  url: string;
  /** Accepted messages, in order. */
  messages: ReceivedMail[];
  /** Resolves with the messages once at least `count` arrived; rejects after `timeoutMs` (default 10 s). */
  waitFor(count: number, timeoutMs?: number): Promise<ReceivedMail[]>;
  /** The next `n` messages are refused with `code` (default 451) in reply to their data, and not stored. */
  rejectNext(n: number, code?: number): void;
  /** For the next `n` messages the connection is destroyed once the data is in, without a reply; not stored. */
  dropNextAfterData(n: number): void;
  /** Forgets the messages and any pending rejections or drops. */
  clear(): void;
  close(): Promise<void>;
}

/** Starts a sink; close it in afterAll. */
export async function startSmtpSink(): Promise<SmtpSink> {
  const messages: ReceivedMail[] = [];
  const rejections: number[] = [];
  let drops = 0;
  let waiters: Array<() => void> = [];
  // smtp-server does not hand its sockets to onData: they are found by the client's port
  const sockets = new Map<number, Socket>();

  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    disableReverseLookup: true,
    logger: false,
    closeTimeout: 500,
    onData(stream: SMTPServerDataStream, session: SMTPServerSession, callback: (err?: Error | null) => void) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('error', () => undefined);
      stream.on('end', () => {
        if (drops > 0) {
          drops -= 1;
          sockets.get(session.remotePort)?.destroy();
          return;
        }
        const code = rejections.shift();
        if (code !== undefined) {
          callback(Object.assign(new Error(`Rejected by the test sink (${code})`), { responseCode: code }));
          return;
        }
        simpleParser(Buffer.concat(chunks)).then(
          (parsed) => {
            const headers: Record<string, string> = {};
            for (const { key, line } of parsed.headerLines) {
              if (!(key in headers)) headers[key] = line.slice(line.indexOf(':') + 1).replace(/\r?\n[ \t]+/g, ' ').trim();
            }
            const mailFrom = session.envelope.mailFrom;
            // stored before the reply, so a sender that saw 250 finds its message here
            messages.push({
              from: mailFrom ? mailFrom.address : '',
              to: session.envelope.rcptTo.map((r) => r.address),
              subject: parsed.subject ?? '',
              text: parsed.text ?? '',
              html: typeof parsed.html === 'string' ? parsed.html : '',
              messageId: parsed.messageId ?? '',
              headers,
              receivedAt: Date.now(),
            });
            callback();
            const ready = waiters;
            waiters = [];
            for (const check of ready) check();
          },
          (err: Error) => callback(err),
        );
      });
    },
  });
  server.on('error', () => undefined); // a client that drops its connection is expected here
  server.server.on('connection', (socket: Socket) => {
    const port = socket.remotePort;
    if (port === undefined) return;
    sockets.set(port, socket);
    socket.once('close', () => sockets.delete(port));
  });

  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.server.off('error', reject);
      resolve();
    });
  });
  const address = server.server.address();
  if (address === null || typeof address === 'string') throw new Error('smtp sink: no TCP address');

  return {
    url: `smtp://127.0.0.1:${address.port}`,
    messages,
    waitFor(count, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (messages.length < count) {
            waiters.push(check);
            return;
          }
          clearTimeout(timer);
          resolve([...messages]);
        };
        const timer = setTimeout(() => {
          waiters = waiters.filter((w) => w !== check);
          reject(new Error(`smtp sink: expected ${count} message(s) within ${timeoutMs} ms, received ${messages.length}`));
        }, timeoutMs);
        check();
      });
    },
    rejectNext(n, code = 451) {
      for (let i = 0; i < n; i++) rejections.push(code);
    },
    dropNextAfterData(n) {
      drops += n;
    },
    clear() {
      messages.length = 0;
      rejections.length = 0;
      drops = 0;
    },
    close() {
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
