/**
 * Roll-ups of the blocks layout (docs/storage.md): for every hour that has ended, one
 * `profile_rollups` row holding the pre-aggregates (block-aggregates.ts format) of every profile
 * whose t lies in that hour, merged from the hour's blocks (blocks straddling the hour contribute
 * the rows inside it); for every day that has ended, one merged from its hours. A summary over a
 * week then merges 7 day roll-ups and the hours at its ends instead of thousands of blocks.
 *
 * A roll-up counts the blocks with id <= its maxBlockId; blocks written later (profiles arriving
 * late for an hour already rolled up) are read from the blocks themselves by a summary, and the
 * hour is rolled up again once the late profiles are a noticeable share of it. Retention drops
 * the roll-ups of every hour it deletes profiles from.
 */
import type Database from 'better-sqlite3';
import {
  addRowStats,
  blockKpis,
  DIMENSION_COLUMN,
  DIMENSIONS,
  type DimensionPart,
  histBucket,
  layoutAggregates,
  readAggregates,
  STAT_WIDTH,
} from './block-aggregates.js';
import { ProfileBlock } from './profile-block.js';

type Db = Database.Database;

/** Roll-up spans: an hour, and a day (merged from its hours). */
export const ROLLUP_MS = 3_600_000;
export const ROLLUP_DAY_MS = 24 * ROLLUP_MS;
/** An hour is rolled up once it ended this long ago (profiles of it still arriving). */
export const ROLLUP_GRACE_MS = 120_000;
/** Late profiles of a rolled-up hour that make it be rolled up again: this many, or this share. */
const STALE_ROWS = 1000;
const STALE_SHARE = 0.05;
/** Largest count one histogram entry holds (22 bits); bigger counts take several entries. */
const MAX_ENTRY_COUNT = 0x3fffff;

/** Sums of one key while merging. */
interface KeyAcc {
  stats: Float64Array;
  rtt: Map<number, number>;
  tte: Map<number, number>;
  /** flowIds of rows added one by one (exact distinct count); merged blobs add their bound. */
  flows: Set<number | bigint> | null;
}

/** Merges pre-aggregate BLOBs and rows into one pre-aggregate BLOB. */
export class AggregateMerger {
  private readonly dims: Map<string | number | null, KeyAcc>[] = DIMENSIONS.map(() => new Map());
  /** Profiles merged. */
  n = 0;

  private acc(d: number, key: string | number | null): KeyAcc {
    const m = this.dims[d]!;
    let a = m.get(key);
    if (!a) {
      a = { stats: new Float64Array(STAT_WIDTH), rtt: new Map(), tte: new Map(), flows: null };
      m.set(key, a);
    }
    return a;
  }

  /** Adds a whole pre-aggregate BLOB (a block's, or a roll-up's). */
  addBlob(blob: Uint8Array): void {
    for (let d = 0; d < DIMENSIONS.length; d++) {
      const g = readAggregates(blob, DIMENSIONS[d]!);
      for (let k = 0; k < g.keys.length; k++) {
        const a = this.acc(d, g.keys[k]!);
        for (let x = 0; x < STAT_WIDTH; x++) a.stats[x]! += g.stats[k * STAT_WIDTH + x]!;
        if (d === 0) this.n += g.stats[k * STAT_WIDTH]!;
        addCounts(a.rtt, g.entries, g.rttOffsets[k]!, g.rttOffsets[k + 1]!);
        addCounts(a.tte, g.entries, g.tteOffsets[k]!, g.tteOffsets[k + 1]!);
      }
    }
  }

  /** Adds the rows of a block that `keep` accepts. */
  addRows(b: ProfileBlock, keep: (i: number) => boolean): void {
    const k = blockKpis(b);
    const keyCols = DIMENSIONS.map((d) => {
      const c = DIMENSION_COLUMN[d];
      return { str: b.str(c), num: b.num(c) };
    });
    const re = new Float64Array(2);
    for (let i = 0; i < b.n; i++) {
      if (!keep(i)) continue;
      this.n++;
      for (let d = 0; d < DIMENSIONS.length; d++) {
        const kc = keyCols[d]!;
        const key = kc.str ? kc.str.get(i) : kc.num?.has(i) ? kc.num.num(i) : null;
        const a = this.acc(d, key);
        addRowStats(a.stats, 0, k, i, re);
        if (k.flow?.has(i)) {
          a.flows ??= new Set();
          a.flows.add(k.flow.get(i)!);
        }
        if (!Number.isNaN(re[0]!)) bump(a.rtt, histBucket(re[0]!));
        if (!Number.isNaN(re[1]!)) bump(a.tte, histBucket(re[1]!));
      }
    }
  }

