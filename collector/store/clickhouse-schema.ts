/**
 * The ClickHouse schema of kpiflow: column types, tables and the numbered migrations that
 * create them. Every statement is idempotent (IF NOT EXISTS), so any number of collectors may
 * start against one database at the same time, and SQL stays within what ClickHouse 18.16
 * (Debian's) and current releases both accept.
 */
import { FLOW_COLUMNS, PROFILE_ID_COLUMNS, PROFILE_KPI_COLUMNS } from '../profile-schema.js';

/** Milliseconds in a day: tables are partitioned by UTC day of their time column. */
export const DAY_MS = 86_400_000;

/** Hours of the roll-ups, ms. */
export const HOUR_MS = 3_600_000;

/** A profile's RTT in ms, as the summaries read it (the SQLite store's expression). */
export const RTT_EXPR =
  'if(isNull(meanLatencyMicroseconds), toFloat64(meanLatencyMilliseconds), meanLatencyMicroseconds / 1000)';
/** A profile's time to establish in ms (0 when it has none). */
export const TTE_EXPR = 'toFloat64(ifNull(timeToEstablishMilliseconds, 0))';

/** The counters a summary sums, in the order of the roll-ups' s0, s1, ... columns. */
export const SUMMED_COLUMNS = [
  'transferredOctetTotalCount',
  'receivedOctetTotalCount',
  'retransmittedPacketTotalCount',
  'stallCount',
  'duplicatePacketTotalCount',
  'reorderingPacketCount',
] as const;

/**
 * The aggregate states of a summary group, as a roll-up row holds them (AggregatingMergeTree):
 * count, distinct flowIds (uniq: an estimate), the sums, and RTT and time-to-establish counts,
 * means and t-digests. The same text makes the roll-up tables, their views and the queries that
 * add raw rows to them, so that the state types match.
 */
export const ROLLUP_STATES = [
  'countState() AS n',
  'uniqState(flowId) AS u',
  ...SUMMED_COLUMNS.map((c, i) => `sumState(ifNull(${c}, 0)) AS s${i}`),
  `countState(${RTT_EXPR}) AS rc`,
  `avgState(${RTT_EXPR}) AS ra`,
  `quantilesTDigestState(0.5, 0.9, 0.95, 0.99)(${RTT_EXPR}) AS rq`,
  `countIfState(${TTE_EXPR} > 0) AS ec`,
  `avgIfState(${TTE_EXPR}, ${TTE_EXPR} > 0) AS ea`,
  `quantilesTDigestIfState(0.5, 0.9)(${TTE_EXPR}, ${TTE_EXPR} > 0) AS eq`,
].join(',\n  ');

/** Names of the state columns of a roll-up row. */
export const ROLLUP_STATE_COLUMNS = [
  'n',
  'u',
  ...SUMMED_COLUMNS.map((_c, i) => `s${i}`),
  'rc',
  'ra',
  'rq',
  'ec',
  'ea',
  'eq',
];

/**
 * Hourly roll-ups of profiles, kept by materialized views as rows arrive (so they are never
 * behind): one per summary dimension. ORDER BY cannot hold Nullable columns before ClickHouse
 * 20, so a NULL key is a flag column next to a default value.
 */
export const ROLLUPS = {
  destination: {
    table: 'profile_hours_destination',
    keys: "toUInt8(isNull(destinationAddress)) AS keyNull, ifNull(destinationAddress, '') AS key",
    order: 'hour, keyNull, key',
  },
  destinationPort: {
    table: 'profile_hours_port',
    keys: 'toUInt8(isNull(destinationTransportPort)) AS keyNull, ifNull(destinationTransportPort, 0) AS key',
    order: 'hour, keyNull, key',
  },
  dims: {
    table: 'profile_hours_dims',
    keys: `exporter, toUInt8(isNull(ipVersion)) AS ipNull, ifNull(ipVersion, 0) AS ip,
  toUInt8(isNull(flowEndReason)) AS endNull, ifNull(flowEndReason, 0) AS endState`,
    order: 'hour, exporter, ipNull, ip, endNull, endState',
  },
} as const;

