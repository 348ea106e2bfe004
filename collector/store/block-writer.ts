/**
 * The write side of the blocks layout: one `profile_blocks` row per ingest batch (at most
 * BLOCK_MAX_ROWS profiles each), retention that deletes whole blocks and rewrites the one that
 * straddles the cutoff, and the check that a database holds the layout it is opened with.
 */
import type Database from 'better-sqlite3';
import { CollectorError } from '../errors.js';
import { encodeAggregates } from './block-aggregates.js';
import { RollupWriter } from './block-rollups.js';
import { buildBloom } from './flow-bloom.js';
import type { PackedTable, TablePacker } from './packed-batch.js';
import { BLOCK_MAX_ROWS, encodeBlock, ProfileBlock } from './profile-block.js';
import type { ProfileRow } from './types.js';

type Db = Database.Database;

/** How profiles are stored: one SQL row each, or column blocks. */
export type ProfileLayout = 'rows' | 'blocks';

/** A block row ready for INSERT. */
export interface BlockRow {
  id: number;
  tmin: number;
  tmax: number;
  n: number;
  /** JSON arrays of the block's source and destination addresses, for skipping blocks in SQL. */
  addrs: string;
  aggs: Uint8Array;
  bloom: Uint8Array;
  data: Uint8Array;
}

/** Encodes rows [start, end) of a packed table as one block; ids are per table row. */
export function buildBlock(t: PackedTable, ids: ArrayLike<number>, start: number, end: number): BlockRow {
  const b = encodeBlock(t, ids, start, end);
  const c = b.columns;
  const flow = c.num.get('flowId');
  const bigs = c.bigs.get('flowId');
  const flowIds: (number | bigint)[] = [];
  if (flow)
    for (let i = 0; i < c.n; i++) {
      const v = bigs?.get(i) ?? flow[i]!;
      if (typeof v === 'bigint' || !Number.isNaN(v)) flowIds.push(v);
    }
  // A block's dictionary of a column holds each of its non-null values once.
  const distinct = (name: string) => JSON.stringify(c.text.get(name)?.dict ?? []);
  return {
    id: c.ids.reduce((a, x) => Math.min(a, x), Number.POSITIVE_INFINITY),
    tmin: b.tmin,
    tmax: b.tmax,
    n: b.n,
    addrs: distinct('sourceAddress') + distinct('destinationAddress'),
    aggs: encodeAggregates(c),
    bloom: buildBloom(flowIds, flowIds.length),
    data: b.data,
  };
}

/** Writes blocks and deletes old profiles in them, on the writer's connection. */
export class BlockWriter {
  private readonly insert: Database.Statement;
  /** Hourly roll-ups of the blocks written. */
  readonly rollups: RollupWriter;

  constructor(
    private readonly db: Db,
    private readonly packer: TablePacker,
  ) {
    this.rollups = new RollupWriter(db);
    this.insert = db.prepare(
      'INSERT INTO profile_blocks (id, tmin, tmax, n, addrs, aggs, bloom, data) VALUES (@id, @tmin, @tmax, @n, @addrs, @aggs, @bloom, @data)',
    );
  }

  /** Writes a batch's profiles (ids assigned in batch order) as blocks; inside the caller's transaction. */
  write(t: PackedTable, firstId: number): void {
    const ids = new Float64Array(t.n);
    for (let i = 0; i < t.n; i++) ids[i] = firstId + i;
    for (let s = 0; s < t.n; s += BLOCK_MAX_ROWS) {
      const b = buildBlock(t, ids, s, Math.min(t.n, s + BLOCK_MAX_ROWS));
      this.put(b);
      this.rollups.blockWritten(b.tmin, b.tmax, b.n);
    }
  }

