/**
 * Record codecs. A generic path turns raw field bytes into values (`readValue`, `decodeRawRecord`),
 * and per-template compiled functions do the same in one pass for throughput: the collector
 * decodes millions of records a second, and a generated object literal gives every record of a
 * template the same hidden class and lets V8 inline each field read.
 */
import { IpfixError } from './errors.js';
import type { ElementRegistry } from './registry.js';
import type { Template } from './template.js';
import {
  type BasicList,
  DataType,
  defaultLength,
  type IpfixValue,
  ipv4ToString,
  ipv4ToStringCached,
  ipv6ToString,
  lengthFitsType,
  macToString,
  ntpMicrosToNumber,
  readNtpNanoseconds,
  readSigned,
  readUnsigned,
  type SubTemplateList,
  type SubTemplateMultiList,
  VARLEN,
  writeIpv4,
  writeIpv6,
  writeMac,
  writeNtpNanoseconds,
  writeSigned,
  writeUnsigned,
} from './types.js';

/** A decoded data record: element name -> value (repeated elements give an array). */
export type IpfixRecord = Record<string, IpfixValue>;

/** One field of a record before interpretation. */
export interface RawField {
  pen: number;
  id: number;
  bytes: Uint8Array;
}

/** Position after the record a decoder just read. */
export interface Cursor {
  next: number;
}

/** A compiled decoder: reads one record at `o` (not past `end`), sets `cursor.next`. */
export type RecordDecoder = (
  b: Uint8Array,
  dv: DataView,
  o: number,
  end: number,
  cursor: Cursor,
) => IpfixRecord;

/** A compiled encoder: `size` gives the bytes a record needs, `write` writes it at `o`. */
export interface RecordEncoder {
  size(rec: IpfixRecord): number;
  write(b: Uint8Array, dv: DataView, o: number, rec: IpfixRecord): number;
}

const utf8 = new TextDecoder('utf-8', { fatal: false });
const utf8Encoder = new TextEncoder();

/** A copy of `b[start, end)` as a plain Uint8Array (Buffer#slice would share the message's memory). */
export function copyBytes(b: Uint8Array, start: number, end: number): Uint8Array {
  return new Uint8Array(b.subarray(start, end));
}

function recordOverrun(at: number, what: string): IpfixError {
  return new IpfixError('IPFIX_ERR_RECORD', what, at);
}

/** Decodes a string field, dropping trailing NUL padding some exporters add to fixed-length strings. */
function readString(b: Uint8Array, o: number, len: number): string {
  let e = o + len;
  while (e > o && b[e - 1] === 0) e--;
  return utf8.decode(b.subarray(o, e));
}

function readBoolean(v: number): boolean | null {
  return v === 1 ? true : v === 2 ? false : null;
}

function readU64(dv: DataView, o: number): number | bigint {
  const hi = dv.getUint32(o);
  const lo = dv.getUint32(o + 4);
  // The common small value as the plain 32-bit read: V8 then stores it untagged as a small
  // integer; `hi * 2^32 + lo` is a double, and a record field that holds doubles boxes every
  // value (5 boxed counters made a profile record 25% larger and slower to collect).
  if (hi === 0) return lo;
  return hi < 0x200000 ? hi * 4294967296 + lo : (BigInt(hi) << 32n) | BigInt(lo);
}

/**
 * basicLists nested deeper than this stay raw bytes: each level costs an exporter only 6 bytes,
 * and unbounded recursion overflowed the stack here and in recordToJson (fuzz regression
 * nested-basiclist-*.bin).
 */
const MAX_LIST_DEPTH = 16;

