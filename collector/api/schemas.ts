/**
 * JSON schemas (TypeBox) of the API's requests and responses. The same schemas validate query
 * strings (ajv, with type coercion), serialize replies (fast-json-stringify) and feed OpenAPI.
 */
import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { PROFILE_KPI_COLUMNS } from '../profile-schema.js';

/** A string enum as a plain `{type: 'string', enum}` schema (clearer in OpenAPI than anyOf of consts). */
export function StringEnum<const T extends readonly string[]>(
  values: T,
  options: Record<string, unknown> = {},
) {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options });
}

/** A reference to a shared schema (added with `addSchema`), typed as that schema. */
export function ref<T extends TSchema>(schema: T, description?: string) {
  return Type.Unsafe<Static<T>>(Type.Ref(schema.$id!, description ? { description } : {}));
}

/** A 64-bit integer: a JSON number when it is a safe integer, otherwise a decimal string. */
export const Int64 = Type.Unsafe<number | string>({
  type: ['integer', 'string'],
  description: 'Integer; a decimal string when beyond ±(2^53 - 1)',
});

/** Body of every error reply. */
export const ErrorReply = Type.Object(
  {
    statusCode: Type.Integer(),
    error: Type.String({ description: 'HTTP status text' }),
    code: Type.String({ description: 'Stable error code (COL_ERR_*, see docs/errors.md)' }),
    message: Type.String(),
  },
  { $id: 'ErrorReply', title: 'Error' },
);

/** Error replies every authenticated route can give. */
export const errorResponses = {
  400: ref(ErrorReply, 'A parameter is invalid; the message names it (code COL_ERR_BAD_QUERY)'),
  401: ref(ErrorReply, 'The API token is set and the request lacks it (code COL_ERR_UNAUTHORIZED)'),
  500: ref(ErrorReply, 'Unexpected failure, logged (code COL_ERR_INTERNAL)'),
} as const;

const time = (what: string) =>
  Type.String({
    description: `${what}: ISO 8601 (\`2026-01-31\`, \`2026-01-31T12:00:00Z\`, \`...+02:00\`; a time needs its zone) or ms since the epoch`,
    examples: ['2026-01-31T12:00:00Z', '1769860800000'],
  });
const address = (what: string) =>
  Type.String({ description: `${what} (IPv4 or IPv6 text, any valid spelling)`, maxLength: 64 });
const port = (what: string) => Type.Integer({ minimum: 0, maximum: 65535, description: what });
const state = (what: string) =>
  Type.String({
    description: `${what}: NEW, ESTABLISHED, UPDATE, FINISHED, BROKEN, UNREACHABLE, DESYNC (any case) or its number`,
    maxLength: 16,
  });

/** Filters shared by profiles, flows and summaries. */
const filterProperties = {
  from: Type.Optional(time('Earliest flowStartMilliseconds, inclusive')),
  to: Type.Optional(time('Latest flowStartMilliseconds, exclusive')),
  address: Type.Optional(address('Source or destination address')),
  sourceAddress: Type.Optional(address('Source address')),
  destinationAddress: Type.Optional(address('Destination address')),
  port: Type.Optional(port('Source or destination port')),
  sourcePort: Type.Optional(port('Source transport port')),
  destinationPort: Type.Optional(port('Destination transport port')),
  exporter: Type.Optional(
    Type.String({ description: 'Exporter key, as /api/v1/exporters lists it', maxLength: 300 }),
  ),
  templateId: Type.Optional(Type.Integer({ minimum: 256, maximum: 65535, description: 'IPFIX template id' })),
  ipVersion: Type.Optional(Type.Integer({ enum: [4, 6], description: 'IP version, 4 or 6' })),
};
const stateProperties = {
  startState: Type.Optional(state('State that opened the profile (flowStartReason)')),
  endState: Type.Optional(state('State that closed the profile (flowEndReason)')),
  synRetransmitted: Type.Optional(
    Type.Boolean({
      description:
        'true: only profiles whose handshake retransmitted a SYN (synRetransmissionCount > 0, the first SYN was lost or unanswered); false: only the others',
    }),
  ),
};
const pageProperties = {
  limit: Type.Integer({
    minimum: 1,
    maximum: 1000,
    default: 100,
    description: 'Rows per page (JSON only; exports ignore it)',
  }),
  cursor: Type.Optional(
    Type.String({ maxLength: 100, description: 'nextCursor of the previous page (same filters and order)' }),
  ),
  order: StringEnum(['asc', 'desc'] as const, {
    default: 'desc',
    description: 'Order by flowStartMilliseconds, then id',
  }),
  format: StringEnum(['json', 'ndjson', 'csv'] as const, {
    default: 'json',
    description:
      'json: one page. ndjson or csv: every matching row from `cursor` on, in pages, streamed, up to the export cap',
  }),
};

