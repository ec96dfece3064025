/**
 * lib/db.ts isPostgresWriteAfterClose: which uncaught errors the crash guard contains. Both forms of the
 * postgres.js 3.4.9 write-after-close race, with the stacks Node printed for them; nothing else.
 */
import { describe, expect, it } from 'vitest';
import { isDroppedConnectionRejection, isPostgresWriteAfterClose } from '../../lib/db';

const withStack = <E extends Error>(err: E, stack: string): E => Object.assign(err, { stack });
const PG = '/srv/app/node_modules/postgres/cjs/src/connection.js';

describe('isPostgresWriteAfterClose', () => {
  it('recognises the write to a nulled socket from nextWrite', () => {
    const err = withStack(new TypeError("Cannot read properties of null (reading 'write')"), `TypeError: Cannot read properties of null (reading 'write')\n    at Immediate.nextWrite (${PG}:263:19)\n    at process.processImmediate (node:internal/timers:483:21)`);
    expect(isPostgresWriteAfterClose(err)).toBe(true);
  });

  it("recognises the close's own CONNECTION_CLOSED surfacing uncaught (the form CI saw under load)", () => {
    const err = withStack(Object.assign(new Error('write CONNECTION_CLOSED 127.0.0.1:35331'), { code: 'CONNECTION_CLOSED' }), `Error: write CONNECTION_CLOSED 127.0.0.1:35331\n    at Socket.closed (${PG}:457:32)\n    at Socket.emit (node:events:524:28)\n    at TCP.<anonymous> (node:net:343:12)`);
    expect(isPostgresWriteAfterClose(err)).toBe(true);
  });

  it('recognises any other error thrown from postgres.js connection internals', () => {
    expect(isPostgresWriteAfterClose(withStack(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), `Error: read ECONNRESET\n    at Socket.error (${PG}:433:7)`))).toBe(true);
  });

  it('leaves every other error to end the process', () => {
    expect(isPostgresWriteAfterClose(withStack(new TypeError("Cannot read properties of null (reading 'write')"), 'TypeError: …\n    at nextWrite (/srv/app/lib/mine.js:1:1)'))).toBe(false);
    expect(isPostgresWriteAfterClose(withStack(Object.assign(new Error('CONNECTION_CLOSED'), { code: 'CONNECTION_CLOSED' }), 'Error\n    at Socket.closed (/srv/app/lib/other.js:1:1)'))).toBe(false);
    // Thrown from this process's code that merely called postgres.js: not contained.
    expect(isPostgresWriteAfterClose(withStack(new Error('bad row'), `Error: bad row\n    at handler (/srv/app/api/ingest.js:10:5)\n    at Socket.data (${PG}:320:9)`))).toBe(false);
    expect(isPostgresWriteAfterClose(new Error('boom'))).toBe(false);
    expect(isPostgresWriteAfterClose('a string')).toBe(false);
  });
});

describe('isDroppedConnectionRejection', () => {
  const reset = () =>
    withStack(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', errno: -104, syscall: 'read' }), 'Error: read ECONNRESET\n    at TCP.onStreamRead (node:internal/stream_base_commons:218:20)\n    at TCP.callbackTrampoline (node:internal/async_hooks:130:17)');

  it('recognises the raw socket error of a dropped connection that nobody awaited (the stack Node printed)', () => {
    expect(isDroppedConnectionRejection(reset(), 'unhandledRejection')).toBe(true);
  });

  it('leaves a thrown one, another error, or one raised through our code to end the process', () => {
    expect(isDroppedConnectionRejection(reset(), 'uncaughtException')).toBe(false);
    expect(isDroppedConnectionRejection(withStack(Object.assign(new Error('boom'), { code: 'EBOOM' }), 'Error: boom\n    at TCP.onStreamRead (node:internal/stream_base_commons:218:20)'), 'unhandledRejection')).toBe(false);
    expect(isDroppedConnectionRejection(withStack(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'Error: read ECONNRESET\n    at fetchInvoice (/srv/app/activities/stripe.js:12:3)'), 'unhandledRejection')).toBe(false);
    expect(isDroppedConnectionRejection('ECONNRESET', 'unhandledRejection')).toBe(false);
  });
});
