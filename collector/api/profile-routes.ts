/**
 * Profile routes under /api/v1: `profiles` (filtered, cursor-paged, or exported as NDJSON or
 * CSV), `profiles/summary` (groups, time buckets, RTT percentiles) and `connections/:flowId`.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { type TSchema, Type } from '@sinclair/typebox';
import { CollectorError } from '../errors.js';
import { EXPORT_TYPES, sendExport } from './export-stream.js';
import { parseBucket, toRowFilter } from './query.js';
import { jsonScalar, PROFILE_API_COLUMNS, profileToApi, stateName } from './rows.js';
import {
  ConnectionParams,
  ConnectionReply,
  ErrorReply,
  errorResponses,
  ProfilePage,
  ProfilesQuery,
  ref,
  SummaryQueryString,
  SummaryReply,
} from './schemas.js';

/** Options of the list routes. */
export interface ListRouteOptions {
  /** Most rows one NDJSON or CSV export returns. */
  exportMaxRows: number;
}

/** The 200 reply of a list route: a JSON page, or an export. */
export function listReply<T extends TSchema>(page: T, what: string, maxRows: number) {
  const exportNote = `all matching rows from \`cursor\` on, at most ${maxRows}; when more remain, the \`x-next-cursor\` trailer holds the cursor to continue with`;
  return {
    description: `A page of ${what} (format=json), or an export (format=ndjson: one JSON object a line; format=csv: a header of column names, then one row a line, objects as JSON text, absent values empty): ${exportNote}`,
    content: {
      'application/json': { schema: page },
      [EXPORT_TYPES.ndjson]: { schema: Type.String() },
      'text/csv': { schema: Type.String() },
    },
  };
}

const MAX_UINT64 = (1n << 64n) - 1n;

/** The profile routes. */
export const profileRoutes: FastifyPluginAsyncTypebox<ListRouteOptions> = async (app, opts) => {
  app.get(
    '/profiles',
    {
      schema: {
        summary: 'List profiles',
        description:
          'Performance profiles matching every filter given, newest first by default. Walk pages with `cursor` = the previous `nextCursor`.',
        tags: ['profiles'],
        querystring: ProfilesQuery,
        response: { 200: listReply(ProfilePage, 'profiles', opts.exportMaxRows), ...errorResponses },
      },
    },
    async (request, reply) => {
      const q = request.query;
      const filter = toRowFilter(q, 'profiles');
      if (q.format !== 'json') {
        return sendExport(reply, {
          format: q.format,
          columns: PROFILE_API_COLUMNS,
          maxRows: opts.exportMaxRows,
          cursor: q.cursor,
          read: (limit, cursor) => app.store.profiles(filter, { limit, cursor, order: q.order }),
          toApi: profileToApi,
        });
      }
      const page = await app.store.profiles(filter, { limit: q.limit, cursor: q.cursor, order: q.order });
      return { items: page.items.map(profileToApi), nextCursor: page.nextCursor };
    },
  );

  app.get(
    '/profiles/summary',
    {
      schema: {
        summary: 'Summarize profiles',
        description:
          'Profiles matching the filters, grouped by `groupBy` and (with `bucket`) by time bucket of flowStartMilliseconds: counts, sums and RTT and time-to-establish statistics. Largest groups first.',
        tags: ['profiles'],
        querystring: SummaryQueryString,
        response: { 200: SummaryReply, ...errorResponses },
      },
    },
    async (request) => {
      const q = request.query;
      const filter = toRowFilter(q, 'profiles');
      const bucketMs = q.bucket === undefined ? null : parseBucket(q.bucket);
      const rows = await app.store.summary({
        ...filter,
        groupBy: q.groupBy,
        limit: q.limit,
        ...(bucketMs ? { bucketMs } : {}),
      });
      const items = rows.map((r) => ({
        ...r,
        key: q.groupBy === 'endState' ? stateName(r.key) : jsonScalar(r.key),
      }));
      return { groupBy: q.groupBy, bucketMs, items };
    },
  );

  app.get(
    '/connections/:flowId',
    {
      schema: {
        summary: 'Profiles of one connection',
        description:
          'Every profile with this flowId, in flowStartMilliseconds order (then id). 404 when none.',
        tags: ['profiles'],
        params: ConnectionParams,
        response: {
          200: ConnectionReply,
          404: ref(ErrorReply, 'No profile has this flowId (code COL_ERR_NOT_FOUND)'),
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const id = BigInt(request.params.flowId);
      if (id > MAX_UINT64) {
        throw new CollectorError('COL_ERR_BAD_QUERY', 'params/flowId must be at most 2^64 - 1');
      }
      // Exact 64-bit lookups: flowIds past 2^53 - 1 (the agent's are 63-bit hashes) go as bigints.
      const key = id > BigInt(Number.MAX_SAFE_INTEGER) ? id : Number(id);
      const rows = await app.store.connection(key);
      if (rows.length === 0) throw new CollectorError('COL_ERR_NOT_FOUND', `no profile has flowId ${id}`);
      return { flowId: typeof key === 'bigint' ? key.toString() : key, items: rows.map(profileToApi) };
    },
  );
};
