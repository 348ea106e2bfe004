/**
 * The ClickHouse schema of kpiflow: column types, tables and the numbered migrations that
 * create them. Every statement is idempotent (IF NOT EXISTS), so any number of collectors may
 * start against one database at the same time, and SQL stays within what ClickHouse 18.16
 * (Debian's) and current releases both accept.
 */
import { FLOW_COLUMNS, PROFILE_ID_COLUMNS, PROFILE_KPI_COLUMNS } from '../profile-schema.js';

/** Milliseconds in a day: tables are partitioned by UTC day of their time column. */
export const DAY_MS = 86_400_000;

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