  /** The merged pre-aggregates as a BLOB. */
  encode(): Uint8Array {
    const utf8 = new TextEncoder();
    const parts: DimensionPart[] = this.dims.map((m) => {
      const keys = [...m.keys()];
      const K = keys.length;
      const stats = new Float64Array(K * STAT_WIDTH);
      const rOff = new Uint32Array(K + 1);
      const tOff = new Uint32Array(K + 1);
      const rEnt: number[] = [];
      const tEnt: number[] = [];
      for (let k = 0; k < K; k++) {
        const a = m.get(keys[k]!)!;
        stats.set(a.stats, k * STAT_WIDTH);
        stats[k * STAT_WIDTH + 1]! += a.flows?.size ?? 0;
        rOff[k] = rEnt.length;
        pushEntries(rEnt, a.rtt);
        tOff[k] = tEnt.length;
        pushEntries(tEnt, a.tte);
      }
      rOff[K] = rEnt.length;
      tOff[K] = tEnt.length;
      for (let k = 0; k <= K; k++) tOff[k]! += rEnt.length;
      const ent = new Uint32Array(rEnt.length + tEnt.length);
      ent.set(rEnt);
      ent.set(tEnt, rEnt.length);
      return { keysJson: utf8.encode(JSON.stringify(keys)), stats, rOff, tOff, ent };
    });
    return layoutAggregates(parts);
  }
}

function bump(m: Map<number, number>, bucket: number): void {
  m.set(bucket, (m.get(bucket) ?? 0) + 1);
}

function addCounts(m: Map<number, number>, entries: Uint32Array, from: number, to: number): void {
  for (let e = from; e < to; e++) {
    const x = entries[e]!;
    const b = x >>> 22;
    m.set(b, (m.get(b) ?? 0) + (x & MAX_ENTRY_COUNT));
  }
}

/** Histogram counts as (bucket << 22 | count) entries, ascending buckets, big counts split. */
function pushEntries(out: number[], m: Map<number, number>): void {
  for (const b of [...m.keys()].sort((x, y) => x - y)) {
    let c = m.get(b)!;
    while (c > 0) {
      const part = Math.min(c, MAX_ENTRY_COUNT);
      out.push(((b << 22) | part) >>> 0);
      c -= part;
    }
  }
}

/** Starts of the spans of `span` ms that [tmin, tmax] touches. */
function* spansOf(tmin: number, tmax: number, span: number): Generator<number> {
  for (let h = Math.floor(tmin / span) * span; h <= tmax; h += span) yield h;
}

/** A roll-up being built: its items (block ids, or hour starts of a day) merged one by one. */
interface Job {
  span: number;
  start: number;
  maxId: number;
  items: number[];
  next: number;
  merger: AggregateMerger;
  work: (item: number) => void;
}

/** The roll-up state of one span length. */
class SpanState {
  /** Span start -> profiles written for it that its roll-up (if any) does not count. */
  readonly dirty = new Map<number, number>();
  /** Span start -> profiles its roll-up counts. */
  readonly rolled = new Map<number, number>();

  constructor(readonly ms: number) {}

  note(tmin: number, tmax: number, n: number): void {
    for (const h of spansOf(tmin, tmax, this.ms)) this.dirty.set(h, (this.dirty.get(h) ?? 0) + n);
  }

  /** Spans that need (re)building at `now`. */
  pending(now: number): number[] {
    const out: number[] = [];
    for (const [h, late] of this.dirty) {
      if (h + this.ms > now - ROLLUP_GRACE_MS) continue;
      const n = this.rolled.get(h);
      if (n === undefined || late >= Math.max(STALE_ROWS, n * STALE_SHARE)) out.push(h);
    }
    return out;
  }