  private put(b: BlockRow): void {
    this.insert.run({
      ...b,
      aggs: Buffer.from(b.aggs.buffer, b.aggs.byteOffset, b.aggs.byteLength),
      bloom: Buffer.from(b.bloom.buffer, b.bloom.byteOffset, b.bloom.byteLength),
      data: Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength),
    });
  }

  /**
   * Deletes at most `maxRows` profiles with t < beforeMs, oldest first: whole blocks whose rows
   * are all old, and the old rows of a block straddling the cutoff (that block is rewritten
   * without them, keeping the ids of the rest). Returns how many profiles were deleted.
   */
  deleteOlderThan(beforeMs: number, maxRows: number): number {
    let left = maxRows;
    const blocks = this.db
      .prepare('SELECT id, tmax, n FROM profile_blocks WHERE tmin < ? ORDER BY tmin, id LIMIT 256')
      .all(beforeMs) as { id: number; tmax: number; n: number }[];
    const del = this.db.prepare('DELETE FROM profile_blocks WHERE id = ?');
    for (const b of blocks) {
      if (left <= 0) break;
      if (b.tmax < beforeMs && b.n <= left) {
        del.run(b.id);
        left -= b.n;
        continue;
      }
      const data = this.db
        .prepare('SELECT data FROM profile_blocks WHERE id = ?')
        .pluck()
        .get(b.id) as Buffer;
      const blk = new ProfileBlock(b.id, data);
      const t = blk.t();
      // Rows are sorted by t: the old ones are a prefix.
      let old = 0;
      while (old < blk.n && t.num(old) < beforeMs) old++;
      const drop = Math.min(old, left);
      if (drop === 0) continue;
      left -= drop;
      del.run(b.id);
      if (drop === blk.n) continue;
      const rows: ProfileRow[] = [];
      const ids: number[] = [];
      for (let i = drop; i < blk.n; i++) {
        const r = blk.row(i, this.packer.numColumns, this.packer.textColumns);
        ids.push(r.id);
        rows.push(r as unknown as ProfileRow);
      }
      const packed = this.packer.packRows(rows);
      const nb = buildBlock(packed, ids, 0, packed.n);
      // The block keeps its key: readers holding its bloom filter still find it (a superset).
      this.put({ ...nb, id: b.id });
    }
    if (left < maxRows) this.rollups.deletedBefore(beforeMs);
    return maxRows - left;
  }
}

/** Layout code kept in the meta table. */
const LAYOUT_CODE: Record<ProfileLayout, number> = { rows: 0, blocks: 1 };

/** The layout a database holds (rows for databases from before blocks existed). */
export function storedLayout(db: Db): ProfileLayout {
  const has = db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'meta'").get();
  if (!has) return 'rows';
  const v = db.prepare("SELECT value FROM meta WHERE key = 'profileLayout'").pluck().get() as
    | number
    | undefined;
  return v === LAYOUT_CODE.blocks ? 'blocks' : 'rows';
}

/**
 * Records the layout of a database, or refuses one holding profiles in the other layout: there is
 * no conversion, so a collector never silently hides the profiles already stored.
 */
export function checkLayout(db: Db, path: string, layout: ProfileLayout): void {
  const recorded = db.prepare("SELECT value FROM meta WHERE key = 'profileLayout'").pluck().get() as
    | number
    | undefined;
  const current: ProfileLayout | undefined =
    recorded === undefined ? undefined : recorded === LAYOUT_CODE.blocks ? 'blocks' : 'rows';
  if (current === layout) return;
  const other: ProfileLayout = layout === 'rows' ? 'blocks' : 'rows';
  const holds =
    other === 'rows'
      ? db.prepare('SELECT 1 FROM profiles LIMIT 1').get()
      : db.prepare('SELECT 1 FROM profile_blocks LIMIT 1').get();
  if ((current === other || current === undefined) && holds) {
    throw new CollectorError(
      'COL_ERR_SCHEMA',
      `${path} stores profiles in the ${other} layout; open it with --sqlite-layout ${other} (there is no conversion between layouts)`,
    );
  }
  db.prepare(
    "INSERT INTO meta (key, value) VALUES ('profileLayout', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
  ).run(LAYOUT_CODE[layout]);
}
