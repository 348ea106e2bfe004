/**
 * A batch of rows packed by column kind, for the SQLite writer (which may run in a worker
 * thread): numbers in one Float64Array (row-major, NaN for null), text as indexes into one
 * dictionary of the batch's distinct strings, and the rare 64-bit values a double cannot hold
 * exactly on the side. Structured cloning 5000 row objects costs about 2 µs a row to decode on
 * the receiving side, and 5000 address strings most of a microsecond each; typed arrays are
 * handed over for free and the dictionary holds each address once.
 *
 * Rows are appended to a TableBuilder, either from row objects (a compiled per-table adder) or
 * cell by cell by the columnar ingest path (collector/profile-columns.ts), which never makes a
 * row object at all.
 */
import { FLOW_COLUMNS, PROFILE_ID_COLUMNS, PROFILE_KPI_COLUMNS } from '../profile-schema.js';
import type { ExporterDelta, IngestBatch, Scalar } from './types.js';

/** Columns stored as text; every other typed column is a number. */
export const TEXT_COLUMNS = new Set(['sourceAddress', 'destinationAddress']);
/** Typed profile columns, each named as its IPFIX element. */
export const PROFILE_COLUMNS = [...PROFILE_ID_COLUMNS, ...PROFILE_KPI_COLUMNS];

/** Number columns of a packed profile row (the writer adds t and id itself). */
const PROFILE_NUM = [
  'observationDomainId',
  'templateId',
  'receivedMilliseconds',
  ...PROFILE_COLUMNS.filter((c) => !TEXT_COLUMNS.has(c)),
];
const PROFILE_TEXT = ['exporter', ...PROFILE_COLUMNS.filter((c) => TEXT_COLUMNS.has(c)), 'extra'];
const FLOW_NUM = [
  'observationDomainId',
  'templateId',
  'receivedMilliseconds',
  ...FLOW_COLUMNS.filter((c) => !TEXT_COLUMNS.has(c)),
];
const FLOW_TEXT = ['exporter', ...FLOW_COLUMNS.filter((c) => TEXT_COLUMNS.has(c)), 'fields'];

/** One table's rows, packed. */
export interface PackedTable {
  n: number;
  /** Number columns, in `num` order. */
  numColumns: readonly string[];
  /** Text columns, in `textIdx` order. */
  textColumns: readonly string[];
  /** n × numColumns.length values, NaN for null. */
  num: Float64Array;
  /** n × textColumns.length indexes: 0 for null, k for dict[k - 1]. */
  textIdx: Uint32Array;
  /** The batch's strings. */
  dict: string[];
  /** Columns (by index into numColumns) holding a value in at least one row. */
  present: Uint8Array;
  /** Positions in `num` whose value is the bigint of the same index in `bigValues`. */
  bigPositions: number[];
  bigValues: bigint[];
}

/** A whole ingest batch, packed. */
export interface PackedBatch {
  profiles: PackedTable;
  flows: PackedTable;
  exporters: ExporterDelta[];
}

/** The text of cell (row i, text column j) of a packed table, or null. */
export function textAt(t: PackedTable, i: number, j: number): string | null {
  const k = t.textIdx[i * t.textColumns.length + j]!;
  return k === 0 ? null : t.dict[k - 1]!;
}

/** Appends row `r` at row index `i` of a builder (generated per column list). */
type RowAdder = (r: Record<string, Scalar>, b: TableBuilder, i: number) => void;

/**
 * An adder for fixed column lists: generated code reads each row's properties by constant names,
 * which V8 serves from inline caches (a loop over computed names would go megamorphic).
 */
function makeAdder(numColumns: readonly string[], textColumns: readonly string[]): RowAdder {
  const body = [
    'const num = b.num, idx = b.textIdx, present = b.present;',
    `const o = i * ${numColumns.length}; const to = i * ${textColumns.length}; let v;`,
    ...numColumns.map(
      (c, j) => `v = r[${JSON.stringify(c)}];
if (typeof v === 'number') { num[o + ${j}] = v; present[${j}] = 1; }
else if (typeof v === 'bigint') { b.big(o + ${j}, v); present[${j}] = 1; }`,
    ),
    ...textColumns.map(
      (c, j) => `v = r[${JSON.stringify(c)}]; if (typeof v === 'string') idx[to + ${j}] = b.text(v);`,
    ),
  ].join('\n');
  return new Function(`return function addRow(r, b, i) {\n${body}\n};`)() as RowAdder;
}

const adders = new Map<string, RowAdder>();

/**
 * Rows being packed: grows by doubling; new cells start null (NaN, index 0), so a writer sets
 * only the cells it has. `take` hands the rows over and starts a new, empty table.
 */
export class TableBuilder {
  n = 0;
  num: Float64Array;
  textIdx: Uint32Array;
  present: Uint8Array;
  private cap: number;
  private dict: string[] = [];
  private readonly dictIdx = new Map<string, number>();
  private bigPositions: number[] = [];
  private bigValues: bigint[] = [];
  private readonly adder: RowAdder;
  readonly width: number;
  readonly textWidth: number;