  /** Profiles with t < beforeMs were deleted: forget the spans before, re-roll the one holding it. */
  deletedBefore(beforeMs: number, hasBlocks: (from: number, to: number) => boolean): void {
    for (const h of [...this.rolled.keys()]) if (h < beforeMs) this.rolled.delete(h);
    for (const h of [...this.dirty.keys()]) if (h + this.ms <= beforeMs) this.dirty.delete(h);
    const edge = Math.floor(beforeMs / this.ms) * this.ms;
    if (edge !== beforeMs && hasBlocks(edge, edge + this.ms)) this.dirty.set(edge, Number.MAX_SAFE_INTEGER);
  }
}

/**
 * Builds and drops roll-ups on the writer's connection: one per hour, and one per day merged
 * from its hours. A day's roll-up is built from hours brought up to date first, so it counts
 * every block up to its maxBlockId, like an hour's.
 */
export class RollupWriter {
  private readonly hours = new SpanState(ROLLUP_MS);
  private readonly days = new SpanState(ROLLUP_DAY_MS);
  private readonly blocksOf: Database.Statement;
  private readonly aggsOf: Database.Statement;
  private readonly dataOf: Database.Statement;
  private readonly upsert: Database.Statement;
  private readonly hourBlob: Database.Statement;
  /** The roll-up being built, over one or more steps. */
  private job: Job | null = null;
  private readonly maxBlockId: Database.Statement;

  constructor(private readonly db: Db) {
    this.blocksOf = db.prepare(
      'SELECT id, tmin, tmax, n FROM profile_blocks WHERE tmax >= ? AND tmin < ? ORDER BY id',
    );
    this.aggsOf = db.prepare('SELECT aggs FROM profile_blocks WHERE id = ?').pluck();
    this.dataOf = db.prepare('SELECT data FROM profile_blocks WHERE id = ?').pluck();
    this.upsert = db.prepare(
      `INSERT INTO profile_rollups (span, start, maxBlockId, n, aggs) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (span, start) DO UPDATE SET maxBlockId = excluded.maxBlockId, n = excluded.n, aggs = excluded.aggs`,
    );
    this.hourBlob = db.prepare('SELECT aggs FROM profile_rollups WHERE span = ? AND start = ?').pluck();
    this.maxBlockId = db.prepare('SELECT max(id) FROM profile_blocks').pluck();
    // What the database holds already: spans whose blocks are not (all) rolled up yet.
    const maxOf = new Map<string, number>();
    for (const r of db.prepare('SELECT span, start, maxBlockId, n FROM profile_rollups').all() as {
      span: number;
      start: number;
      maxBlockId: number;
      n: number;
    }[]) {
      maxOf.set(`${r.span}:${r.start}`, r.maxBlockId);
      this.state(r.span)?.rolled.set(r.start, r.n);
    }
    for (const b of db.prepare('SELECT id, tmin, tmax, n FROM profile_blocks').iterate() as Iterable<{
      id: number;
      tmin: number;
      tmax: number;
      n: number;
    }>) {
      for (const st of [this.hours, this.days])
        for (const h of spansOf(b.tmin, b.tmax, st.ms))
          if ((maxOf.get(`${st.ms}:${h}`) ?? -1) < b.id) st.dirty.set(h, (st.dirty.get(h) ?? 0) + b.n);
    }
  }

  private state(span: number): SpanState | null {
    return span === ROLLUP_MS ? this.hours : span === ROLLUP_DAY_MS ? this.days : null;
  }

  /** A block was written (its rows span [tmin, tmax]). */
  blockWritten(tmin: number, tmax: number, n: number): void {
    this.hours.note(tmin, tmax, n);
    this.days.note(tmin, tmax, n);
  }

  /** Roll-ups that need (re)building at `now`: oldest first, an hour before its day. */
  pending(now: number): { span: number; start: number }[] {
    return [
      ...this.hours.pending(now).map((start) => ({ span: ROLLUP_MS, start })),
      ...this.days.pending(now).map((start) => ({ span: ROLLUP_DAY_MS, start })),
    ].sort((a, b) => a.start - b.start || a.span - b.span);
  }