/** Query string of GET /api/v1/profiles. */
export const ProfilesQuery = Type.Object(
  { ...filterProperties, ...stateProperties, ...pageProperties },
  { additionalProperties: false },
);

/** Query string of GET /api/v1/flows. */
export const FlowsQuery = Type.Object(
  {
    ...filterProperties,
    protocol: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 255, description: 'protocolIdentifier (6 TCP, 17 UDP...)' }),
    ),
    ...pageProperties,
  },
  { additionalProperties: false },
);

/** What a summary groups by. */
export const SUMMARY_GROUPS = [
  'destination',
  'destinationPort',
  'ipVersion',
  'exporter',
  'endState',
] as const;

/** Query string of GET /api/v1/profiles/summary. */
export const SummaryQueryString = Type.Object(
  {
    ...filterProperties,
    ...stateProperties,
    groupBy: StringEnum(SUMMARY_GROUPS, { default: 'destination', description: 'Grouping key' }),
    bucket: Type.Optional(
      Type.String({
        maxLength: 20,
        description:
          'Time bucket width on flowStartMilliseconds: a number with unit ms, s, m, h or d (`60s`, `5m`, `1h`), or plain ms; at most 366d. Absent: one bucket',
      }),
    ),
    limit: Type.Integer({
      minimum: 1,
      maximum: 1000,
      default: 50,
      description: 'Most (group, bucket) rows, largest profile count first',
    }),
  },
  { additionalProperties: false },
);

/** Path parameters of GET /api/v1/connections/:flowId. */
export const ConnectionParams = Type.Object({
  flowId: Type.String({
    pattern: '^[0-9]{1,20}$',
    description: 'flowId of the connection (unsigned 64-bit)',
  }),
});

const intProp = (description: string) => Type.Optional(Type.Integer({ description }));
const strProp = (description: string) => Type.Optional(Type.String({ description }));

/** Columns common to profiles and flows, in output order. */
const rowHead = {
  id: Type.Integer({ description: 'Row id in the store' }),
  exporter: Type.String({ description: 'Exporter key' }),
  observationDomainId: Type.Integer(),
  templateId: Type.Integer(),
  receivedMilliseconds: Type.Integer({ description: 'When the collector received the record, ms' }),
};

const kpiProps: Record<string, TSchema> = {};
for (const c of PROFILE_KPI_COLUMNS) kpiProps[c] = Type.Optional(Int64);

/** One profile as the API returns it. */
export const ProfileItem = Type.Object(
  {
    ...rowHead,
    flowId: Type.Optional(Int64),
    flowStartMilliseconds: intProp('Profile start, ms since the epoch'),
    flowEndMilliseconds: intProp('Profile end, ms since the epoch'),
    startState: strProp('flowStartReason as a state name (its number as text when unknown)'),
    endState: strProp('flowEndReason as a state name (its number as text when unknown)'),
    ipVersion: intProp('4 or 6'),
    sourceAddress: strProp('IPv4 (also for IPv4-mapped IPv6) or IPv6 text'),
    destinationAddress: strProp('IPv4 (also for IPv4-mapped IPv6) or IPv6 text'),
    sourceTransportPort: intProp('Source port'),
    destinationTransportPort: intProp('Destination port'),
    ...kpiProps,
    extra: Type.Optional(
      Type.Object(
        {},
        {
          additionalProperties: true,
          description: 'Fields of the record that have no column, by element name',
        },
      ),
    ),
  },
  {
    $id: 'Profile',
    title: 'Profile',
    additionalProperties: true,
    description:
      'One performance profile. Keys are IPFIX element names; a key is absent when the record did not carry the element. ' +
      'Times are ms since the epoch (numbers). The connection states are given by name under startState/endState; ' +
      'the numeric flowStartReason/flowEndReason columns are not repeated. 64-bit counters are numbers, or decimal strings beyond 2^53 - 1.',
  },
);

/** One flow (a record of any non-profile template) as the API returns it. */
export const FlowItem = Type.Object(
  {
    ...rowHead,
    flowStartMilliseconds: intProp('Flow start, ms since the epoch (from any flowStart* element)'),
    flowEndMilliseconds: intProp('Flow end, ms since the epoch'),
    protocolIdentifier: intProp('IP protocol'),
    ipVersion: intProp('4 or 6'),
    sourceAddress: strProp('Source address'),
    destinationAddress: strProp('Destination address'),
    sourceTransportPort: intProp('Source port'),
    destinationTransportPort: intProp('Destination port'),
    octetDeltaCount: Type.Optional(Int64),
    packetDeltaCount: Type.Optional(Int64),
    fields: Type.Object(
      {},
      {
        additionalProperties: true,
        description:
          'Every field of the record by element name: times ISO 8601, bytes hex, 64-bit integers beyond 2^53 - 1 as strings',
      },
    ),
  },
  {
    $id: 'Flow',
    title: 'Flow',
    additionalProperties: true,
    description:
      'One record of a non-profile template (e.g. a softflowd or pmacct flow). Columns absent when the record lacks them.',
  },
);

