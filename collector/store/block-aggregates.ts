/**
 * Pre-aggregates of a profile block, computed once when the block is packed so that a summary
 * over blocks that lie wholly inside its time range never decodes their rows. For each summary
 * dimension and each key present in the block: profile count, distinct flowIds (within the block),
 * the summed KPIs, RTT and time-to-establish count and sum (exact means), and log histograms of
 * both (16 buckets per octave: a percentile read from them is within 2.2 % of a value of the bucket
 * holding the exact one). Layout (all sections 8-byte aligned):
 *
 *   0 u32 magic 'KPA1', u32 0; then per dimension 8 u32: keys, keysJsonOffset, keysJsonBytes,
 *   statsOffset, rttOffsetsOffset, tteOffsetsOffset, entriesOffset, entries
 *   keys: JSON array;  stats: f64[keys × STAT_WIDTH];  rtt/tte offsets: u32[keys + 1] into entries;
 *   entries: u32 (bucket << 22 | count), ascending buckets per key.
 */

import type { BlockColumns, NumberColumn, ProfileBlock } from './profile-block.js';
import type { SummaryGroup } from './types.js';

/** Summary dimensions, in the order of the aggregate blob's directory. */
export const DIMENSIONS: readonly SummaryGroup[] = [
  'destination',
  'destinationPort',
  'ipVersion',
  'exporter',
  'endState',
];

/** The block column holding each dimension's key. */
export const DIMENSION_COLUMN: Record<SummaryGroup, string> = {
  destination: 'destinationAddress',
  destinationPort: 'destinationTransportPort',
  ipVersion: 'ipVersion',
  exporter: 'exporter',
  endState: 'flowEndReason',
};

/** KPIs a summary adds up, in stats order (after profiles and connections). */
export const SUM_COLUMNS = [
  'transferredOctetTotalCount',
  'receivedOctetTotalCount',
  'retransmittedPacketTotalCount',
  'stallCount',
  'duplicatePacketTotalCount',
  'reorderingPacketCount',
] as const;

/** Stats of one key: profiles, connections, the sums, rtt count, rtt sum, tte count, tte sum. */
export const STAT_WIDTH = 2 + SUM_COLUMNS.length + 4;
/** Index of the RTT count in a key's stats (sum, tte count and tte sum follow). */
export const STAT_RTT = 2 + SUM_COLUMNS.length;

const MAGIC = 0x3141504b; // 'KPA1'
const DIR = 8 + DIMENSIONS.length * 32;

/** Histogram buckets per octave. */
export const HIST_PER_OCTAVE = 16;
const HIST_MIN_EXP = -10;
/** Buckets: 0 holds values <= 2^-10 ms (about 1 µs), the rest up to 2^32 ms. */
export const HIST_BUCKETS = 1 + (32 - HIST_MIN_EXP) * HIST_PER_OCTAVE;

/** Bucket of a value in ms. */
export function histBucket(v: number): number {
  if (v <= 2 ** HIST_MIN_EXP) return 0;
  const b = 1 + Math.floor((Math.log2(v) - HIST_MIN_EXP) * HIST_PER_OCTAVE);
  return b >= HIST_BUCKETS ? HIST_BUCKETS - 1 : b;
}

/** The value a bucket stands for: its geometric middle (0 for bucket 0). */
export function histValue(b: number): number {
  return b === 0 ? 0 : 2 ** ((b - 0.5) / HIST_PER_OCTAVE + HIST_MIN_EXP);
}

/** Nearest-rank percentile of a histogram of `count` values. */
export function histPercentile(h: Uint32Array, count: number, p: number): number {
  const rank = Math.min(count, Math.max(1, Math.ceil((p / 100) * count)));
  let acc = 0;
  for (let b = 0; b < h.length; b++) {
    acc += h[b]!;
    if (acc >= rank) return histValue(b);
  }
  return Number.NaN;
}

/** RTT of every row in ms (µs / 1000 when present, else ms; NaN when neither). */
export function rttColumn(
  micro: Float64Array | undefined,
  milli: Float64Array | undefined,
  n: number,
): Float64Array {
  const out = new Float64Array(n).fill(Number.NaN);
  for (let i = 0; i < n; i++) {
    const u = micro ? micro[i]! : Number.NaN;
    out[i] = Number.isNaN(u) ? (milli ? milli[i]! : Number.NaN) : u / 1000;
  }
  return out;
}

/** The columns of a stored block that a summary adds up. */
export interface BlockKpis {
  sums: (NumberColumn | null)[];
  /** RTT of every row in ms (NaN: none). */
  rtt: Float64Array;
  tte: Float64Array | undefined;
  flow: NumberColumn | null;
}

