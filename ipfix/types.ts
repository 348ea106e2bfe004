/**
 * RFC 7012 abstract data types, RFC 5610 semantics and units (IANA registry codes), and the
 * wire <-> value conversions for each type, including reduced-size encoding (RFC 7011 6.2).
 */
import { IpfixError } from './errors.js';

/** IANA informationElementDataType codes (RFC 5610). */
export const DataType = {
  octetArray: 0,
  unsigned8: 1,
  unsigned16: 2,
  unsigned32: 3,
  unsigned64: 4,
  signed8: 5,
  signed16: 6,
  signed32: 7,
  signed64: 8,
  float32: 9,
  float64: 10,
  boolean: 11,
  macAddress: 12,
  string: 13,
  dateTimeSeconds: 14,
  dateTimeMilliseconds: 15,
  dateTimeMicroseconds: 16,
  dateTimeNanoseconds: 17,
  ipv4Address: 18,
  ipv6Address: 19,
  basicList: 20,
  subTemplateList: 21,
  subTemplateMultiList: 22,
} as const;
/** An IANA data type code. */
export type DataType = (typeof DataType)[keyof typeof DataType];

/** Data type names indexed by code. */
export const DATA_TYPE_NAMES: readonly string[] = Object.keys(DataType);

/** IANA informationElementSemantics names indexed by code (RFC 5610 3.2.2). */
export const SEMANTICS_NAMES: readonly string[] = [
  'default',
  'quantity',
  'totalCounter',
  'deltaCounter',
  'identifier',
  'flags',
  'list',
  'snmpCounter',
  'snmpGauge',
];

/** IANA informationElementUnits names indexed by code (RFC 5610 3.2.3). */
export const UNITS_NAMES: readonly string[] = [
  'none',
  'bits',
  'octets',
  'packets',
  'flows',
  'seconds',
  'milliseconds',
  'microseconds',
  'nanoseconds',
  '4-octet words',
  'messages',
  'hops',
  'entries',
  'frames',
  'ports',
  'inferred',
];

/** Variable length marker in a field specifier (RFC 7011 7). */
export const VARLEN = 65535;

/** Seconds between the NTP epoch (1900) and the Unix epoch (1970). */
const NTP_UNIX_OFFSET = 2208988800;

/** The length a type takes when the template does not reduce it; VARLEN for variable-length types. */
export function defaultLength(type: number): number {
  switch (type) {
    case DataType.unsigned8:
    case DataType.signed8:
    case DataType.boolean:
      return 1;
    case DataType.unsigned16:
    case DataType.signed16:
      return 2;
    case DataType.unsigned32:
    case DataType.signed32:
    case DataType.float32:
    case DataType.dateTimeSeconds:
    case DataType.ipv4Address:
      return 4;
    case DataType.unsigned64:
    case DataType.signed64:
    case DataType.float64:
    case DataType.dateTimeMilliseconds:
    case DataType.dateTimeMicroseconds:
    case DataType.dateTimeNanoseconds:
      return 8;
    case DataType.macAddress:
      return 6;
    case DataType.ipv6Address:
      return 16;
    default:
      return VARLEN;
  }
}

/** True when `length` is a legal field length for `type` (reduced-size encoding included). */
export function lengthFitsType(type: number, length: number): boolean {
  if (length === VARLEN) {
    return (
      type === DataType.octetArray ||
      type === DataType.string ||
      type === DataType.basicList ||
      type === DataType.subTemplateList ||
      type === DataType.subTemplateMultiList
    );
  }
  switch (type) {
    case DataType.unsigned8:
    case DataType.unsigned16:
    case DataType.unsigned32:
    case DataType.unsigned64:
    case DataType.signed8:
    case DataType.signed16:
    case DataType.signed32:
    case DataType.signed64:
      return length >= 1 && length <= defaultLength(type);
    case DataType.float64:
      return length === 4 || length === 8;
    case DataType.octetArray:
    case DataType.string:
    case DataType.basicList:
    case DataType.subTemplateList:
    case DataType.subTemplateMultiList:
      return true;
    default:
      return length === defaultLength(type);
  }
}

