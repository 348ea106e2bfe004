/**
 * The scale-out store: ClickHouse through @clickhouse/client over HTTP. MergeTree tables
 * partitioned by day and sorted by (time, id), with hourly roll-ups (clickhouse-schema.ts).
 * Ingest batches are encoded as RowBinary (clickhouse-rowbinary.ts), gathered into large
 * INSERTs and sent through a spool (clickhouse-spool.ts), so a slow or stopped server holds
 * batches back instead of losing them. Queries give the SQLite store's answers:
 * the conformance suite runs on both. Several collectors may write one database: ids carry a
 * per-process instance number, and exporter accounting is stored as increments summed on read.
 *
 * ClickHouse 18.16 (Debian's) has neither query parameters nor table TTL, so values are inlined
 * as escaped literals, and retention drops whole day partitions; on 19.6 and later the tables
 * also get a TTL.
 */
import { randomInt } from 'node:crypto';
import { Readable } from 'node:stream';
import { type ClickHouseClient, ClickHouseLogLevel, createClient } from '@clickhouse/client';
import pino, { type Logger } from 'pino';
import { CollectorError } from '../errors.js';
import { EXACT_SUMMARY_ROWS } from './block-query.js';
import { encodeRowBinary } from './clickhouse-rowbinary.js';
import {
  AGED_TABLES,
  CLICKHOUSE_MIGRATIONS,
  type ClickHouseVersion,
  DAY_MS,
  EXPORTER_DELTA_COLUMNS,
  FLOW_TYPES,
  HOUR_MS,
  hasTableTtl,
  PROFILE_TYPES,
  parseVersion,
  ROLLUP_GROUPS,
  ROLLUP_STATE_COLUMNS,
  ROLLUP_STATES,
  ROLLUPS,
  RTT_EXPR,
  SUMMED_COLUMNS,
  TTE_EXPR,
} from './clickhouse-schema.js';
import { type InsertPayload, Spool, type SpoolStats } from './clickhouse-spool.js';
import {
  classifyInsertError,
  decodeCursor,
  encodeCursor,
  fromJson,
  RAW_KEYS,
  ROLLUP_MIN_HOURS,
  sqlInt,
  sqlString,
  summaryRow,
  tsvText,
  wide,
} from './clickhouse-sql.js';
import { type PackedBatch, type PackedTable, packBatch, tablePackers } from './packed-batch.js';
import type {
  ExporterRow,
  FlowRow,
  IngestBatch,
  Page,
  PageRequest,
  ProfileRow,
  RowFilter,
  Store,
  SummaryQuery,
  SummaryRow,
} from './types.js';

/** Options of the ClickHouse store. */
export interface ClickHouseStoreOptions {
  /** `http[s]://[user:password@]host:port/database`; the database is created when missing (default kpiflow). */
  url: string;
  /** Folder of the spool (batches waiting for the server). Required unless readonly. */
  spoolDir?: string;
  /** Queries only (API-only processes): no schema changes, no writes, no retention. */
  readonly?: boolean;
  /** Rows older than this are dropped by whole day partitions (and by TTL on 19.6+); 0: keep all. */
  retentionMs?: number;
  /** Batches kept in memory before the spool writes them to files. Default 4. */
  memoryBatches?: number;
  /** Most bytes of spool files. Default 1 GiB. */
  maxSpoolBytes?: number;
  /** Rows gathered into one INSERT before it goes to the spool. Default 100 000. */
  insertRows?: number;
  /** Longest a batch waits to be gathered into an INSERT, ms. Default 1000. */
  insertDelayMs?: number;
  /** First retry pause after a failed insert, ms. Default 500. */
  retryMs?: number;
  /** Timeout of one request, ms. Default 30 000. */
  requestTimeoutMs?: number;
  /**
   * A summary over roll-ups holding at most this many profiles reads every row instead (exact).
   * Default EXACT_SUMMARY_ROWS, as the SQLite blocks layout.
   */
  exactSummaryRows?: number;
  /** How long close() keeps trying to deliver before leaving batches in the spool, ms. Default 10 000. */
  closeTimeoutMs?: number;
  log?: Logger;
}

/** The columns of a table's INSERT of a packed table: `t` and `id` (made here), then the table's. */
function insertColumns(p: PackedTable): string[] {
  return ['t', 'id', ...p.numColumns, ...p.textColumns];
}

/** SQL condition on `hour` for [lo, hi) (null: unbounded); '' when both are unbounded. */
function hourRange(lo: number | null, hi: number | null): string {
  return [lo !== null ? `hour >= ${sqlInt(lo)}` : '', hi !== null ? `hour < ${sqlInt(hi)}` : '']
    .filter(Boolean)
    .join(' AND ');
}

/** The server could not be reached (or its schema made) yet: worth a retry. */
class NotReadyError extends Error {
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = 'NotReadyError';
  }
}

/**
 * Row ids: 53 bits (a JavaScript number): a random 20-bit instance number above a 33-bit
 * counter. Ids increase within a process (they break ties between rows of the same time in
 * pages and connections), and two collectors writing one database share an instance number
 * with a chance of about one in a million per pair; even then a clash needs the same counter
 * value and the same start time. A process that uses up its 8.6 G ids draws a new instance.
 */