  constructor(
    readonly numColumns: readonly string[],
    readonly textColumns: readonly string[],
    private readonly initialRows = 1024,
  ) {
    this.width = numColumns.length;
    this.textWidth = textColumns.length;
    const key = `${numColumns.join()}|${textColumns.join()}`;
    let a = adders.get(key);
    if (!a) {
      a = makeAdder(numColumns, textColumns);
      adders.set(key, a);
    }
    this.adder = a;
    this.cap = initialRows;
    this.num = new Float64Array(this.cap * this.width).fill(Number.NaN);
    this.textIdx = new Uint32Array(this.cap * this.textWidth);
    this.present = new Uint8Array(this.width);
  }

  /** A new row (all cells null); returns its index. Re-read `num` and `textIdx` after calling. */
  addEmpty(): number {
    if (this.n === this.cap) this.grow();
    return this.n++;
  }

  /** Appends a row object (properties named as the columns). */
  addRow(r: object): void {
    const i = this.addEmpty();
    this.adder(r as Record<string, Scalar>, this, i);
  }

  /** Dictionary index (1-based) of a string. */
  text(s: string): number {
    let k = this.dictIdx.get(s);
    if (k === undefined) {
      k = this.dict.push(s);
      this.dictIdx.set(s, k);
    }
    return k;
  }

  /** Dictionary index of a string known to be new to the batch (no lookup: unique texts). */
  uniqueText(s: string): number {
    return this.dict.push(s);
  }

  /**
   * IPv4 addresses seen in this batch, as 32-bit integers -> dictionary index: a known address
   * costs a map lookup, no string. `addIpv4` records a new one.
   */
  readonly v4 = new Map<number, number>();

  /** Dictionary index of a new IPv4 address (`x` its 32-bit integer, `s` its text). */
  addIpv4(x: number, s: string): number {
    const k = this.text(s);
    this.v4.set(x, k);
    return k;
  }

  /** Records a bigint cell: exact as a double when it fits, on the side when it does not. */
  big(pos: number, v: bigint): void {
    if (v >= -9007199254740991n && v <= 9007199254740991n) {
      this.num[pos] = Number(v);
      return;
    }
    this.num[pos] = Number.NaN;
    this.bigPositions.push(pos);
    this.bigValues.push(v);
  }

  /** The rows so far as a packed table; the builder starts over, empty. */
  take(): PackedTable {
    const n = this.n;
    const t: PackedTable = {
      n,
      numColumns: this.numColumns,
      textColumns: this.textColumns,
      num: this.num.subarray(0, n * this.width),
      textIdx: this.textIdx.subarray(0, n * this.textWidth),
      dict: this.dict,
      present: this.present,
      bigPositions: this.bigPositions,
      bigValues: this.bigValues,
    };
    // The next batch is likely as large as this one: start there and grow less.
    this.cap = Math.max(this.initialRows, n);
    this.n = 0;
    this.num = new Float64Array(this.cap * this.width).fill(Number.NaN);
    this.textIdx = new Uint32Array(this.cap * this.textWidth);
    this.present = new Uint8Array(this.width);
    this.dict = [];
    this.dictIdx.clear();
    this.v4.clear();
    this.bigPositions = [];
    this.bigValues = [];
    return t;
  }

  private grow(): void {
    this.cap *= 2;
    const num = new Float64Array(this.cap * this.width).fill(Number.NaN);
    num.set(this.num);
    this.num = num;
    const idx = new Uint32Array(this.cap * this.textWidth);
    idx.set(this.textIdx);
    this.textIdx = idx;
  }
}

/** Packs rows of fixed column lists. */
export class TablePacker {
  constructor(
    readonly numColumns: readonly string[],
    readonly textColumns: readonly string[],
  ) {}

  /** A builder for this table's columns. */
  builder(initialRows?: number): TableBuilder {
    return new TableBuilder(this.numColumns, this.textColumns, initialRows);
  }

  /** The rows packed; the typed arrays' buffers can be transferred. */
  packRows(rows: readonly object[]): PackedTable {
    const b = this.builder(Math.max(1, rows.length));
    for (const r of rows) b.addRow(r);
    return b.take();
  }
}

/** Packs a whole batch of row objects with the packers of its two tables. */
export function packBatch(batch: IngestBatch, profiles: TablePacker, flows: TablePacker): PackedBatch {
  return {
    profiles: profiles.packRows(batch.profiles),
    flows: flows.packRows(batch.flows),
    exporters: batch.exporters,
  };
}

/** The buffers of a packed batch that postMessage can move instead of copy. */
export function transferables(b: PackedBatch): ArrayBuffer[] {
  return [
    b.profiles.num.buffer as ArrayBuffer,
    b.profiles.textIdx.buffer as ArrayBuffer,
    b.flows.num.buffer as ArrayBuffer,
    b.flows.textIdx.buffer as ArrayBuffer,
  ];
}

/** Packers of the two tables, in the column order every store's writer expects. */
export function tablePackers(): { profiles: TablePacker; flows: TablePacker } {
  return {
    profiles: new TablePacker(PROFILE_NUM, PROFILE_TEXT),
    flows: new TablePacker(FLOW_NUM, FLOW_TEXT),
  };
}
