/**
 * The ClickHouse store's pure parts: which server errors refuse the data, SQL and TabSeparated
 * literals (values are inlined: 18.16 has no query parameters), cursors, and the conversion of
 * ClickHouse's JSON rows and summary groups into the store's types.
 */
import { ClickHouseError } from '@clickhouse/client';
import { CollectorError } from '../errors.js';
import { SUMMED_COLUMNS, WIDE_COLUMNS } from './clickhouse-schema.js';
import type { SendFailure } from './clickhouse-spool.js';
import type { Scalar, SummaryRow } from './types.js';

/**
 * ClickHouse error codes that refuse the data itself: sending the batch again would fail again
 * and hold up every batch behind it. Any other failure (network, timeouts, a busy or partly down
 * cluster, authentication, a missing table) is retried: the batch is not at fault.
 */
const DATA_ERROR_CODES = new Set([
  6, // CANNOT_PARSE_TEXT
  26, // CANNOT_PARSE_QUOTED_STRING
  27, // CANNOT_PARSE_INPUT_ASSERTION_FAILED
  33, // CANNOT_READ_ALL_DATA
  38, // CANNOT_PARSE_DATE
  41, // CANNOT_PARSE_DATETIME
  53, // TYPE_MISMATCH
  69, // ARGUMENT_OUT_OF_BOUND
  70, // CANNOT_CONVERT_TYPE
  72, // CANNOT_PARSE_NUMBER
  117, // INCORRECT_DATA
  131, // TOO_LARGE_STRING_SIZE
]);

/** The ClickHouse error code of an error, when the server sent one. */
export function clickHouseErrorCode(err: unknown): number | null {
  if (err instanceof ClickHouseError && /^\d+$/.test(err.code)) return Number(err.code);
  // @clickhouse/client recognises only newer servers' messages; 18.16 writes "Code: 27, e.displayText() = ...".
  const m = err instanceof Error ? /^Code: (\d+)[,.]/.exec(err.message) : null;
  return m ? Number(m[1]) : null;
}

/** Whether a failed insert should be retried (anything but a refusal of the data itself). */
export function classifyInsertError(err: unknown): SendFailure {
  const code = clickHouseErrorCode(err);
  return code !== null && DATA_ERROR_CODES.has(code) ? 'reject' : 'retry';
}

/** A SQL string literal. */
export function sqlString(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** A SQL integer literal (values are checked: the SQL text is built from them). */
export function sqlInt(v: number | bigint): string {
  if (typeof v === 'bigint') return v.toString();
  if (!Number.isFinite(v)) throw new CollectorError('COL_ERR_BAD_QUERY', `${v} is not a number`);
  return String(Math.trunc(v));
}

/** TabSeparated escaping of a string cell. */
export function tsvText(s: string): string {
  return /[\\\t\n\r\0']/.test(s)
    ? s.replace(/[\\\t\n\r\0']/g, (c) =>
        c === '\t' ? '\\t' : c === '\n' ? '\\n' : c === '\r' ? '\\r' : c === '\0' ? '\\0' : `\\${c}`,
      )
    : s;
}

/** Cursor text of a (time, id) position (the SQLite store's format). */
export function encodeCursor(t: Scalar | undefined, id: number): string {
  return `${t === null || t === undefined ? 'n' : String(t)}_${id}`;
}

export function decodeCursor(c: string): { t: number | null; id: number } {
  const m = /^(n|-?\d+)_(\d+)$/.exec(c);
  if (!m)
    throw new CollectorError('COL_ERR_BAD_QUERY', `cursor ${JSON.stringify(c)} is not one this API returned`);
  return { t: m[1] === 'n' ? null : Number(m[1]), id: Number(m[2]) };
}

/** Key expressions of the summary groups over profiles. */
export const RAW_KEYS = {
  destination: 'destinationAddress',
  destinationPort: 'destinationTransportPort',
  ipVersion: 'ipVersion',
  exporter: 'exporter',
  endState: 'flowEndReason',
} as const;

/** Summaries spanning at least this many whole hours, unfiltered, read the hourly roll-ups. */
export const ROLLUP_MIN_HOURS = 3;

/** A summary group from its row (profiles, connections, sums s0..., RTT and TTE statistics). */
export function summaryRow(g: Record<string, unknown>, bucketed: boolean, approximate: boolean): SummaryRow {
  const num = (v: unknown) => (typeof v === 'string' ? Number(v) : (v as number));
  const rn = num(g['rn']);
  const en = num(g['en']);
  const rq = (g['rq'] as unknown[]).map(num);
  const tq = (g['tq'] as unknown[]).map(num);
  const row: SummaryRow = {
    key: g['key'] as string | number | null,
    bucket: bucketed ? num(g['bucket']) : null,
    profiles: num(g['profiles']),
    connections: num(g['connections']),
    transferredOctetTotalCount: 0,
    receivedOctetTotalCount: 0,
    retransmittedPacketTotalCount: 0,
    stallCount: 0,
    duplicatePacketTotalCount: 0,
    reorderingPacketCount: 0,
    rtt: rn ? { mean: num(g['rttMean']), p50: rq[0]!, p90: rq[1]!, p95: rq[2]!, p99: rq[3]! } : null,
    timeToEstablish: en ? { mean: num(g['tteMean']), p50: tq[0]!, p90: tq[1]! } : null,
    ...(approximate ? { approximate: true as const } : {}),
  };
  for (const [i, c] of SUMMED_COLUMNS.entries())
    (row as unknown as Record<string, number>)[c] = num(g[`s${i}`]);
  return row;
}

/** A 64-bit value as ClickHouse's JSON writes it (text), as a number when exact, else a bigint. */
export function wide(v: unknown): Scalar {
  if (typeof v !== 'string') return v as Scalar;
  const b = BigInt(v);
  return b >= -9007199254740991n && b <= 9007199254740991n ? Number(b) : b;
}

/** A row read back: 64-bit columns made exact numbers or bigints, `t` removed. */
export function fromJson<T>(r: Record<string, unknown>): T {
  for (const k in r) if (WIDE_COLUMNS.has(k)) r[k] = wide(r[k]);
  delete r['t'];
  return r as T;
}