  /**
   * Builds at most `max` roll-ups that need it at `now`, working at most `budgetMs` (a roll-up
   * of a busy hour merges thousands of blocks: it is built over several steps, so that the
   * writer's ingest work never waits long). Returns how many it finished.
   */
  step(now: number, max = 1, budgetMs = Number.POSITIVE_INFINITY): number {
    const deadline = performance.now() + budgetMs;
    let built = 0;
    while (built < max) {
      this.job ??= this.nextJob(now);
      const job = this.job;
      if (!job) break;
      while (job.next < job.items.length) {
        job.work(job.items[job.next++]!);
        if (performance.now() > deadline && job.next < job.items.length) return built;
      }
      this.job = null;
      if (job.items.length === 0) this.drop(job.span, job.start);
      else this.put(job.span, job.start, job.maxId, job.merger);
      built++;
      if (performance.now() > deadline) break;
    }
    return built;
  }

  /** The next roll-up to build: a day only once all its hours are up to date. */
  private nextJob(now: number): Job | null {
    const next = this.pending(now)[0];
    if (!next) return null;
    if (next.span === ROLLUP_MS) return this.hourJob(next.start);
    const d = next.start;
    for (let h = d; h < d + ROLLUP_DAY_MS; h += ROLLUP_MS)
      if (this.hours.dirty.has(h)) return this.hourJob(h);
    this.days.dirty.delete(d);
    const merger = new AggregateMerger();
    const hours = (
      this.db
        .prepare('SELECT start FROM profile_rollups WHERE span = ? AND start >= ? AND start < ?')
        .pluck()
        .all(ROLLUP_MS, d, d + ROLLUP_DAY_MS) as number[]
    ).sort((x, y) => x - y);
    return {
      span: ROLLUP_DAY_MS,
      start: d,
      // Every hour counts every block written so far: so does the day.
      maxId: (this.maxBlockId.get() as number | null) ?? 0,
      items: hours,
      next: 0,
      merger,
      work: (h) => {
        const blob = this.hourBlob.get(ROLLUP_MS, h) as Buffer | undefined;
        if (blob) merger.addBlob(blob);
      },
    };
  }

  private hourJob(h: number): Job {
    const metas = this.blocksOf.all(h, h + ROLLUP_MS) as { id: number; tmin: number; tmax: number }[];
    this.hours.dirty.delete(h);
    const merger = new AggregateMerger();
    const byId = new Map(metas.map((b) => [b.id, b]));
    return {
      span: ROLLUP_MS,
      start: h,
      maxId: metas.reduce((a, b) => Math.max(a, b.id), 0),
      items: metas.map((b) => b.id),
      next: 0,
      merger,
      work: (id) => {
        const b = byId.get(id)!;
        if (b.tmin >= h && b.tmax < h + ROLLUP_MS) {
          const aggs = this.aggsOf.get(b.id) as Buffer | undefined;
          if (aggs) merger.addBlob(aggs);
          return;
        }
        const data = this.dataOf.get(b.id) as Buffer | undefined;
        if (!data) return;
        const blk = new ProfileBlock(b.id, data);
        const t = blk.t();
        merger.addRows(blk, (i) => {
          const x = t.num(i);
          return x >= h && x < h + ROLLUP_MS;
        });
      },
    };
  }

  private put(span: number, start: number, maxId: number, m: AggregateMerger): void {
    const blob = m.encode();
    this.upsert.run(span, start, maxId, m.n, Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength));
    this.state(span)!.rolled.set(start, m.n);
  }

  private drop(span: number, start: number): void {
    this.db.prepare('DELETE FROM profile_rollups WHERE span = ? AND start = ?').run(span, start);
    this.state(span)!.rolled.delete(start);
  }

  /** Retention deleted profiles with t < beforeMs: drops the roll-ups of those hours and days. */
  deletedBefore(beforeMs: number): void {
    // A roll-up in the making that the deletion reaches is started over later.
    if (this.job && this.job.start < beforeMs) {
      this.state(this.job.span)!.dirty.set(this.job.start, Number.MAX_SAFE_INTEGER);
      this.job = null;
    }
    this.db.prepare('DELETE FROM profile_rollups WHERE start < ?').run(beforeMs);
    const has = (from: number, to: number) =>
      this.db.prepare('SELECT 1 FROM profile_blocks WHERE tmax >= ? AND tmin < ? LIMIT 1').get(from, to) !==
      undefined;
    this.hours.deletedBefore(beforeMs, has);
    this.days.deletedBefore(beforeMs, has);
  }
}
