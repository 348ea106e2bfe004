/**
 * The binary format of one profile block (docs/storage.md, "blocks layout"): up to 8192 profiles
 * of one ingest batch stored column by column in one BLOB, rows sorted by (t, id). Every section
 * starts on an 8-byte boundary so a reader makes typed-array views over the BLOB without copying.
 *
 *   0   u32 magic 'KPB1'      4   u32 rows (n)     8   u32 header JSON bytes   12  u32 0
 *   16  header JSON: [[column, kind, dataOffset, dataBytes, nullOffset], ...]  (padded to 8)
 *   then the sections, each 8-byte aligned:
 *     narrow integers (kinds u8/u16/u32): f64 base, then n values; value = base + stored
 *     f64: n doubles;  u64/i64: n BigUint64/BigInt64 (values a double cannot hold exactly)
 *     strings (str8/str16/str32): u32 JSON bytes, u32 0, JSON array of the block's distinct
 *       strings (padded to 8), then n indexes into it; index 0 is null, i is array[i - 1]
 *     null bitmap (only when some row is null): bit i set when row i has a value
 * Column names are written in the header (not numbered), so adding a column never breaks old blocks.
 */
import { CollectorError } from '../errors.js';
import type { PackedTable } from './packed-batch.js';

/** Most profiles in one block: an ingest batch larger than this becomes several blocks. */
export const BLOCK_MAX_ROWS = 8192;

const MAGIC = 0x3142504b; // 'KPB1' little-endian
const MAX_SAFE = 9007199254740991;

/** How a column's values are stored. */
type Kind = 'u8' | 'u16' | 'u32' | 'f64' | 'u64' | 'i64' | 'str8' | 'str16' | 'str32';

/** One header entry: column, kind, data offset, data bytes, null bitmap offset (0: no nulls). */
type Section = [name: string, kind: Kind, off: number, len: number, nullOff: number];

const pad8 = (x: number) => (x + 7) & ~7;

/** Sort key of a block row: t, then id. */
function rowOrder(t: Float64Array, ids: ArrayLike<number>): Uint32Array {
  const perm = new Uint32Array(t.length);
  for (let i = 0; i < perm.length; i++) perm[i] = i;
  return perm.sort((a, b) => t[a]! - t[b]! || ids[a]! - ids[b]!);
}

/** Column data gathered in block order, before it is laid out. */
interface Pending {
  name: string;
  kind: Kind;
  bytes: Uint8Array;
  nulls: Uint8Array | null;
}

function numberSection(name: string, v: Float64Array, bigs: Map<number, bigint> | null): Pending {
  const n = v.length;
  let nulls: Uint8Array | null = null;
  const markNull = (i: number) => {
    nulls ??= new Uint8Array(pad8((n + 7) >> 3)).fill(0xff);
    nulls[i >> 3]! &= ~(1 << (i & 7));
  };
  if (bigs) {
    // Some value needs 64 bits: the whole column is stored as 64-bit integers.
    let signed = false;
    for (const b of bigs.values()) if (b < 0n) signed = true;
    const out = signed ? new BigInt64Array(n) : new BigUint64Array(n);
    for (let i = 0; i < n; i++) {
      const b = bigs.get(i);
      if (b !== undefined) out[i] = signed ? BigInt.asIntN(64, b) : BigInt.asUintN(64, b);
      else if (Number.isNaN(v[i]!)) markNull(i);
      else out[i] = BigInt(Math.trunc(v[i]!));
    }
    return { name, kind: signed ? 'i64' : 'u64', bytes: new Uint8Array(out.buffer), nulls };
  }
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  let ints = true;
  for (let i = 0; i < n; i++) {
    const x = v[i]!;
    if (Number.isNaN(x)) {
      markNull(i);
      continue;
    }
    if (x < min) min = x;
    if (x > max) max = x;
    if (ints && !Number.isInteger(x)) ints = false;
  }
  if (min === Number.POSITIVE_INFINITY) min = max = 0;
  const span = max - min;
  if (!ints || span > 0xffffffff || Math.abs(min) > MAX_SAFE) {
    return { name, kind: 'f64', bytes: new Uint8Array(v.slice().buffer), nulls };
  }
  const kind: Kind = span <= 0xff ? 'u8' : span <= 0xffff ? 'u16' : 'u32';
  const width = kind === 'u8' ? 1 : kind === 'u16' ? 2 : 4;
  const buf = new ArrayBuffer(8 + pad8(n * width));
  new Float64Array(buf, 0, 1)[0] = min;
  const arr =
    kind === 'u8'
      ? new Uint8Array(buf, 8, n)
      : kind === 'u16'
        ? new Uint16Array(buf, 8, n)
        : new Uint32Array(buf, 8, n);
  for (let i = 0; i < n; i++) {
    const x = v[i]!;
    arr[i] = Number.isNaN(x) ? 0 : x - min;
  }
  return { name, kind, bytes: new Uint8Array(buf), nulls };
}