class IdSource {
  private instance = randomInt(1 << 20);
  private counter = 0;

  next(): number {
    if (this.counter >= 2 ** 33) {
      this.instance = randomInt(1 << 20);
      this.counter = 0;
    }
    return this.instance * 2 ** 33 + this.counter++;
  }
}

/** The ClickHouse store. */
export class ClickHouseStore implements Store {
  readonly kind = 'clickhouse';
  private readonly packers = tablePackers();
  private readonly exactRows: number;
  private readonly ids = new IdSource();
  private readonly spool: Spool | null;
  private retentionTimer: NodeJS.Timeout | null = null;
  private retentionRun: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** The insert being gathered: RowBinary chunks per table, exporter deltas as TabSeparated lines. */
  private pending = {
    profiles: { columns: [] as string[], chunks: [] as Buffer[], rows: 0 },
    flows: { columns: [] as string[], chunks: [] as Buffer[], rows: 0 },
  };
  private exporterLines: string[] = [];
  private pendingBytes = 0;
  private pendingTimer: NodeJS.Timeout | null = null;
  /** Rows left out because a column that cannot be NULL had no valid value. */
  private invalidRows = 0;

  /** The server's version, once it answered. */
  version: ClickHouseVersion | null = null;
  private connecting: Promise<void> | null = null;

  private constructor(
    private readonly client: ClickHouseClient,
    private readonly admin: ClickHouseClient,
    /** The database's name. */
    readonly database: string,
    /** The URL without credentials, for messages. */
    readonly shownUrl: string,
    private readonly options: ClickHouseStoreOptions,
    private readonly log: Logger,
  ) {
    this.exactRows = options.exactSummaryRows ?? EXACT_SUMMARY_ROWS;
    if (options.readonly) {
      this.spool = null;
      return;
    }
    if (!options.spoolDir)
      throw new CollectorError('COL_ERR_CONFIG', 'the ClickHouse store needs a spool folder');
    this.spool = new Spool({
      dir: options.spoolDir,
      send: (p) => this.send(p),
      classify: (err) => (err instanceof NotReadyError ? 'retry' : classifyInsertError(err)),
      log,
      ...(options.memoryBatches !== undefined ? { memoryBatches: options.memoryBatches } : {}),
      ...(options.maxSpoolBytes !== undefined ? { maxBytes: options.maxSpoolBytes } : {}),
      ...(options.retryMs !== undefined ? { retryMs: options.retryMs } : {}),
    });
  }

  /**
   * Opens the store. A server that does not answer yet is not an error: batches wait in the
   * spool and the schema is made on the first successful contact, so a collector started during
   * an outage loses nothing; queries fail with COL_ERR_STORE until then. A bad URL, or a
   * database whose schema is newer than this collector, fails at once.
   */
  static async open(options: ClickHouseStoreOptions): Promise<ClickHouseStore> {
    const log = (options.log ?? pino({ level: 'silent' })).child({ component: 'clickhouse' });
    let url: URL;
    try {
      url = new URL(options.url);
    } catch {
      throw new CollectorError(
        'COL_ERR_CONFIG',
        `--clickhouse-url ${JSON.stringify(options.url)} is not a URL`,
      );
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new CollectorError('COL_ERR_CONFIG', `--clickhouse-url ${options.url}: use http:// or https://`);
    const database = decodeURIComponent(url.pathname.replace(/^\/+|\/+$/g, '')) || 'kpiflow';
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(database))
      throw new CollectorError(
        'COL_ERR_CONFIG',
        `--clickhouse-url: database name ${JSON.stringify(database)} is not an identifier`,
      );
    const username = decodeURIComponent(url.username) || 'default';
    const password = decodeURIComponent(url.password);
    url.pathname = '/';
    url.username = '';
    url.password = '';
    const shown = `${url.origin}/${database}`;
    const common = {
      url: url.toString(),
      username,
      password,
      request_timeout: options.requestTimeoutMs ?? 30_000,
      // 18.16 knows neither the progress headers nor the newer settings the client may send.
      clickhouse_settings: {},
      compression: { request: false, response: false },
      // Failures are the spool's to log (once per outage, through pino), not the client's.
      log: { level: ClickHouseLogLevel.OFF },
    };
    const store = new ClickHouseStore(
      createClient({ ...common, database }),
      createClient(common),
      database,
      shown,
      options,
      log,
    );
    try {
      await store.connect();
      log.info(
        { url: shown, version: store.version?.text, readonly: !!options.readonly },
        'ClickHouse store open',
      );
    } catch (err) {
      if (err instanceof NotReadyError && !(err.cause instanceof CollectorError)) {
        log.warn(
          { url: shown, err: err.message },
          'ClickHouse does not answer yet: batches wait in the spool',
        );
      } else {
        await store.close();
        throw err instanceof NotReadyError ? err.cause : err;
      }
    }
    if (!options.readonly && (options.retentionMs ?? 0) > 0) store.startRetention(options.retentionMs!);
    return store;
  }

