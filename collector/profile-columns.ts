/**
 * Columnar ingest of profile records: for a fixed-length profile template whose every field is a
 * number or an address, a function compiled once per template reads the data set's bytes
 * straight into the batch's column arrays (collector/store/packed-batch.ts). No record object,
 * no row object, no address string for an address seen before in the batch: at 250 k records/s
 * the objects of the generic path (decoder record, then row) were a third of the main thread's
 * time in garbage collection.
 *
 * It stores exactly what the generic path (profile-row.ts over decoded records) stores; any
 * template it cannot read that way (variable-length fields, strings, booleans, dates other than
 * seconds and milliseconds, a name twice) returns null and takes the generic path. A test feeds
 * the same records through both and compares the stores.
 */
import {
  DataType,
  ipv4ToString,
  ipv6ToString,
  lengthFitsType,
  readSigned,
  readUnsigned,
  type Template,
} from '../ipfix/index.js';
import { ADDRESS_FIELDS, PROFILE_COLUMN_SET } from './profile-schema.js';
import type { TableBuilder } from './store/packed-batch.js';

/** Reads `count` records of `recordLength` bytes from `start` into a profile table builder. */
export type ColumnDecoder = (
  bytes: Uint8Array,
  dv: DataView,
  start: number,
  count: number,
  recordLength: number,
  b: TableBuilder,
  exporter: string,
  odid: number,
  now: number,
) => void;

const cache = new WeakMap<object, ColumnDecoder | null>();

/** JSON of a number as valueToJson writes it for integer and float elements. */
function numJson(v: number | bigint): string {
  if (typeof v === 'bigint') return v.toString();
  return Number.isFinite(v) ? String(v) : JSON.stringify(String(v));
}

/**
 * The column decoder of a template for a builder of the given columns, or null when the template
 * needs the generic path. Compiled on first use; again when the template's fields are re-resolved.
 */
export function columnDecoder(t: Template, b: TableBuilder): ColumnDecoder | null {
  let d = cache.get(t.fields);
  if (d === undefined) {
    d = compile(t, b.numColumns, b.textColumns);
    cache.set(t.fields, d);
  }
  return d;
}

/** Expression reading a number of `type` and `len` bytes at `o + off`, or null when unsupported. */
function readExpr(type: number, len: number, off: number): { expr: string; maybeBig: boolean } | null {
  if (!lengthFitsType(type, len)) return null;
  const at = `o + ${off}`;
  switch (type) {
    case DataType.unsigned8:
    case DataType.unsigned16:
    case DataType.unsigned32:
    case DataType.unsigned64:
    case DataType.dateTimeSeconds:
    case DataType.dateTimeMilliseconds:
      if (len === 1) return { expr: `bytes[${at}]`, maybeBig: false };
      if (len === 2) return { expr: `dv.getUint16(${at})`, maybeBig: false };
      if (len === 4) return { expr: `dv.getUint32(${at})`, maybeBig: false };
      if (len === 8) return { expr: `u64(dv, ${at})`, maybeBig: true };
      return { expr: `readUnsigned(bytes, ${at}, ${len})`, maybeBig: len > 6 };
    case DataType.signed8:
    case DataType.signed16:
    case DataType.signed32:
    case DataType.signed64:
      if (len === 1) return { expr: `dv.getInt8(${at})`, maybeBig: false };
      if (len === 2) return { expr: `dv.getInt16(${at})`, maybeBig: false };
      if (len === 4) return { expr: `dv.getInt32(${at})`, maybeBig: false };
      return { expr: `readSigned(bytes, ${at}, ${len})`, maybeBig: len > 6 };
    case DataType.float32:
      return { expr: `dv.getFloat32(${at})`, maybeBig: false };
    case DataType.float64:
      return { expr: len === 4 ? `dv.getFloat32(${at})` : `dv.getFloat64(${at})`, maybeBig: false };
    default:
      return null;
  }
}

/** An unsigned 64-bit read: a number when exact, else a bigint (as the decoder reads it). */
function u64(dv: DataView, o: number): number | bigint {
  const hi = dv.getUint32(o);
  const lo = dv.getUint32(o + 4);
  if (hi < 0x200000) return hi * 4294967296 + lo;
  return (BigInt(hi) << 32n) | BigInt(lo);
}

