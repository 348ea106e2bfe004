/** GET /healthz: liveness, without the API token. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorReply, HealthReply, ref } from './schemas.js';

/** The health route. */
export const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/healthz',
    {
      config: { auth: false },
      schema: {
        summary: 'Liveness',
        description: 'Answers while the collector runs; never needs the API token.',
        tags: ['operations'],
        security: [],
        response: { 200: HealthReply, 500: ref(ErrorReply, 'Unexpected failure') },
      },
    },
    async () => ({ status: 'ok' as const, store: app.store.kind }),
  );
};
