/**
 * Queries over the blocks layout (docs/storage.md): the profile list with the same (t, id) keyset
 * cursor as the rows layout, connections through per-block bloom filters, and summaries that read
 * the pre-aggregates of blocks wholly inside the range and scan only the blocks at its edges.
 */
import type Database from 'better-sqlite3';
import { CollectorError } from '../errors.js';
import {
  addEntries,
  addRowStats,
  blockKpis,
  DIMENSION_COLUMN,
  type DimensionAggregates,
  HIST_BUCKETS,
  histBucket,
  histPercentile,
  readAggregates,
  STAT_RTT,
  STAT_WIDTH,
} from './block-aggregates.js';
import { ROLLUP_DAY_MS, ROLLUP_MS } from './block-rollups.js';
import { bloomMayHave } from './flow-bloom.js';
import type { TablePacker } from './packed-batch.js';
import { mean, percentile } from './percentiles.js';
import { ProfileBlock } from './profile-block.js';
import type {
  Page,
  PageRequest,
  ProfileRow,
  RowFilter,
  SummaryGroup,
  SummaryQuery,
  SummaryRow,
} from './types.js';

type Db = Database.Database;

/**
 * A summary reads every row (exact percentiles and distinct counts) when its blocks hold at most
 * this many profiles; above it, blocks wholly inside the range contribute their pre-aggregates.
 */
export const EXACT_SUMMARY_ROWS = 200_000;

const MAX_SAFE = 9007199254740991;

/** Roll-up BLOBs kept decoded in memory (least recently used dropped first). */
const ROLLUP_CACHE_BYTES = 256 * 1024 * 1024;

/** A roll-up row without its BLOB. */
interface RollupMeta {
  start: number;
  maxBlockId: number;
  n: number;
}

/** Zone map of one block. */
interface BlockMeta {
  id: number;
  tmin: number;
  tmax: number;
  n: number;
}

/** Cursor text of a (time, id) position (the same text the rows layout issues). */
function encodeCursor(t: number, id: number): string {
  return `${t}_${id}`;
}

function decodeCursor(c: string): { t: number | null; id: number } {
  const m = /^(n|-?\d+)_(\d+)$/.exec(c);
  if (!m)
    throw new CollectorError('COL_ERR_BAD_QUERY', `cursor ${JSON.stringify(c)} is not one this API returned`);
  return { t: m[1] === 'n' ? null : Number(m[1]), id: Number(m[2]) };
}

/** The address a block must hold for a filter to match any of its rows, quoted as in `addrs`. */
function addressNeedle(f: RowFilter): string | null {
  const a = f.address ?? f.destinationAddress ?? f.sourceAddress;
  return a === undefined ? null : JSON.stringify(a);
}

/**
 * The row test of a filter (time excepted) on one block, or null when no row of the block can
 * match (a filtered string absent from the block's dictionary, a filtered column absent).
 */