/** The KPI columns of a decoded block, for adding its rows one by one. */
export function blockKpis(b: ProfileBlock): BlockKpis {
  return {
    sums: SUM_COLUMNS.map((c) => b.num(c)),
    rtt: rttColumn(
      b.num('meanLatencyMicroseconds')?.toFloat64(),
      b.num('meanLatencyMilliseconds')?.toFloat64(),
      b.n,
    ),
    tte: b.num('timeToEstablishMilliseconds')?.toFloat64(),
    flow: b.num('flowId'),
  };
}

/**
 * Adds row i of a block to the stats at `o` of `v` (a key's stats layout: profiles, sums, RTT and
 * time-to-establish count and sum). Returns the row's RTT and time to establish (NaN: none) in
 * `out`, for the caller's histogram or exact list.
 */
export function addRowStats(v: Float64Array, o: number, k: BlockKpis, i: number, out: Float64Array): void {
  v[o]!++;
  for (let x = 0; x < k.sums.length; x++) {
    const c = k.sums[x];
    if (c?.has(i)) v[o + 2 + x]! += c.num(i);
  }
  const r = k.rtt[i]!;
  if (!Number.isNaN(r)) {
    v[o + STAT_RTT]!++;
    v[o + STAT_RTT + 1]! += r;
  }
  const e = k.tte ? k.tte[i]! : Number.NaN;
  if (e > 0) {
    v[o + STAT_RTT + 2]!++;
    v[o + STAT_RTT + 3]! += e;
  }
  out[0] = r;
  out[1] = e > 0 ? e : Number.NaN;
}

const pad8 = (x: number) => (x + 7) & ~7;
const utf8 = new TextEncoder();

/** One dimension's pre-aggregates, as a reader sees them (views over the BLOB). */
export interface DimensionAggregates {
  keys: (string | number | null)[];
  stats: Float64Array;
  rttOffsets: Uint32Array;
  tteOffsets: Uint32Array;
  entries: Uint32Array;
}

/** Computes the pre-aggregates of a block from its columns (block order). */
export function encodeAggregates(c: BlockColumns): Uint8Array {
  const n = c.n;
  const sums = SUM_COLUMNS.map((name) => {
    const v = c.num.get(name);
    if (!v) return null;
    const bigs = c.bigs.get(name);
    if (!bigs) return v;
    const w = v.slice();
    for (const [i, b] of bigs) w[i] = Number(b);
    return w;
  });
  const rtt = rttColumn(c.num.get('meanLatencyMicroseconds'), c.num.get('meanLatencyMilliseconds'), n);
  const tte = c.num.get('timeToEstablishMilliseconds');
  // Histogram buckets of every row, computed once for all dimensions (-1: no value).
  const rb = new Int32Array(n);
  const tb = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const r = rtt[i]!;
    rb[i] = Number.isNaN(r) ? -1 : histBucket(r);
    const t = tte ? tte[i]! : Number.NaN;
    tb[i] = t > 0 ? histBucket(t) : -1;
  }
  const flowFirst = firstRowOfFlow(c);
  const parts: DimensionPart[] = [];
  for (const d of DIMENSIONS) {
    const [keys, kix] = dimensionKeys(c, DIMENSION_COLUMN[d], NUM_KEYS);
    const K = keys.length;
    const stats = new Float64Array(K * STAT_WIDTH);
    for (let i = 0; i < n; i++) stats[kix[i]! * STAT_WIDTH]!++;
    for (let s = 0; s < sums.length; s++) {
      const v = sums[s];
      if (!v) continue;
      for (let i = 0; i < n; i++) {
        const x = v[i]!;
        if (!Number.isNaN(x)) stats[kix[i]! * STAT_WIDTH + 2 + s]! += x;
      }
    }
    countConnections(stats, kix, flowFirst, K);
    const rCodes = new Uint32Array(n);
    const tCodes = new Uint32Array(n);
    let rn = 0;
    let tn = 0;
    for (let i = 0; i < n; i++) {
      const k = kix[i]!;
      const o = k * STAT_WIDTH + STAT_RTT;
      if (rb[i]! >= 0) {
        stats[o]!++;
        stats[o + 1]! += rtt[i]!;
        rCodes[rn++] = k * 1024 + rb[i]!;
      }
      if (tb[i]! >= 0) {
        stats[o + 2]!++;
        stats[o + 3]! += tte![i]!;
        tCodes[tn++] = k * 1024 + tb[i]!;
      }
    }
    const [rOff, rEnt] = runLength(sortCodes(rCodes, rn, K), K);
    const [tOff, tEnt] = runLength(sortCodes(tCodes, tn, K), K);
    const ent = new Uint32Array(rEnt.length + tEnt.length);
    ent.set(rEnt);
    ent.set(tEnt, rEnt.length);
    for (let k = 0; k <= K; k++) tOff[k]! += rEnt.length;
    parts.push({ keysJson: utf8.encode(JSON.stringify(keys)), stats, rOff, tOff, ent });
  }
  return layoutAggregates(parts);
}