/** A row reference, typed loosely: rows are built column by column (see rows.ts). */
const ApiRowRef = (schema: TSchema) => Type.Unsafe<Record<string, unknown>>(Type.Ref(schema.$id!));

const nextCursor = Type.Union([Type.String(), Type.Null()], {
  description: 'Cursor of the next page; null on the last page',
});

/** A page of profiles. */
export const ProfilePage = Type.Object({ items: Type.Array(ApiRowRef(ProfileItem)), nextCursor });

/** A page of flows. */
export const FlowPage = Type.Object({ items: Type.Array(ApiRowRef(FlowItem)), nextCursor });

/** Every profile of one connection. */
export const ConnectionReply = Type.Object(
  {
    flowId: Int64,
    items: Type.Array(ApiRowRef(ProfileItem), { description: 'In flowStartMilliseconds order' }),
  },
  { description: 'The profiles of the connection' },
);

/** One (group, bucket) of a summary. */
export const SummaryItem = Type.Object({
  key: Type.Union([Type.String(), Type.Integer(), Type.Null()], {
    description: 'Group key (state name for endState); null for profiles without it',
  }),
  bucket: Type.Union([Type.Integer(), Type.Null()], {
    description: 'Bucket start, ms; null without buckets',
  }),
  profiles: Type.Integer(),
  connections: Type.Integer({ description: 'Distinct flowId (an upper bound when approximate)' }),
  transferredOctetTotalCount: Type.Number(),
  receivedOctetTotalCount: Type.Number(),
  retransmittedPacketTotalCount: Type.Number(),
  stallCount: Type.Number(),
  duplicatePacketTotalCount: Type.Number(),
  reorderingPacketCount: Type.Number(),
  rtt: Type.Union(
    [
      Type.Object({
        mean: Type.Number(),
        p50: Type.Number(),
        p90: Type.Number(),
        p95: Type.Number(),
        p99: Type.Number(),
      }),
      Type.Null(),
    ],
    {
      description:
        'RTT in ms (meanLatencyMicroseconds / 1000, else meanLatencyMilliseconds) over profiles that carry one; nearest-rank percentiles',
    },
  ),
  timeToEstablish: Type.Union(
    [Type.Object({ mean: Type.Number(), p50: Type.Number(), p90: Type.Number() }), Type.Null()],
    { description: 'timeToEstablishMilliseconds over profiles with a positive value' },
  ),
  approximate: Type.Optional(
    Type.Boolean({
      description:
        'true when block pre-aggregates served this group (blocks layout, large ranges): percentiles within 2.2 % (log histograms), connections an upper bound; counts, sums and means exact',
    }),
  ),
});

/** GET /api/v1/profiles/summary reply. */
export const SummaryReply = Type.Object(
  {
    groupBy: StringEnum(SUMMARY_GROUPS),
    bucketMs: Type.Union([Type.Integer(), Type.Null()]),
    items: Type.Array(SummaryItem),
  },
  { description: 'Groups (and buckets), largest profile count first' },
);

/** One exporter's accounting. */
export const ExporterItem = Type.Object({
  exporter: Type.String({ description: 'Key: transport:address:port, or file:NAME' }),
  transport: Type.String(),
  address: Type.Union([Type.String(), Type.Null()]),
  port: Type.Union([Type.Integer(), Type.Null()]),
  firstSeen: Type.Integer({ description: 'ms since the epoch' }),
  lastSeen: Type.Integer({ description: 'ms since the epoch' }),
  records: Type.Integer({ description: 'Data records received' }),
  profiles: Type.Integer(),
  flows: Type.Integer(),
  lostRecords: Type.Integer({ description: 'Records lost, from sequence-number gaps' }),
  decodeErrors: Type.Integer(),
  templateIds: Type.Array(Type.Integer(), { description: 'Templates currently defined' }),
});

/** GET /api/v1/exporters reply. */
export const ExportersReply = Type.Object(
  { items: Type.Array(ExporterItem) },
  { description: 'Every exporter, by key' },
);

/** GET /healthz reply. */
export const HealthReply = Type.Object(
  {
    status: Type.Literal('ok'),
    store: Type.String({ description: 'Store backend (sqlite, clickhouse)' }),
  },
  { description: 'The collector runs' },
);
