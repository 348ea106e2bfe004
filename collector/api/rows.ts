/**
 * Store rows to API rows: state numbers to names, JSON columns to objects, 64-bit integers to
 * numbers when safe (decimal strings otherwise), absent columns dropped. Also the CSV encoding
 * of API rows, with the column lists that make up CSV headers.
 */
import { FLOW_COLUMNS, PROFILE_KPI_COLUMNS, STATE_NAMES } from '../profile-schema.js';
import type { FlowRow, ProfileRow, Scalar } from '../store/types.js';

/** A row as the API returns it. */
export type ApiRow = Record<string, unknown>;

/** Columns of an API profile, in output (and CSV header) order. */
export const PROFILE_API_COLUMNS = [
  'id',
  'exporter',
  'observationDomainId',
  'templateId',
  'receivedMilliseconds',
  'flowId',
  'flowStartMilliseconds',
  'flowEndMilliseconds',
  'startState',
  'endState',
  'ipVersion',
  'sourceAddress',
  'destinationAddress',
  'sourceTransportPort',
  'destinationTransportPort',
  ...PROFILE_KPI_COLUMNS,
  'extra',
] as const;

/** Columns of an API flow, in output (and CSV header) order. */
export const FLOW_API_COLUMNS = [
  'id',
  'exporter',
  'observationDomainId',
  'templateId',
  'receivedMilliseconds',
  ...FLOW_COLUMNS,
  'fields',
] as const;

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A JSON-safe scalar: bigints become numbers when safe, decimal strings otherwise. */
export function jsonScalar(v: Scalar | undefined): number | string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'bigint') return v <= MAX_SAFE && v >= -MAX_SAFE ? Number(v) : v.toString();
  return v;
}

/** State name of a flowStartReason/flowEndReason number (the number as text when unknown). */
export function stateName(v: Scalar | undefined): string | null {
  if (v === undefined || v === null) return null;
  return STATE_NAMES[Number(v)] ?? String(v);
}

// A JSON string literal, or a JSON number token. Strings come first so digits inside them are
// skipped; numbers are matched whole so a fraction or exponent is never split off.
const TOKEN = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;

/**
 * JSON.parse that keeps integers beyond 2^53 - 1 exact, as decimal strings (the store writes
 * 64-bit values as bare digits, which JSON.parse would round).
 */
export function parseJsonExact(text: string): unknown {
  if (!/\d{16}/.test(text)) return JSON.parse(text);
  const safe = text.replace(TOKEN, (tok) => {
    if (tok.charCodeAt(0) === 34 || tok.length < 16 || /[.eE]/.test(tok)) return tok;
    const n = BigInt(tok);
    return n <= MAX_SAFE && n >= -MAX_SAFE ? tok : `"${tok}"`;
  });
  return JSON.parse(safe);
}

/** The parsed object of a JSON column; text that is not an object is kept under `_raw`. */
function jsonObject(text: string): Record<string, unknown> {
  try {
    const v = parseJsonExact(text);
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // Only this collector writes these columns; a foreign or damaged value is still returned.
  }
  return { _raw: text };
}

/** An API profile from a stored one. */
export function profileToApi(row: ProfileRow & { id: number }): ApiRow {
  const out: ApiRow = {};
  for (const c of PROFILE_API_COLUMNS) {
    let v: unknown;
    if (c === 'startState') v = stateName(row['flowStartReason']);
    else if (c === 'endState') v = stateName(row['flowEndReason']);
    else if (c === 'extra') v = row.extra === null || row.extra === undefined ? null : jsonObject(row.extra);
    else v = jsonScalar(row[c]);
    if (v !== null) out[c] = v;
  }
  return out;
}

/** An API flow from a stored one. */
export function flowToApi(row: FlowRow & { id: number }): ApiRow {
  const out: ApiRow = {};
  for (const c of FLOW_API_COLUMNS) {
    const v = c === 'fields' ? jsonObject(row.fields) : jsonScalar(row[c]);
    if (v !== null) out[c] = v;
  }
  return out;
}

/** One CSV field (RFC 4180): quoted when it holds a comma, quote or line break. */
function csvField(v: unknown): string {
  if (v === undefined || v === null) return '';
  const s = typeof v === 'object' ? JSON.stringify(v) : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** One CSV line (CRLF-terminated) of `row` over `columns`; objects are written as JSON text. */
export function csvLine(columns: readonly string[], row: ApiRow): string {
  let line = '';
  for (let i = 0; i < columns.length; i++) line += (i ? ',' : '') + csvField(row[columns[i]!]);
  return `${line}\r\n`;
}

/** The CSV header line of `columns`. */
export function csvHeader(columns: readonly string[]): string {
  return `${columns.join(',')}\r\n`;
}
