/**
 * The write side of the SQLite store: schema migrations, batch inserts and retention deletes on
 * one connection. The store runs it inline or in a worker thread (sqlite-writer-thread.ts), so
 * that SQLite's work for 250 k rows/s does not share a core with receiving and decoding them.
 */
import Database from 'better-sqlite3';
import { CollectorError } from '../errors.js';
import { FLOW_COLUMNS } from '../profile-schema.js';
import { BlockWriter, checkLayout, type ProfileLayout } from './block-writer.js';
import {
  type PackedBatch,
  type PackedTable,
  PROFILE_COLUMNS,
  TEXT_COLUMNS,
  tablePackers,
} from './packed-batch.js';
import type { ExporterDelta, Scalar } from './types.js';

type Db = Database.Database;

const q = (name: string) => `"${name}"`;
const colDefs = (cols: readonly string[]) =>
  cols.map((c) => `${q(c)} ${TEXT_COLUMNS.has(c) ? 'TEXT' : 'INTEGER'}`).join(',\n  ');

/** Schema migrations; index i brings user_version i to i + 1. Never edit a shipped one. */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE exporters (
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL UNIQUE,
  transport TEXT NOT NULL,
  address TEXT,
  port INTEGER,
  firstSeen INTEGER NOT NULL,
  lastSeen INTEGER NOT NULL,
  records INTEGER NOT NULL DEFAULT 0,
  profiles INTEGER NOT NULL DEFAULT 0,
  flows INTEGER NOT NULL DEFAULT 0,
  lostRecords INTEGER NOT NULL DEFAULT 0,
  decodeErrors INTEGER NOT NULL DEFAULT 0,
  templateIds TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE profiles (
  id INTEGER PRIMARY KEY,
  exporterId INTEGER NOT NULL REFERENCES exporters(id),
  observationDomainId INTEGER NOT NULL,
  templateId INTEGER NOT NULL,
  receivedMilliseconds INTEGER NOT NULL,
  ${colDefs(PROFILE_COLUMNS)},
  extra TEXT
);
CREATE INDEX profiles_time ON profiles (flowStartMilliseconds, id);
CREATE INDEX profiles_flow ON profiles (flowId, flowStartMilliseconds);
CREATE TABLE flows (
  id INTEGER PRIMARY KEY,
  exporterId INTEGER NOT NULL REFERENCES exporters(id),
  observationDomainId INTEGER NOT NULL,
  templateId INTEGER NOT NULL,
  receivedMilliseconds INTEGER NOT NULL,
  ${colDefs(FLOW_COLUMNS)},
  fields TEXT NOT NULL
);
CREATE INDEX flows_time ON flows (flowStartMilliseconds, id);`,
  // 2: profiles clustered by time. The table itself is the B-tree on (t, id), so a time range is
  // one sequential scan and an insert touches one tree less than with a separate time index.
  // `t` is flowStartMilliseconds, or the time the collector received a profile without one.
  `CREATE TABLE profiles_v2 (
  t INTEGER NOT NULL,
  id INTEGER NOT NULL,
  exporterId INTEGER NOT NULL REFERENCES exporters(id),
  observationDomainId INTEGER NOT NULL,
  templateId INTEGER NOT NULL,
  receivedMilliseconds INTEGER NOT NULL,
  ${colDefs(PROFILE_COLUMNS)},
  extra TEXT,
  PRIMARY KEY (t, id)
) WITHOUT ROWID;
INSERT INTO profiles_v2 SELECT COALESCE(flowStartMilliseconds, receivedMilliseconds), id, exporterId, observationDomainId,
  templateId, receivedMilliseconds, ${PROFILE_COLUMNS.map(q).join(', ')}, extra FROM profiles;
DROP TABLE profiles;
ALTER TABLE profiles_v2 RENAME TO profiles;
CREATE INDEX profiles_flow ON profiles (flowId);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('nextProfileId', (SELECT COALESCE(MAX(id), 0) + 1 FROM profiles));`,
  // 3: the blocks layout (block-writer.ts, docs/storage.md): profiles as column blocks, one row
  // per ingest batch. Columns are in read order: the zone map and the small TEXT before the BLOBs,
  // so that listing blocks never reads their data.
  `CREATE TABLE profile_blocks (
  id INTEGER PRIMARY KEY,
  tmin INTEGER NOT NULL,
  tmax INTEGER NOT NULL,
  n INTEGER NOT NULL,
  addrs TEXT NOT NULL,
  aggs BLOB NOT NULL,
  bloom BLOB NOT NULL,
  data BLOB NOT NULL
);
CREATE INDEX profile_blocks_tmin ON profile_blocks (tmin);
CREATE INDEX profile_blocks_tmax ON profile_blocks (tmax);`,
  // 4: hourly roll-ups of the blocks layout (block-rollups.ts).
  `CREATE TABLE profile_rollups (
  span INTEGER NOT NULL,
  start INTEGER NOT NULL,
  maxBlockId INTEGER NOT NULL,
  n INTEGER NOT NULL,
  aggs BLOB NOT NULL,
  PRIMARY KEY (span, start)
) WITHOUT ROWID;`,
];

export { tablePackers };

/** Rows per multi-row INSERT (fewer statement steps; SQLite binds at most 32766 parameters). */
const ROWS_PER_STATEMENT = 16;

/** How hard SQLite pushes each commit to disk (PRAGMA synchronous). */
export type SyncMode = 'off' | 'normal' | 'full';

/**
 * Opens a database for writing (WAL), brings its schema up to date and checks that it holds
 * profiles in `layout` (COL_ERR_SCHEMA otherwise).
 */
export function openForWriting(path: string, sync: SyncMode = 'normal', layout: ProfileLayout = 'rows'): Db {
  let db: Db;
  try {
    db = new Database(path);
  } catch (err) {
    throw new CollectorError('COL_ERR_STORE', `cannot open ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  db.pragma('journal_mode = WAL');
  // NORMAL in WAL mode: a process crash loses nothing committed and an OS crash at most the
  // commits since the last checkpoint; never corruption. OFF also skips the checkpoint fsync.
  db.pragma(`synchronous = ${sync.toUpperCase()}`);
  db.pragma('foreign_keys = ON');
  // 64 MiB of page cache keeps the index pages of a batch in memory.
  db.pragma('cache_size = -65536');
  db.pragma('busy_timeout = 5000');
  try {
    migrate(db, path);
    checkLayout(db, path, layout);
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

function migrate(db: Db, path: string): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > MIGRATIONS.length) {
    throw new CollectorError(
      'COL_ERR_SCHEMA',
      `${path} has schema ${version}, this collector knows ${MIGRATIONS.length}`,
    );
  }
  for (let v = version; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}

/** Statements of one table for one set of present columns. */
interface InsertPlan {
  numIdx: number[];
  width: number;
  many: Database.Statement;
  single: Database.Statement;
}

/** Writes packed batches, one transaction each. */
export class SqliteWriter {
  private readonly upsertExporter: Database.Statement;
  private readonly setNextId: Database.Statement;
  private readonly exporterIds = new Map<string, number>();
  private readonly plans = new Map<string, InsertPlan>();
  private nextProfileId: number;
  private readonly writeTx: (b: PackedBatch) => void;
  private readonly blocks: BlockWriter | null;

  constructor(
    private readonly db: Db,
    layout: ProfileLayout = 'rows',
  ) {
    this.blocks = layout === 'blocks' ? new BlockWriter(db, tablePackers().profiles) : null;
    this.upsertExporter =
      db.prepare(`INSERT INTO exporters (key, transport, address, port, firstSeen, lastSeen, records, profiles, flows, lostRecords, decodeErrors, templateIds)
      VALUES (@exporter, @transport, @address, @port, @lastSeen, @lastSeen, @records, @profiles, @flows, @lostRecords, @decodeErrors, @templateIds)
      ON CONFLICT (key) DO UPDATE SET lastSeen = max(lastSeen, excluded.lastSeen), records = records + excluded.records,
        profiles = profiles + excluded.profiles, flows = flows + excluded.flows, lostRecords = lostRecords + excluded.lostRecords,
        decodeErrors = decodeErrors + excluded.decodeErrors, templateIds = excluded.templateIds
      RETURNING id`);
    this.setNextId = db.prepare(`UPDATE meta SET value = ? WHERE key = 'nextProfileId'`);
    this.nextProfileId = Number(
      (db.prepare(`SELECT value FROM meta WHERE key = 'nextProfileId'`).get() as { value: number }).value,
    );
    this.writeTx = db.transaction((b: PackedBatch) => {
      for (const e of b.exporters) this.exporterIds.set(e.exporter, this.writeExporter(e));
      if (b.profiles.n > 0) {
        if (this.blocks) this.writeBlocks(b.profiles);
        else this.writeTable('profiles', b.profiles);
        this.setNextId.run(this.nextProfileId);
      }
      if (b.flows.n > 0) this.writeTable('flows', b.flows);
    });
  }

  /** Writes one batch in one transaction; throws COL_ERR_STORE (nothing of the batch is kept). */
  write(b: PackedBatch): void {
    const next = this.nextProfileId;
    try {
      this.writeTx(b);
    } catch (err) {
      this.nextProfileId = next;
      // The exporter ids of a rolled-back transaction may not exist: learn them again.
      this.exporterIds.clear();
      throw new CollectorError('COL_ERR_STORE', `insert failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * The statements for the columns present in this table's batch: columns null in every row are
   * left out, so a template with 20 fields binds 20 values a row rather than every column.
   */
  private plan(table: 'profiles' | 'flows', t: PackedTable): InsertPlan {
    const key = `${table}:${t.present.join('')}`;
    let p = this.plans.get(key);
    if (p) return p;
    const numIdx = t.numColumns.map((_, j) => j).filter((j) => t.present[j] === 1);
    const cols = [
      ...(table === 'profiles' ? ['t', 'id'] : []),
      'exporterId',
      ...numIdx.map((j) => t.numColumns[j]!),
      ...t.textColumns.slice(1),
    ];
    const one = `(${cols.map(() => '?').join(', ')})`;
    const sql = (n: number) =>
      `INSERT INTO ${table} (${cols.map(q).join(', ')}) VALUES ${Array(n).fill(one).join(', ')}`;
    p = {
      numIdx,
      width: cols.length,
      many: this.db.prepare(sql(ROWS_PER_STATEMENT)),
      single: this.db.prepare(sql(1)),
    };
    this.plans.set(key, p);
    return p;
  }

  private writeBlocks(t: PackedTable): void {
    // Blocks keep the exporter key itself; the exporters table still lists every one seen.
    const tw = t.textColumns.length;
    const nw = t.numColumns.length;
    const recvJ = t.numColumns.indexOf('receivedMilliseconds');
    const seen = new Set<number>();
    for (let i = 0; i < t.n; i++) {
      const k = t.textIdx[i * tw]!;
      if (seen.has(k)) continue;
      seen.add(k);
      this.exporterId(t.dict[k - 1]!, t.num[i * nw + recvJ]!);
    }
    this.blocks!.write(t, this.nextProfileId);
    this.nextProfileId += t.n;
  }

  private writeTable(table: 'profiles' | 'flows', t: PackedTable): void {
    const p = this.plan(table, t);
    const { numIdx, width } = p;
    const nw = t.numColumns.length;
    const tw = t.textColumns.length;
    const num = t.num;
    const idx = t.textIdx;
    const dict = t.dict;
    const bigs = t.bigPositions.length
      ? new Map(t.bigPositions.map((pos, k) => [pos, t.bigValues[k]!]))
      : null;
    const profiles = table === 'profiles';
    // Index of flowStartMilliseconds and receivedMilliseconds among the number columns.
    const startJ = t.numColumns.indexOf('flowStartMilliseconds');
    const recvJ = t.numColumns.indexOf('receivedMilliseconds');
    const manyVals = new Array<Scalar>(width * ROWS_PER_STATEMENT);
    const oneVals = new Array<Scalar>(width);
    const fill = (i: number, v: Scalar[], o: number) => {
      const base = i * nw;
      let k = o;
      if (profiles) {
        const start = num[base + startJ]!;
        v[k++] = Number.isNaN(start) ? num[base + recvJ]! : start;
        v[k++] = this.nextProfileId++;
      }
      v[k++] = this.exporterId(dict[idx[i * tw]! - 1]!, num[base + recvJ]!);
      for (let x = 0; x < numIdx.length; x++) {
        const pos = base + numIdx[x]!;
        const n = num[pos]!;
        v[k++] = !Number.isNaN(n) ? n : bigs ? sqlBig(bigs.get(pos)) : null;
      }
      for (let x = 1; x < tw; x++) {
        const d = idx[i * tw + x]!;
        v[k++] = d === 0 ? null : dict[d - 1]!;
      }
    };
    let i = 0;
    for (; i + ROWS_PER_STATEMENT <= t.n; i += ROWS_PER_STATEMENT) {
      for (let r = 0; r < ROWS_PER_STATEMENT; r++) fill(i + r, manyVals, r * width);
      p.many.run(manyVals);
    }
    for (; i < t.n; i++) {
      fill(i, oneVals, 0);
      p.single.run(oneVals);
    }
  }

  private writeExporter(e: ExporterDelta): number {
    const row = this.upsertExporter.get({ ...e, templateIds: JSON.stringify(e.templateIds) }) as {
      id: number;
    };
    return row.id;
  }

  private exporterId(key: string, now: number): number {
    const id = this.exporterIds.get(key);
    if (id !== undefined) return id;
    const created = this.writeExporter({
      exporter: key,
      transport: key.split(':')[0] ?? 'unknown',
      address: null,
      port: null,
      lastSeen: now,
      records: 0,
      profiles: 0,
      flows: 0,
      lostRecords: 0,
      decodeErrors: 0,
      templateIds: [],
    });
    this.exporterIds.set(key, created);
    return created;
  }

  /** Deletes at most `maxRows` rows older than `beforeMs` (profiles first); returns how many. */
  deleteOlderThan(beforeMs: number, maxRows: number): number {
    if (this.blocks)
      return this.db.transaction(() =>
        this.deleteFlows(beforeMs, this.blocks!.deleteOlderThan(beforeMs, maxRows), maxRows),
      )();
    const left = maxRows;
    // Profiles are clustered by t: the oldest rows are one range at the start of the table.
    const last = this.db
      .prepare('SELECT t, id FROM profiles WHERE t < ? ORDER BY t, id LIMIT 1 OFFSET ?')
      .get(beforeMs, left - 1) as { t: number; id: number } | undefined;
    const r = last
      ? this.db.prepare('DELETE FROM profiles WHERE (t, id) <= (?, ?)').run(last.t, last.id)
      : this.db.prepare('DELETE FROM profiles WHERE t < ?').run(beforeMs);
    return this.deleteFlows(beforeMs, r.changes, maxRows);
  }

  /** Deletes old flows with what is left of `maxRows` after `done` profiles; returns the total. */
  private deleteFlows(beforeMs: number, done: number, maxRows: number): number {
    let left = maxRows - done;
    if (left > 0) {
      const f = this.db
        .prepare(
          'DELETE FROM flows WHERE id IN (SELECT id FROM flows WHERE flowStartMilliseconds < ? ORDER BY flowStartMilliseconds LIMIT ?)',
        )
        .run(beforeMs, left);
      left -= f.changes;
    }
    return maxRows - left;
  }

  /** Builds at most `max` roll-ups (blocks layout) within `budgetMs`; returns how many it finished. */
  maintain(now: number, max: number, budgetMs = Number.POSITIVE_INFINITY): number {
    return this.blocks ? this.blocks.rollups.step(now, max, budgetMs) : 0;
  }

  /** Checkpoints the WAL into the database file and closes the connection. */
  close(): void {
    if (!this.db.open) return;
    this.db.pragma('wal_checkpoint(TRUNCATE)');
    this.db.close();
  }
}

function sqlBig(b: bigint | undefined): Scalar {
  if (b === undefined) return null;
  return b > 0x7fffffffffffffffn ? BigInt.asIntN(64, b) : b;
}