/** An RFC 6313 basicList: one element repeated. */
export interface BasicList {
  semantic: number;
  pen: number;
  id: number;
  values: IpfixValue[];
}

/** An RFC 6313 subTemplateList, kept as raw bytes with the template it refers to. */
export interface SubTemplateList {
  semantic: number;
  templateId: number;
  bytes: Uint8Array;
}

/** An RFC 6313 subTemplateMultiList, kept as raw bytes per template block. */
export interface SubTemplateMultiList {
  semantic: number;
  blocks: { templateId: number; bytes: Uint8Array }[];
}

/**
 * A decoded value. Integers are numbers, or bigints past 2^53; addresses, MACs and strings are
 * strings; octetArray is bytes; dateTimeSeconds/Milliseconds/Microseconds are numbers in their
 * own unit since the Unix epoch; dateTimeNanoseconds is a bigint of nanoseconds since the epoch.
 */
export type IpfixValue =
  | number
  | bigint
  | string
  | boolean
  | null
  | Uint8Array
  | BasicList
  | SubTemplateList
  | SubTemplateMultiList
  | IpfixValue[];

const HEX: string[] = [];
for (let i = 0; i < 256; i++) HEX.push(i.toString(16).padStart(2, '0'));

/** Lower-case hex of a byte range. */
export function toHex(b: Uint8Array, start = 0, end = b.length): string {
  let s = '';
  for (let i = start; i < end; i++) s += HEX[b[i]!];
  return s;
}

/** "0." ... "255.": dotted quads from a table instead of four number-to-text conversions. */
const DEC_DOT: string[] = [];
for (let i = 0; i < 256; i++) DEC_DOT.push(`${i}.`);

/** Dotted-quad text of 4 bytes. */
export function ipv4ToString(b: Uint8Array, o: number): string {
  return DEC_DOT[b[o]!]! + DEC_DOT[b[o + 1]!]! + DEC_DOT[b[o + 2]!]! + String(b[o + 3]);
}

// A direct-mapped cache of address texts: flow records repeat a host's addresses, and one shared
// flat string costs less to build and to keep than a fresh concatenation per record.
const IP4_SLOTS = 4096;
const ip4Keys = new Int32Array(IP4_SLOTS).fill(-1);
const ip4Texts: string[] = new Array<string>(IP4_SLOTS).fill('');