/** Interprets `len` bytes at `o` as a value of `type` (any length, reduced-size included). */
export function readValue(
  type: number,
  b: Uint8Array,
  dv: DataView,
  o: number,
  len: number,
  registry?: ElementRegistry,
  depth = 0,
): IpfixValue {
  if (!lengthFitsType(type, len)) return copyBytes(b, o, o + len);
  switch (type) {
    case DataType.unsigned8:
    case DataType.unsigned16:
    case DataType.unsigned32:
    case DataType.unsigned64:
    case DataType.dateTimeSeconds:
    case DataType.dateTimeMilliseconds:
      return readUnsigned(b, o, len);
    case DataType.signed8:
    case DataType.signed16:
    case DataType.signed32:
    case DataType.signed64:
      return readSigned(b, o, len);
    case DataType.float32:
      return dv.getFloat32(o);
    case DataType.float64:
      return len === 4 ? dv.getFloat32(o) : dv.getFloat64(o);
    case DataType.boolean:
      return readBoolean(b[o]!);
    case DataType.macAddress:
      return macToString(b, o);
    case DataType.string:
      return readString(b, o, len);
    case DataType.dateTimeMicroseconds:
      return ntpMicrosToNumber(dv, o);
    case DataType.dateTimeNanoseconds:
      return readNtpNanoseconds(dv, o, false);
    case DataType.ipv4Address:
      return ipv4ToString(b, o);
    case DataType.ipv6Address:
      return ipv6ToString(b, o);
    case DataType.basicList:
      return depth < MAX_LIST_DEPTH
        ? readBasicList(b, dv, o, len, registry, depth)
        : copyBytes(b, o, o + len);
    case DataType.subTemplateList:
      return readSubTemplateList(b, dv, o, len);
    case DataType.subTemplateMultiList:
      return readSubTemplateMultiList(b, dv, o, len);
    default:
      return copyBytes(b, o, o + len);
  }
}

/** RFC 6313 4.5.1: semantic, field id (enterprise bit), element length, [PEN], elements. */
function readBasicList(
  b: Uint8Array,
  dv: DataView,
  o: number,
  len: number,
  registry: ElementRegistry | undefined,
  depth: number,
): BasicList | Uint8Array {
  const end = o + len;
  if (len < 5) return copyBytes(b, o, end);
  const semantic = b[o]!;
  let id = dv.getUint16(o + 1);
  const elementLength = dv.getUint16(o + 3);
  let p = o + 5;
  let pen = 0;
  if (id & 0x8000) {
    if (end - p < 4) return copyBytes(b, o, end);
    id &= 0x7fff;
    pen = dv.getUint32(p);
    p += 4;
  }
  const type = registry ? registry.resolve(pen, id).type : DataType.octetArray;
  const values: IpfixValue[] = [];
  while (p < end) {
    let l = elementLength;
    if (l === VARLEN) {
      l = b[p++]!;
      if (l === 255) {
        if (end - p < 2) return copyBytes(b, o, end);
        l = dv.getUint16(p);
        p += 2;
      }
    }
    if (l === 0 && elementLength !== VARLEN) break;
    if (p + l > end) return copyBytes(b, o, end);
    values.push(readValue(type, b, dv, p, l, registry, depth + 1));
    p += l;
  }
  return { semantic, pen, id, values };
}

function readSubTemplateList(
  b: Uint8Array,
  dv: DataView,
  o: number,
  len: number,
): SubTemplateList | Uint8Array {
  if (len < 3) return copyBytes(b, o, o + len);
  return { semantic: b[o]!, templateId: dv.getUint16(o + 1), bytes: copyBytes(b, o + 3, o + len) };
}

function readSubTemplateMultiList(
  b: Uint8Array,
  dv: DataView,
  o: number,
  len: number,
): SubTemplateMultiList | Uint8Array {
  const end = o + len;
  if (len < 1) return copyBytes(b, o, end);
  const blocks: { templateId: number; bytes: Uint8Array }[] = [];
  let p = o + 1;
  while (end - p >= 4) {
    const templateId = dv.getUint16(p);
    const l = dv.getUint16(p + 2);
    if (l < 4 || p + l > end) return copyBytes(b, o, end);
    blocks.push({ templateId, bytes: copyBytes(b, p + 4, p + l) });
    p += l;
  }
  return { semantic: b[o]!, blocks };
}

/** Splits one record into raw fields without interpreting them; throws IPFIX_ERR_RECORD on overrun. */
export function decodeRawRecord(
  template: Template,
  b: Uint8Array,
  o: number,
  end: number,
  cursor: Cursor,
): RawField[] {
  const out: RawField[] = [];
  let p = o;
  for (const s of template.specs) {
    let l = s.length;
    if (l === VARLEN) {
      if (p >= end) throw recordOverrun(p, 'variable-length prefix');
      l = b[p++]!;
      if (l === 255) {
        if (p + 2 > end) throw recordOverrun(p, 'variable-length prefix');
        l = (b[p]! << 8) | b[p + 1]!;
        p += 2;
      }
    }
    if (p + l > end) throw recordOverrun(p, `field ${s.pen}/${s.id} of ${l} bytes`);
    out.push({ pen: s.pen, id: s.id, bytes: copyBytes(b, p, p + l) });
    p += l;
  }
  cursor.next = p;
  return out;
}