function compile(
  t: Template,
  numColumns: readonly string[],
  textColumns: readonly string[],
): ColumnDecoder | null {
  if (t.fixedLength <= 0 || t.isOptions) return null;
  const nj = (c: string) => numColumns.indexOf(c);
  const tj = (c: string) => textColumns.indexOf(c);
  const names = new Set<string>();
  const targets = new Set<string>();
  const lines: string[] = [];
  const once: string[] = [];
  const extras: string[] = [];
  let hasIpVersion = false;
  let firstAddress: 'v4' | 'v6' | null = null;
  let off = 0;
  for (const f of t.fields) {
    const name = f.element.name;
    const type = f.element.type;
    const len = f.length;
    const at = off;
    off += len;
    // A name twice (the generic path keeps its last value) is left to the generic path.
    if (names.has(name)) return null;
    names.add(name);
    const addr = ADDRESS_FIELDS[name];
    if (addr) {
      if (targets.has(addr)) return null;
      targets.add(addr);
      const j = tj(addr);
      if (j < 0) return null;
      if (type === DataType.ipv4Address && len === 4) {
        firstAddress ??= 'v4';
        lines.push(
          `x = dv.getUint32(o + ${at}); a = b.v4.get(x); idx[to + ${j}] = a === undefined ? b.addIpv4(x, ipv4ToString(bytes, o + ${at})) : a;`,
        );
      } else if (type === DataType.ipv6Address && len === 16) {
        const first = firstAddress === null;
        firstAddress ??= 'v6';
        // IPv4-mapped (the agent sends IPv4 so): the IPv4 path, texts as unmap(ipv6ToString()).
        lines.push(
          `if (dv.getUint32(o + ${at}) === 0 && dv.getUint32(o + ${at + 4}) === 0 && dv.getUint32(o + ${at + 8}) === 0xffff) {`,
          `  x = dv.getUint32(o + ${at + 12}); a = b.v4.get(x); idx[to + ${j}] = a === undefined ? b.addIpv4(x, ipv4ToString(bytes, o + ${at + 12})) : a;${first ? ' v6 = 4;' : ''}`,
          `} else { idx[to + ${j}] = b.text(ipv6ToString(bytes, o + ${at}));${first ? ' v6 = 6;' : ''} }`,
        );
      } else return null;
      continue;
    }
    const r = readExpr(type, len, at);
    if (!r) return null;
    if (PROFILE_COLUMN_SET.has(name)) {
      const j = nj(name);
      if (j < 0) return null;
      if (name === 'ipVersion') hasIpVersion = true;
      targets.add(name);
      once.push(`present[${j}] = 1;`);
      lines.push(
        r.maybeBig
          ? `v = ${r.expr}; if (typeof v === 'bigint') b.big(no + ${j}, v); else num[no + ${j}] = v;`
          : `num[no + ${j}] = ${r.expr};`,
      );
    } else {
      // Not a column: kept in `extra`, as the generic path writes it (template order).
      if (type === DataType.dateTimeSeconds || type === DataType.dateTimeMilliseconds) return null;
      const key = `${extras.length ? ',' : '{'}${JSON.stringify(name)}:`;
      extras.push(`+ ${JSON.stringify(key)} + numJson(${r.expr})`);
    }
  }
  const ipvJ = nj('ipVersion');
  if (!hasIpVersion && firstAddress) {
    once.push(`present[${ipvJ}] = 1;`);
    lines.push(firstAddress === 'v4' ? `num[no + ${ipvJ}] = 4;` : `num[no + ${ipvJ}] = v6;`);
  }
  const fixed = ['observationDomainId', 'templateId', 'receivedMilliseconds'].map(nj);
  if (fixed.some((j) => j < 0) || tj('exporter') < 0 || tj('extra') < 0) return null;
  once.push(...fixed.map((j) => `present[${j}] = 1;`));
  if (extras.length) lines.push(`idx[to + ${tj('extra')}] = b.uniqueText(""${extras.join(' ')} + "}");`);
  const src = `return function decodeProfileColumns(bytes, dv, start, count, recordLength, b, exporter, odid, now) {
  const present = b.present;
  ${once.join('\n  ')}
  const ex = b.text(exporter);
  let v; let x; let a; let v6 = 0;
  for (let k = 0; k < count; k++) {
    const o = start + k * recordLength;
    const i = b.addEmpty();
    const num = b.num; const idx = b.textIdx;
    const no = i * ${numColumns.length}; const to = i * ${textColumns.length};
    num[no + ${fixed[0]}] = odid; num[no + ${fixed[1]}] = ${t.id}; num[no + ${fixed[2]}] = now;
    idx[to + ${tj('exporter')}] = ex;
    ${lines.join('\n    ')}
  }
};`;
  return new Function('ipv4ToString', 'ipv6ToString', 'numJson', 'u64', 'readUnsigned', 'readSigned', src)(
    ipv4ToString,
    ipv6ToString,
    numJson,
    u64,
    readUnsigned,
    readSigned,
  ) as ColumnDecoder;
}