  /**
   * Learns the server's version and, when writable, creates the database and brings the schema
   * up to date (idempotent); done once, tried again after a failure. Throws NotReadyError.
   */
  private connect(): Promise<void> {
    this.connecting ??= (async () => {
      try {
        const r = await this.admin.query({ query: 'SELECT version() AS v', format: 'JSONEachRow' });
        this.version = parseVersion(((await r.json()) as { v: string }[])[0]!.v);
        if (!this.options.readonly) {
          await this.admin.command({ query: `CREATE DATABASE IF NOT EXISTS ${this.database}` });
          await migrate(this.client, this.database);
        }
      } catch (err) {
        this.connecting = null;
        throw new NotReadyError(`ClickHouse at ${this.shownUrl}: ${(err as Error).message}`, err);
      }
    })();
    return this.connecting;
  }

  // ---- writing ----

  private async send(p: InsertPayload): Promise<void> {
    await this.connect();
    const r = await this.client.exec({
      query: `INSERT INTO ${p.table} (${p.columns.join(', ')}) FORMAT ${p.format}`,
      values: Readable.from([p.body], { objectMode: false }),
    });
    // The answer of an INSERT is empty; read it so that the connection is free again.
    r.stream.resume();
    await new Promise<void>((resolve, reject) => {
      r.stream.once('end', resolve);
      r.stream.once('error', reject);
    });
  }

  /** Encodes a packed table as RowBinary, with `t` and `id` made here, into the pending insert. */
  private encode(table: 'profiles' | 'flows', p: PackedTable): void {
    const start = p.numColumns.indexOf('flowStartMilliseconds');
    const received = p.numColumns.indexOf('receivedMilliseconds');
    const w = p.numColumns.length;
    const maxT = 2 ** 63 - 1024;
    // A start time t cannot hold (its column goes NULL then) counts as none.
    const t = (i: number) => {
      const s = p.num[i * w + start]!;
      return s >= 0 && s <= maxT ? Math.round(s) : table === 'profiles' ? p.num[i * w + received]! : -1;
    };
    const types = {
      observationDomainId: 'UInt32',
      templateId: 'UInt16',
      receivedMilliseconds: 'Int64',
      exporter: 'String',
      ...(table === 'profiles'
        ? { ...PROFILE_TYPES, extra: 'Nullable(String)' }
        : { ...FLOW_TYPES, fields: 'String' }),
    };
    const e = encodeRowBinary(p, types, t, () => this.ids.next());
    if (e.invalid) {
      this.invalidRows += e.invalid;
      this.log.warn(
        { table, rows: e.invalid },
        'rows without a valid observation domain, template id or arrival time left out',
      );
    }
    if (!e.rows) return;
    const pending = this.pending[table];
    pending.columns = insertColumns(p);
    pending.chunks.push(e.body);
    pending.rows += e.rows;
    this.pendingBytes += e.body.length;
  }

  async insert(batch: IngestBatch): Promise<void> {
    if (batch.profiles.length + batch.flows.length + batch.exporters.length === 0) return;
    await this.insertPacked(packBatch(batch, this.packers.profiles, this.packers.flows));
  }

  /**
   * Encodes the batch and adds it to the insert being gathered; that insert goes to the spool
   * once it holds `insertRows` rows or 32 MiB, or `insertDelayMs` after its first batch:
   * ClickHouse takes a few large inserts a second far better than many small ones.
   */
  async insertPacked(batch: PackedBatch): Promise<void> {
    if (!this.spool) throw new CollectorError('COL_ERR_STORE', 'the ClickHouse store is open read-only');
    if (this.closed) throw new CollectorError('COL_ERR_STORE', 'the ClickHouse store is closed');
    // Bodies are concatenated into one INSERT, so they must share their columns (every packer
    // of a table makes the same list); a different list sends what was gathered first.
    const differs = (table: 'profiles' | 'flows', p: PackedTable) =>
      p.n > 0 &&
      this.pending[table].rows > 0 &&
      this.pending[table].columns.join() !== insertColumns(p).join();
    if (differs('profiles', batch.profiles) || differs('flows', batch.flows)) await this.pushPending();
    if (batch.profiles.n) this.encode('profiles', batch.profiles);
    if (batch.flows.n) this.encode('flows', batch.flows);
    for (const e of batch.exporters) {
      this.exporterLines.push(
        [
          tsvText(e.exporter),
          tsvText(e.transport),
          e.address === null ? '\\N' : tsvText(e.address),
          e.port === null ? '\\N' : String(e.port),
          e.lastSeen,
          e.records,
          e.profiles,
          e.flows,
          e.lostRecords,
          e.decodeErrors,
          tsvText(JSON.stringify(e.templateIds)),
        ].join('\t'),
      );
    }
    const rows = this.pending.profiles.rows + this.pending.flows.rows;
    if (rows >= (this.options.insertRows ?? 100_000) || this.pendingBytes >= 32 << 20)
      await this.pushPending();
    else if (!this.pendingTimer && (rows || this.exporterLines.length)) {
      this.pendingTimer = setTimeout(() => {
        this.pendingTimer = null;
        this.pushPending().catch((err) => this.log.error({ err }, 'ClickHouse spool refused a batch'));
      }, this.options.insertDelayMs ?? 1000);
      this.pendingTimer.unref();
    }
  }