/** JS expression reading a fixed-length field of `type` at offset expression `at`. */
function readExpr(type: number, len: number, at: string): string {
  if (!lengthFitsType(type, len)) return `h.oct(b, ${at}, ${len})`;
  const full = len === defaultLength(type);
  switch (type) {
    case DataType.unsigned8:
      return `b[${at}]`;
    case DataType.unsigned16:
      return full ? `dv.getUint16(${at})` : `b[${at}]`;
    case DataType.unsigned32:
    case DataType.dateTimeSeconds:
      return full ? `dv.getUint32(${at})` : `h.ru(b, ${at}, ${len})`;
    case DataType.unsigned64:
    case DataType.dateTimeMilliseconds:
      return full ? `h.u64(dv, ${at})` : len === 4 ? `dv.getUint32(${at})` : `h.ru(b, ${at}, ${len})`;
    case DataType.signed8:
      return `dv.getInt8(${at})`;
    case DataType.signed16:
      return full ? `dv.getInt16(${at})` : `dv.getInt8(${at})`;
    case DataType.signed32:
      return full ? `dv.getInt32(${at})` : `h.rs(b, ${at}, ${len})`;
    case DataType.signed64:
      return len === 4 ? `dv.getInt32(${at})` : `h.rs(b, ${at}, ${len})`;
    case DataType.float32:
      return `dv.getFloat32(${at})`;
    case DataType.float64:
      return len === 4 ? `dv.getFloat32(${at})` : `dv.getFloat64(${at})`;
    case DataType.boolean:
      return `h.bool(b[${at}])`;
    case DataType.macAddress:
      return `h.mac(b, ${at})`;
    case DataType.ipv4Address:
      return `h.ip4(b, ${at})`;
    case DataType.ipv6Address:
      return `h.ip6(b, ${at})`;
    case DataType.dateTimeMicroseconds:
      return `h.micro(dv, ${at})`;
    case DataType.dateTimeNanoseconds:
      return `h.nano(dv, ${at}, false)`;
    case DataType.string:
      return `h.str(b, ${at}, ${len})`;
    case DataType.basicList:
    case DataType.subTemplateList:
    case DataType.subTemplateMultiList:
      return `h.val(${type}, b, dv, ${at}, ${len}, reg)`;
    default:
      return `h.oct(b, ${at}, ${len})`;
  }
}

/** JS expression reading a variable-length field whose length is in `l` and data at `p`. */
function readVarExpr(type: number): string {
  switch (type) {
    case DataType.string:
      return 'h.str(b, p, l)';
    case DataType.basicList:
    case DataType.subTemplateList:
    case DataType.subTemplateMultiList:
      return `h.val(${type}, b, dv, p, l, reg)`;
    default:
      return 'h.oct(b, p, l)';
  }
}

const decodeHelpers = {
  oct: (b: Uint8Array, o: number, l: number) => copyBytes(b, o, o + l),
  ru: readUnsigned,
  rs: readSigned,
  u64: readU64,
  bool: readBoolean,
  mac: macToString,
  ip4: ipv4ToStringCached,
  ip6: ipv6ToString,
  micro: ntpMicrosToNumber,
  nano: readNtpNanoseconds,
  str: readString,
  val: readValue,
  overrun: recordOverrun,
};

/** Object literal source grouping repeated element names into arrays. */
function objectLiteral(names: string[], values: string[]): string {
  const groups = new Map<string, string[]>();
  names.forEach((n, i) => {
    const g = groups.get(n);
    if (g) g.push(values[i]!);
    else groups.set(n, [values[i]!]);
  });
  const parts: string[] = [];
  // `__proto__: v` in a literal would set the record's prototype (an exporter can teach that name
  // through RFC 5610): a computed key makes it an own field like any other.
  for (const [n, vs] of groups)
    parts.push(
      `${n === '__proto__' ? '["__proto__"]' : JSON.stringify(n)}: ${vs.length === 1 ? vs[0] : `[${vs.join(', ')}]`}`,
    );
  return `{ ${parts.join(', ')} }`;
}

