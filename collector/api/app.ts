/**
 * The collector's HTTP API: /healthz, /metrics, OpenAPI at /docs, and /api/v1 (profiles,
 * profiles/summary, connections/:flowId, flows, exporters). Each group of routes is an
 * encapsulated plugin with request and response schemas typed through TypeBox.
 */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Ingest } from '../ingest.js';
import type { Store } from '../store/types.js';
import { bearerAuth } from './auth.js';
import { handleError, handleNotFound } from './error-handler.js';
import { EXPORT_MAX_ROWS } from './export-stream.js';
import { exporterRoutes } from './exporter-routes.js';
import { flowRoutes } from './flow-routes.js';
import { healthRoutes } from './health-routes.js';
import { createApiMetrics, metricsRoutes } from './metrics.js';
import { profileRoutes } from './profile-routes.js';
import { ErrorReply, FlowItem, ProfileItem } from './schemas.js';
import { storePlugin } from './store-plugin.js';

/** What the API serves from. */
export interface ApiDeps {
  store: Store;
  /** Ingest of this process: its counters feed /metrics. */
  ingest?: Ingest;
  /** The pino root; fastify logs through a child of it (component: api). */
  log: Logger;
  /** When set, every route but /healthz needs `Authorization: Bearer <apiToken>`. */
  apiToken?: string;
  /** Adds metrics of other parts of the process (listeners...) to the API's registry. */
  extraMetrics?: (registry: Registry) => void;
  /** Most rows one NDJSON or CSV export returns. Default EXPORT_MAX_ROWS (100 000). */
  exportMaxRows?: number;
  /** Close the store when the app closes. Default false: the caller owns the store. */
  closeStore?: boolean;
}

/** Builds the API app (not listening yet: call `listen`, or `inject` in tests). */
export async function buildApi(deps: ApiDeps): Promise<FastifyInstance> {
  const exportMaxRows = deps.exportMaxRows ?? EXPORT_MAX_ROWS;
  if (!Number.isSafeInteger(exportMaxRows) || exportMaxRows < 1) {
    throw new RangeError(`exportMaxRows must be a positive integer, not ${exportMaxRows}`);
  }
  // An empty token would lock every route (no request can send one); refuse it loudly.
  if (deps.apiToken === '') throw new RangeError('apiToken is empty: leave it unset for no token');
  const app = Fastify({
    loggerInstance: deps.log.child({ component: 'api' }),
    // Unknown query parameters are errors, not silently ignored: a typo must not widen a query.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.setErrorHandler(handleError);
  app.setNotFoundHandler(handleNotFound);
  for (const s of [ErrorReply, ProfileItem, FlowItem]) app.addSchema(s);

  const metrics = createApiMetrics({ store: deps.store, ingest: deps.ingest });
  deps.extraMetrics?.(metrics.registry);
  app.addHook('onResponse', async (request, reply) => {
    // Route patterns, not URLs, keep the label set small; unknown URLs share one value.
    metrics.countRequest(request.method, request.routeOptions.url ?? 'unmatched', reply.statusCode);
  });
  if (deps.apiToken !== undefined) app.addHook('onRequest', bearerAuth(deps.apiToken));

  await app.register(storePlugin, { store: deps.store, ingest: deps.ingest, closeStore: deps.closeStore });
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'kpiflow collector API',
        version: '1',
        description:
          'Performance profiles and flows received over IPFIX. JSON keys are IPFIX element names; times are ms since the epoch; ' +
          'connection states are names (startState, endState); 64-bit integers beyond 2^53 - 1 are decimal strings. ' +
          'Errors: {statusCode, error, code, message}, codes in docs/errors.md.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      ...(deps.apiToken !== undefined ? { security: [{ bearer: [] }] } : {}),
    },
    refResolver: { buildLocalReference: (json, _base, _fragment, i) => String(json.$id ?? `def-${i}`) },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  await app.register(healthRoutes);
  await app.register(metricsRoutes, { metrics });
  await app.register(profileRoutes, { prefix: '/api/v1', exportMaxRows });
  await app.register(flowRoutes, { prefix: '/api/v1', exportMaxRows });
  await app.register(exporterRoutes, { prefix: '/api/v1' });
  return app as unknown as FastifyInstance;
}