const utf8 = new TextEncoder();

function stringSection(name: string, col: TextColumn): Pending {
  const n = col.idx.length;
  const json = utf8.encode(JSON.stringify(col.dict));
  const size = col.dict.length;
  const kind: Kind = size < 0xff ? 'str8' : size < 0xffff ? 'str16' : 'str32';
  const width = kind === 'str8' ? 1 : kind === 'str16' ? 2 : 4;
  const head = 8 + pad8(json.length);
  const buf = new ArrayBuffer(head + pad8(n * width));
  const dv = new DataView(buf);
  dv.setUint32(0, json.length, true);
  new Uint8Array(buf, 8, json.length).set(json);
  const arr = width === 1 ? new Uint8Array(buf, head, n) : width === 2 ? new Uint16Array(buf, head, n) : null;
  if (arr) arr.set(col.idx);
  else new Uint32Array(buf, head, n).set(col.idx);
  return { name, kind, bytes: new Uint8Array(buf), nulls: null };
}

/** A text column of a block: per row 0 for null or k for dict[k - 1], in order of first appearance. */
export interface TextColumn {
  idx: Uint32Array;
  dict: string[];
}

/** A block ready to be written: zone map, pre-aggregation inputs and the encoded BLOB. */
export interface EncodedBlock {
  n: number;
  tmin: number;
  tmax: number;
  data: Uint8Array;
  /** The columns in block order, for the pre-aggregates and the bloom filter (no re-decode). */
  columns: BlockColumns;
}

/** Columns of a block in block order: numbers as doubles (NaN: null), 64-bit values on the side. */
export interface BlockColumns {
  n: number;
  t: Float64Array;
  ids: Float64Array;
  num: Map<string, Float64Array>;
  bigs: Map<string, Map<number, bigint>>;
  text: Map<string, TextColumn>;
}

/**
 * Encodes the rows of a packed profile table (the writer's input) with their ids. t is the flow
 * start time, or the arrival time when a profile has none. Columns null in every row are left out.
 */
export function encodeBlock(
  table: PackedTable,
  ids: ArrayLike<number>,
  start = 0,
  end = table.n,
): EncodedBlock {
  const n = end - start;
  const nw = table.numColumns.length;
  const tw = table.textColumns.length;
  const startJ = table.numColumns.indexOf('flowStartMilliseconds');
  const recvJ = table.numColumns.indexOf('receivedMilliseconds');
  const tIn = new Float64Array(n);
  const idIn = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const o = (start + i) * nw;
    const s = table.num[o + startJ]!;
    tIn[i] = Number.isNaN(s) ? table.num[o + recvJ]! : s;
    idIn[i] = ids[start + i]!;
  }
  // perm[i]: the table row (minus start) at block position i.
  const perm = rowOrder(tIn, idIn);
  const cols: BlockColumns = {
    n,
    t: new Float64Array(n),
    ids: new Float64Array(n),
    num: new Map(),
    bigs: new Map(),
    text: new Map(),
  };
  for (let i = 0; i < n; i++) {
    cols.t[i] = tIn[perm[i]!]!;
    cols.ids[i] = idIn[perm[i]!]!;
  }
  // Rows of table.bigPositions, by position in `num`, mapped to block order.
  const inverse = new Uint32Array(n);
  for (let i = 0; i < n; i++) inverse[perm[i]!] = i;
  const bigByCol = new Map<number, Map<number, bigint>>();
  for (let k = 0; k < table.bigPositions.length; k++) {
    const pos = table.bigPositions[k]!;
    const row = Math.floor(pos / nw) - start;
    if (row < 0 || row >= n) continue;
    const j = pos % nw;
    let m = bigByCol.get(j);
    if (!m) {
      m = new Map();
      bigByCol.set(j, m);
    }
    m.set(inverse[row]!, table.bigValues[k]!);
  }
  const sections: Pending[] = [numberSection('t', cols.t, null), numberSection('id', cols.ids, null)];
  // Gather the present columns in block order, row by row (the table is row-major).
  const js: number[] = [];
  for (let j = 0; j < nw; j++) if (table.present[j] === 1) js.push(j);
  const gathered = js.map(() => new Float64Array(n));
  const num = table.num;
  for (let i = 0; i < n; i++) {
    const base = (start + perm[i]!) * nw;
    for (let c = 0; c < js.length; c++) gathered[c]![i] = num[base + js[c]!]!;
  }
  for (let c = 0; c < js.length; c++) {
    const j = js[c]!;
    const v = gathered[c]!;
    let any = false;
    for (let i = 0; i < n && !any; i++) if (!Number.isNaN(v[i]!)) any = true;
    const bigs = bigByCol.get(j) ?? null;
    // Columns null in every row of this block (though present in the batch) are left out.
    if (!any && !bigs) continue;
    const name = table.numColumns[j]!;
    cols.num.set(name, v);
    if (bigs) cols.bigs.set(name, bigs);
    sections.push(numberSection(name, v, bigs));
  }
  // Batch dictionary index -> block dictionary index, reset after each column.
  const local = new Uint32Array(table.dict.length + 1);
  for (let j = 0; j < tw; j++) {
    const name = table.textColumns[j]!;
    const idx = new Uint32Array(n);
    const dict: string[] = [];
    for (let i = 0; i < n; i++) {
      const g = table.textIdx[(start + perm[i]!) * tw + j]!;
      if (g === 0) continue;
      let k = local[g]!;
      if (k === 0) {
        k = dict.push(table.dict[g - 1]!);
        local[g] = k;
      }
      idx[i] = k;
    }
    if (dict.length === 0) continue;
    for (let i = 0; i < n; i++) local[table.textIdx[(start + i) * tw + j]!] = 0;
    const col = { idx, dict };
    cols.text.set(name, col);
    sections.push(stringSection(name, col));
  }
  return { n, tmin: cols.t[0] ?? 0, tmax: cols.t[n - 1] ?? 0, data: layout(n, sections), columns: cols };
}