function rowFilter(b: ProfileBlock, f: RowFilter): ((i: number) => boolean) | null {
  const tests: ((i: number) => boolean)[] = [];
  const strEq = (col: string, v: string) => {
    const c = b.str(col);
    const x = c ? c.indexOf(v) : -1;
    if (x < 0) return null;
    const idx = c!.index;
    return (i: number) => idx[i] === x;
  };
  const numEq = (col: string, v: number) => {
    const c = b.num(col);
    if (!c) return null;
    return (i: number) => c.num(i) === v;
  };
  const either = (a: ((i: number) => boolean) | null, c: ((i: number) => boolean) | null) => {
    if (!a) return c;
    if (!c) return a;
    return (i: number) => a(i) || c(i);
  };
  const add = (t: ((i: number) => boolean) | null) => {
    if (!t) return false;
    tests.push(t);
    return true;
  };
  if (
    f.address !== undefined &&
    !add(either(strEq('sourceAddress', f.address), strEq('destinationAddress', f.address)))
  )
    return null;
  if (f.sourceAddress !== undefined && !add(strEq('sourceAddress', f.sourceAddress))) return null;
  if (f.destinationAddress !== undefined && !add(strEq('destinationAddress', f.destinationAddress)))
    return null;
  if (
    f.port !== undefined &&
    !add(either(numEq('sourceTransportPort', f.port), numEq('destinationTransportPort', f.port)))
  )
    return null;
  if (f.sourcePort !== undefined && !add(numEq('sourceTransportPort', f.sourcePort))) return null;
  if (f.destinationPort !== undefined && !add(numEq('destinationTransportPort', f.destinationPort)))
    return null;
  if (f.exporter !== undefined && !add(strEq('exporter', f.exporter))) return null;
  if (f.templateId !== undefined && !add(numEq('templateId', f.templateId))) return null;
  if (f.ipVersion !== undefined && !add(numEq('ipVersion', f.ipVersion))) return null;
  if (f.startState !== undefined && !add(numEq('flowStartReason', f.startState))) return null;
  if (f.endState !== undefined && !add(numEq('flowEndReason', f.endState))) return null;
  if (f.synRetransmitted !== undefined) {
    const c = b.num('synRetransmissionCount');
    if (f.synRetransmitted) {
      if (!c || !add((i) => c.num(i) > 0)) return null;
    } else if (c) add((i) => !(c.num(i) > 0));
  }
  if (tests.length === 0) return () => true;
  if (tests.length === 1) return tests[0]!;
  return (i) => {
    for (const t of tests) if (!t(i)) return false;
    return true;
  };
}

/** True when the filter has conditions besides the time range. */
function hasRowConditions(f: RowFilter): boolean {
  return (
    f.address !== undefined ||
    f.sourceAddress !== undefined ||
    f.destinationAddress !== undefined ||
    f.port !== undefined ||
    f.sourcePort !== undefined ||
    f.destinationPort !== undefined ||
    f.exporter !== undefined ||
    f.templateId !== undefined ||
    f.ipVersion !== undefined ||
    f.startState !== undefined ||
    f.endState !== undefined ||
    f.synRetransmitted !== undefined
  );
}

/** A matching row during a page query. */
interface Hit {
  t: number;
  id: number;
  b: ProfileBlock;
  i: number;
}

/**
 * One (group, bucket) being summed. Its numbers live in the summary's Pool at `slot`, laid out
 * as a pre-aggregate key's stats (profiles, connections bound, sums, rtt count and sum, tte count
 * and sum): a week of hourly buckets makes 336,000 groups, one small object each.
 */
interface Acc {
  key: string | number | null;
  bucket: number | null;
  slot: number;
  /** flowIds of scanned rows (exact distinct count); null until a scanned row has one. */
  flows: Set<number | bigint> | null;
  /** Exact values of scanned rows; null until one is seen (most groups are pre-aggregated). */
  rtt: number[] | null;
  tte: number[] | null;
  /**
   * Pre-aggregates merged into this group, as (source × 2^26 + key index) into the summary's
   * list of sources: the first in `ref` (-1: none), any others in `refs`. Only the groups
   * returned are turned into histograms.
   */
  ref: number;
  refs: number[] | null;
}

/** The numbers of a summary's groups, STAT_WIDTH per slot (the connections entry is the bound). */
class Pool {
  v = new Float64Array(1024 * STAT_WIDTH);
  n = 0;

  /** A new zeroed slot. */
  add(): number {
    if ((this.n + 1) * STAT_WIDTH > this.v.length) this.reserve(2 * this.n + 1);
    return this.n++;
  }

  /** Room for `slots` slots in all, without growing again. */
  reserve(slots: number): void {
    if (slots * STAT_WIDTH <= this.v.length) return;
    const w = new Float64Array(slots * STAT_WIDTH);
    w.set(this.v);
    this.v = w;
  }
}

/**
 * The groups of one summary, by bucket and interned key id (a Map tells 443 from '443' when
 * interning): merging a cached roll-up indexes an array per key, no map lookup.
 */
class Groups {
  readonly pool = new Pool();
  readonly all: Acc[] = [];
  private readonly byBucket = new Map<number | null, (Acc | undefined)[]>();
  private lastBucket: number | null | undefined;
  private lastArr: (Acc | undefined)[] = [];

  constructor(private readonly keyIds: Map<string | number | null, number>) {}