/** Compiles the decoder of one template (its fields must be resolved). */
export function compileRecordDecoder(template: Template, registry: ElementRegistry): RecordDecoder {
  const names = template.fields.map((f) => f.element.name);
  const lines: string[] = [];
  const values: string[] = [];
  if (template.fixedLength >= 0) {
    // Fixed-length records: the caller checked o + fixedLength <= end, so offsets are constants.
    let off = 0;
    for (const f of template.fields) {
      values.push(readExpr(f.element.type, f.length, `o + ${off}`));
      off += f.length;
    }
    lines.push(`cursor.next = o + ${off};`, `return ${objectLiteral(names, values)};`);
  } else {
    lines.push('let p = o; let l = 0;');
    template.fields.forEach((f, i) => {
      if (f.length === VARLEN) {
        lines.push(
          `if (p >= end) throw h.overrun(p, 'variable-length prefix');`,
          'l = b[p++];',
          `if (l === 255) { if (p + 2 > end) throw h.overrun(p, 'variable-length prefix'); l = (b[p] << 8) | b[p + 1]; p += 2; }`,
          `if (p + l > end) throw h.overrun(p, ${JSON.stringify(`field ${names[i]}`)} + ' of ' + l + ' bytes');`,
          `const v${i} = ${readVarExpr(f.element.type)};`,
          'p += l;',
        );
      } else {
        lines.push(
          `if (p + ${f.length} > end) throw h.overrun(p, ${JSON.stringify(`field ${names[i]}`)});`,
          `const v${i} = ${readExpr(f.element.type, f.length, 'p')};`,
          `p += ${f.length};`,
        );
      }
      values.push(`v${i}`);
    });
    lines.push('cursor.next = p;', `return ${objectLiteral(names, values)};`);
  }
  const body = `return function decodeTemplate${template.id}(b, dv, o, end, cursor) {\n${lines.join('\n')}\n};`;
  return new Function('h', 'reg', body)(decodeHelpers, registry) as RecordDecoder;
}

// ---- encoding ----