function layout(n: number, sections: Pending[]): Uint8Array {
  // The header holds offsets that depend on its own length: size it with wide placeholders first.
  const header: Section[] = sections.map((s) => [
    s.name,
    s.kind,
    0xffffffff,
    s.bytes.length,
    s.nulls ? 0xffffffff : 0,
  ]);
  const headLen = utf8.encode(JSON.stringify(header)).length;
  let off = 16 + pad8(headLen);
  for (const [k, s] of sections.entries()) {
    const h = header[k]!;
    h[2] = off;
    off += pad8(s.bytes.length);
    if (s.nulls) {
      h[4] = off;
      off += s.nulls.length;
    }
  }
  const json = utf8.encode(JSON.stringify(header));
  const out = new Uint8Array(off);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, n, true);
  dv.setUint32(8, json.length, true);
  out.set(json, 16);
  for (const [k, s] of sections.entries()) {
    const h = header[k]!;
    out.set(s.bytes, h[2]);
    if (s.nulls) out.set(s.nulls, h[4]);
  }
  return out;
}

/** A typed array of narrow unsigned integers, doubles or 64-bit integers. */
type Values = Uint8Array | Uint16Array | Uint32Array | Float64Array | BigUint64Array | BigInt64Array;

/** A number column of a decoded block: views over the BLOB, no copy. */
export class NumberColumn {
  constructor(
    /** Added to every stored value (narrow kinds); 0 otherwise. */
    readonly base: number,
    readonly values: Values,
    /** Bit i set: row i has a value; null when every row has one. */
    readonly present: Uint8Array | null,
    readonly big: boolean,
  ) {}

  /** True when row i holds a value. */
  has(i: number): boolean {
    return this.present === null || (this.present[i >> 3]! & (1 << (i & 7))) !== 0;
  }

  /** The exact value of row i (a bigint only past 2^53 - 1), or null. */
  get(i: number): number | bigint | null {
    if (!this.has(i)) return null;
    if (this.big) {
      const b = this.values[i] as bigint;
      return b <= 9007199254740991n && b >= -9007199254740991n ? Number(b) : b;
    }
    return this.base + (this.values[i] as number);
  }

  /** Row i as a double (NaN when null); 64-bit values are rounded. */
  num(i: number): number {
    if (!this.has(i)) return Number.NaN;
    return this.big ? Number(this.values[i] as bigint) : this.base + (this.values[i] as number);
  }

  /** Every row as doubles (NaN: null): one pass, for the scans that read a column whole. */
  toFloat64(): Float64Array {
    const n = this.values.length;
    const out = new Float64Array(n);
    if (this.big || this.present) for (let i = 0; i < n; i++) out[i] = this.num(i);
    else {
      const v = this.values as Uint32Array;
      const b = this.base;
      for (let i = 0; i < n; i++) out[i] = b + v[i]!;
    }
    return out;
  }
}

/** A dictionary-encoded string column of a decoded block. */
export class StringColumn {
  private dictCache: string[] | null = null;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly dictOff: number,
    private readonly dictLen: number,
    /** Per row: 0 for null, i for dict()[i - 1]. */
    readonly index: Uint8Array | Uint16Array | Uint32Array,
  ) {}

  /** The block's distinct strings (parsed on first use). */
  dict(): string[] {
    this.dictCache ??= JSON.parse(
      Buffer.from(this.bytes.buffer, this.bytes.byteOffset + this.dictOff, this.dictLen).toString('utf8'),
    ) as string[];
    return this.dictCache;
  }

  /** The index rows holding `s` carry, or -1 when no row does. */
  indexOf(s: string): number {
    return this.dict().indexOf(s) + 1 || -1;
  }

  /** The string of row i, or null. */
  get(i: number): string | null {
    const x = this.index[i]!;
    return x === 0 ? null : this.dict()[x - 1]!;
  }
}