/**
 * For each summary grouping: its roll-up, and the columns that hold its key there (a NULL flag
 * and a value, or a value that is never NULL).
 */
export const ROLLUP_GROUPS = {
  destination: { rollup: ROLLUPS.destination, nullColumn: 'keyNull', valueColumn: 'key' },
  destinationPort: { rollup: ROLLUPS.destinationPort, nullColumn: 'keyNull', valueColumn: 'key' },
  ipVersion: { rollup: ROLLUPS.dims, nullColumn: 'ipNull', valueColumn: 'ip' },
  endState: { rollup: ROLLUPS.dims, nullColumn: 'endNull', valueColumn: 'endState' },
  exporter: { rollup: ROLLUPS.dims, nullColumn: null, valueColumn: 'exporter' },
} as const;

/** Columns of an `exporter_deltas` row, in the order the store inserts them. */
export const EXPORTER_DELTA_COLUMNS = [
  'exporter',
  'transport',
  'address',
  'port',
  'lastSeen',
  'records',
  'profiles',
  'flows',
  'lostRecords',
  'decodeErrors',
  'templateIds',
] as const;

function rollupSelect(r: (typeof ROLLUPS)[keyof typeof ROLLUPS], where: string): string {
  return `SELECT toInt64(intDiv(t, ${HOUR_MS}) * ${HOUR_MS}) AS hour, ${r.keys},
  ${ROLLUP_STATES}
FROM profiles${where} GROUP BY ${r.order}`;
}

/** ClickHouse type of each typed profile column. */
export const PROFILE_TYPES: Readonly<Record<string, string>> = {
  flowId: 'Nullable(UInt64)',
  flowStartMilliseconds: 'Nullable(UInt64)',
  flowEndMilliseconds: 'Nullable(UInt64)',
  flowStartReason: 'Nullable(UInt8)',
  flowEndReason: 'Nullable(UInt8)',
  ipVersion: 'Nullable(UInt8)',
  sourceAddress: 'Nullable(String)',
  destinationAddress: 'Nullable(String)',
  sourceTransportPort: 'Nullable(UInt16)',
  destinationTransportPort: 'Nullable(UInt16)',
  ...Object.fromEntries(PROFILE_KPI_COLUMNS.map((c) => [c, 'Nullable(UInt64)'])),
};

/** ClickHouse type of each typed flow column. */
export const FLOW_TYPES: Readonly<Record<string, string>> = {
  flowStartMilliseconds: 'Nullable(UInt64)',
  flowEndMilliseconds: 'Nullable(UInt64)',
  protocolIdentifier: 'Nullable(UInt8)',
  ipVersion: 'Nullable(UInt8)',
  sourceAddress: 'Nullable(String)',
  destinationAddress: 'Nullable(String)',
  sourceTransportPort: 'Nullable(UInt16)',
  destinationTransportPort: 'Nullable(UInt16)',
  octetDeltaCount: 'Nullable(UInt64)',
  packetDeltaCount: 'Nullable(UInt64)',
};

/** Columns read back as 64-bit integers (JSON text in ClickHouse output). */
export const WIDE_COLUMNS: ReadonlySet<string> = new Set([
  't',
  'id',
  'receivedMilliseconds',
  ...Object.entries({ ...PROFILE_TYPES, ...FLOW_TYPES })
    .filter(([, ty]) => ty.includes('64'))
    .map(([c]) => c),
]);

const cols = (names: readonly string[], types: Readonly<Record<string, string>>) =>
  names.map((c) => `  ${c} ${types[c]}`).join(',\n');

/**
 * Migrations: index i brings schema version i to i + 1. Never edit a shipped one. `t` is the
 * profile's start time, or its arrival when it has none (as in SQLite); flows page by their
 * start time with -1 for none, which sorts them first as SQLite's NULLs do.
 */