/** One dimension's pre-aggregates, ready to be laid out. */
export interface DimensionPart {
  keysJson: Uint8Array;
  stats: Float64Array;
  rOff: Uint32Array;
  tOff: Uint32Array;
  ent: Uint32Array;
}

/** The aggregate BLOB of every dimension's part, in DIMENSIONS order. */
export function layoutAggregates(parts: DimensionPart[]): Uint8Array {
  let off = DIR;
  const dirs: number[][] = [];
  for (const p of parts) {
    const keysOff = off;
    off += pad8(p.keysJson.length);
    const statsOff = off;
    off += p.stats.byteLength;
    const rOffOff = off;
    off += pad8(p.rOff.byteLength);
    const tOffOff = off;
    off += pad8(p.tOff.byteLength);
    const entOff = off;
    off += pad8(p.ent.byteLength);
    dirs.push([
      p.stats.length / STAT_WIDTH,
      keysOff,
      p.keysJson.length,
      statsOff,
      rOffOff,
      tOffOff,
      entOff,
      p.ent.length,
    ]);
  }
  const out = new Uint8Array(off);
  const head = new Uint32Array(out.buffer, 0, DIR / 4);
  head[0] = MAGIC;
  for (const [d, dir] of dirs.entries()) {
    head.set(dir, 2 + d * 8);
    const p = parts[d]!;
    out.set(p.keysJson, dir[1]!);
    out.set(new Uint8Array(p.stats.buffer), dir[3]!);
    out.set(new Uint8Array(p.rOff.buffer), dir[4]!);
    out.set(new Uint8Array(p.tOff.buffer), dir[5]!);
    out.set(new Uint8Array(p.ent.buffer), dir[6]!);
  }
  return out;
}

/** Scratch index of small integer keys for dimensionKeys: all -1 between calls. */
const NUM_KEYS = new Int32Array(65536).fill(-1);

/**
 * Per row, the first row of the block with the same flowId (-1: the row has none): a row that is
 * its own first counts its connection once.
 */
function firstRowOfFlow(c: BlockColumns): Int32Array {
  const out = new Int32Array(c.n).fill(-1);
  const flow = c.num.get('flowId');
  if (!flow) return out;
  const bigs = c.bigs.get('flowId');
  const first = new Map<number | bigint, number>();
  for (let i = 0; i < c.n; i++) {
    const f = bigs?.get(i) ?? flow[i]!;
    if (typeof f === 'number' && Number.isNaN(f)) continue;
    let x = first.get(f);
    if (x === undefined) {
      x = i;
      first.set(f, i);
    }
    out[i] = x;
  }
  return out;
}

/**
 * Key of every row of one dimension (index into the returned keys, in order of first
 * appearance). `numKeys` is scratch space for small integer keys, left all -1 again on return.
 */
function dimensionKeys(
  c: BlockColumns,
  column: string,
  numKeys: Int32Array,
): [(string | number | null)[], Uint32Array] {
  const n = c.n;
  const kix = new Uint32Array(n);
  const keys: (string | number | null)[] = [];
  const text = c.text.get(column);
  const num = c.num.get(column);
  if (text) {
    const m = new Int32Array(text.dict.length + 1).fill(-1);
    for (let i = 0; i < n; i++) {
      const d = text.idx[i]!;
      let x = m[d]!;
      if (x < 0) {
        x = keys.push(d === 0 ? null : text.dict[d - 1]!) - 1;
        m[d] = x;
      }
      kix[i] = x;
    }
  } else if (num) {
    // Ports, IP versions and end states: small integers index an array; anything else a map.
    const other = new Map<number | null, number>();
    for (let i = 0; i < n; i++) {
      const v = num[i]!;
      let x: number | undefined;
      if (v >= 0 && v < 65536 && (v | 0) === v) {
        x = numKeys[v]!;
        if (x < 0) {
          x = keys.push(v) - 1;
          numKeys[v] = x;
        }
      } else {
        const k = Number.isNaN(v) ? null : v;
        x = other.get(k);
        if (x === undefined) {
          x = keys.push(k) - 1;
          other.set(k, x);
        }
      }
      kix[i] = x;
    }
    for (const k of keys) if (typeof k === 'number' && k >= 0 && k < 65536 && (k | 0) === k) numKeys[k] = -1;
  } else if (n > 0) keys.push(null);
  return [keys, kix];
}