const textDecoder = new TextDecoder();

/** A decoded block: sections are viewed lazily, column by column, as queries ask for them. */
export class ProfileBlock {
  readonly n: number;
  private readonly bytes: Uint8Array;
  private readonly sections = new Map<string, Section>();
  private readonly nums = new Map<string, NumberColumn | null>();
  private readonly strs = new Map<string, StringColumn | null>();

  constructor(
    /** The block's key (its first profile id when written). */
    readonly key: number,
    blob: Uint8Array,
  ) {
    // Typed-array views need aligned offsets: copy only a BLOB that does not start on 8 bytes.
    this.bytes = blob.byteOffset % 8 === 0 ? blob : new Uint8Array(blob);
    const dv = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
    if (this.bytes.byteLength < 16 || dv.getUint32(0, true) !== MAGIC)
      throw new CollectorError('COL_ERR_STORE', `profile block ${key} is not a kpiflow block`);
    this.n = dv.getUint32(4, true);
    const hl = dv.getUint32(8, true);
    const header = JSON.parse(textDecoder.decode(this.bytes.subarray(16, 16 + hl))) as Section[];
    for (const s of header) this.sections.set(s[0], s);
  }

  /** Columns present in this block. */
  columnNames(): string[] {
    return [...this.sections.keys()];
  }

  /** A number column, or null when no row of the block has it. */
  num(name: string): NumberColumn | null {
    let c = this.nums.get(name);
    if (c !== undefined) return c;
    const s = this.sections.get(name);
    c = null;
    if (s && !s[1].startsWith('str')) {
      const [, kind, off, , nullOff] = s;
      const buf = this.bytes.buffer;
      const at = this.bytes.byteOffset + off;
      const n = this.n;
      const present = nullOff ? new Uint8Array(buf, this.bytes.byteOffset + nullOff, (n + 7) >> 3) : null;
      if (kind === 'f64') c = new NumberColumn(0, new Float64Array(buf, at, n), present, false);
      else if (kind === 'u64') c = new NumberColumn(0, new BigUint64Array(buf, at, n), present, true);
      else if (kind === 'i64') c = new NumberColumn(0, new BigInt64Array(buf, at, n), present, true);
      else {
        const base = new Float64Array(buf, at, 1)[0]!;
        const v =
          kind === 'u8'
            ? new Uint8Array(buf, at + 8, n)
            : kind === 'u16'
              ? new Uint16Array(buf, at + 8, n)
              : new Uint32Array(buf, at + 8, n);
        c = new NumberColumn(base, v, present, false);
      }
    }
    this.nums.set(name, c);
    return c;
  }

  /** A string column, or null when no row of the block has it. */
  str(name: string): StringColumn | null {
    let c = this.strs.get(name);
    if (c !== undefined) return c;
    const s = this.sections.get(name);
    c = null;
    if (s?.[1].startsWith('str')) {
      const [, kind, off] = s;
      const dv = new DataView(this.bytes.buffer, this.bytes.byteOffset + off, 8);
      const jl = dv.getUint32(0, true);
      const at = this.bytes.byteOffset + off + 8 + pad8(jl);
      const buf = this.bytes.buffer;
      const idx =
        kind === 'str8'
          ? new Uint8Array(buf, at, this.n)
          : kind === 'str16'
            ? new Uint16Array(buf, at, this.n)
            : new Uint32Array(buf, at, this.n);
      c = new StringColumn(this.bytes, off + 8, jl, idx);
    }
    this.strs.set(name, c);
    return c;
  }

  /** t of every row (never null), ascending. */
  t(): NumberColumn {
    return this.num('t')!;
  }

  /** Profile ids. */
  id(): NumberColumn {
    return this.num('id')!;
  }

  /** Row i as a store row: every column of `numColumns` and `textColumns` (null when absent), and id. */
  row(
    i: number,
    numColumns: readonly string[],
    textColumns: readonly string[],
  ): Record<string, number | bigint | string | null> & { id: number } {
    const r: Record<string, number | bigint | string | null> = { id: this.id().get(i) as number };
    for (const c of textColumns) r[c] = this.str(c)?.get(i) ?? null;
    for (const c of numColumns) r[c] = this.num(c)?.get(i) ?? null;
    return r as Record<string, number | bigint | string | null> & { id: number };
  }
}
