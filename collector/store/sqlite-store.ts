/**
 * The embedded store: SQLite through better-sqlite3. WAL journal, prepared statements, one
 * transaction per batch, versioned migrations (PRAGMA user_version), indexes that serve the
 * API's filters, and deletion in small steps for retention.
 */
import { statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { CollectorError } from '../errors.js';
import { FLOW_COLUMNS, PROFILE_ID_COLUMNS, PROFILE_KPI_COLUMNS } from '../profile-schema.js';
import { mean, percentile } from './percentiles.js';
import type {
  ExporterDelta,
  ExporterRow,
  FlowRow,
  IngestBatch,
  Page,
  PageRequest,
  ProfileRow,
  RowFilter,
  Scalar,
  Store,
  SummaryQuery,
  SummaryRow,
} from './types.js';

type Db = Database.Database;

const TEXT_COLUMNS = new Set(['sourceAddress', 'destinationAddress']);
const PROFILE_COLUMNS = [...PROFILE_ID_COLUMNS, ...PROFILE_KPI_COLUMNS];

const q = (name: string) => `"${name}"`;
const colDefs = (cols: readonly string[]) =>
  cols.map((c) => `${q(c)} ${TEXT_COLUMNS.has(c) ? 'TEXT' : 'INTEGER'}`).join(',\n  ');

/** Schema migrations; index i brings user_version i to i + 1. Never edit a shipped one. */
const MIGRATIONS: string[] = [
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
];

/** Options of the SQLite store. */
export interface SqliteStoreOptions {
  /** Database file; ':memory:' for tests. */
  path: string;
  /** Open read-only (API-only processes). */
  readonly?: boolean;
}

/** Cursor text of a (time, id) position. */
function encodeCursor(t: Scalar | undefined, id: number): string {
  return `${t === null || t === undefined ? 'n' : String(t)}_${id}`;
}

function decodeCursor(c: string): { t: number | null; id: number } {
  const m = /^(n|-?\d+)_(\d+)$/.exec(c);
  if (!m)
    throw new CollectorError('COL_ERR_BAD_QUERY', `cursor ${JSON.stringify(c)} is not one this API returned`);
  return { t: m[1] === 'n' ? null : Number(m[1]), id: Number(m[2]) };
}

/** Rows per multi-row INSERT (SQLite binds at most 32766 parameters). */
const ROWS_PER_STATEMENT = 16;

/** SQL value of a number or bigint (SQLite integers are signed 64-bit). */
function sqlValue(v: Scalar | undefined): Scalar {
  if (v === undefined) return null;
  if (typeof v !== 'bigint') return v;
  if (typeof v === 'bigint') return v > 0x7fffffffffffffffn ? BigInt.asIntN(64, v) : v;
  return v;
}

/**
 * A row as JavaScript values: every column here is unsigned, so 64-bit integers read as bigints
 * (safeIntegers) become exact numbers when they fit, stay bigints when they do not, and values
 * stored past 2^63 (as negative signed integers) are turned back into their unsigned value.
 */
function fromSql<T>(row: unknown): T {
  const r = row as Record<string, unknown>;
  for (const k in r) {
    const v = r[k];
    if (typeof v !== 'bigint') continue;
    const u = v < 0n ? BigInt.asUintN(64, v) : v;
    r[k] = u <= 9007199254740991n ? Number(u) : u;
  }
  return r as T;
}

/** The SQLite store. */
export class SqliteStore implements Store {
  readonly kind = 'sqlite';
  private readonly db: Db;
  private readonly path: string;
  private readonly upsertExporter: Database.Statement;
  private readonly exporterIds = new Map<string, number>();
  private readonly writeBatch: (batch: IngestBatch) => void;

  constructor(options: SqliteStoreOptions) {
    this.path = options.path;
    try {
      this.db = new Database(options.path, {
        readonly: options.readonly ?? false,
        fileMustExist: options.readonly ?? false,
      });
    } catch (err) {
      throw new CollectorError('COL_ERR_STORE', `cannot open ${options.path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const db = this.db;
    if (!options.readonly) {
      db.pragma('journal_mode = WAL');
      // NORMAL in WAL mode: a crash loses at most the transactions since the last checkpoint of
      // the OS page cache, never corrupts; the collector's own flush window dominates anyway.
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      // 64 MiB of page cache keeps the index pages of a batch in memory.
      db.pragma('cache_size = -65536');
      this.migrate();
    }
    db.pragma('busy_timeout = 5000');
    const pcols = [
      'exporterId',
      'observationDomainId',
      'templateId',
      'receivedMilliseconds',
      ...PROFILE_COLUMNS,
      'extra',
    ];
    const fcols = [
      'exporterId',
      'observationDomainId',
      'templateId',
      'receivedMilliseconds',
      ...FLOW_COLUMNS,
      'fields',
    ];
    this.upsertExporter =
      db.prepare(`INSERT INTO exporters (key, transport, address, port, firstSeen, lastSeen, records, profiles, flows, lostRecords, decodeErrors, templateIds)
      VALUES (@exporter, @transport, @address, @port, @lastSeen, @lastSeen, @records, @profiles, @flows, @lostRecords, @decodeErrors, @templateIds)
      ON CONFLICT (key) DO UPDATE SET lastSeen = max(lastSeen, excluded.lastSeen), records = records + excluded.records,
        profiles = profiles + excluded.profiles, flows = flows + excluded.flows, lostRecords = lostRecords + excluded.lostRecords,
        decodeErrors = decodeErrors + excluded.decodeErrors, templateIds = excluded.templateIds
      RETURNING id`);
    const profileWriter = this.rowWriter('profiles', pcols, PROFILE_COLUMNS, 'extra');
    const flowWriter = this.rowWriter('flows', fcols, FLOW_COLUMNS, 'fields');
    this.writeBatch = db.transaction((batch: IngestBatch) => {
      for (const e of batch.exporters) this.exporterIds.set(e.exporter, this.writeExporter(e));
      profileWriter(batch.profiles);
      flowWriter(batch.flows as unknown as ProfileRow[]);
    });
  }

  /**
   * A writer for one table: rows go in by multi-row INSERTs of ROWS_PER_STATEMENT (fewer
   * statement steps), and a generated function copies each row's columns by constant property
   * names, which V8 reads far faster than by computed keys.
   */
  private rowWriter(
    table: string,
    cols: readonly string[],
    dataCols: readonly string[],
    tail: string,
  ): (rows: readonly ProfileRow[]) => void {
    const width = cols.length;
    const one = `(${cols.map(() => '?').join(', ')})`;
    const sql = (n: number) =>
      `INSERT INTO ${table} (${cols.map(q).join(', ')}) VALUES ${Array(n).fill(one).join(', ')}`;
    const many = this.db.prepare(sql(ROWS_PER_STATEMENT));
    const single = this.db.prepare(sql(1));
    const copy = new Function(
      'sv',
      `return function copyRow(r, v, o, exporterId) {
        v[o] = exporterId; v[o + 1] = r.observationDomainId; v[o + 2] = r.templateId; v[o + 3] = r.receivedMilliseconds;
        ${dataCols.map((c, i) => `v[o + ${4 + i}] = sv(r[${JSON.stringify(c)}]);`).join('\n')}
        v[o + ${width - 1}] = r[${JSON.stringify(tail)}];
      };`,
    )(sqlValue) as (r: ProfileRow, v: Scalar[], o: number, exporterId: number) => void;
    const manyVals = new Array<Scalar>(width * ROWS_PER_STATEMENT);
    const oneVals = new Array<Scalar>(width);
    return (rows) => {
      let i = 0;
      for (; i + ROWS_PER_STATEMENT <= rows.length; i += ROWS_PER_STATEMENT) {
        for (let k = 0; k < ROWS_PER_STATEMENT; k++) {
          const r = rows[i + k]!;
          copy(r, manyVals, k * width, this.exporterId(r.exporter, r.receivedMilliseconds));
        }
        many.run(manyVals);
      }
      for (; i < rows.length; i++) {
        const r = rows[i]!;
        copy(r, oneVals, 0, this.exporterId(r.exporter, r.receivedMilliseconds));
        single.run(oneVals);
      }
    };
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version > MIGRATIONS.length) {
      throw new CollectorError(
        'COL_ERR_SCHEMA',
        `${this.path} has schema ${version}, this collector knows ${MIGRATIONS.length}`,
      );
    }
    for (let v = version; v < MIGRATIONS.length; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v]!);
        this.db.pragma(`user_version = ${v + 1}`);
      })();
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

  async insert(batch: IngestBatch): Promise<void> {
    try {
      this.writeBatch(batch);
    } catch (err) {
      throw new CollectorError('COL_ERR_STORE', `insert failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /** WHERE clause and parameters of a filter over a table's columns. */
  private where(f: RowFilter, table: 'profiles' | 'flows'): { sql: string; params: Scalar[] } {
    const c: string[] = [];
    const p: Scalar[] = [];
    const add = (sql: string, ...v: Scalar[]) => {
      c.push(sql);
      p.push(...v);
    };
    if (f.from !== undefined) add('flowStartMilliseconds >= ?', f.from);
    if (f.to !== undefined) add('flowStartMilliseconds < ?', f.to);
    if (f.address !== undefined) add('(sourceAddress = ? OR destinationAddress = ?)', f.address, f.address);
    if (f.sourceAddress !== undefined) add('sourceAddress = ?', f.sourceAddress);
    if (f.destinationAddress !== undefined) add('destinationAddress = ?', f.destinationAddress);
    if (f.port !== undefined)
      add('(sourceTransportPort = ? OR destinationTransportPort = ?)', f.port, f.port);
    if (f.sourcePort !== undefined) add('sourceTransportPort = ?', f.sourcePort);
    if (f.destinationPort !== undefined) add('destinationTransportPort = ?', f.destinationPort);
    if (f.exporter !== undefined) add('exporterId = (SELECT id FROM exporters WHERE key = ?)', f.exporter);
    if (f.templateId !== undefined) add('templateId = ?', f.templateId);
    if (f.ipVersion !== undefined) add('ipVersion = ?', f.ipVersion);
    if (table === 'profiles') {
      if (f.startState !== undefined) add('flowStartReason = ?', f.startState);
      if (f.endState !== undefined) add('flowEndReason = ?', f.endState);
    } else if (f.protocol !== undefined) add('protocolIdentifier = ?', f.protocol);
    return { sql: c.length ? c.join(' AND ') : '1', params: p };
  }

  private page<T>(table: 'profiles' | 'flows', f: RowFilter, page: PageRequest): Page<T> {
    const w = this.where(f, table);
    const params = [...w.params];
    let keyset = '';
    if (page.cursor) {
      // Keyset on (flowStartMilliseconds, id), which the time index serves. SQLite sorts NULL
      // times first ascending and last descending; rows without a time page by id alone.
      const { t, id } = decodeCursor(page.cursor);
      const asc = page.order === 'asc';
      const op = asc ? '>' : '<';
      if (t === null) {
        keyset = asc
          ? ' AND ((flowStartMilliseconds IS NULL AND id > ?) OR flowStartMilliseconds IS NOT NULL)'
          : ' AND flowStartMilliseconds IS NULL AND id < ?';
        params.push(id);
      } else {
        keyset = asc
          ? ` AND (flowStartMilliseconds, id) ${op} (?, ?)`
          : ` AND ((flowStartMilliseconds, id) ${op} (?, ?) OR flowStartMilliseconds IS NULL)`;
        params.push(t, id);
      }
    }
    const dir = page.order === 'asc' ? 'ASC' : 'DESC';
    const rows = this.db
      .prepare(
        `SELECT ${table}.*, (SELECT key FROM exporters WHERE exporters.id = exporterId) AS exporter FROM ${table}
         WHERE ${w.sql}${keyset} ORDER BY flowStartMilliseconds ${dir}, id ${dir} LIMIT ?`,
      )
      .safeIntegers(true)
      .all(...params, page.limit + 1)
      .map((r) =>
        fromSql<
          T & {
            id: number;
            exporterId?: number;
            flowStartMilliseconds: Scalar;
          }
        >(r),
      );
    const more = rows.length > page.limit;
    if (more) rows.pop();
    for (const r of rows) delete r.exporterId;
    const last = rows[rows.length - 1];
    return {
      items: rows,
      nextCursor: more && last ? encodeCursor(last.flowStartMilliseconds, last.id) : null,
    };
  }

  async profiles(filter: RowFilter, page: PageRequest): Promise<Page<ProfileRow>> {
    return this.page<ProfileRow>('profiles', filter, page);
  }

  async flows(filter: RowFilter, page: PageRequest): Promise<Page<FlowRow>> {
    return this.page<FlowRow>('flows', filter, page);
  }

  async connection(flowId: number | bigint): Promise<(ProfileRow & { id: number })[]> {
    const rows = this.db
      .prepare(
        `SELECT profiles.*, (SELECT key FROM exporters WHERE exporters.id = exporterId) AS exporter FROM profiles
         WHERE flowId = ? ORDER BY flowStartMilliseconds, id`,
      )
      .safeIntegers(true)
      .all(sqlValue(flowId))
      .map((r) => fromSql<ProfileRow & { id: number; exporterId?: number }>(r));
    for (const r of rows) delete r.exporterId;
    return rows;
  }

  async summary(query: SummaryQuery): Promise<SummaryRow[]> {
    const keyExpr = {
      destination: 'destinationAddress',
      destinationPort: 'destinationTransportPort',
      ipVersion: 'ipVersion',
      exporter: '(SELECT key FROM exporters WHERE exporters.id = exporterId)',
      endState: 'flowEndReason',
    }[query.groupBy];
    const bucketExpr = query.bucketMs
      ? `(flowStartMilliseconds / ${Math.floor(query.bucketMs)}) * ${Math.floor(query.bucketMs)}`
      : 'NULL';
    const w = this.where(query, 'profiles');
    const groups = this.db
      .prepare(
        `SELECT ${keyExpr} AS key, ${bucketExpr} AS bucket, COUNT(*) AS profiles, COUNT(DISTINCT flowId) AS connections,
           TOTAL(transferredOctetTotalCount) AS transferredOctetTotalCount, TOTAL(receivedOctetTotalCount) AS receivedOctetTotalCount,
           TOTAL(retransmittedPacketTotalCount) AS retransmittedPacketTotalCount, TOTAL(stallCount) AS stallCount,
           TOTAL(duplicatePacketTotalCount) AS duplicatePacketTotalCount, TOTAL(reorderingPacketCount) AS reorderingPacketCount
         FROM profiles WHERE ${w.sql} GROUP BY key, bucket ORDER BY profiles DESC, key LIMIT ?`,
      )
      .all(...w.params, query.limit) as Omit<SummaryRow, 'rtt' | 'timeToEstablish'>[];
    // Percentiles: the values of the selected groups, sorted by SQLite.
    const rtt = new Map<string, number[]>();
    const tte = new Map<string, number[]>();
    const gk = (k: Scalar, b: Scalar) => `${k}\u0000${b}`;
    const wanted = new Set(groups.map((g) => gk(g.key, g.bucket)));
    const values = this.db.prepare(
      `SELECT ${keyExpr} AS key, ${bucketExpr} AS bucket,
         COALESCE(meanLatencyMicroseconds / 1000.0, meanLatencyMilliseconds) AS rtt, timeToEstablishMilliseconds AS tte
       FROM profiles WHERE ${w.sql} AND (meanLatencyMicroseconds IS NOT NULL OR meanLatencyMilliseconds IS NOT NULL OR timeToEstablishMilliseconds IS NOT NULL)`,
    );
    for (const v of values.iterate(...w.params) as Iterable<{
      key: Scalar;
      bucket: Scalar;
      rtt: number | null;
      tte: number | null;
    }>) {
      const k = gk(v.key, v.bucket);
      if (!wanted.has(k)) continue;
      if (v.rtt !== null) (rtt.get(k) ?? rtt.set(k, []).get(k)!).push(v.rtt);
      if (v.tte !== null && v.tte > 0) (tte.get(k) ?? tte.set(k, []).get(k)!).push(v.tte);
    }
    return groups.map((g) => {
      const r = rtt.get(gk(g.key, g.bucket))?.sort((a, b) => a - b);
      const t = tte.get(gk(g.key, g.bucket))?.sort((a, b) => a - b);
      return {
        ...g,
        rtt: r?.length
          ? {
              mean: mean(r),
              p50: percentile(r, 50),
              p90: percentile(r, 90),
              p95: percentile(r, 95),
              p99: percentile(r, 99),
            }
          : null,
        timeToEstablish: t?.length ? { mean: mean(t), p50: percentile(t, 50), p90: percentile(t, 90) } : null,
      };
    });
  }

  async exporters(): Promise<ExporterRow[]> {
    const rows = this.db.prepare('SELECT * FROM exporters ORDER BY key').all() as (Omit<
      ExporterRow,
      'exporter' | 'templateIds'
    > & {
      key: string;
      id?: number;
      templateIds: string;
    })[];
    return rows.map(({ key, id: _id, templateIds, ...r }) => ({
      exporter: key,
      ...r,
      templateIds: JSON.parse(templateIds) as number[],
    }));
  }

  async deleteOlderThan(beforeMs: number, maxRows: number): Promise<number> {
    let left = maxRows;
    for (const table of ['profiles', 'flows']) {
      if (left <= 0) break;
      const r = this.db
        .prepare(
          `DELETE FROM ${table} WHERE id IN (SELECT id FROM ${table} WHERE flowStartMilliseconds < ? ORDER BY flowStartMilliseconds LIMIT ?)`,
        )
        .run(beforeMs, left);
      left -= r.changes;
    }
    return maxRows - left;
  }

  async sizeBytes(): Promise<number> {
    if (this.path === ':memory:') {
      const pages = this.db.pragma('page_count', { simple: true }) as number;
      return pages * (this.db.pragma('page_size', { simple: true }) as number);
    }
    let total = 0;
    for (const suffix of ['', '-wal', '-shm']) {
      try {
        total += statSync(this.path + suffix).size;
      } catch {
        // The WAL and SHM files come and go with checkpoints.
      }
    }
    return total;
  }

  /** PRAGMA integrity_check result ('ok' when sound). */
  integrityCheck(): string {
    return String(this.db.pragma('integrity_check', { simple: true }));
  }

  async close(): Promise<void> {
    if (!this.db.open) return;
    if (!this.db.readonly) this.db.pragma('wal_checkpoint(TRUNCATE)');
    this.db.close();
  }
}
