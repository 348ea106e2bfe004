/**
 * Query parameters the schemas cannot check alone (times, addresses, states, bucket widths)
 * turned into store filters. Every failure is a COL_ERR_BAD_QUERY naming the parameter.
 */
import { isIP } from 'node:net';
import { ipv6ToString, writeIpv6 } from '../../ipfix/types.js';
import { CollectorError } from '../errors.js';
import { STATE_NAMES, stateNumber } from '../profile-schema.js';
import type { RowFilter } from '../store/types.js';

/** The filter parameters as validated by the query schemas. */
export interface FilterParams {
  from?: string;
  to?: string;
  address?: string;
  sourceAddress?: string;
  destinationAddress?: string;
  port?: number;
  sourcePort?: number;
  destinationPort?: number;
  exporter?: string;
  templateId?: number;
  ipVersion?: number;
  startState?: string;
  endState?: string;
  synRetransmitted?: boolean;
  protocol?: number;
}

function bad(param: string, why: string): CollectorError {
  return new CollectorError('COL_ERR_BAD_QUERY', `querystring/${param} ${why}`);
}

// Date, or date and time with seconds, fraction and zone optional... except the zone, which a
// time must carry: a zoneless time would mean whatever the server's local zone is.
const ISO =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?([Zz]|([+-])(\d{2}):?(\d{2})))?$/;
const TIME_MESSAGE = 'must be an ISO 8601 date or date-time with a zone (Z or ±hh:mm), or ms since the epoch';

/** ms since the epoch of an ISO 8601 or decimal ms time. */
export function parseTime(param: string, text: string): number {
  if (/^-?\d{1,16}$/.test(text)) {
    const n = Number(text);
    if (Number.isSafeInteger(n)) return n;
  }
  const m = ISO.exec(text);
  if (!m) throw bad(param, TIME_MESSAGE);
  const [y, mo, d, h = '0', mi = '0', s = '0', frac = ''] = m.slice(1, 8);
  const parts = [Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)] as const;
  const date = new Date(Date.UTC(...parts, Number(frac.padEnd(3, '0').slice(0, 3))));
  // Date.UTC rolls 2026-02-30 over to March; a value that does not come back is not a date.
  if (
    date.getUTCFullYear() !== parts[0] ||
    date.getUTCMonth() !== parts[1] ||
    date.getUTCDate() !== parts[2] ||
    date.getUTCHours() !== parts[3] ||
    date.getUTCMinutes() !== parts[4] ||
    date.getUTCSeconds() !== parts[5]
  ) {
    throw bad(param, `${TIME_MESSAGE}; ${JSON.stringify(text)} is not a valid date`);
  }
  let ms = date.getTime();
  if (m[9]) {
    const offH = Number(m[10]);
    const offM = Number(m[11]);
    if (offH > 23 || offM > 59) throw bad(param, `${TIME_MESSAGE}; the zone offset is out of range`);
    ms -= (m[9] === '-' ? -1 : 1) * (offH * 60 + offM) * 60_000;
  }
  return ms;
}

/**
 * The address text as the store keeps it: dotted quad for IPv4, RFC 5952 for IPv6. Profiles
 * store IPv4-mapped addresses as IPv4 (`unmapped`); flows keep them as received.
 */
export function parseAddress(param: string, text: string, unmapped: boolean): string {
  const kind = isIP(text);
  if (kind === 4) return text.split('.').map(Number).join('.');
  if (kind === 6) {
    const b = new Uint8Array(16);
    try {
      writeIpv6(b, 0, text);
    } catch {
      throw bad(param, 'must be an IPv4 or IPv6 address (no zone index)');
    }
    const a = ipv6ToString(b, 0);
    return unmapped && a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
  }
  throw bad(param, 'must be an IPv4 or IPv6 address');
}

/** A state number from a name (any case) or a number. */
export function parseState(param: string, text: string): number {
  if (/^\d{1,3}$/.test(text) && Number(text) <= 255) return Number(text);
  const n = stateNumber(text);
  if (n === undefined)
    throw bad(param, `must be one of ${Object.values(STATE_NAMES).join(', ')} or a number 0-255`);
  return n;
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
/** Widest summary bucket: a leap year. */
export const MAX_BUCKET_MS = 366 * 86_400_000;

/** Bucket width in ms from `60s`, `5m`, `1h`, `1d`, `250ms` or plain ms. */
export function parseBucket(text: string): number {
  const m = /^(\d{1,12})(ms|s|m|h|d)?$/.exec(text.trim());
  const ms = m ? Number(m[1]) * UNITS[m[2] ?? 'ms']! : Number.NaN;
  if (!(ms >= 1 && ms <= MAX_BUCKET_MS)) {
    throw new CollectorError(
      'COL_ERR_BAD_QUERY',
      `querystring/bucket must be a whole number of ms, s, m, h or d (e.g. 60s, 5m, 1h), from 1ms to 366d`,
    );
  }
  return ms;
}

/** The store filter of validated query parameters (`profiles`: states allowed, addresses unmapped). */
export function toRowFilter(q: FilterParams, table: 'profiles' | 'flows'): RowFilter {
  const f: RowFilter = {};
  if (q.from !== undefined) f.from = parseTime('from', q.from);
  if (q.to !== undefined) f.to = parseTime('to', q.to);
  if (f.from !== undefined && f.to !== undefined && f.from > f.to) throw bad('from', 'must not be after to');
  const unmapped = table === 'profiles';
  if (q.address !== undefined) f.address = parseAddress('address', q.address, unmapped);
  if (q.sourceAddress !== undefined)
    f.sourceAddress = parseAddress('sourceAddress', q.sourceAddress, unmapped);
  if (q.destinationAddress !== undefined) {
    f.destinationAddress = parseAddress('destinationAddress', q.destinationAddress, unmapped);
  }
  if (q.port !== undefined) f.port = q.port;
  if (q.sourcePort !== undefined) f.sourcePort = q.sourcePort;
  if (q.destinationPort !== undefined) f.destinationPort = q.destinationPort;
  if (q.exporter !== undefined) f.exporter = q.exporter;
  if (q.templateId !== undefined) f.templateId = q.templateId;
  if (q.ipVersion !== undefined) f.ipVersion = q.ipVersion;
  if (q.startState !== undefined) f.startState = parseState('startState', q.startState);
  if (q.endState !== undefined) f.endState = parseState('endState', q.endState);
  if (q.synRetransmitted !== undefined) f.synRetransmitted = q.synRetransmitted;
  if (q.protocol !== undefined) f.protocol = q.protocol;
  return f;
}
