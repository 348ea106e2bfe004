/** GET /api/v1/flows: records of any non-profile template (plain flows), paged or exported. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { sendExport } from './export-stream.js';
import { type ListRouteOptions, listReply } from './profile-routes.js';
import { toRowFilter } from './query.js';
import { FLOW_API_COLUMNS, flowToApi } from './rows.js';
import { errorResponses, FlowPage, FlowsQuery } from './schemas.js';

/** The flow routes. */
export const flowRoutes: FastifyPluginAsyncTypebox<ListRouteOptions> = async (app, opts) => {
  app.get(
    '/flows',
    {
      schema: {
        summary: 'List flows',
        description:
          'Records of templates other than the profile templates (e.g. softflowd or pmacct flows) matching every filter given, newest first by default.',
        tags: ['flows'],
        querystring: FlowsQuery,
        response: { 200: listReply(FlowPage, 'flows', opts.exportMaxRows), ...errorResponses },
      },
    },
    async (request, reply) => {
      const q = request.query;
      const filter = toRowFilter(q, 'flows');
      if (q.format !== 'json') {
        return sendExport(reply, {
          format: q.format,
          columns: FLOW_API_COLUMNS,
          maxRows: opts.exportMaxRows,
          cursor: q.cursor,
          read: (limit, cursor) => app.store.flows(filter, { limit, cursor, order: q.order }),
          toApi: flowToApi,
        });
      }
      const page = await app.store.flows(filter, { limit: q.limit, cursor: q.cursor, order: q.order });
      return { items: page.items.map(flowToApi), nextCursor: page.nextCursor };
    },
  );
};
