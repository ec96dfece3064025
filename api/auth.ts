/** Bearer-token guards for admin and app-facing routes, compared in constant time. */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import { ApiError } from './errors';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Constant-time string equality (hashing first equalizes lengths). */
export function tokenEquals(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/**
 * Requires `Authorization: Bearer <token>`. 401 without credentials, 403 with wrong ones.
 * With no token configured: `disabledStatus` 404 hides the routes (admin), 'open' lets requests through.
 */
export function bearerAuth(opts: { token: string | undefined; realm: string; whenUnset: 'hide' | 'open' }): MiddlewareHandler {
  return async (c, next) => {
    if (!opts.token) {
      if (opts.whenUnset === 'open') return next();
      throw new ApiError(404, 'not_found', 'not found');
    }
    const header = c.req.header('authorization');
    const match = header ? /^Bearer\s+(.+)$/i.exec(header.trim()) : null;
    if (!match) {
      c.header('WWW-Authenticate', `Bearer realm="${opts.realm}"`);
      throw new ApiError(401, 'unauthorized', `${opts.realm} endpoints require Authorization: Bearer <token>`);
    }
    if (!tokenEquals(match[1]!, opts.token)) throw new ApiError(403, 'forbidden', 'invalid token');
    return next();
  };
}