  /** The interned id of a key. */
  id(key: string | number | null): number {
    let id = this.keyIds.get(key);
    if (id === undefined) {
      id = this.keyIds.size;
      this.keyIds.set(key, id);
    }
    return id;
  }

  /** The group of (key with interned `id`, bucket), created on first use. */
  get(id: number, key: string | number | null, bucket: number | null): Acc {
    if (bucket !== this.lastBucket) {
      let arr = this.byBucket.get(bucket);
      if (!arr) {
        arr = [];
        this.byBucket.set(bucket, arr);
      }
      this.lastBucket = bucket;
      this.lastArr = arr;
    }
    let a = this.lastArr[id];
    if (!a) {
      a = { key, bucket, slot: this.pool.add(), flows: null, rtt: null, tte: null, ref: -1, refs: null };
      this.lastArr[id] = a;
      this.all.push(a);
    }
    return a;
  }

  /** The group of (key, bucket). */
  of(key: string | number | null, bucket: number | null): Acc {
    return this.get(this.id(key), key, bucket);
  }
}

/** Pre-aggregates of one block or roll-up merged into a summary. */
type Sources = DimensionAggregates[];
const REF_SHIFT = 2 ** 26;

/** SQLite's ORDER BY of mixed keys: NULL, then numbers, then text (binary order). */
function compareKeys(a: string | number | null, b: string | number | null): number {
  const rank = (x: unknown) => (x === null ? 0 : typeof x === 'number' ? 1 : 2);
  const ra = rank(a);
  const rb = rank(b);
  if (ra !== rb) return ra - rb;
  if (a === null || b === null) return 0;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Reads profiles stored in blocks; one instance per store connection. */
export class BlockReader {
  /** Bloom filter of every block seen, by block key (kept once loaded). */
  private readonly blooms = new Map<number, Uint8Array>();
  private bloomsUpTo = Number.NEGATIVE_INFINITY;
  private readonly dataOf: Database.Statement;
  private readonly aggsOf: Database.Statement;
  private readonly rollupsIn: Database.Statement;
  private readonly rollupBlob: Database.Statement;
  private readonly rollupCache = new Map<
    string,
    { maxBlockId: number; n: number; d: DimensionAggregates; ids: Int32Array; bytes: number }
  >();
  /** Keys of cached roll-ups as small integers, so merging one indexes an array. */
  private readonly keyIds = new Map<string | number | null, number>();
  private rollupCacheBytes = 0;

  constructor(
    private readonly db: Db,
    private readonly packer: TablePacker,
    private readonly exactRows = EXACT_SUMMARY_ROWS,
  ) {
    this.dataOf = db.prepare('SELECT data FROM profile_blocks WHERE id = ?').pluck();
    this.aggsOf = db.prepare('SELECT aggs FROM profile_blocks WHERE id = ?').pluck();
    this.rollupsIn = db.prepare(
      'SELECT start, maxBlockId, n FROM profile_rollups WHERE span = ? AND start >= ? AND start + span <= ? ORDER BY start',
    );
    this.rollupBlob = db.prepare('SELECT aggs FROM profile_rollups WHERE span = ? AND start = ?').pluck();
  }

  private block(id: number): ProfileBlock | null {
    const data = this.dataOf.get(id) as Buffer | undefined;
    return data ? new ProfileBlock(id, data) : null;
  }

  /** A store row of a block row. */
  private toRow(h: Hit): ProfileRow & { id: number } {
    return h.b.row(h.i, this.packer.numColumns, this.packer.textColumns) as unknown as ProfileRow & {
      id: number;
    };
  }

  /** A page of profiles in (t, id) order, as SqliteStore.profiles returns it. */
  profiles(f: RowFilter, page: PageRequest): Page<ProfileRow> {
    const asc = page.order === 'asc';
    let lo = f.from ?? Number.NEGATIVE_INFINITY;
    let hi = f.to ?? Number.POSITIVE_INFINITY;
    let cur: { t: number; id: number } | null = null;
    if (page.cursor) {
      const c = decodeCursor(page.cursor);
      // Profiles always have a time; a null-time cursor (rows layout semantics) lies before them all.
      if (c.t === null) {
        if (!asc) return { items: [], nextCursor: null };
      } else {
        cur = { t: c.t, id: c.id };
        if (asc) lo = Math.max(lo, c.t);
        else hi = Math.min(hi, c.t + 1);
      }
    }
    if (!(lo < hi)) return { items: [], nextCursor: null };
    const needle = addressNeedle(f);
    const sql = `SELECT id, tmin, tmax, n FROM profile_blocks WHERE tmax >= ? AND tmin < ?${needle ? ' AND instr(addrs, ?) > 0' : ''}
      ORDER BY ${asc ? 'tmin, id' : 'tmax DESC, id DESC'}`;
    const args: (number | string)[] = [clampSql(lo), clampSql(hi)];
    if (needle) args.push(needle);
    const metas = this.db.prepare(sql).all(...args) as BlockMeta[];
    const want = page.limit + 1;
    let hits: Hit[] = [];
    const cmp = asc
      ? (a: Hit, b: Hit) => a.t - b.t || a.id - b.id
      : (a: Hit, b: Hit) => b.t - a.t || b.id - a.id;
    for (const m of metas) {
      if (hits.length >= want) {
        hits.sort(cmp);
        hits.length = want;
        const last = hits[want - 1]!;
        // No row of this block (nor of any later one) can come before the rows already found.
        if (asc ? m.tmin > last.t : m.tmax < last.t) break;
      }
      const b = this.block(m.id);
      if (!b) continue;
      const test = rowFilter(b, f);
      if (!test) continue;
      const t = b.t();
      const ids = b.id();
      let found = 0;
      // Rows are in (t, id) order: walk in the page's direction and stop at `want` rows.
      for (let k = 0; k < b.n && found < want; k++) {
        const i = asc ? k : b.n - 1 - k;
        const ti = t.num(i);
        if (ti < lo || ti >= hi) continue;
        const id = ids.num(i);
        if (cur && (asc ? ti === cur.t && id <= cur.id : ti > cur.t || (ti === cur.t && id >= cur.id)))
          continue;
        if (!test(i)) continue;
        hits.push({ t: ti, id, b, i });
        found++;
      }
    }
    hits.sort(cmp);
    const more = hits.length > page.limit;
    hits = hits.slice(0, page.limit);
    const last = hits[hits.length - 1];
    return {
      items: hits.map((h) => this.toRow(h)),
      nextCursor: more && last ? encodeCursor(last.t, last.id) : null,
    };
  }

  /** Every profile of one connection, in (t, id) order. */
  connection(flowId: number | bigint): (ProfileRow & { id: number })[] {
    const target =
      typeof flowId === 'bigint' && flowId <= BigInt(MAX_SAFE) && flowId >= 0n ? Number(flowId) : flowId;
    // Blocks are written with increasing keys; the bloom filters of new ones are read once.
    for (const r of this.db
      .prepare('SELECT id, bloom FROM profile_blocks WHERE id > ? ORDER BY id')
      .raw()
      .all(clampSql(this.bloomsUpTo)) as [number, Buffer][]) {
      this.blooms.set(r[0], new Uint8Array(r[1]));
      this.bloomsUpTo = r[0];
    }
    const hits: Hit[] = [];
    for (const [key, bloom] of this.blooms) {
      if (!bloomMayHave(bloom, target)) continue;
      const b = this.block(key);
      if (!b) {
        // Deleted by retention.
        this.blooms.delete(key);
        continue;
      }
      const col = b.num('flowId');
      if (!col) continue;
      const t = b.t();
      const ids = b.id();
      for (let i = 0; i < b.n; i++) {
        const v = typeof target === 'number' ? col.num(i) : col.get(i);
        if (v === target) hits.push({ t: t.num(i), id: ids.num(i), b, i });
      }
    }
    hits.sort((a, b) => a.t - b.t || a.id - b.id);
    return hits.map((h) => this.toRow(h));
  }

  /** A summary, as SqliteStore.summary returns it, plus `approximate` where pre-aggregates were used. */
  summary(q: SummaryQuery): SummaryRow[] {
    const from = q.from ?? Number.NEGATIVE_INFINITY;
    const to = q.to ?? Number.POSITIVE_INFINITY;
    const needle = addressNeedle(q);
    const where = `tmax >= ? AND tmin < ?${needle ? ' AND instr(addrs, ?) > 0' : ''}`;
    const params = [clampSql(from), clampSql(to), ...(needle ? [needle] : [])] as (number | string)[];
    const total = this.db
      .prepare(`SELECT total(n) FROM profile_blocks WHERE ${where}`)
      .pluck()
      .get(...params) as number;
    const useAggs = !hasRowConditions(q) && total > this.exactRows;
    const bucketMs = q.bucketMs ? Math.floor(q.bucketMs) : 0;
    if (this.keyIds.size > 4_000_000) {
      // Keys come and go over months: start the numbering over rather than grow without bound.
      this.keyIds.clear();
      this.rollupCache.clear();
      this.rollupCacheBytes = 0;
    }
    const groups = new Groups(this.keyIds);
    const pool = groups.pool;
    const acc = (key: string | number | null, bucket: number | null): Acc => groups.of(key, bucket);
    const sources: Sources = [];
    const segments: { bucket: number; d: DimensionAggregates; ids: Int32Array }[] = [];
    // Hours wholly inside the range that have a roll-up (hour start -> its maxBlockId).
    const covered = new Map<number, number>();
    // [start, end, maxBlockId] of each roll-up used, flat.
    const coveredBy: number[] = [];
    if (useAggs && bucketMs % ROLLUP_MS === 0) {
      // Days first (when buckets are whole days), then the hours no day covers.
      for (const span of bucketMs % ROLLUP_DAY_MS === 0 ? [ROLLUP_DAY_MS, ROLLUP_MS] : [ROLLUP_MS]) {
        // Which roll-ups first, then the BLOBs of those no day covers (hour BLOBs are large).
        const rollups = this.rollupsIn.all(span, clampSql(from), clampSql(to)) as RollupMeta[];
        const used: { r: RollupMeta; c: { d: DimensionAggregates; ids: Int32Array } }[] = [];
        for (const r of rollups) {
          if (covered.has(r.start)) continue;
          const c = this.rollup(span, r, q.groupBy);
          if (c) used.push({ r, c });
        }
        for (const { r, c } of used) {
          for (let h = r.start; h < r.start + span; h += ROLLUP_MS) covered.set(h, r.maxBlockId);
          coveredBy.push(r.start, r.start + span, r.maxBlockId);
          const bucket = bucketMs ? Math.floor(r.start / bucketMs) * bucketMs : null;
          // With buckets, a roll-up's keys are groups of their own: they are merged after the
          // blocks, and only those that can make the limit when nothing else shares their bucket.
          if (bucket === null) this.mergeDimension(c.d, bucket, groups, sources, c.ids);
          else segments.push({ bucket, d: c.d, ids: c.ids });
        }
      }
    }
    // Blocks wholly inside one roll-up that counts them are not even listed (listing 2000 blocks
    // for a week took longer than merging its roll-ups).
    let exclude = '';
    // (SQLite binds at most 32766 parameters: a year of hourly buckets lists its blocks.)
    if (coveredBy.length && coveredBy.length <= 3 * 2000) {
      const one = '(tmin >= ? AND tmax < ? AND id <= ?)';
      exclude = ` AND NOT (${Array(coveredBy.length / 3)
        .fill(one)
        .join(' OR ')})`;
      params.push(...coveredBy);
    }
    const metas = this.db
      .prepare(`SELECT id, tmin, tmax, n FROM profile_blocks WHERE ${where}${exclude} ORDER BY tmin, id`)
      .all(...params) as BlockMeta[];
    for (const m of metas) {
      let skip: ((t: number) => boolean) | null = null;
      if (covered.size) {
        // Rows of this block in a rolled-up hour that counts it are already in the summary.
        const lo = Math.max(m.tmin, from);
        const hi = Math.min(m.tmax, to - 1);
        let some = false;
        let all = true;
        for (let h = Math.floor(lo / ROLLUP_MS) * ROLLUP_MS; h <= hi; h += ROLLUP_MS) {
          if ((covered.get(h) ?? -1) >= m.id) some = true;
          else all = false;
        }
        if (all) continue;
        if (some) skip = (t) => (covered.get(Math.floor(t / ROLLUP_MS) * ROLLUP_MS) ?? -1) >= m.id;
      }
      const inside = m.tmin >= from && m.tmax < to;
      const oneBucket = !bucketMs || Math.floor(m.tmin / bucketMs) === Math.floor(m.tmax / bucketMs);
      if (useAggs && inside && oneBucket && !skip) this.mergeAggregates(m, q, bucketMs, groups, sources);
      else this.scan(m, q, from, to, bucketMs, acc, pool, skip);
    }
    let all: Acc[];
    // A roll-up alone in its bucket leaves its keys' groups as they are in the roll-up: they are
    // made groups only if they can make the limit (a week of hourly buckets over 2000
    // destinations is 336,000 groups for 50 rows). Others are merged now.
    const perBucket = new Map<number | null, number>();
    for (const a of groups.all) perBucket.set(a.bucket, 2);
    for (const g of segments) perBucket.set(g.bucket, (perBucket.get(g.bucket) ?? 0) + 1);
    const alone = segments.filter((g) => perBucket.get(g.bucket) === 1);
    for (const g of segments)
      if (perBucket.get(g.bucket) !== 1) this.mergeDimension(g.d, g.bucket, groups, sources, g.ids);
    const lazyCount = alone.reduce((x, g) => x + g.d.keys.length, 0);
    if (groups.all.length + lazyCount > 4 * q.limit) {
      // Only groups with at least the limit-th largest count can be returned: sort just those.
      const counts: number[] = [];
      for (const a of groups.all) counts.push(pool.v[a.slot * STAT_WIDTH]!);
      for (const g of alone)
        for (let k = 0; k < g.d.keys.length; k++) counts.push(g.d.stats[k * STAT_WIDTH]!);
      const least = kthLargest(counts, (x) => x, q.limit);
      for (const g of alone)
        this.mergeDimension(
          g.d,
          g.bucket,
          groups,
          sources,
          g.ids,
          (k) => g.d.stats[k * STAT_WIDTH]! >= least,
        );
      all = groups.all.filter((a) => pool.v[a.slot * STAT_WIDTH]! >= least);
    } else {
      for (const g of alone) this.mergeDimension(g.d, g.bucket, groups, sources, g.ids);
      all = groups.all;
    }
    const rows = all
      .sort(
        (a, b) =>
          pool.v[b.slot * STAT_WIDTH]! - pool.v[a.slot * STAT_WIDTH]! ||
          compareKeys(a.key, b.key) ||
          (a.bucket ?? 0) - (b.bucket ?? 0),
      )
      .slice(0, q.limit);
    return rows.map((a) => finish(a, pool, sources));
  }

  private mergeAggregates(
    m: BlockMeta,
    q: SummaryQuery,
    bucketMs: number,
    groups: Groups,
    sources: Sources,
  ): void {
    const blob = this.aggsOf.get(m.id) as Buffer | undefined;
    if (!blob) return;
    const d = readAggregates(blob, q.groupBy);
    this.mergeDimension(d, bucketMs ? Math.floor(m.tmin / bucketMs) * bucketMs : null, groups, sources);
  }

  /**
   * One dimension of a roll-up's pre-aggregates, from the cache while the roll-up is unchanged
   * (same maxBlockId and count): dashboards ask for the same days and hours over and over.
   */
  private rollup(
    span: number,
    r: RollupMeta,
    dim: SummaryGroup,
  ): { d: DimensionAggregates; ids: Int32Array } | null {
    const key = `${span}:${r.start}:${dim}`;
    const hit = this.rollupCache.get(key);
    if (hit && hit.maxBlockId === r.maxBlockId && hit.n === r.n) {
      // Most recently used last.
      this.rollupCache.delete(key);
      this.rollupCache.set(key, hit);
      return hit;
    }
    const blob = this.rollupBlob.get(span, r.start) as Buffer | undefined;
    if (!blob) return null;
    // A copy of just this dimension's part would be smaller; the views keep the BLOB alive.
    const d = readAggregates(blob, dim);
    const ids = new Int32Array(d.keys.length);
    for (let k = 0; k < d.keys.length; k++) {
      let id = this.keyIds.get(d.keys[k]!);
      if (id === undefined) {
        id = this.keyIds.size;
        this.keyIds.set(d.keys[k]!, id);
      }
      ids[k] = id;
    }
    const entry = { maxBlockId: r.maxBlockId, n: r.n, d, ids, bytes: blob.byteLength };
    if (hit) this.rollupCacheBytes -= hit.bytes;
    this.rollupCache.delete(key);
    this.rollupCache.set(key, entry);
    this.rollupCacheBytes += blob.byteLength;
    for (const [k, v] of this.rollupCache) {
      if (this.rollupCacheBytes <= ROLLUP_CACHE_BYTES) break;
      this.rollupCache.delete(k);
      this.rollupCacheBytes -= v.bytes;
    }
    return entry;
  }

  /** Adds one dimension of pre-aggregates (a block's or a roll-up's) to one bucket of the summary. */
  private mergeDimension(
    d: DimensionAggregates,
    bucket: number | null,
    groups: Groups,
    sources: Sources,
    ids: Int32Array | null = null,
    only: ((k: number) => boolean) | null = null,
  ): void {
    const src = sources.push(d) - 1;
    const pool = groups.pool;
    for (let k = 0; k < d.keys.length; k++) {
      if (only && !only(k)) continue;
      const a = ids ? groups.get(ids[k]!, d.keys[k]!, bucket) : groups.of(d.keys[k]!, bucket);
      const o = k * STAT_WIDTH;
      const s = d.stats;
      const v = pool.v;
      const ao = a.slot * STAT_WIDTH;
      for (let x = 0; x < STAT_WIDTH; x++) v[ao + x]! += s[o + x]!;
      const ref = src * REF_SHIFT + k;
      if (a.ref < 0) a.ref = ref;
      else if (a.refs) a.refs.push(ref);
      else a.refs = [ref];
    }
  }

  private scan(
    m: BlockMeta,
    q: SummaryQuery,
    from: number,
    to: number,
    bucketMs: number,
    acc: (key: string | number | null, bucket: number | null) => Acc,
    pool: Pool,
    skip: ((t: number) => boolean) | null = null,
  ): void {
    const b = this.block(m.id);
    if (!b) return;
    const test = rowFilter(b, q);
    if (!test) return;
    const n = b.n;
    const t = b.t().toFloat64();
    const col = DIMENSION_COLUMN[q.groupBy];
    const str = b.str(col);
    const num = str ? null : b.num(col);
    const k = blockKpis(b);
    const re = new Float64Array(2);
    // Groups of this block by a number: key code (dictionary index, or value) and bucket offset.
    const local = new Map<number, Acc>();
    const bucket0 = bucketMs ? Math.floor(m.tmin / bucketMs) : 0;
    const dict = str ? str.dict() : null;
    for (let i = 0; i < n; i++) {
      const ti = t[i]!;
      if (ti < from || ti >= to || !test(i) || skip?.(ti)) continue;
      let code: number;
      if (str) code = str.index[i]!;
      else if (num?.has(i)) code = num.num(i) + 1;
      else code = 0;
      const bk = bucketMs ? Math.floor(ti / bucketMs) : 0;
      const lk = code + (bk - bucket0) * 2 ** 24;
      let a = local.get(lk);
      if (!a) {
        const key = code === 0 ? null : dict ? dict[code - 1]! : code - 1;
        a = acc(key, bucketMs ? bk * bucketMs : null);
        local.set(lk, a);
      }
      addRowStats(pool.v, a.slot * STAT_WIDTH, k, i, re);
      if (k.flow?.has(i)) {
        a.flows ??= new Set();
        a.flows.add(k.flow.get(i)!);
      }
      if (!Number.isNaN(re[0]!)) {
        a.rtt ??= [];
        a.rtt.push(re[0]!);
      }
      if (!Number.isNaN(re[1]!)) {
        a.tte ??= [];
        a.tte.push(re[1]!);
      }
    }
  }
}

/** The summary row of a group: exact statistics when every row was scanned, else flagged approximate. */
function finish(a: Acc, pool: Pool, sources: Sources): SummaryRow {
  const approximate = a.ref >= 0;
  const v = pool.v.subarray(a.slot * STAT_WIDTH, (a.slot + 1) * STAT_WIDTH);
  const rttCount = v[STAT_RTT]!;
  const rttSum = v[STAT_RTT + 1]!;
  const tteCount = v[STAT_RTT + 2]!;
  const tteSum = v[STAT_RTT + 3]!;
  const refs = a.ref < 0 ? [] : [a.ref, ...(a.refs ?? [])];
  const row: SummaryRow = {
    key: a.key,
    bucket: a.bucket,
    profiles: v[0]!,
    connections: (a.flows?.size ?? 0) + v[1]!,
    transferredOctetTotalCount: v[2]!,
    receivedOctetTotalCount: v[3]!,
    retransmittedPacketTotalCount: v[4]!,
    stallCount: v[5]!,
    duplicatePacketTotalCount: v[6]!,
    reorderingPacketCount: v[7]!,
    rtt: null,
    timeToEstablish: null,
  };
  if (approximate) {
    const rh = histogram(refs, sources, 'rtt', a.rtt ?? []);
    const th = histogram(refs, sources, 'tte', a.tte ?? []);
    const pr = (p: number) => histPercentile(rh, rttCount, p);
    const pt = (p: number) => histPercentile(th, tteCount, p);
    if (rttCount > 0)
      row.rtt = { mean: rttSum / rttCount, p50: pr(50), p90: pr(90), p95: pr(95), p99: pr(99) };
    if (tteCount > 0) row.timeToEstablish = { mean: tteSum / tteCount, p50: pt(50), p90: pt(90) };
    row.approximate = true;
    return row;
  }
  if (a.rtt?.length) {
    const r = a.rtt.sort((x, y) => x - y);
    row.rtt = {
      mean: mean(r),
      p50: percentile(r, 50),
      p90: percentile(r, 90),
      p95: percentile(r, 95),
      p99: percentile(r, 99),
    };
  }
  if (a.tte?.length) {
    const t = a.tte.sort((x, y) => x - y);
    row.timeToEstablish = { mean: mean(t), p50: percentile(t, 50), p90: percentile(t, 90) };
  }
  return row;
}

/** A histogram of a group's pre-aggregates plus exact values. */
function histogram(refs: number[], sources: Sources, which: 'rtt' | 'tte', values: number[]): Uint32Array {
  const h = new Uint32Array(HIST_BUCKETS);
  for (const r of refs) {
    const d = sources[Math.floor(r / REF_SHIFT)]!;
    const k = r % REF_SHIFT;
    const off = which === 'rtt' ? d.rttOffsets : d.tteOffsets;
    addEntries(h, d.entries, off[k]!, off[k + 1]!);
  }
  for (const v of values) h[histBucket(v)]!++;
  return h;
}

/** The k-th largest value of `f` over `items` (a min-heap of the k largest so far). */
function kthLargest<T>(items: readonly T[], f: (x: T) => number, k: number): number {
  const heap = new Float64Array(k);
  let n = 0;
  for (const it of items) {
    const v = f(it);
    if (n < k) {
      // Sift up.
      let i = n++;
      heap[i] = v;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (heap[p]! <= heap[i]!) break;
        [heap[p], heap[i]] = [heap[i]!, heap[p]!];
        i = p;
      }
    } else if (v > heap[0]!) {
      // Replace the smallest, sift down.
      heap[0] = v;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < k && heap[l]! < heap[m]!) m = l;
        if (r < k && heap[r]! < heap[m]!) m = r;
        if (m === i) break;
        [heap[m], heap[i]] = [heap[i]!, heap[m]!];
        i = m;
      }
    }
  }
  return n < k ? Number.NEGATIVE_INFINITY : heap[0]!;
}

/** Infinite bounds as SQLite integers. */
function clampSql(v: number): number {
  return v === Number.POSITIVE_INFINITY
    ? Number.MAX_SAFE_INTEGER
    : v === Number.NEGATIVE_INFINITY
      ? -Number.MAX_SAFE_INTEGER
      : v;
}
