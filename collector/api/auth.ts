/**
 * Optional bearer token. When set, every route needs `Authorization: Bearer <token>` except
 * those whose route config says `auth: false` (/healthz). The comparison is constant-time over
 * SHA-256 digests, so neither the token's content nor its length leaks through timing.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { CollectorError } from '../errors.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false: the route answers without the API token. */
    auth?: boolean;
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** An onRequest hook that refuses requests without the token. */
export function bearerAuth(token: string): (request: FastifyRequest) => Promise<void> {
  const want = digest(token);
  return async (request) => {
    if (request.routeOptions.config?.auth === false) return;
    const header = request.headers.authorization;
    const m = header ? /^Bearer +(\S+) *$/i.exec(header) : null;
    const ok = timingSafeEqual(digest(m?.[1] ?? ''), want) && m !== null;
    if (!ok) {
      throw new CollectorError(
        'COL_ERR_UNAUTHORIZED',
        m ? 'the bearer token does not match' : 'send Authorization: Bearer <token>',
      );
    }
  };
}