function toBytes(v: unknown, what: string): Uint8Array {
  if (v instanceof Uint8Array) return v;
  if (typeof v === 'string') {
    if (!/^([0-9a-fA-F]{2})*$/.test(v))
      throw new IpfixError('IPFIX_ERR_VALUE', `${what}: octetArray wants bytes or hex`);
    const out = new Uint8Array(v.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(v.slice(2 * i, 2 * i + 2), 16);
    return out;
  }
  throw new IpfixError('IPFIX_ERR_VALUE', `${what}: octetArray wants bytes or hex`);
}

/** Bytes a variable-length value takes, without its length prefix. */
function varSize(type: number, v: unknown, what: string): number {
  if (v === undefined || v === null) return 0;
  if (type === DataType.string) {
    if (typeof v !== 'string') throw new IpfixError('IPFIX_ERR_VALUE', `${what}: string wanted`);
    return Buffer.byteLength(v, 'utf8');
  }
  return toBytes(v, what).length;
}

function writeVar(
  type: number,
  b: Uint8Array,
  o: number,
  v: unknown,
  fixedLen: number,
  what: string,
): number {
  let bytes: Uint8Array;
  if (v === undefined || v === null) bytes = new Uint8Array(0);
  else if (type === DataType.string) {
    if (typeof v !== 'string') throw new IpfixError('IPFIX_ERR_VALUE', `${what}: string wanted`);
    bytes = utf8Encoder.encode(v);
  } else bytes = toBytes(v, what);
  if (fixedLen === VARLEN) {
    if (bytes.length < 255) b[o++] = bytes.length;
    else {
      if (bytes.length > 65535)
        throw new IpfixError('IPFIX_ERR_VALUE', `${what}: ${bytes.length} bytes exceed 65535`);
      b[o] = 255;
      b[o + 1] = bytes.length >> 8;
      b[o + 2] = bytes.length & 0xff;
      o += 3;
    }
    b.set(bytes, o);
    return o + bytes.length;
  }
  if (bytes.length > fixedLen)
    throw new IpfixError('IPFIX_ERR_VALUE', `${what}: ${bytes.length} bytes exceed ${fixedLen}`);
  b.set(bytes, o);
  b.fill(0, o + bytes.length, o + fixedLen);
  return o + fixedLen;
}

function num(v: unknown, what: string): number | bigint {
  if (v === undefined || v === null) return 0;
  if (typeof v === 'number' || typeof v === 'bigint') return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  throw new IpfixError('IPFIX_ERR_VALUE', `${what}: number wanted, got ${typeof v}`);
}

function wu32(dv: DataView, o: number, v: unknown, what: string): void {
  if (typeof v === 'number' && v >= 0 && v <= 0xffffffff && Math.floor(v) === v) dv.setUint32(o, v);
  else writeUnsigned(new Uint8Array(dv.buffer, dv.byteOffset, dv.byteLength), o, 4, num(v, what));
}

function wu64(dv: DataView, o: number, v: unknown, what: string): void {
  if (typeof v === 'number' && v >= 0 && v <= Number.MAX_SAFE_INTEGER && Math.floor(v) === v) {
    dv.setUint32(o, Math.floor(v / 4294967296));
    dv.setUint32(o + 4, v >>> 0);
  } else writeUnsigned(new Uint8Array(dv.buffer, dv.byteOffset, dv.byteLength), o, 8, num(v, what));
}

function wsmall(b: Uint8Array, o: number, v: unknown, max: number, what: string): void {
  if (typeof v === 'number' && v >= 0 && v <= max && Math.floor(v) === v) {
    if (max === 0xff) b[o] = v;
    else {
      b[o] = v >> 8;
      b[o + 1] = v & 0xff;
    }
  } else writeUnsigned(b, o, max === 0xff ? 1 : 2, num(v, what));
}

function wtext(kind: 'ip4' | 'ip6' | 'mac', b: Uint8Array, o: number, v: unknown, what: string): void {
  const len = kind === 'ip4' ? 4 : kind === 'ip6' ? 16 : 6;
  if (v === undefined || v === null) {
    b.fill(0, o, o + len);
    return;
  }
  // Bytes as they go on the wire: an exporter that holds addresses as bytes skips text parsing,
  // which dominated the agent's encoding.
  if (v instanceof Uint8Array) {
    if (v.length !== len) throw new IpfixError('IPFIX_ERR_VALUE', `${what}: ${len} address bytes wanted`);
    b.set(v, o);
    return;
  }
  if (typeof v !== 'string') throw new IpfixError('IPFIX_ERR_VALUE', `${what}: address text wanted`);
  if (kind === 'ip4') writeIpv4(b, o, v);
  else if (kind === 'ip6') writeIpv6(b, o, v);
  else writeMac(b, o, v);
}

function wfloat(dv: DataView, o: number, len: number, v: unknown, what: string): void {
  const n = v === undefined || v === null ? 0 : v;
  if (typeof n !== 'number') throw new IpfixError('IPFIX_ERR_VALUE', `${what}: number wanted`);
  if (len === 4) dv.setFloat32(o, n);
  else dv.setFloat64(o, n);
}

function wnano(dv: DataView, o: number, v: unknown, micro: boolean, what: string): void {
  if (v === undefined || v === null) {
    dv.setUint32(o, 0);
    dv.setUint32(o + 4, 0);
    return;
  }
  if (typeof v === 'bigint') writeNtpNanoseconds(dv, o, micro ? v * 1000n : v);
  else if (typeof v === 'number' && Number.isFinite(v))
    writeNtpNanoseconds(dv, o, micro ? BigInt(Math.round(v)) * 1000n : BigInt(Math.round(v)));
  else throw new IpfixError('IPFIX_ERR_VALUE', `${what}: time wanted`);
}

const encodeHelpers = {
  wu32,
  wu64,
  wsmall,
  wtext,
  wfloat,
  wnano,
  wvar: writeVar,
  vsize: varSize,
  wu: (b: Uint8Array, o: number, l: number, v: unknown, what: string) => writeUnsigned(b, o, l, num(v, what)),
  ws: (b: Uint8Array, o: number, l: number, v: unknown, what: string) => writeSigned(b, o, l, num(v, what)),
  wbool: (b: Uint8Array, o: number, v: unknown) => {
    b[o] = v === true || v === 1 ? 1 : 2;
  },
};

/** JS statement writing value expression `v` of a fixed-length field at offset expression `at`. */
function writeStmt(type: number, len: number, at: string, v: string, what: string): string {
  const w = JSON.stringify(what);
  if (!lengthFitsType(type, len)) return `h.wvar(0, b, ${at}, ${v}, ${len}, ${w});`;
  switch (type) {
    case DataType.unsigned8:
      return `h.wsmall(b, ${at}, ${v}, 0xff, ${w});`;
    case DataType.unsigned16:
      return len === 2 ? `h.wsmall(b, ${at}, ${v}, 0xffff, ${w});` : `h.wu(b, ${at}, ${len}, ${v}, ${w});`;
    case DataType.unsigned32:
    case DataType.dateTimeSeconds:
      return len === 4 ? `h.wu32(dv, ${at}, ${v}, ${w});` : `h.wu(b, ${at}, ${len}, ${v}, ${w});`;
    case DataType.unsigned64:
    case DataType.dateTimeMilliseconds:
      return len === 8
        ? `h.wu64(dv, ${at}, ${v}, ${w});`
        : len === 4
          ? `h.wu32(dv, ${at}, ${v}, ${w});`
          : `h.wu(b, ${at}, ${len}, ${v}, ${w});`;
    case DataType.signed8:
    case DataType.signed16:
    case DataType.signed32:
    case DataType.signed64:
      return `h.ws(b, ${at}, ${len}, ${v}, ${w});`;
    case DataType.float32:
    case DataType.float64:
      return `h.wfloat(dv, ${at}, ${len}, ${v}, ${w});`;
    case DataType.boolean:
      return `h.wbool(b, ${at}, ${v});`;
    case DataType.macAddress:
      return `h.wtext('mac', b, ${at}, ${v}, ${w});`;
    case DataType.ipv4Address:
      return `h.wtext('ip4', b, ${at}, ${v}, ${w});`;
    case DataType.ipv6Address:
      return `h.wtext('ip6', b, ${at}, ${v}, ${w});`;
    case DataType.dateTimeMicroseconds:
      return `h.wnano(dv, ${at}, ${v}, true, ${w});`;
    case DataType.dateTimeNanoseconds:
      return `h.wnano(dv, ${at}, ${v}, false, ${w});`;
    case DataType.string:
      return `h.wvar(${DataType.string}, b, ${at}, ${v}, ${len}, ${w});`;
    default:
      return `h.wvar(0, b, ${at}, ${v}, ${len}, ${w});`;
  }
}

/**
 * Compiles the encoder of one template. Missing values encode as zero (empty for variable-length
 * fields); a repeated element takes its values from an array in the record.
 */
export function compileRecordEncoder(template: Template): RecordEncoder {
  const seen = new Map<string, number>();
  const valueExprs = template.fields.map((f) => {
    const n = f.element.name;
    const count = template.fields.filter((g) => g.element.name === n).length;
    const k = seen.get(n) ?? 0;
    seen.set(n, k + 1);
    const acc = `rec[${JSON.stringify(n)}]`;
    return count === 1 ? acc : `(${acc} || [])[${k}]`;
  });
  const writeLines: string[] = [];
  const sizeLines: string[] = [];
  let fixed = 0;
  template.fields.forEach((f, i) => {
    const what = `template ${template.id} ${f.element.name}`;
    if (f.length === VARLEN) {
      writeLines.push(
        `o = h.wvar(${f.element.type === DataType.string ? DataType.string : 0}, b, o, ${valueExprs[i]}, ${VARLEN}, ${JSON.stringify(what)});`,
      );
      sizeLines.push(
        `{ const n = h.vsize(${f.element.type === DataType.string ? DataType.string : 0}, ${valueExprs[i]}, ${JSON.stringify(what)}); s += n < 255 ? n + 1 : n + 3; }`,
      );
    } else {
      writeLines.push(writeStmt(f.element.type, f.length, 'o', valueExprs[i]!, what), `o += ${f.length};`);
      fixed += f.length;
    }
  });
  const writeSrc = `return function encodeTemplate${template.id}(b, dv, o, rec) {\n${writeLines.join('\n')}\nreturn o;\n};`;
  const write = new Function('h', writeSrc)(encodeHelpers) as RecordEncoder['write'];
  const size =
    template.fixedLength >= 0
      ? () => fixed
      : (new Function(
          'h',
          `return function sizeTemplate${template.id}(rec) { let s = ${fixed};\n${sizeLines.join('\n')}\nreturn s; };`,
        )(encodeHelpers) as RecordEncoder['size']);
  return { size, write };
}
