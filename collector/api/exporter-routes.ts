/** GET /api/v1/exporters: per-exporter accounting. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { ExportersReply, errorResponses } from './schemas.js';

/** The exporter routes. */
export const exporterRoutes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/exporters',
    {
      schema: {
        summary: 'List exporters',
        description:
          'Every exporter seen, by key: records, profiles, flows, records lost to sequence-number gaps, decoding errors, current templates, first and last seen. As of the last batch written (at most the flush interval old).',
        tags: ['exporters'],
        querystring: Type.Object({}, { additionalProperties: false }),
        response: { 200: ExportersReply, ...errorResponses },
      },
    },
    async () => ({ items: await app.store.exporters() }),
  );
};