/** `ipv4ToString` through the address cache; for the hot decode path. */
export function ipv4ToStringCached(b: Uint8Array, o: number): string {
  const k = (b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!;
  const slot = (k ^ (k >>> 12)) & (IP4_SLOTS - 1);
  if (ip4Keys[slot] === k && k !== -1) return ip4Texts[slot]!;
  const text = ipv4ToString(b, o);
  ip4Keys[slot] = k;
  ip4Texts[slot] = text;
  return text;
}

/** RFC 5952 text of 16 bytes (longest run of two or more zero groups compressed, lower case). */
export function ipv6ToString(b: Uint8Array, o: number): string {
  const g = new Array<number>(8);
  for (let i = 0; i < 8; i++) g[i] = (b[o + 2 * i]! << 8) | b[o + 2 * i + 1]!;
  // IPv4-mapped addresses keep their dotted tail, as most tools print them.
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${ipv4ToString(b, o + 12)}`;
  }
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestStart < 0) return g.map((x) => x.toString(16)).join(':');
  const head = g.slice(0, bestStart).map((x) => x.toString(16));
  const tail = g.slice(bestStart + bestLen).map((x) => x.toString(16));
  return `${head.join(':')}::${tail.join(':')}`;
}

/**
 * Parses dotted-quad text (four parts of 1-3 ASCII digits, each at most 255) into 4 bytes at `o`;
 * throws IPFIX_ERR_VALUE when it is not one. One pass over the characters: split and a regex per
 * part took over half of the encoder's time on flow records.
 */
export function writeIpv4(b: Uint8Array, o: number, text: string): void {
  let part = 0;
  let digits = 0;
  let v = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (++digits > 3) break;
      v = v * 10 + c - 48;
    } else if (c === 46 && digits > 0 && v <= 255 && part < 3) {
      b[o + part++] = v;
      digits = 0;
      v = 0;
    } else {
      digits = 4;
      break;
    }
  }
  if (part !== 3 || digits === 0 || digits > 3 || v > 255) {
    throw new IpfixError('IPFIX_ERR_VALUE', `not an IPv4 address: ${text}`);
  }
  b[o + 3] = v;
}

/** Parses IPv6 text (with :: and an optional dotted IPv4 tail) into 16 bytes at `o`. */
export function writeIpv6(b: Uint8Array, o: number, text: string): void {
  const bad = () => new IpfixError('IPFIX_ERR_VALUE', `not an IPv6 address: ${text}`);
  let s = text;
  const groups: number[] = [];
  let tail4: number[] | null = null;
  const lastColon = s.lastIndexOf(':');
  if (s.indexOf('.', lastColon) > 0) {
    const v4 = new Uint8Array(4);
    writeIpv4(v4, 0, s.slice(lastColon + 1));
    tail4 = [(v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!];
    s = `${s.slice(0, lastColon + 1)}0:0`;
  }
  const halves = s.split('::');
  if (halves.length > 2) throw bad();
  const parse = (h: string) => (h === '' ? [] : h.split(':'));
  const head = parse(halves[0]!);
  const tail = halves.length === 2 ? parse(halves[1]!) : [];
  const total = head.length + tail.length;
  if ((halves.length === 1 && total !== 8) || total > (halves.length === 2 ? 7 : 8)) throw bad();
  for (const h of head) groups.push(parseGroup(h, bad));
  for (let i = total; i < 8; i++) groups.push(0);
  for (const h of tail) groups.push(parseGroup(h, bad));
  if (tail4) {
    groups[6] = tail4[0]!;
    groups[7] = tail4[1]!;
  }
  for (let i = 0; i < 8; i++) {
    b[o + 2 * i] = groups[i]! >> 8;
    b[o + 2 * i + 1] = groups[i]! & 0xff;
  }
}

function parseGroup(h: string, bad: () => Error): number {
  if (!/^[0-9a-fA-F]{1,4}$/.test(h)) throw bad();
  return Number.parseInt(h, 16);
}

/** Reads an unsigned big-endian integer of 1-8 bytes; number when exact, bigint above 2^53. */
export function readUnsigned(b: Uint8Array, o: number, len: number): number | bigint {
  if (len <= 6) {
    let v = 0;
    for (let i = 0; i < len; i++) v = v * 256 + b[o + i]!;
    return v;
  }
  let hi = 0;
  const hiLen = len - 4;
  for (let i = 0; i < hiLen; i++) hi = hi * 256 + b[o + i]!;
  const lo =
    ((b[o + hiLen]! << 24) | (b[o + hiLen + 1]! << 16) | (b[o + hiLen + 2]! << 8) | b[o + hiLen + 3]!) >>> 0;
  if (hi < 0x200000) return hi * 4294967296 + lo;
  return (BigInt(hi) << 32n) | BigInt(lo);
}

/** Reads a two's complement big-endian integer of 1-8 bytes; number when exact, else bigint. */
export function readSigned(b: Uint8Array, o: number, len: number): number | bigint {
  const u = readUnsigned(b, o, len);
  const bits = len * 8;
  if (typeof u === 'number') {
    if (len <= 6) {
      const half = 2 ** (bits - 1);
      return u >= half ? u - 2 * half : u;
    }
    // 7-8 bytes with a small magnitude: negative only when the top bit is set, which a
    // number-sized value of 7-8 bytes never has.
    return u;
  }
  const signed = BigInt.asIntN(bits, u);
  return signed >= -9007199254740991n && signed <= 9007199254740991n ? Number(signed) : signed;
}

/** Writes an unsigned integer into 1-8 bytes; throws IPFIX_ERR_VALUE when it does not fit. */
export function writeUnsigned(b: Uint8Array, o: number, len: number, value: number | bigint): void {
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < 0 || (len < 7 && value >= 2 ** (len * 8))) {
      throw new IpfixError('IPFIX_ERR_VALUE', `${value} does not fit ${len} unsigned byte(s)`);
    }
    if (value > Number.MAX_SAFE_INTEGER) value = BigInt(value);
  }
  if (typeof value === 'bigint') {
    if (value < 0n || value >= 1n << BigInt(len * 8)) {
      throw new IpfixError('IPFIX_ERR_VALUE', `${value} does not fit ${len} unsigned byte(s)`);
    }
    for (let i = len - 1; i >= 0; i--) {
      b[o + i] = Number(value & 0xffn);
      value >>= 8n;
    }
    return;
  }
  let v = value;
  for (let i = len - 1; i >= 0; i--) {
    b[o + i] = v % 256;
    v = Math.floor(v / 256);
  }
}

/** Writes a signed integer into 1-8 bytes, two's complement; throws when it does not fit. */
export function writeSigned(b: Uint8Array, o: number, len: number, value: number | bigint): void {
  if (typeof value === 'number' && !Number.isInteger(value)) {
    throw new IpfixError('IPFIX_ERR_VALUE', `${value} is not an integer`);
  }
  const v = BigInt(value);
  const bits = BigInt(len * 8);
  const half = 1n << (bits - 1n);
  if (v < -half || v >= half)
    throw new IpfixError('IPFIX_ERR_VALUE', `${value} does not fit ${len} signed byte(s)`);
  writeUnsigned(b, o, len, BigInt.asUintN(len * 8, v));
}

/** Reads an NTP-format timestamp (RFC 7011 6.1.9/10) as bigint nanoseconds since the Unix epoch. */
export function readNtpNanoseconds(dv: DataView, o: number, micro: boolean): bigint {
  const sec = dv.getUint32(o);
  let frac = dv.getUint32(o + 4);
  // dateTimeMicroseconds: the 11 low fraction bits carry no information (RFC 7011 6.1.9).
  if (micro) frac = (frac & 0xfffff800) >>> 0;
  const ns = (BigInt(frac) * 1000000000n + (1n << 31n)) >> 32n;
  return (BigInt(sec) - BigInt(NTP_UNIX_OFFSET)) * 1000000000n + ns;
}

/** Writes bigint nanoseconds since the Unix epoch as an NTP-format timestamp. */
export function writeNtpNanoseconds(dv: DataView, o: number, ns: bigint): void {
  let sec = ns / 1000000000n;
  let rem = ns % 1000000000n;
  if (rem < 0n) {
    rem += 1000000000n;
    sec -= 1n;
  }
  let frac = (rem * (1n << 32n) + 500000000n) / 1000000000n;
  if (frac >= 1n << 32n) {
    frac -= 1n << 32n;
    sec += 1n;
  }
  const ntpSec = sec + BigInt(NTP_UNIX_OFFSET);
  if (ntpSec < 0n || ntpSec > 0xffffffffn)
    throw new IpfixError('IPFIX_ERR_VALUE', `time ${ns} ns out of NTP range`);
  dv.setUint32(o, Number(ntpSec));
  dv.setUint32(o + 4, Number(frac));
}

/** Formats a MAC address from 6 bytes. */
export function macToString(b: Uint8Array, o: number): string {
  return `${HEX[b[o]!]}:${HEX[b[o + 1]!]}:${HEX[b[o + 2]!]}:${HEX[b[o + 3]!]}:${HEX[b[o + 4]!]}:${HEX[b[o + 5]!]}`;
}

/** Parses a MAC address (colon or dash separated) into 6 bytes. */
export function writeMac(b: Uint8Array, o: number, text: string): void {
  const parts = text.split(/[:-]/);
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) {
    throw new IpfixError('IPFIX_ERR_VALUE', `not a MAC address: ${text}`);
  }
  for (let i = 0; i < 6; i++) b[o + i] = Number.parseInt(parts[i]!, 16);
}

/** Microseconds since the Unix epoch for the NTP microsecond type, exact in a double. */
export function ntpMicrosToNumber(dv: DataView, o: number): number {
  const ns = readNtpNanoseconds(dv, o, true) + 500n;
  // Round half up on both sides of the epoch: bigint division truncates toward zero.
  return Number(ns >= 0n ? ns / 1000n : (ns - 999n) / 1000n);
}