export const CLICKHOUSE_MIGRATIONS: readonly (readonly string[])[] = [
  [
    `CREATE TABLE IF NOT EXISTS profiles (
  t Int64,
  id UInt64,
  exporter String,
  observationDomainId UInt32,
  templateId UInt16,
  receivedMilliseconds Int64,
${cols([...PROFILE_ID_COLUMNS, ...PROFILE_KPI_COLUMNS], PROFILE_TYPES)},
  extra Nullable(String)
) ENGINE = MergeTree PARTITION BY intDiv(t, ${DAY_MS}) ORDER BY (t, id)`,
    // The profiles of a connection by flowId: a narrow copy of (flowId, t) sorted by flowId,
    // kept by a materialized view; the profiles are then read by their primary key t.
    `CREATE TABLE IF NOT EXISTS profile_flows (
  flowId UInt64,
  t Int64
) ENGINE = MergeTree PARTITION BY intDiv(t, ${DAY_MS}) ORDER BY (flowId, t)`,
    `CREATE MATERIALIZED VIEW IF NOT EXISTS profile_flows_mv TO profile_flows
  AS SELECT ifNull(flowId, 0) AS flowId, t FROM profiles`,
    // The roll-ups: tables made from their own SELECT (ClickHouse infers the state types), then
    // the views that fill them on every insert into profiles.
    ...Object.values(ROLLUPS).flatMap((r) => [
      `CREATE TABLE IF NOT EXISTS ${r.table} ENGINE = AggregatingMergeTree
  PARTITION BY intDiv(hour, ${DAY_MS}) ORDER BY (${r.order})
  AS ${rollupSelect(r, ' WHERE 0')}`,
      `CREATE MATERIALIZED VIEW IF NOT EXISTS ${r.table}_mv TO ${r.table} AS ${rollupSelect(r, '')}`,
    ]),
    `CREATE TABLE IF NOT EXISTS flows (
  t Int64,
  id UInt64,
  exporter String,
  observationDomainId UInt32,
  templateId UInt16,
  receivedMilliseconds Int64,
${cols(FLOW_COLUMNS, FLOW_TYPES)},
  fields String
) ENGINE = MergeTree PARTITION BY intDiv(receivedMilliseconds, ${DAY_MS}) ORDER BY (t, id)`,
    // Exporter accounting as increments, one row per exporter and batch: collectors never
    // update a shared row, and a query sums them.
    `CREATE TABLE IF NOT EXISTS exporter_deltas (
  exporter String,
  transport String,
  address Nullable(String),
  port Nullable(UInt16),
  lastSeen Int64,
  records UInt64,
  profiles UInt64,
  flows UInt64,
  lostRecords UInt64,
  decodeErrors UInt64,
  templateIds String
) ENGINE = MergeTree ORDER BY (exporter, lastSeen)`,
  ],
];

/** Tables partitioned by day, with the column that decides their rows' age. */
export const AGED_TABLES = [
  { table: 'profiles', time: 't' },
  { table: 'profile_flows', time: 't' },
  { table: 'flows', time: 'receivedMilliseconds' },
  ...Object.values(ROLLUPS).map((r) => ({ table: r.table, time: 'hour' })),
] as const;

/** Parsed `SELECT version()`. */
export interface ClickHouseVersion {
  major: number;
  minor: number;
  text: string;
}

/** Parses a ClickHouse version string such as '18.16.1' or '24.8.4.13'. */
export function parseVersion(text: string): ClickHouseVersion {
  const m = /^(\d+)\.(\d+)/.exec(text.trim());
  return { major: m ? Number(m[1]) : 0, minor: m ? Number(m[2]) : 0, text: text.trim() };
}

/** True when the server accepts table TTL expressions (ClickHouse 19.6 and later). */
export function hasTableTtl(v: ClickHouseVersion): boolean {
  return v.major > 19 || (v.major === 19 && v.minor >= 6);
}
