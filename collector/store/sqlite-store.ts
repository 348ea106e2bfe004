/**
 * The embedded store: SQLite through better-sqlite3. WAL journal, prepared statements, one
 * transaction per batch, versioned migrations (PRAGMA user_version), indexes that serve the
 * API's filters, and deletion in small steps for retention.
 */
import { statSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { CollectorError } from '../errors.js';
import { BlockReader } from './block-query.js';
import { type ProfileLayout, storedLayout } from './block-writer.js';
import { type PackedBatch, packBatch, transferables } from './packed-batch.js';
import { mean, percentile } from './percentiles.js';
import { openForWriting, SqliteWriter, type SyncMode, tablePackers } from './sqlite-writer.js';
import type { WriterReply, WriterRequest } from './sqlite-writer-thread.js';
import type {
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

/** Options of the SQLite store. */
export interface SqliteStoreOptions {
  /** Database file; ':memory:' for tests (always written inline). */
  path: string;
  /** Open read-only (API-only processes). */
  readonly?: boolean;
  /**
   * Write from a worker thread (the collector does): SQLite's work then runs on another core
   * than receiving and decoding. Default false (inline), which tests and tools use.
   */
  writerThread?: boolean;
  /** PRAGMA synchronous of the writer. Default 'normal'. */
  sync?: SyncMode;
  /**
   * How profiles are stored (docs/storage.md): 'rows' (one SQL row each, the default) or
   * 'blocks' (column blocks, experimental). A database holding profiles in the other layout is
   * refused with COL_ERR_SCHEMA. Read-only stores use the layout the database holds.
   */
  layout?: ProfileLayout;
  /** Blocks layout: how often an ended hour is rolled up (one per tick), ms; 0: only by buildRollups. Default 1000. */
  rollupIntervalMs?: number;
  /**
   * Blocks layout: a summary whose blocks hold at most this many profiles reads every row (exact);
   * above it, blocks inside the range use their pre-aggregates. Default EXACT_SUMMARY_ROWS.
   */
  exactSummaryRows?: number;
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

/** SQL value of a number or bigint (SQLite integers are signed 64-bit). */
function sqlValue(v: Scalar | undefined): Scalar {
  if (v === undefined) return null;
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

/** Writer time given to roll-ups per tick (a tick a second), ms. */
const ROLLUP_STEP_MS = 50;

/** Where writes go: this thread's writer, or the worker thread's. */
interface WriteSide {
  insert(b: PackedBatch): Promise<void>;
  deleteOlderThan(beforeMs: number, maxRows: number): Promise<number>;
  maintain(now: number, max: number, budgetMs: number): Promise<number>;
  close(): Promise<void>;
}

function inlineWriter(db: Db, layout: ProfileLayout): WriteSide {
  const w = new SqliteWriter(db, layout);
  return {
    insert: async (b) => w.write(b),
    deleteOlderThan: async (before, max) => w.deleteOlderThan(before, max),
    maintain: async (now, max, budgetMs) => w.maintain(now, max, budgetMs),
    // The store closes the shared connection itself.
    close: async () => {},
  };
}

function threadWriter(path: string, sync: SyncMode, layout: ProfileLayout): WriteSide {
  const worker = new Worker(new URL('./sqlite-writer-thread.js', import.meta.url), {
    workerData: { path, sync, layout },
  });
  const waiting = new Map<number, { resolve: (v: number | undefined) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let failure: Error | null = null;
  const failAll = (err: Error) => {
    failure = err;
    for (const w of waiting.values()) w.reject(err);
    waiting.clear();
  };
  worker.on('message', (r: WriterReply) => {
    const w = waiting.get(r.id);
    if (!w) return;
    waiting.delete(r.id);
    if (r.ok) w.resolve(r.value);
    else w.reject(new CollectorError(r.code as 'COL_ERR_STORE', r.message));
  });
  worker.on('error', (err) =>
    failAll(new CollectorError('COL_ERR_STORE', `writer thread failed: ${err.message}`)),
  );
  worker.on('exit', (code) => {
    if (waiting.size) failAll(new CollectorError('COL_ERR_STORE', `writer thread exited (code ${code})`));
  });
  const call = (req: DistributiveOmit<WriterRequest, 'id'>, transfer: ArrayBuffer[] = []) =>
    new Promise<number | undefined>((resolve, reject) => {
      if (failure) return reject(failure);
      const id = nextId++;
      waiting.set(id, { resolve, reject });
      worker.postMessage({ ...req, id }, transfer);
    });
  return {
    insert: async (b) => {
      await call({ op: 'write', batch: b }, transferables(b));
    },
    deleteOlderThan: async (beforeMs, maxRows) => (await call({ op: 'delete', beforeMs, maxRows })) ?? 0,
    // No budget travels as null (plain data in the message).
    maintain: async (now, max, budgetMs) =>
      (await call({
        op: 'maintain',
        now,
        max,
        budgetMs: Number.isFinite(budgetMs) ? budgetMs : null,
      })) ?? 0,
    close: async () => {
      if (!failure) await call({ op: 'close' });
      await worker.terminate();
    },
  };
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** The SQLite store. */
export class SqliteStore implements Store {
  readonly kind = 'sqlite';
  private readonly db: Db;
  private readonly path: string;
  private readonly writer: WriteSide | null;
  private readonly packers = tablePackers();
  /** Reads of the blocks layout; null in the rows layout. */
  private readonly blocks: BlockReader | null = null;
  /** How this database stores profiles. */
  readonly layout: ProfileLayout;
  private rollupTimer: NodeJS.Timeout | null = null;
  private rollupRun: Promise<unknown> = Promise.resolve();

  constructor(options: SqliteStoreOptions) {
    this.path = options.path;
    if (options.readonly) {
      try {
        this.db = new Database(options.path, { readonly: true, fileMustExist: true });
      } catch (err) {
        throw new CollectorError('COL_ERR_STORE', `cannot open ${options.path}: ${(err as Error).message}`, {
          cause: err,
        });
      }
      this.db.pragma('busy_timeout = 5000');
      this.writer = null;
      this.layout = storedLayout(this.db);
      if (this.layout === 'blocks')
        this.blocks = new BlockReader(this.db, this.packers.profiles, options.exactSummaryRows);
      return;
    }
    this.layout = options.layout ?? 'rows';
    // This connection migrates the schema, then serves reads (and writes, when inline).
    this.db = openForWriting(options.path, options.sync, this.layout);
    if (this.layout === 'blocks')
      this.blocks = new BlockReader(this.db, this.packers.profiles, options.exactSummaryRows);
    this.writer =
      options.writerThread && options.path !== ':memory:'
        ? threadWriter(options.path, options.sync ?? 'normal', this.layout)
        : inlineWriter(this.db, this.layout);
    const every = options.rollupIntervalMs ?? 1000;
    if (this.layout === 'blocks' && every > 0) {
      // At most ROLLUP_STEP_MS of roll-up work per tick: the writer's ingest work waits for it.
      let busy = false;
      this.rollupTimer = setInterval(() => {
        if (busy) return;
        busy = true;
        this.rollupRun = this.writer!.maintain(Date.now(), 1, ROLLUP_STEP_MS)
          .catch(() => 0)
          .finally(() => {
            busy = false;
          });
      }, every);
      this.rollupTimer.unref();
    }
  }

  async insert(batch: IngestBatch): Promise<void> {
    if (!this.writer) throw new CollectorError('COL_ERR_STORE', `${this.path} is open read-only`);
    if (batch.profiles.length + batch.flows.length + batch.exporters.length === 0) return;
    await this.writer.insert(packBatch(batch, this.packers.profiles, this.packers.flows));
  }

  async insertPacked(batch: PackedBatch): Promise<void> {
    if (!this.writer) throw new CollectorError('COL_ERR_STORE', `${this.path} is open read-only`);
    if (batch.profiles.n + batch.flows.n + batch.exporters.length === 0) return;
    await this.writer.insert(batch);
  }

  /** WHERE clause and parameters of a filter over a table's columns. */
  private where(f: RowFilter, table: 'profiles' | 'flows'): { sql: string; params: Scalar[] } {
    const c: string[] = [];
    const p: Scalar[] = [];
    const add = (sql: string, ...v: Scalar[]) => {
      c.push(sql);
      p.push(...v);
    };
    // Profiles are clustered by t (their start time): a time range is one scan of the table.
    const time = table === 'profiles' ? 't' : 'flowStartMilliseconds';
    if (f.from !== undefined) add(`${time} >= ?`, f.from);
    if (f.to !== undefined) add(`${time} < ?`, f.to);
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
      if (f.synRetransmitted !== undefined)
        add(f.synRetransmitted ? 'synRetransmissionCount > 0' : 'ifnull(synRetransmissionCount, 0) = 0');
    } else if (f.protocol !== undefined) add('protocolIdentifier = ?', f.protocol);
    return { sql: c.length ? c.join(' AND ') : '1', params: p };
  }

  private page<T>(table: 'profiles' | 'flows', f: RowFilter, page: PageRequest): Page<T> {
    const w = this.where(f, table);
    const params = [...w.params];
    let keyset = '';
    const asc = page.order === 'asc';
    // Keyset on (time, id): profiles' t is never NULL (it is their primary key with id); flows
    // sort NULL times first ascending and last descending, and rows without a time page by id.
    const time = table === 'profiles' ? 't' : 'flowStartMilliseconds';
    if (page.cursor) {
      const { t, id } = decodeCursor(page.cursor);
      const op = asc ? '>' : '<';
      if (t === null) {
        keyset = asc
          ? ` AND ((${time} IS NULL AND id > ?) OR ${time} IS NOT NULL)`
          : ` AND ${time} IS NULL AND id < ?`;
        params.push(id);
      } else {
        keyset = asc
          ? ` AND (${time}, id) ${op} (?, ?)`
          : ` AND ((${time}, id) ${op} (?, ?) OR ${time} IS NULL)`;
        params.push(t, id);
      }
    }
    const dir = asc ? 'ASC' : 'DESC';
    const rows = this.db
      .prepare(
        `SELECT ${table}.*, (SELECT key FROM exporters WHERE exporters.id = exporterId) AS exporter FROM ${table}
         WHERE ${w.sql}${keyset} ORDER BY ${time} ${dir}, id ${dir} LIMIT ?`,
      )
      .safeIntegers(true)
      .all(...params, page.limit + 1)
      .map((r) =>
        fromSql<T & { id: number; exporterId?: number; t?: number; flowStartMilliseconds: Scalar }>(r),
      );
    const more = rows.length > page.limit;
    if (more) rows.pop();
    const last = rows[rows.length - 1];
    const nextCursor =
      more && last ? encodeCursor(table === 'profiles' ? last.t : last.flowStartMilliseconds, last.id) : null;
    for (const r of rows) {
      delete r.exporterId;
      delete r.t;
    }
    return { items: rows, nextCursor };
  }

  async profiles(filter: RowFilter, page: PageRequest): Promise<Page<ProfileRow>> {
    if (this.blocks) return this.blocks.profiles(filter, page);
    return this.page<ProfileRow>('profiles', filter, page);
  }

  async flows(filter: RowFilter, page: PageRequest): Promise<Page<FlowRow>> {
    return this.page<FlowRow>('flows', filter, page);
  }

  async connection(flowId: number | bigint): Promise<(ProfileRow & { id: number })[]> {
    if (this.blocks) return this.blocks.connection(flowId);
    const rows = this.db
      .prepare(
        `SELECT profiles.*, (SELECT key FROM exporters WHERE exporters.id = exporterId) AS exporter FROM profiles
         WHERE flowId = ? ORDER BY t, id`,
      )
      .safeIntegers(true)
      .all(sqlValue(flowId))
      .map((r) => fromSql<ProfileRow & { id: number; exporterId?: number; t?: number }>(r));
    for (const r of rows) {
      delete r.exporterId;
      delete r.t;
    }
    return rows;
  }

  async summary(query: SummaryQuery): Promise<SummaryRow[]> {
    if (this.blocks) return this.blocks.summary(query);
    const keyExpr = {
      destination: 'destinationAddress',
      destinationPort: 'destinationTransportPort',
      ipVersion: 'ipVersion',
      exporter: '(SELECT key FROM exporters WHERE exporters.id = exporterId)',
      endState: 'flowEndReason',
    }[query.groupBy];
    const bucketExpr = query.bucketMs
      ? `(t / ${Math.floor(query.bucketMs)}) * ${Math.floor(query.bucketMs)}`
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
    // Only the rows of the groups returned are read back (the rest were cut by the limit): SQLite
    // skips the others during its scan instead of handing every row to JavaScript.
    const keys = [...new Set(groups.map((g) => g.key))];
    const nonNull = keys.filter((k) => k !== null);
    const keyFilter = `(${keyExpr} IN (SELECT value FROM json_each(?))${nonNull.length < keys.length ? ` OR ${keyExpr} IS NULL` : ''})`;
    const values = this.db
      .prepare(
        `SELECT ${keyExpr} AS key, ${bucketExpr} AS bucket,
         COALESCE(meanLatencyMicroseconds / 1000.0, meanLatencyMilliseconds) AS rtt, timeToEstablishMilliseconds AS tte
       FROM profiles WHERE ${w.sql} AND ${keyFilter}
         AND (meanLatencyMicroseconds IS NOT NULL OR meanLatencyMilliseconds IS NOT NULL OR timeToEstablishMilliseconds IS NOT NULL)`,
      )
      .raw();
    for (const v of values.iterate(...w.params, JSON.stringify(nonNull)) as Iterable<
      [Scalar, Scalar, number | null, number | null]
    >) {
      const k = gk(v[0], v[1]);
      if (!wanted.has(k)) continue;
      const r = v[2];
      const t = v[3];
      if (r !== null) (rtt.get(k) ?? rtt.set(k, []).get(k)!).push(r);
      if (t !== null && t > 0) (tte.get(k) ?? tte.set(k, []).get(k)!).push(t);
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
    if (!this.writer) throw new CollectorError('COL_ERR_STORE', `${this.path} is open read-only`);
    return this.writer.deleteOlderThan(beforeMs, maxRows);
  }

  /**
   * Builds the roll-ups (blocks layout) of at most `max` spans that ended by `now` and need one,
   * working at most about `budgetMs` (a roll-up left unfinished continues on the next call);
   * returns how many it finished. A writable store also does this by itself, 50 ms a second.
   */
  async buildRollups(
    now = Date.now(),
    max = Number.POSITIVE_INFINITY,
    budgetMs = Number.POSITIVE_INFINITY,
  ): Promise<number> {
    if (!this.writer) throw new CollectorError('COL_ERR_STORE', `${this.path} is open read-only`);
    return this.writer.maintain(now, max, budgetMs);
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
    if (this.rollupTimer) clearInterval(this.rollupTimer);
    await this.rollupRun;
    await this.writer?.close();
    if (!this.db.readonly) this.db.pragma('wal_checkpoint(TRUNCATE)');
    this.db.close();
  }
}