/**
 * Distinct flowIds per key into stats[k * STAT_WIDTH + 1]. When every row of a flow has the key
 * of the flow's first row (a destination, port or exporter always does), counting first rows is
 * exact; otherwise (an end state that changed) distinct flowIds are counted per key.
 */
function countConnections(stats: Float64Array, kix: Uint32Array, flowFirst: Int32Array, K: number): void {
  const n = kix.length;
  let functional = true;
  for (let i = 0; i < n; i++) {
    const f = flowFirst[i]!;
    if (f >= 0 && kix[f] !== kix[i]) {
      functional = false;
      break;
    }
  }
  if (functional) {
    for (let i = 0; i < n; i++) if (flowFirst[i] === i) stats[kix[i]! * STAT_WIDTH + 1]!++;
    return;
  }
  const sets: Set<number>[] = Array.from({ length: K }, () => new Set());
  for (let i = 0; i < n; i++) {
    const f = flowFirst[i]!;
    if (f >= 0) sets[kix[i]!]!.add(f);
  }
  for (let k = 0; k < K; k++) stats[k * STAT_WIDTH + 1] = sets[k]!.size;
}

/**
 * The first n (key × 1024 + bucket) codes in ascending order: two counting passes (by bucket,
 * then stably by key), linear where a comparison sort of every dimension's codes was a fifth of
 * the writer's time.
 */
function sortCodes(codes: Uint32Array, n: number, K: number): Uint32Array {
  const tmp = new Uint32Array(n);
  const out = new Uint32Array(n);
  const byBucket = new Uint32Array(1025);
  for (let i = 0; i < n; i++) byBucket[(codes[i]! & 1023) + 1]!++;
  for (let b = 0; b < 1024; b++) byBucket[b + 1]! += byBucket[b]!;
  for (let i = 0; i < n; i++) tmp[byBucket[codes[i]! & 1023]!++] = codes[i]!;
  const byKey = new Uint32Array(K + 1);
  for (let i = 0; i < n; i++) byKey[(tmp[i]! >>> 10) + 1]!++;
  for (let k = 0; k < K; k++) byKey[k + 1]! += byKey[k]!;
  for (let i = 0; i < n; i++) out[byKey[tmp[i]! >>> 10]!++] = tmp[i]!;
  return out;
}

/** Sorted (key × 1024 + bucket) codes to per-key offsets and (bucket << 22 | count) entries. */
function runLength(sorted: Uint32Array, K: number): [Uint32Array, Uint32Array] {
  const off = new Uint32Array(K + 1);
  const ent = new Uint32Array(sorted.length);
  let e = 0;
  let i = 0;
  for (let k = 0; k < K; k++) {
    off[k] = e;
    while (i < sorted.length && sorted[i]! >>> 10 === k) {
      const code = sorted[i]!;
      let cnt = 0;
      while (i < sorted.length && sorted[i] === code) {
        cnt++;
        i++;
      }
      ent[e++] = ((code & 1023) << 22) | cnt;
    }
  }
  off[K] = e;
  return [off, ent.slice(0, e)];
}

const textDecoder = new TextDecoder();

/** One dimension of a block's pre-aggregates (views over the BLOB; copied only when unaligned). */
export function readAggregates(blob: Uint8Array, dim: SummaryGroup): DimensionAggregates {
  const b = blob.byteOffset % 8 === 0 ? blob : new Uint8Array(blob);
  const head = new Uint32Array(b.buffer, b.byteOffset, DIR / 4);
  const d = 2 + DIMENSIONS.indexOf(dim) * 8;
  const [K, keysOff, keysLen, statsOff, rOffOff, tOffOff, entOff, entN] = head.subarray(
    d,
    d + 8,
  ) as unknown as number[];
  const at = (x: number) => b.byteOffset + x;
  return {
    keys: JSON.parse(textDecoder.decode(b.subarray(keysOff!, keysOff! + keysLen!))) as (
      | string
      | number
      | null
    )[],
    stats: new Float64Array(b.buffer, at(statsOff!), K! * STAT_WIDTH),
    rttOffsets: new Uint32Array(b.buffer, at(rOffOff!), K! + 1),
    tteOffsets: new Uint32Array(b.buffer, at(tOffOff!), K! + 1),
    entries: new Uint32Array(b.buffer, at(entOff!), entN!),
  };
}

/** Adds entries [from, to) of a pre-aggregate histogram into a full one. */
export function addEntries(h: Uint32Array, entries: ArrayLike<number>, from: number, to: number): void {
  for (let e = from; e < to; e++) {
    const x = entries[e]!;
    h[x >>> 22]! += x & 0x3fffff;
  }
}