  /** Hands the insert being gathered to the spool. */
  private async pushPending(): Promise<void> {
    if (this.pendingTimer) clearTimeout(this.pendingTimer);
    this.pendingTimer = null;
    const payloads: InsertPayload[] = [];
    for (const table of ['profiles', 'flows'] as const) {
      const p = this.pending[table];
      if (!p.rows) continue;
      payloads.push({
        table,
        columns: p.columns,
        format: 'RowBinary',
        rows: p.rows,
        body: p.chunks.length === 1 ? p.chunks[0]! : Buffer.concat(p.chunks),
      });
      this.pending[table] = { columns: [], chunks: [], rows: 0 };
    }
    if (this.exporterLines.length) {
      payloads.push({
        table: 'exporter_deltas',
        columns: [...EXPORTER_DELTA_COLUMNS],
        format: 'TabSeparated',
        rows: 0,
        body: Buffer.from(`${this.exporterLines.join('\n')}\n`),
      });
      this.exporterLines = [];
    }
    this.pendingBytes = 0;
    if (payloads.length) await this.spool!.push(payloads);
  }

  /** What the store holds for ClickHouse and has done; null when read-only. */
  backlog(): SpoolStats | null {
    const b = this.spool?.stats();
    if (!b) return null;
    const gathering = this.pending.profiles.rows + this.pending.flows.rows;
    return { ...b, pendingRows: b.pendingRows + gathering, rejectedRows: b.rejectedRows + this.invalidRows };
  }

  /** Resolves once every batch reached ClickHouse (or after `timeoutMs`); true when all did. */
  async flush(timeoutMs = 30_000): Promise<boolean> {
    if (!this.spool) return true;
    await this.pushPending();
    return this.spool.drain(timeoutMs);
  }

  // ---- reading ----

  private async rows<T>(query: string): Promise<T[]> {
    try {
      await this.connect();
      const r = await this.client.query({ query, format: 'JSONEachRow' });
      return (await r.json()) as T[];
    } catch (err) {
      if (err instanceof CollectorError) throw err;
      if (err instanceof NotReadyError)
        throw new CollectorError('COL_ERR_STORE', err.message, { cause: err });
      throw new CollectorError('COL_ERR_STORE', `ClickHouse query failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /** WHERE clause of a filter over a table's columns. */
  private where(f: RowFilter, table: 'profiles' | 'flows'): string {
    const c: string[] = [];
    const time = table === 'profiles' ? 't' : 'flowStartMilliseconds';
    if (f.from !== undefined) c.push(`${time} >= ${sqlInt(f.from)}`);
    if (f.to !== undefined) c.push(`${time} < ${sqlInt(f.to)}`);
    if (f.address !== undefined)
      c.push(`(sourceAddress = ${sqlString(f.address)} OR destinationAddress = ${sqlString(f.address)})`);
    if (f.sourceAddress !== undefined) c.push(`sourceAddress = ${sqlString(f.sourceAddress)}`);
    if (f.destinationAddress !== undefined) c.push(`destinationAddress = ${sqlString(f.destinationAddress)}`);
    if (f.port !== undefined)
      c.push(`(sourceTransportPort = ${sqlInt(f.port)} OR destinationTransportPort = ${sqlInt(f.port)})`);
    if (f.sourcePort !== undefined) c.push(`sourceTransportPort = ${sqlInt(f.sourcePort)}`);
    if (f.destinationPort !== undefined) c.push(`destinationTransportPort = ${sqlInt(f.destinationPort)}`);
    if (f.exporter !== undefined) c.push(`exporter = ${sqlString(f.exporter)}`);
    if (f.templateId !== undefined) c.push(`templateId = ${sqlInt(f.templateId)}`);
    if (f.ipVersion !== undefined) c.push(`ipVersion = ${sqlInt(f.ipVersion)}`);
    if (table === 'profiles') {
      if (f.startState !== undefined) c.push(`flowStartReason = ${sqlInt(f.startState)}`);
      if (f.endState !== undefined) c.push(`flowEndReason = ${sqlInt(f.endState)}`);
      if (f.synRetransmitted !== undefined)
        c.push(f.synRetransmitted ? 'synRetransmissionCount > 0' : 'ifNull(synRetransmissionCount, 0) = 0');
    } else if (f.protocol !== undefined) c.push(`protocolIdentifier = ${sqlInt(f.protocol)}`);
    return c.length ? c.join(' AND ') : '1';
  }

  /**
   * A page in two steps: the keys (t, id) of the page's rows, reading only the filter's columns;
   * then those rows whole, found by the primary key. Profiles are searched day partition by day
   * partition from the page's end of time, so a recent page reads recent days only.
   */
  private async page<T>(table: 'profiles' | 'flows', f: RowFilter, page: PageRequest): Promise<Page<T>> {
    const asc = page.order === 'asc';
    let keyset = '';
    let cursorT: number | null = null;
    if (page.cursor) {
      const { t, id } = decodeCursor(page.cursor);
      // Flows without a start time are stored with t = -1 (the cursor says 'n').
      cursorT = t === null ? -1 : t;
      const op = asc ? '>' : '<';
      keyset = ` AND (t ${op} ${sqlInt(cursorT)} OR (t = ${sqlInt(cursorT)} AND id ${op} ${sqlInt(id)}))`;
    }
    const dir = asc ? 'ASC' : 'DESC';
    const limit = Math.max(1, Math.floor(page.limit));
    const where = `${this.where(f, table)}${keyset}`;
    const windows = table === 'profiles' ? await this.dayWindows(f, asc, cursorT) : [null];
    const keys: { t: string; id: string }[] = [];
    for (const w of windows) {
      const within = w ? ` AND t >= ${w.start} AND t < ${w.end}` : '';
      keys.push(
        ...(await this.rows<{ t: string; id: string }>(
          `SELECT t, id FROM ${table} WHERE ${where}${within} ORDER BY t ${dir}, id ${dir} LIMIT ${limit + 1 - keys.length}`,
        )),
      );
      if (keys.length > limit) break;
    }
    const more = keys.length > limit;
    if (more) keys.pop();
    if (!keys.length) return { items: [], nextCursor: null };
    const ts = [...new Set(keys.map((k) => sqlInt(BigInt(k.t))))].join(', ');
    const ids = [...new Set(keys.map((k) => sqlInt(BigInt(k.id))))].join(', ');
    const found = new Map<string, Record<string, unknown>>();
    for (const r of await this.rows<Record<string, unknown>>(
      `SELECT * FROM ${table} WHERE t IN (${ts}) AND id IN (${ids})`,
    ))
      found.set(`${r['t']}_${r['id']}`, r);
    const items = keys.flatMap((k) => {
      const r = found.get(`${k.t}_${k.id}`);
      return r ? [fromJson<T & { id: number }>(r)] : [];
    });
    const last = keys[keys.length - 1]!;
    return { items, nextCursor: more ? encodeCursor(wide(last.t), Number(last.id)) : null };
  }

  /**
   * The days (partitions) of profiles a filter and cursor can reach, in the page's order; one
   * unbounded window when the table has no parts of its own (a Distributed table of a cluster).
   */
  private async dayWindows(
    f: RowFilter,
    asc: boolean,
    cursorT: number | null,
  ): Promise<({ start: number; end: number } | null)[]> {
    const partitions = await this.partitions('profiles');
    if (!partitions.length) return [null];
    const days = partitions
      .map((d) => ({ start: d * DAY_MS, end: (d + 1) * DAY_MS }))
      .filter(
        (w) =>
          (f.from === undefined || w.end > f.from) &&
          (f.to === undefined || w.start < f.to) &&
          (cursorT === null || (asc ? w.end > cursorT : w.start <= cursorT)),
      )
      .sort((x, y) => (asc ? x.start - y.start : y.start - x.start));
    return days;
  }

  async profiles(filter: RowFilter, page: PageRequest): Promise<Page<ProfileRow>> {
    return this.page<ProfileRow>('profiles', filter, page);
  }

  async flows(filter: RowFilter, page: PageRequest): Promise<Page<FlowRow>> {
    return this.page<FlowRow>('flows', filter, page);
  }

  async connection(flowId: number | bigint): Promise<(ProfileRow & { id: number })[]> {
    const id = sqlInt(typeof flowId === 'bigint' ? BigInt.asUintN(64, flowId) : flowId);
    const rows = await this.rows<Record<string, unknown>>(
      `SELECT * FROM profiles WHERE flowId = ${id}
         AND t IN (SELECT t FROM profile_flows WHERE flowId = ${id}) ORDER BY t, id`,
    );
    return rows.map((r) => fromJson<ProfileRow & { id: number }>(r));
  }

  /**
   * Summaries. Exact by default: one GROUP BY over the columns needed. An unfiltered summary
   * (a time range at most) spanning at least ROLLUP_MIN_HOURS whole hours that hold more than
   * `exactSummaryRows` profiles, with buckets of whole hours if any, reads the hourly roll-ups
   * for its whole hours and the raw profiles only for the partial hours at its ends; such
   * groups are `approximate` (t-digest percentiles, estimated distinct connections; counts and
   * sums stay exact).
   */
  async summary(query: SummaryQuery): Promise<SummaryRow[]> {
    const b = query.bucketMs ? sqlInt(Math.floor(query.bucketMs)) : null;
    const limit = Math.max(1, Math.floor(query.limit));
    const filtered = Object.entries(query).some(
      ([k, v]) => v !== undefined && !['from', 'to', 'groupBy', 'bucketMs', 'limit'].includes(k),
    );
    const h0 = query.from === undefined ? null : Math.ceil(query.from / HOUR_MS) * HOUR_MS;
    const h1 = query.to === undefined ? null : Math.floor(query.to / HOUR_MS) * HOUR_MS;
    const wholeHours = h0 !== null && h1 !== null ? (h1 - h0) / HOUR_MS : Number.POSITIVE_INFINITY;
    const hourly = !query.bucketMs || query.bucketMs % HOUR_MS === 0;
    if (
      !filtered &&
      hourly &&
      wholeHours >= ROLLUP_MIN_HOURS &&
      (await this.rolledUp(h0, h1)) > this.exactRows
    )
      return this.rollupSummary(query, h0, h1, limit);
    const keyExpr = RAW_KEYS[query.groupBy];
    const bucketExpr = b ? `toInt64(intDiv(t, ${b}) * ${b})` : 'toInt64(0)';
    // Exact percentiles by the nearest rank, as the SQLite store computes them (percentiles.ts):
    // quantileExact takes the value at index floor(level × n) of the sorted values, the nearest
    // rank's index is ceil(p × n) - 1, and the two agree for level p - 1e-12 (p × n is never
    // within 1e-12 × n of an integer without being one, for groups below 10^10 values).
    const level = (p: number) => String(p / 100 - 1e-12);
    const rows = await this.rows<Record<string, unknown>>(
      `SELECT ${keyExpr} AS key, ${bucketExpr} AS bucket, toFloat64(count()) AS profiles,
         toFloat64(uniqExact(flowId)) AS connections,
         ${SUMMED_COLUMNS.map((c, i) => `toFloat64(sum(ifNull(${c}, 0))) AS s${i}`).join(', ')},
         count(${RTT_EXPR}) AS rn, avg(${RTT_EXPR}) AS rttMean,
         quantilesExact(${[50, 90, 95, 99].map(level).join(', ')})(${RTT_EXPR}) AS rq,
         countIf(${TTE_EXPR} > 0) AS en, avgIf(${TTE_EXPR}, ${TTE_EXPR} > 0) AS tteMean,
         quantilesExactIf(${[50, 90].map(level).join(', ')})(${TTE_EXPR}, ${TTE_EXPR} > 0) AS tq
       FROM profiles WHERE ${this.where(query, 'profiles')}
       GROUP BY key, bucket ORDER BY profiles DESC, key ASC NULLS FIRST LIMIT ${limit}`,
    );
    return rows.map((g) => summaryRow(g, b !== null, false));
  }

  /** Profiles the roll-ups count in whole hours [h0, h1) (null: unbounded). */
  private async rolledUp(h0: number | null, h1: number | null): Promise<number> {
    const hours = hourRange(h0, h1);
    const [r] = await this.rows<{ n: string | number }>(
      `SELECT countMerge(n) AS n FROM ${ROLLUPS.dims.table}${hours ? ` WHERE ${hours}` : ''}`,
    );
    return Number(r?.n ?? 0);
  }

  /** A summary from the hourly roll-ups, with the raw profiles of the partial hours at its ends. */
  private async rollupSummary(
    query: SummaryQuery,
    h0: number | null,
    h1: number | null,
    limit: number,
  ): Promise<SummaryRow[]> {
    const { rollup: r, nullColumn, valueColumn } = ROLLUP_GROUPS[query.groupBy];
    // The group's key as the raw profiles have it (NULL rather than the flag and a default).
    const hourKey = nullColumn ? `if(${nullColumn} = 1, NULL, ${valueColumn})` : valueColumn;
    const b = query.bucketMs ? sqlInt(Math.floor(query.bucketMs)) : null;
    const bucket = (col: string) => (b ? `toInt64(intDiv(${col}, ${b}) * ${b})` : 'toInt64(0)');
    const hours = hourRange(h0, h1);
    const edges: string[] = [];
    if (query.from !== undefined && h0 !== null && query.from < h0)
      edges.push(`(t >= ${sqlInt(query.from)} AND t < ${sqlInt(h0)})`);
    if (query.to !== undefined && h1 !== null && h1 < query.to)
      edges.push(`(t >= ${sqlInt(h1)} AND t < ${sqlInt(query.to)})`);
    const rawKey = RAW_KEYS[query.groupBy];
    /** The roll-up rows and the raw partial hours as one source (extra conditions on each). */
    const source = (rolled: string, raw: string, rollupWhere: string, rawWhere: string) =>
      [
        // PREWHERE: the key columns are read first, and the large state columns only for the
        // rows of the keys wanted.
        `SELECT ${hourKey} AS key, ${bucket('hour')} AS bucket, ${rolled}
         FROM ${r.table}${rollupWhere ? ` PREWHERE ${rollupWhere}` : ''} WHERE ${hours || '1'}`,
        ...(edges.length
          ? [
              `SELECT ${rawKey} AS key, ${bucket('t')} AS bucket, ${raw}
               FROM profiles WHERE (${edges.join(' OR ')})${rawWhere ? ` AND ${rawWhere}` : ''} GROUP BY key, bucket`,
            ]
          : []),
      ].join('\n UNION ALL \n');
    // First the top groups by profile count, from counts alone (cheap); then the costly states
    // (uniq, t-digests) merged for those groups' keys only: a week of 2000 destinations merges
    // 50 × 168 states instead of 336,000.
    const top = await this.rows<{ key: string | number | null; bucket: string | number }>(
      `SELECT key, bucket, sum(c) AS profiles FROM (${source('finalizeAggregation(n) AS c', 'count() AS c', '', '')})
       GROUP BY key, bucket ORDER BY profiles DESC, key ASC NULLS FIRST LIMIT ${limit}`,
    );
    if (!top.length) return [];
    const literal = (k: string | number) => (typeof k === 'string' ? sqlString(k) : sqlInt(k));
    const keys = [...new Set(top.map((g) => g.key))];
    const values = keys.filter((k): k is string | number => k !== null);
    // (A tuple IN such as (keyNull, key) IN ((1, '')) misses rows on 18.16: plain conditions.)
    const rollupWhere = nullColumn
      ? [
          values.length
            ? `(${nullColumn} = 0 AND ${valueColumn} IN (${values.map(literal).join(', ')}))`
            : '',
          values.length < keys.length ? `${nullColumn} = 1` : '',
        ]
          .filter(Boolean)
          .join(' OR ')
      : `${valueColumn} IN (${values.map(literal).join(', ')})`;
    const rawWhere = [
      values.length ? `${rawKey} IN (${values.map(literal).join(', ')})` : '',
      values.length < keys.length ? `${rawKey} IS NULL` : '',
    ]
      .filter(Boolean)
      .join(' OR ');
    const rows = await this.rows<Record<string, unknown>>(
      `SELECT key, bucket, toFloat64(countMerge(n)) AS profiles, toFloat64(uniqMerge(u)) AS connections,
         ${SUMMED_COLUMNS.map((_c, i) => `toFloat64(sumMerge(s${i})) AS s${i}`).join(', ')},
         countMerge(rc) AS rn, avgMerge(ra) AS rttMean, quantilesTDigestMerge(0.5, 0.9, 0.95, 0.99)(rq) AS rq,
         countIfMerge(ec) AS en, avgIfMerge(ea) AS tteMean, quantilesTDigestIfMerge(0.5, 0.9)(eq) AS tq
       FROM (${source(ROLLUP_STATE_COLUMNS.join(', '), ROLLUP_STATES, `(${rollupWhere})`, `(${rawWhere})`)})
       GROUP BY key, bucket`,
    );
    // The groups of the first step, in its order (the second also made other buckets of those keys).
    const byGroup = new Map(rows.map((g) => [`${g['key']}\u0000${g['bucket']}`, g]));
    return top.flatMap((t) => {
      const g = byGroup.get(`${t.key}\u0000${t.bucket}`);
      return g ? [summaryRow(g, b !== null, true)] : [];
    });
  }

  async exporters(): Promise<ExporterRow[]> {
    // Aliases differ from the column names: ClickHouse would read an alias inside the aggregates.
    const rows = await this.rows<Record<string, unknown>>(
      `SELECT exporter AS e, argMax(transport, lastSeen) AS tr, argMax(address, lastSeen) AS a,
         argMax(port, lastSeen) AS p, min(lastSeen) AS fs, max(lastSeen) AS ls,
         toFloat64(sum(records)) AS r, toFloat64(sum(profiles)) AS pr, toFloat64(sum(flows)) AS fl,
         toFloat64(sum(lostRecords)) AS lr, toFloat64(sum(decodeErrors)) AS de,
         argMax(templateIds, lastSeen) AS ti
       FROM exporter_deltas GROUP BY exporter ORDER BY exporter`,
    );
    return rows.map((r) => ({
      exporter: r['e'] as string,
      transport: r['tr'] as string,
      address: (r['a'] as string | null) ?? null,
      port: (r['p'] as number | null) ?? null,
      firstSeen: Number(r['fs']),
      lastSeen: Number(r['ls']),
      records: r['r'] as number,
      profiles: r['pr'] as number,
      flows: r['fl'] as number,
      lostRecords: r['lr'] as number,
      decodeErrors: r['de'] as number,
      templateIds: JSON.parse(r['ti'] as string) as number[],
    }));
  }

  // ---- retention ----

  /** Day partitions of a table (their day numbers). */
  private async partitions(table: string): Promise<number[]> {
    const rows = await this.rows<{ partition: string }>(
      `SELECT DISTINCT partition FROM system.parts
       WHERE database = ${sqlString(this.database)} AND table = ${sqlString(table)} AND active`,
    );
    return rows.map((r) => Number(r.partition)).filter((d) => Number.isFinite(d));
  }

  /** Drops every day partition that ends at or before `beforeMs`; returns the rows they held. */
  async dropPartitionsBefore(beforeMs: number): Promise<number> {
    let dropped = 0;
    for (const { table } of AGED_TABLES) {
      for (const day of await this.partitions(table)) {
        if ((day + 1) * DAY_MS > beforeMs) continue;
        if (table === 'profiles' || table === 'flows') {
          const [c] = await this.rows<{ n: string | number }>(
            `SELECT count() AS n FROM ${table} WHERE _partition_id = ${sqlString(String(day))}`,
          );
          dropped += Number(c?.n ?? 0);
        }
        await this.client.command({ query: `ALTER TABLE ${table} DROP PARTITION ${day}` });
      }
    }
    return dropped;
  }

  private startRetention(retentionMs: number): void {
    const run = async () => {
      try {
        const n = await this.dropPartitionsBefore(Date.now() - retentionMs);
        if (n) this.log.info({ deleted: n }, 'retention dropped day partitions');
      } catch (err) {
        this.log.error({ err }, 'retention failed');
      }
    };
    this.retentionRun = (async () => {
      await this.connect().catch(() => {});
      if (this.version && hasTableTtl(this.version)) {
        // Rows past the retention go in merges too, not only by the hourly drop. Set only when
        // it differs: newer servers rewrite every part of a table whose TTL is modified, and
        // each collector start would do it again.
        const s = Math.ceil(retentionMs / 1000);
        for (const { table, time } of AGED_TABLES) {
          const [def] = await this.rows<{ e: string }>(
            `SELECT engine_full AS e FROM system.tables WHERE database = ${sqlString(this.database)} AND name = ${sqlString(table)}`,
          ).catch(() => []);
          if (def && (def.e.includes(`toIntervalSecond(${s})`) || def.e.includes(`INTERVAL ${s} SECOND`)))
            continue;
          await this.client
            .command({
              query: `ALTER TABLE ${table} MODIFY TTL toDateTime(intDiv(${time}, 1000)) + INTERVAL ${s} SECOND`,
            })
            .catch((err) => this.log.warn({ err, table }, 'cannot set the table TTL'));
        }
      }
      await run();
    })();
    this.retentionTimer = setInterval(() => {
      this.retentionRun = run();
    }, 3_600_000);
    this.retentionTimer.unref();
  }

  /**
   * Deletes at most `maxRows` rows older than `beforeMs`, oldest first (profiles, then flows),
   * as a mutation the server finishes before this returns: exact but costly (ClickHouse rewrites
   * the parts concerned), so the collector's retention drops day partitions instead.
   */
  async deleteOlderThan(beforeMs: number, maxRows: number): Promise<number> {
    if (!this.spool) throw new CollectorError('COL_ERR_STORE', 'the ClickHouse store is open read-only');
    await this.flush(30_000);
    const max = Math.max(1, Math.floor(maxRows));
    const before = sqlInt(beforeMs);
    let deleted = 0;
    for (const [table, time] of [
      ['profiles', 't'],
      ['flows', 'flowStartMilliseconds'],
    ] as const) {
      if (deleted >= max) break;
      const want = max - deleted;
      const keys = await this.rows<{ t: string; id: string }>(
        `SELECT t, id FROM ${table} WHERE ${time} < ${before} ORDER BY t, id LIMIT ${want}`,
      );
      if (!keys.length) continue;
      const last = keys[keys.length - 1]!;
      await this.mutate(
        table,
        `${time} < ${before} AND (t < ${sqlInt(BigInt(last.t))} OR (t = ${sqlInt(BigInt(last.t))} AND id <= ${sqlInt(BigInt(last.id))}))`,
      );
      deleted += keys.length;
    }
    return deleted;
  }

  /** Runs ALTER TABLE ... DELETE and waits until the server has applied it. */
  private async mutate(table: string, where: string): Promise<void> {
    await this.client.command({ query: `ALTER TABLE ${table} DELETE WHERE ${where}` });
    const deadline = Date.now() + 120_000;
    for (;;) {
      const [r] = await this.rows<{ n: string | number }>(
        `SELECT count() AS n FROM system.mutations
         WHERE database = ${sqlString(this.database)} AND table = ${sqlString(table)} AND is_done = 0`,
      );
      if (Number(r?.n ?? 0) === 0) return;
      if (Date.now() > deadline)
        throw new CollectorError(
          'COL_ERR_STORE',
          `ClickHouse did not finish deleting from ${table} in 120 s`,
        );
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  async sizeBytes(): Promise<number> {
    const [r] = await this.rows<{ n: string | number }>(
      `SELECT sum(bytes) AS n FROM system.parts WHERE database = ${sqlString(this.database)} AND active`,
    );
    return Number(r?.n ?? 0);
  }

  /** Tries to deliver what waits (up to closeTimeoutMs), keeps the rest in the spool, disconnects. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.retentionTimer) clearInterval(this.retentionTimer);
    await this.retentionRun;
    if (this.spool)
      await this.pushPending().catch((err) => this.log.error({ err }, 'ClickHouse spool refused a batch'));
    await this.spool?.close(this.options.closeTimeoutMs ?? 10_000);
    await this.client.close();
    await this.admin.close();
  }
}

/** Applies the migrations the database has not seen; concurrent collectors may race harmlessly. */
async function migrate(client: ClickHouseClient, database: string): Promise<void> {
  await client.command({
    query: `CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, appliedMilliseconds Int64)
      ENGINE = MergeTree ORDER BY version`,
  });
  const r = await client.query({
    query: 'SELECT max(version) AS v FROM schema_migrations',
    format: 'JSONEachRow',
  });
  const current = Number(((await r.json()) as { v: number | string }[])[0]?.v ?? 0);
  if (current > CLICKHOUSE_MIGRATIONS.length)
    throw new CollectorError(
      'COL_ERR_SCHEMA',
      `ClickHouse database ${database} has schema ${current}; this collector knows ${CLICKHOUSE_MIGRATIONS.length}`,
    );
  for (let v = current; v < CLICKHOUSE_MIGRATIONS.length; v++) {
    for (const query of CLICKHOUSE_MIGRATIONS[v]!) await client.command({ query });
    await client.command({
      query: `INSERT INTO schema_migrations (version, appliedMilliseconds) VALUES (${v + 1}, ${Date.now()})`,
    });
  }
}
