/**
 * Query latency of the collector's HTTP API over a large SQLite profile store (issue 3, "Speed":
 * p95 of `profiles/summary` and of filtered `profiles` queries over 10 M profiles, target <= 100 ms).
 *
 *   1. Fill: N synthetic profiles (default 10 M) through SqliteStore.insert in batches of 5000, in
 *      the order a collector would store them. 7 days of flowStartMilliseconds ending now (with a
 *      daily cycle), ~2000 destinations with zipf popularity (IPv4 and IPv6), 20 agent hosts,
 *      connections of 1-5 profiles (NEW..ESTABLISHED, UPDATEs, a final FINISHED/BROKEN/DESYNC;
 *      some UNREACHABLE), RTT per destination from a lognormal, time to establish on the
 *      establishing profile, destination ports 443/80/22/others. An existing --db holding >= N
 *      rows is reused as it is.
 *   2. Query: the real API (buildApi, listening on 127.0.0.1:0), one request at a time over HTTP
 *      (fetch, keep-alive), warm-up requests first, then >= R requests per query with varied
 *      parameters; latency = request sent to body fully received.
 *   3. Diagnosis: the SQL the store ran for each query (captured from better-sqlite3), its
 *      EXPLAIN QUERY PLAN, and for the summaries where the time goes: the grouping query, the
 *      percentile pass (SQL alone, then with rows handed to JS), the JS sort, and HTTP/JSON.
 *
 * With `--stores sqlite,clickhouse` (or `--store clickhouse`) the same profiles (same seed, same
 * end time) also go into a ClickHouse store: a clickhouse-server of its own (test/helpers) unless
 * --clickhouse-url names one, filled through ClickHouseStore.insertPacked in batches of
 * --ch-batch rows (100 000) and flushed; then, once the server's merges have settled, the same
 * queries with the same parameters through the same API, and a table per store plus one of
 * ratios. The ClickHouse diagnosis times each summary's SQL on the server (system.query_log:
 * duration, rows read, memory) and the same SQL without its percentile arrays.
 *
 * Usage: node dist/bench/collector-queries.js [--profiles N] [--db PATH] [--keep] [--layout rows|blocks]
 *          [--requests R] [--warmup W] [--resume] [--only NAME,...] [--no-diagnose]
 *          [--stores sqlite,clickhouse | --store clickhouse] [--clickhouse-url URL] [--ch-batch N]
 *   --layout     how the store keeps profiles (default rows; docs/storage.md). The SQL diagnosis
 *                (step 3) is for the rows layout only.
 *   --db PATH    database file (kept); default a temp dir, removed at the end unless --keep
 *   --requests   measured requests per query (default 40); --warmup: per query (default 3)
 *   --only       only the queries whose names contain one of these (comma-separated)
 *   --resume     with --db: results are saved to PATH.results.json after each step; continue from there
 *   --stores     the stores to fill and query, in this order (default sqlite)
 *   --clickhouse-url  http://host:port/database of a running server (kept; reused when it holds >= N
 *                profiles); default: a temporary server, removed at the end
 */
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import { buildApi } from '../collector/api/app.js';
import { ClickHouseStore } from '../collector/store/clickhouse-store.js';
import { packBatch, tablePackers } from '../collector/store/packed-batch.js';
import { SqliteStore } from '../collector/store/sqlite-store.js';
import type { ProfileRow, Store, SummaryGroup } from '../collector/store/types.js';
import { ClickHouseServer } from '../test/helpers/clickhouse-server.js';

type Layout = 'rows' | 'blocks';
type StoreKind = 'sqlite' | 'clickhouse';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const SPAN = 7 * DAY;
const BATCH = 5000;
const TARGET_P95_MS = 100;

// ---------------------------------------------------------------------------------------------
// Arguments

interface Args {
  profiles: number;
  db: string | null;
  keep: boolean;
  requests: number;
  warmup: number;
  diagnose: boolean;
  resume: boolean;
  /** Only the queries whose names contain one of these. */
  only: string[];
  layout: Layout;
  /** The stores to fill and query, in this order. */
  stores: StoreKind[];
  /** A running ClickHouse server's http://host:port/database; null: start one. */
  clickhouseUrl: string | null;
  /** Rows per ClickHouseStore.insertPacked call while filling. */
  chBatch: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    profiles: 10_000_000,
    db: null,
    keep: false,
    requests: 40,
    warmup: 3,
    diagnose: true,
    resume: false,
    only: [],
    layout: 'rows',
    stores: ['sqlite'],
    clickhouseUrl: null,
    chBatch: 100_000,
  };
  const num = (i: number, name: string, min: number) => {
    const v = Number(argv[i]);
    if (!Number.isSafeInteger(v) || v < min) throw new Error(`${name} needs an integer >= ${min}`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    switch (argv[i]) {
      case '--profiles':
        a.profiles = num(++i, '--profiles', 1000);
        break;
      case '--db':
        a.db = argv[++i] ?? null;
        if (!a.db) throw new Error('--db needs a path');
        break;
      case '--keep':
        a.keep = true;
        break;
      case '--requests':
        a.requests = num(++i, '--requests', 1);
        break;
      case '--warmup':
        a.warmup = num(++i, '--warmup', 0);
        break;
      case '--resume':
        a.resume = true;
        break;
      case '--only':
        a.only.push(...String(argv[++i] ?? '').split(','));
        break;
      case '--layout': {
        const l = argv[++i];
        if (l !== 'rows' && l !== 'blocks') throw new Error('--layout needs rows or blocks');
        a.layout = l;
        break;
      }
      case '--no-diagnose':
        a.diagnose = false;
        break;
      case '--store':
      case '--stores':
        a.stores = String(argv[++i] ?? '')
          .split(',')
          .map((s) => {
            if (s !== 'sqlite' && s !== 'clickhouse')
              throw new Error(`${argv[i - 1]}: ${s} is not sqlite or clickhouse`);
            return s;
          });
        break;
      case '--clickhouse-url':
        a.clickhouseUrl = argv[++i] ?? null;
        if (!a.clickhouseUrl) throw new Error('--clickhouse-url needs a URL');
        break;
      case '--ch-batch':
        a.chBatch = num(++i, '--ch-batch', 1000);
        break;
      default:
        throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  return a;
}

// ---------------------------------------------------------------------------------------------
// Random numbers (seeded: the same N gives the same database)

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    // mulberry32
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SEED = 0x6b7066;
let rand = rng(SEED);

/** Starts the random sequence again: every fill of N profiles, whatever the store, gets the same rows. */
function resetRandom(): void {
  rand = rng(SEED);
}

function normal(): number {
  const u = 1 - rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

/** Lognormal with this median and sigma (of the underlying normal). */
function lognormal(median: number, sigma: number): number {
  return median * Math.exp(sigma * normal());
}

function pick<T>(items: readonly T[], weights: readonly number[]): T {
  let u = rand() * weights.reduce((s, w) => s + w, 0);
  for (let i = 0; i < items.length; i++) {
    u -= weights[i]!;
    if (u < 0) return items[i]!;
  }
  return items[items.length - 1]!;
}

// ---------------------------------------------------------------------------------------------
// The synthetic world

interface Destination {
  address: string;
  ipVersion: 4 | 6;
  port: number;
  /** Base RTT, ms. */
  rtt: number;
}

interface Host {
  exporter: string;
  v4: string;
  v6: string;
  /** true: the agent exports meanLatencyMicroseconds, false: meanLatencyMilliseconds. */
  micro: boolean;
  /** Next socket-cookie-like flowId of this host (unique across hosts). */
  nextFlowId: number;
}

const DESTINATIONS = 2000;
const HOSTS = 20;
const ZIPF_S = 1.0;
const OTHER_PORTS = [8080, 8443, 5432, 3306, 6379, 853, 993, 25, 5222, 9092];

function makeDestinations(): Destination[] {
  const out: Destination[] = [];
  for (let r = 0; r < DESTINATIONS; r++) {
    // Canonical text (dotted quad, RFC 5952), as the API normalizes query addresses.
    const v6 = rand() < 0.3;
    const address = v6
      ? `2001:db8:${(r + 1).toString(16)}::${(1 + (r % 250)).toString(16)}`
      : `198.18.${r >> 8}.${r & 255}`;
    const port = pick([443, 80, 22, -1], [70, 15, 5, 10]);
    out.push({
      address,
      ipVersion: v6 ? 6 : 4,
      port: port === -1 ? OTHER_PORTS[Math.floor(rand() * OTHER_PORTS.length)]! : port,
      rtt: Math.min(800, Math.max(0.2, lognormal(25, 0.9))),
    });
  }
  return out;
}

function makeHosts(): Host[] {
  return Array.from({ length: HOSTS }, (_, h) => ({
    exporter: `udp:10.0.${h}.10:${40000 + h}`,
    v4: `10.0.${h}.10`,
    v6: `2001:db8:ffff:${(h + 1).toString(16)}::10`,
    micro: h % 5 !== 0,
    nextFlowId: (h + 1) * 2 ** 40 + Math.floor(rand() * 1e6),
  }));
}

/** Cumulative zipf weights of destination ranks. */
function zipfCdf(n: number, s: number): Float64Array {
  const c = new Float64Array(n);
  let acc = 0;
  for (let r = 0; r < n; r++) {
    acc += 1 / (r + 1) ** s;
    c[r] = acc;
  }
  for (let r = 0; r < n; r++) c[r]! /= acc;
  return c;
}

function sampleCdf(cdf: Float64Array): number {
  const u = rand();
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cdf[mid]! < u) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Profiles per connection: 1..5, mean 2.75. */
const PROFILE_COUNTS = [1, 2, 3, 4, 5] as const;
const PROFILE_COUNT_WEIGHTS = [20, 25, 25, 15, 15];
const MEAN_PROFILES = 2.75;

/**
 * Generates connections in start-time order, each as its profiles. Connection start times follow
 * a Poisson process whose rate has a daily cycle (x0.5 at night, x1.5 at the peak).
 */
class Generator {
  private readonly dests = makeDestinations();
  private readonly hosts = makeHosts();
  private readonly cdf = zipfCdf(DESTINATIONS, ZIPF_S);
  private readonly meanGap: number;
  private t: number;
  private pending: ProfileRow[] = [];
  connections = 0;

  constructor(
    private readonly start: number,
    private readonly end: number,
    total: number,
  ) {
    this.meanGap = (end - start) / (total / MEAN_PROFILES);
    this.t = start;
  }

  /** Fills `out` with exactly `n` profiles. */
  next(n: number, out: ProfileRow[]): void {
    out.length = 0;
    while (out.length < n) {
      if (this.pending.length === 0) this.connection();
      const take = Math.min(n - out.length, this.pending.length);
      for (let i = 0; i < take; i++) out.push(this.pending[i]!);
      this.pending = this.pending.slice(take);
    }
  }

  private connection(): void {
    const rate = 1 + 0.5 * Math.sin((2 * Math.PI * (this.t % DAY)) / DAY - Math.PI / 2);
    this.t += (-Math.log(1 - rand()) * this.meanGap) / rate;
    if (this.t >= this.end - 1000) this.t = this.start + rand() * (this.end - this.start - 1000);
    const t0 = Math.floor(this.t);
    const d = this.dests[sampleCdf(this.cdf)]!;
    const h = this.hosts[Math.floor(rand() * HOSTS)]!;
    const flowId = h.nextFlowId++;
    this.connections++;
    const port = rand() < 0.9 ? d.port : pick([443, 80, 22, 8080], [5, 3, 1, 1]);
    const src = d.ipVersion === 6 ? h.v6 : h.v4;
    const sport = 32768 + Math.floor(rand() * 28232);
    const unreachable = rand() < 0.03;
    const n = unreachable ? 1 : pick(PROFILE_COUNTS, PROFILE_COUNT_WEIGHTS);
    // Connection duration: median 4 s, a heavy tail, never past the end of the data.
    const duration = Math.min(
      this.end - 1 - t0,
      unreachable ? 3000 + Math.floor(rand() * 60_000) : Math.max(5, Math.round(lognormal(4000, 2))),
    );
    const finalState = unreachable ? 6 : pick([4, 5, 7], [88, 11, 1]);
    let cursor = t0;
    for (let j = 0; j < n; j++) {
      const last = j === n - 1;
      const segEnd = last ? t0 + duration : cursor + Math.floor((duration * (0.5 + rand())) / n);
      const segStart = cursor;
      const segEndC = Math.max(segStart, Math.min(segEnd, t0 + duration));
      const rtt = unreachable ? null : d.rtt * Math.exp(0.25 * normal());
      const tte =
        j === 0 && !unreachable
          ? Math.max(1, Math.round(rtt! * (1.05 + 0.2 * rand()) + (rand() < 0.01 ? 1000 : 0)))
          : null;
      const octets = unreachable ? 0 : Math.round(lognormal(20_000, 2));
      const retrans = unreachable ? 0 : rand() < 0.8 ? 0 : Math.floor(lognormal(2, 1));
      // A literal with every property (no spread): one hidden class, fast reads in the store's copier.
      this.pending.push({
        exporter: h.exporter,
        observationDomainId: 1,
        templateId: 47561,
        receivedMilliseconds: segEndC + 200 + Math.floor(rand() * 1000),
        extra: null,
        flowId,
        flowStartMilliseconds: segStart,
        flowEndMilliseconds: segEndC,
        flowStartReason: j === 0 ? 1 : j === 1 ? 2 : 3,
        flowEndReason: last ? finalState : j === 0 ? 2 : 3,
        ipVersion: d.ipVersion,
        sourceAddress: src,
        destinationAddress: d.address,
        sourceTransportPort: sport,
        destinationTransportPort: port,
        transferredOctetTotalCount: octets,
        receivedOctetTotalCount: unreachable ? 0 : Math.round(lognormal(2000, 1.5)),
        retransmittedPacketTotalCount: retrans,
        meanLatencyMilliseconds: rtt !== null && !h.micro ? Math.max(1, Math.round(rtt)) : null,
        meanLatencyMicroseconds: rtt !== null && h.micro ? Math.round(rtt * 1000) : null,
        duplicatePacketTotalCount: retrans > 0 && rand() < 0.3 ? 1 : 0,
        stallCount: rand() < 0.05 ? 1 + Math.floor(rand() * 3) : 0,
        reorderingPacketCount: rand() < 0.1 ? Math.floor(rand() * 20) : 0,
        timeToEstablishMilliseconds: tte,
        synRetransmissionCount: j === 0 ? (unreachable ? 3 : tte !== null && tte >= 1000 ? 1 : 0) : null,
        maximumIpTotalLength: 1500,
      });
      cursor = segEndC;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Fill

function existingRows(path: string): number {
  if (!existsSync(path)) return 0;
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const t = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'profiles'").get();
    if (!t) return 0;
    const blocks = db
      .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'profile_blocks'")
      .get();
    const inBlocks = blocks
      ? ((db.prepare('SELECT total(n) AS n FROM profile_blocks').get() as { n: number }).n as number)
      : 0;
    if (inBlocks > 0) return inBlocks;
    return ((db.prepare('SELECT max(id) AS n FROM profiles').get() as { n: number | null }).n ?? 0) as number;
  } finally {
    db.close();
  }
}

interface FillResult {
  rows: number;
  seconds: number;
  /** Time the filler waited for the store (SQLite: inside insert; ClickHouse: insertPacked, back-pressure, flush). */
  insertSeconds: number;
  connections: number;
  /** End of the generated data (absent in fills recorded before it was): another store gets the same rows. */
  end?: number;
}

async function fill(path: string, n: number, layout: Layout, end: number): Promise<FillResult> {
  const store = new SqliteStore({ path, layout });
  resetRandom();
  const gen = new Generator(end - SPAN, end, n);
  const batch: ProfileRow[] = [];
  const t0 = performance.now();
  let insertMs = 0;
  let done = 0;
  let lastReport = t0;
  let lastDone = 0;
  while (done < n) {
    gen.next(Math.min(BATCH, n - done), batch);
    const i0 = performance.now();
    await store.insert({ profiles: batch, flows: [], exporters: [] });
    const now = performance.now();
    insertMs += now - i0;
    done += batch.length;
    if (now - lastReport >= 5000) {
      const rate = ((done - lastDone) / (now - lastReport)) * 1000;
      const eta = (n - done) / rate;
      console.log(
        `  fill ${fmtInt(done)}/${fmtInt(n)} (${((100 * done) / n).toFixed(1)}%)  ${fmtInt(rate)} rows/s now, ` +
          `${fmtInt((done / (now - t0)) * 1000)} overall, ETA ${eta.toFixed(0)} s`,
      );
      lastReport = now;
      lastDone = done;
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  await store.close();
  return { rows: done, seconds, insertSeconds: insertMs / 1000, connections: gen.connections, end };
}

// ---------------------------------------------------------------------------------------------
// SQL capture: the statements the store runs (text and arguments), to explain and time them

interface Captured {
  sql: string;
  args: unknown[];
}

let capturing: Captured[] | null = null;

function installCapture(): void {
  const probe = new Database(':memory:');
  const proto = Object.getPrototypeOf(probe.prepare('SELECT 1')) as Record<
    string,
    (...args: unknown[]) => unknown
  >;
  probe.close();
  for (const method of ['all', 'iterate', 'get']) {
    const orig = proto[method]!;
    proto[method] = function (this: { source: string }, ...args: unknown[]) {
      capturing?.push({ sql: this.source, args });
      return orig.apply(this, args);
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Measurement

interface Stat {
  name: string;
  n: number;
  p50: number;
  p95: number;
  max: number;
  items: number;
  bytes: number;
  /** Index of the slowest request. */
  worst: number;
}

/** Nearest-rank percentile of an ascending array. */
function pct(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1]!;
}

function stat(name: string, ms: number[], items: number[], bytes: number[]): Stat {
  const s = [...ms].sort((a, b) => a - b);
  const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  return {
    worst: ms.indexOf(s[s.length - 1]!),
    name,
    n: s.length,
    p50: pct(s, 50),
    p95: pct(s, 95),
    max: s[s.length - 1]!,
    items: avg(items),
    bytes: avg(bytes),
  };
}

interface Reply {
  ms: number;
  body: { items?: unknown[]; nextCursor?: string | null };
  bytes: number;
}

async function get(base: string, path: string): Promise<Reply> {
  const t0 = performance.now();
  const res = await fetch(base + path);
  const text = await res.text();
  const ms = performance.now() - t0;
  if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${text.slice(0, 300)}`);
  return { ms, body: JSON.parse(text) as Reply['body'], bytes: text.length };
}

/** One kind of query: the path of its i-th request (i < 0: warm-up). */
interface QueryKind {
  name: string;
  path: (i: number) => string;
}

interface Params {
  /** End of the data (max flowStartMilliseconds + 1). */
  now: number;
  /** Destinations seen in the last day, most profiles first. */
  destinations: string[];
  sources: string[];
  flowIds: number[];
}

/** Destination ranks spread log-uniformly over the list: popular and rare ones alike. */
function spreadRank(i: number, count: number): number {
  const u = (((i * 0.618034) % 1) + 1) % 1;
  return Math.min(count - 1, Math.floor(Math.exp(u * Math.log(count))) - 1);
}

function queryKinds(p: Params): QueryKind[] {
  const summary = (group: SummaryGroup, span: number, step: number, bucket?: string) => (i: number) => {
    const to = p.now - (i >= 0 ? i : 50 - i) * step;
    const b = bucket ? `&bucket=${bucket}` : '';
    return `/api/v1/profiles/summary?groupBy=${group}&from=${to - span}&to=${to}${b}`;
  };
  const dest = (i: number) => p.destinations[spreadRank(i + 7, p.destinations.length)]!;
  const kinds: QueryKind[] = [
    { name: 'summary destination, last 1 h', path: summary('destination', HOUR, 60_000) },
    { name: 'summary destination, last 1 h, bucket=1h', path: summary('destination', HOUR, 60_000, '1h') },
    { name: 'summary destination, last 24 h', path: summary('destination', DAY, 300_000) },
    { name: 'summary destination, last 24 h, bucket=1h', path: summary('destination', DAY, 300_000, '1h') },
    { name: 'summary destination, last 7 d', path: summary('destination', SPAN, 300_000) },
    { name: 'summary destination, last 7 d, bucket=1h', path: summary('destination', SPAN, 300_000, '1h') },
    { name: 'summary ipVersion, last 24 h, bucket=1h', path: summary('ipVersion', DAY, 300_000, '1h') },
    {
      name: 'profiles destinationAddress=X, last 24 h',
      path: (i) => {
        const to = p.now - Math.abs(i) * 60_000;
        return `/api/v1/profiles?destinationAddress=${dest(i)}&from=${to - DAY}&to=${to}&limit=100`;
      },
    },
    {
      name: 'profiles address=X',
      path: (i) =>
        `/api/v1/profiles?address=${i % 3 === 2 ? p.sources[Math.abs(i) % p.sources.length] : dest(i)}&limit=100`,
    },
    {
      name: 'profiles port=443&endState=FINISHED',
      path: (i) =>
        `/api/v1/profiles?port=443&endState=FINISHED&to=${p.now - Math.abs(i) * 600_000}&limit=100`,
    },
    {
      name: 'connections/:flowId',
      path: (i) => `/api/v1/connections/${p.flowIds[(i + p.flowIds.length) % p.flowIds.length]}`,
    },
  ];
  return kinds;
}

const WALK_PAGES = 5;

/** Walks 5 pages of `port=443&from=<24 h before to>`; returns the page latencies. */
async function walk(base: string, p: Params, i: number): Promise<{ pages: Reply[] }> {
  const to = p.now - Math.abs(i) * 3_600_000;
  const q = `/api/v1/profiles?port=443&from=${to - DAY}&to=${to}&limit=100`;
  const pages: Reply[] = [];
  let cursor: string | null | undefined = null;
  for (let k = 0; k < WALK_PAGES; k++) {
    const r = await get(base, cursor ? `${q}&cursor=${encodeURIComponent(cursor)}` : q);
    pages.push(r);
    cursor = r.body.nextCursor;
    if (!cursor) break;
  }
  return { pages };
}

// ---------------------------------------------------------------------------------------------
// Output helpers

function fmtInt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** Milliseconds, without unit: 1 decimal below 100 ms, whole ms with separators above. */
function fmtMs(ms: number): string {
  if (Number.isNaN(ms)) return '';
  return ms < 100 ? ms.toFixed(1) : fmtInt(ms);
}

function fmtBytes(b: number): string {
  if (b >= 2 ** 30) return `${(b / 2 ** 30).toFixed(2)} GiB`;
  if (b >= 2 ** 20) return `${(b / 2 ** 20).toFixed(1)} MiB`;
  if (b >= 2 ** 10) return `${(b / 2 ** 10).toFixed(1)} KiB`;
  return `${b} B`;
}

function table(header: string[], rows: string[][], right: boolean[]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (right[i] ? c.padStart(w[i]!) : c.padEnd(w[i]!))).join('  ');
  return [line(header), w.map((x) => '-'.repeat(x)).join('  '), ...rows.map(line)].join('\n');
}

function median(xs: number[]): number {
  return pct(
    [...xs].sort((a, b) => a - b),
    50,
  );
}

// ---------------------------------------------------------------------------------------------
// Diagnosis

function explain(db: Database.Database, c: Captured): string {
  const rows = db.prepare(`EXPLAIN QUERY PLAN ${c.sql}`).all(...(c.args as unknown[])) as {
    id: number;
    parent: number;
    detail: string;
  }[];
  const depth = new Map<number, number>([[0, 0]]);
  return rows
    .map((r) => {
      const d = (depth.get(r.parent) ?? 0) + 1;
      depth.set(r.id, d);
      return `${'  '.repeat(d)}${r.detail}`;
    })
    .join('\n');
}

function timeIt(f: () => void, runs: number): number {
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    f();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

async function timeItAsync(f: () => Promise<unknown>, runs: number): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await f();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}

/** What a run has measured so far: saved after each step, so that `--resume` continues an interrupted run. */
interface Saved {
  key: string;
  stats: Record<string, Stat>;
  plans: Record<string, string>;
  breakdown: Record<string, string[]>;
}

async function diagnose(
  path: string,
  base: string,
  store: SqliteStore,
  kinds: QueryKind[],
  stats: Map<string, Stat>,
  saved: Saved,
  save: () => void,
): Promise<void> {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  db.pragma('cache_size = -65536');
  for (const k of kinds) {
    if (saved.plans[k.name] !== undefined && saved.breakdown[k.name]) continue;
    const t0 = performance.now();
    const st = stats.get(k.name);
    const path = k.path(st?.worst ?? 0);
    capturing = [];
    await get(base, path);
    const c = capturing.filter((x) => /FROM (profiles|flows)\b/.test(x.sql));
    capturing = null;
    const plan = [`-- ${k.name}: ${path}`];
    for (const x of c) {
      const sql = x.sql.replace(/\s+/g, ' ');
      plan.push(`  ${sql.slice(0, 240)}${sql.length > 240 ? ' ...' : ''}`, explain(db, x));
    }

    // Slow queries (seconds each) get one run per part, the others the median of 3.
    const runs = (st?.max ?? 0) > 3000 ? 1 : 3;
    const http = await timeItAsync(() => get(base, path), runs);
    const url = new URL(base + path);
    let direct = Number.NaN;
    if (k.name.startsWith('summary')) {
      const q = Object.fromEntries(url.searchParams);
      const bucket = q.bucket === '1h' ? HOUR : undefined;
      direct = await timeItAsync(
        () =>
          store.summary({
            groupBy: q.groupBy as SummaryGroup,
            from: Number(q.from),
            to: Number(q.to),
            limit: 50,
            ...(bucket ? { bucketMs: bucket } : {}),
          }),
        runs,
      );
    }
    const group = c[0];
    const values = c[1];
    const groupMs = group ? timeIt(() => db.prepare(group.sql).all(...group.args), runs) : Number.NaN;
    let valuesSql = Number.NaN;
    let valuesJs = Number.NaN;
    if (values && k.name.startsWith('summary')) {
      valuesSql = timeIt(
        () => db.prepare(`SELECT count(*), sum(rtt), sum(tte) FROM (${values.sql})`).get(...values.args),
        runs,
      );
      valuesJs = timeIt(() => {
        let s = 0;
        for (const v of db.prepare(values.sql).iterate(...values.args) as Iterable<{ rtt: number | null }>)
          s += v.rtt ?? 0;
        return s;
      }, runs);
    }
    saved.plans[k.name] = plan.join('\n');
    saved.breakdown[k.name] = [
      k.name,
      fmtMs(st?.max ?? Number.NaN),
      fmtMs(http),
      fmtMs(direct),
      fmtMs(groupMs),
      fmtMs(valuesSql),
      fmtMs(valuesJs),
      Number.isNaN(direct) ? '' : fmtMs(Math.max(0, direct - groupMs - valuesJs)),
      Number.isNaN(direct) ? '' : fmtMs(Math.max(0, http - direct)),
    ];
    save();
    console.log(`  diagnosed ${k.name} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  }

  console.log('\n== Sizes (dbstat) ==');
  const sizes = db
    .prepare(
      "SELECT name, SUM(pgsize) AS bytes FROM dbstat WHERE aggregate = TRUE GROUP BY name HAVING name IN ('profiles', 'profiles_time', 'profiles_flow') ORDER BY bytes DESC",
    )
    .all() as { name: string; bytes: number }[];
  for (const s of sizes) console.log(`  ${s.name.padEnd(16)} ${fmtBytes(s.bytes)}`);
  db.close();

  console.log('\n== Query plans (the SQL the store ran for the slowest request of each query) ==');
  for (const k of kinds) console.log(`\n${saved.plans[k.name]}`);

  console.log(
    '\n== Where the time goes (ms; the slowest request of each query, median of 3 runs, 1 run when > 3 s) ==',
  );
  console.log(
    table(
      [
        'query',
        'slowest (table)',
        'HTTP',
        'store.summary',
        'SQL #1 (groups / page)',
        'SQL #2 values, in SQL',
        '#2 rows to JS',
        'JS: filter, sort, pct',
        'HTTP+JSON',
      ],
      kinds.map((k) => saved.breakdown[k.name]!),
      [false, true, true, true, true, true, true, true, true],
    ),
  );
  console.log(
    '  SQL #1: the statement alone on a second connection. "#2 values, in SQL": the percentile query wrapped in\n' +
      '  SELECT count(*) (SQLite work only); "#2 rows to JS": iterated into JS objects. JS = store.summary - #1 - #2 to JS.',
  );
}

// ---------------------------------------------------------------------------------------------
// Measurement through the API (the same for every store)

const WALK_PAGE = 'profiles port=443, last 24 h: 5 pages, per page';
const WALK_WHOLE = '  ... the whole 5-page walk';

/** Times every query kind and the cursor walk; resumes from `saved`, saving after each step. */
async function measure(
  base: string,
  args: Args,
  kinds: QueryKind[],
  params: Params,
  saved: Saved,
  save: () => void,
): Promise<Map<string, Stat>> {
  const stats = new Map<string, Stat>();
  for (const k of kinds) {
    const done = saved.stats[k.name];
    if (done) {
      stats.set(k.name, done);
      console.log(`  ${k.name}: p50 ${fmtMs(done.p50)} ms, p95 ${fmtMs(done.p95)} ms (resumed)`);
      continue;
    }
    const t0 = performance.now();
    for (let i = 1; i <= args.warmup; i++) await get(base, k.path(-i));
    const ms: number[] = [];
    const items: number[] = [];
    const bytes: number[] = [];
    for (let i = 0; i < args.requests; i++) {
      const r = await get(base, k.path(i));
      ms.push(r.ms);
      items.push(r.body.items?.length ?? 0);
      bytes.push(r.bytes);
    }
    const s = stat(k.name, ms, items, bytes);
    stats.set(k.name, s);
    saved.stats[k.name] = s;
    save();
    console.log(
      `  ${k.name}: p50 ${fmtMs(s.p50)} ms, p95 ${fmtMs(s.p95)} ms (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
    );
  }
  if (saved.stats[WALK_PAGE] && saved.stats[WALK_WHOLE]) {
    stats.set(WALK_PAGE, saved.stats[WALK_PAGE]);
    stats.set(WALK_WHOLE, saved.stats[WALK_WHOLE]);
  } else {
    const t0 = performance.now();
    for (let i = 1; i <= args.warmup; i++) await walk(base, params, -i);
    const pageMs: number[] = [];
    const walkMs: number[] = [];
    const items: number[] = [];
    const bytes: number[] = [];
    const walkItems: number[] = [];
    for (let i = 0; i < args.requests; i++) {
      const w = await walk(base, params, i);
      let total = 0;
      let n = 0;
      for (const p of w.pages) {
        pageMs.push(p.ms);
        items.push(p.body.items?.length ?? 0);
        bytes.push(p.bytes);
        total += p.ms;
        n += p.body.items?.length ?? 0;
      }
      walkMs.push(total);
      walkItems.push(n);
    }
    const perPage = stat(WALK_PAGE, pageMs, items, bytes);
    const whole = stat(WALK_WHOLE, walkMs, walkItems, [0]);
    stats.set(perPage.name, perPage);
    stats.set(whole.name, whole);
    saved.stats[WALK_PAGE] = perPage;
    saved.stats[WALK_WHOLE] = whole;
    save();
    console.log(
      `  cursor walk: page p95 ${fmtMs(perPage.p95)} ms, walk p95 ${fmtMs(whole.p95)} ms (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
    );
  }
  return stats;
}

function latencyTable(stats: Map<string, Stat>): string {
  return table(
    ['query', 'n', 'p50 ms', 'p95 ms', 'max ms', 'target', 'rows/reply', 'reply size'],
    [...stats.values()].map((s) => [
      s.name,
      String(s.n),
      fmtMs(s.p50),
      fmtMs(s.p95),
      fmtMs(s.max),
      s.name.startsWith('  ...') ? '' : s.p95 <= TARGET_P95_MS ? 'ok' : 'MISSED',
      s.items.toFixed(0),
      s.bytes ? fmtBytes(Math.round(s.bytes)) : '',
    ]),
    [false, true, true, true, true, false, true, true],
  );
}

/** Starts the API over a store on 127.0.0.1:0; returns its base URL and a way to stop it. */
async function serveApi(store: Store): Promise<{ base: string; close: () => Promise<void> }> {
  const app = await buildApi({ store, log: pino({ level: 'silent' }) });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const addr = app.server.address();
  if (!addr || typeof addr === 'string') throw new Error('no listening address');
  return { base: `http://127.0.0.1:${addr.port}`, close: () => app.close() };
}

/** What one store's run measured, for the side-by-side tables. */
interface StoreRun {
  label: string;
  profiles: number;
  stats: Map<string, Stat>;
  fill: FillResult | null;
  sizeBytes: number;
  /** Parameters of the queries (the next store reuses them when its data ends at the same time). */
  params: Params;
  /** End of the generated data (Date.now() of the fill). */
  end: number | null;
}

// ---------------------------------------------------------------------------------------------
// SQLite

async function runSqlite(args: Args, end: number, shared: Params | null): Promise<StoreRun> {
  const dir = args.db ? null : mkdtempSync(join(tmpdir(), 'kpiflow-bench-'));
  const path = args.db ?? join(dir!, 'profiles.db');
  console.log(`\n### SQLite: ${fmtInt(args.profiles)} profiles, layout ${args.layout}, db ${path}`);

  let fillResult: FillResult | null = null;
  let reused = false;
  const have = existingRows(path);
  if (have >= args.profiles) {
    console.log(`reusing ${path}: ${fmtInt(have)} profiles already stored`);
    // The fill figures of the run that filled it, when that run recorded them.
    try {
      fillResult = JSON.parse(readFileSync(`${path}.fill.json`, 'utf8')) as FillResult;
      reused = true;
    } catch {
      fillResult = null;
    }
  } else if (have > 0) {
    throw new Error(
      `${path} holds ${have} profiles, fewer than ${args.profiles}: remove it or pass --profiles ${have}`,
    );
  } else {
    console.log(`filling in batches of ${BATCH} ...`);
    fillResult = await fill(path, args.profiles, args.layout, end);
    writeFileSync(`${path}.fill.json`, JSON.stringify(fillResult));
    console.log(
      `filled ${fmtInt(fillResult.rows)} profiles (${fmtInt(fillResult.connections)} connections) in ${fillResult.seconds.toFixed(1)} s: ` +
        `${fmtInt(fillResult.rows / fillResult.seconds)} rows/s overall, ${fmtInt(fillResult.rows / fillResult.insertSeconds)} rows/s in SqliteStore.insert`,
    );
  }

  // A running collector has its recent pages cached: read the file once so that a reused database
  // (or one whose pages were evicted) is not measured from disk.
  {
    const t0 = performance.now();
    const fd = openSync(path, 'r');
    const buf = Buffer.allocUnsafe(64 << 20);
    let total = 0;
    for (let n = readSync(fd, buf, 0, buf.length, null); n > 0; n = readSync(fd, buf, 0, buf.length, null))
      total += n;
    closeSync(fd);
    console.log(
      `page cache warmed: read ${fmtBytes(total)} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
  }

  installCapture();
  const store = new SqliteStore({ path, layout: args.layout, rollupIntervalMs: 0 });
  if (args.layout === 'blocks') {
    // A running collector rolls up each hour once it has ended; a fresh fill has none yet.
    const t0 = performance.now();
    const built = await store.buildRollups();
    const s = (performance.now() - t0) / 1000;
    if (built)
      console.log(
        `roll-ups: ${built} hours rolled up in ${s.toFixed(1)} s (${((s / built) * 1000).toFixed(0)} ms per hour of data)`,
      );
  }
  const sizeBytes = await store.sizeBytes();
  const meta = new Database(path, { readonly: true, fileMustExist: true });
  const blocks = args.layout === 'blocks';
  // Profiles are clustered by t (schema 2): every lookup here goes by t, not id. In blocks, the
  // zone maps give the time span and the store itself picks destinations and sample rows.
  const span = blocks
    ? (meta.prepare('SELECT max(tmax) AS maxT, min(tmin) AS minT FROM profile_blocks').get() as {
        maxT: number;
        minT: number;
      })
    : (meta.prepare('SELECT max(t) AS maxT, min(t) AS minT FROM profiles').get() as {
        maxT: number;
        minT: number;
      });
  const { maxT, minT } = span;
  const maxId =
    (meta.prepare(`SELECT value AS n FROM meta WHERE key = 'nextProfileId'`).get() as { n: number }).n - 1;
  const now = maxT + 1;
  let params: Params;
  if (shared && shared.now === now) {
    params = shared;
    meta.close();
  } else {
    const destinations = blocks
      ? (await store.summary({ groupBy: 'destination', from: now - DAY, to: now, limit: 1_000_000 }))
          .filter((g) => g.key !== null)
          .map((g) => String(g.key))
      : (
          meta
            .prepare(
              'SELECT destinationAddress AS a, count(*) AS n FROM profiles WHERE t >= ? GROUP BY 1 ORDER BY 2 DESC',
            )
            .all(now - DAY) as { a: string }[]
        ).map((r) => r.a);
    const sample = meta.prepare('SELECT flowId, sourceAddress FROM profiles WHERE t >= ? ORDER BY t LIMIT 1');
    const sampleAt = async (t: number) =>
      blocks
        ? ((await store.profiles({ from: t }, { limit: 1, order: 'asc' })).items[0] as unknown as
            | { flowId: number; sourceAddress: string }
            | undefined)
        : (sample.get(t) as { flowId: number; sourceAddress: string } | undefined);
    params = await sampleParams(now, minT, maxT, destinations, sampleAt);
    meta.close();
  }

  const api = await serveApi(store);
  const base = api.base;
  console.log(
    `API on ${base}; data ends ${new Date(now).toISOString()}, ${params.destinations.length} destinations in the last 24 h; ` +
      `${args.warmup} warm-up + ${args.requests} measured requests per query, one at a time`,
  );

  const kinds = selectedKinds(args, params);
  const resultsPath = `${path}.results.json`;
  const runKey = `${maxId}/${now}/${args.requests}/${args.warmup}`;
  let saved: Saved = { key: runKey, stats: {}, plans: {}, breakdown: {} };
  if (args.resume) {
    try {
      const s = JSON.parse(readFileSync(resultsPath, 'utf8')) as Saved;
      if (s.key === runKey) saved = s;
      else console.log(`${resultsPath} is from another database or settings: starting over`);
    } catch {
      // Nothing to resume.
    }
  }
  const save = () => {
    if (args.db) writeFileSync(resultsPath, JSON.stringify(saved));
  };
  const stats = await measure(base, args, kinds, params, saved, save);

  console.log(
    `\n== SQLite: API latency over ${fmtInt(maxId)} profiles, layout ${args.layout} (db ${fmtBytes(sizeBytes)}; target p95 <= ${TARGET_P95_MS} ms) ==`,
  );
  console.log(latencyTable(stats));
  if (fillResult) {
    console.log(
      `fill${reused ? ' (recorded by the run that filled this database)' : ''}: ${fmtInt(fillResult.rows)} profiles in ${fillResult.seconds.toFixed(1)} s = ${fmtInt(fillResult.rows / fillResult.seconds)} rows/s ` +
        `(${fmtInt(fillResult.rows / fillResult.insertSeconds)} rows/s inside SqliteStore.insert, batches of ${BATCH})`,
    );
  }
  console.log(`db size: ${fmtBytes(sizeBytes)} (${(sizeBytes / maxId).toFixed(0)} bytes/profile)`);

  if (args.diagnose && blocks) console.log('(no SQL diagnosis for the blocks layout: its queries run in JS)');
  else if (args.diagnose) await diagnose(path, base, store, kinds, stats, saved, save);

  await api.close();
  await store.close();
  if (dir && !args.keep) rmSync(dir, { recursive: true, force: true });
  else console.log(`database kept: ${path}`);
  return {
    label: `sqlite/${args.layout}`,
    profiles: maxId,
    stats,
    fill: fillResult,
    sizeBytes,
    params,
    end: fillResult?.end ?? null,
  };
}

/** The queries' parameters: destinations as given, and 400 sample connections spread over the data. */
async function sampleParams(
  now: number,
  minT: number,
  maxT: number,
  destinations: string[],
  sampleAt: (t: number) => Promise<{ flowId: number; sourceAddress: string } | undefined>,
): Promise<Params> {
  const pr = rng(42);
  const flowIds: number[] = [];
  const sources = new Set<string>();
  while (flowIds.length < 400) {
    const r = await sampleAt(minT + Math.floor(pr() * (maxT - minT)));
    if (!r) continue;
    flowIds.push(r.flowId);
    sources.add(r.sourceAddress);
  }
  return { now, destinations, sources: [...sources], flowIds };
}

function selectedKinds(args: Args, params: Params): QueryKind[] {
  return queryKinds(params).filter(
    (k) => args.only.length === 0 || args.only.some((o) => k.name.includes(o)),
  );
}

// ---------------------------------------------------------------------------------------------
// ClickHouse

/** One statement over ClickHouse's HTTP interface; `settings` go in the query string. */
async function chSql(origin: string, sql: string, settings: Record<string, string> = {}): Promise<string> {
  const r = await fetch(`${origin}/?${new URLSearchParams(settings)}`, { method: 'POST', body: sql });
  const body = await r.text();
  if (!r.ok) throw new Error(`ClickHouse: ${body.trim().slice(0, 500)}`);
  return body;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function fillClickHouse(store: ClickHouseStore, n: number, batchRows: number, end: number) {
  const packers = tablePackers();
  resetRandom();
  const gen = new Generator(end - SPAN, end, n);
  const batch: ProfileRow[] = [];
  const t0 = performance.now();
  let storeMs = 0;
  // Inside insertPacked (TabSeparated text built on this thread) and waiting for ClickHouse.
  let insertMs = 0;
  let done = 0;
  let lastReport = t0;
  let lastDone = 0;
  while (done < n) {
    gen.next(Math.min(batchRows, n - done), batch);
    const packed = packBatch({ profiles: batch, flows: [], exporters: [] }, packers.profiles, packers.flows);
    const i0 = performance.now();
    await store.insertPacked(packed);
    insertMs += performance.now() - i0;
    // insertPacked only queues: keep at most two batches waiting, so that they stay in memory
    // (past four the spool writes files, past 1 GiB of files it refuses batches).
    while ((store.backlog()?.pendingBatches ?? 0) > 2) await sleep(5);
    const now = performance.now();
    storeMs += now - i0;
    done += batch.length;
    if (now - lastReport >= 5000) {
      const rate = ((done - lastDone) / (now - lastReport)) * 1000;
      console.log(
        `  fill ${fmtInt(done)}/${fmtInt(n)} (${((100 * done) / n).toFixed(1)}%)  ${fmtInt(rate)} rows/s now, ` +
          `${fmtInt((done / (now - t0)) * 1000)} overall, ETA ${((n - done) / rate).toFixed(0)} s`,
      );
      lastReport = now;
      lastDone = done;
    }
  }
  const f0 = performance.now();
  if (!(await store.flush(600_000))) throw new Error('ClickHouse did not take the fill in 10 min');
  storeMs += performance.now() - f0;
  const b = store.backlog();
  if (b && (b.rejectedRows || b.refusedRows))
    throw new Error(`ClickHouse fill: ${b.rejectedRows} rows rejected, ${b.refusedRows} refused`);
  return {
    rows: done,
    seconds: (performance.now() - t0) / 1000,
    insertSeconds: storeMs / 1000,
    connections: gen.connections,
    end,
    failedSends: b?.failedSends ?? 0,
    insertPackedSeconds: insertMs / 1000,
  };
}

/** Waits until the server runs no merge on the database (two quiet polls), at most `maxMs`. */
async function settleMerges(origin: string, database: string, maxMs: number): Promise<number> {
  const t0 = performance.now();
  let quiet = 0;
  while (performance.now() - t0 < maxMs && quiet < 2) {
    const n = Number(await chSql(origin, `SELECT count() FROM system.merges WHERE database = '${database}'`));
    quiet = n === 0 ? quiet + 1 : 0;
    await sleep(1000);
  }
  return (performance.now() - t0) / 1000;
}

async function runClickHouse(args: Args, end: number, shared: Params | null): Promise<StoreRun> {
  const server = args.clickhouseUrl ? null : await ClickHouseServer.start();
  const url = new URL(args.clickhouseUrl ?? server!.url('kpiflow_bench'));
  const origin = url.origin;
  const database = url.pathname.replace(/^\/+|\/+$/g, '') || 'kpiflow';
  const spoolDir = mkdtempSync(join(tmpdir(), 'kpiflow-bench-spool-'));
  let store: ClickHouseStore | null = null;
  let api: { base: string; close: () => Promise<void> } | null = null;
  try {
    const version = (await chSql(origin, 'SELECT version()')).trim();
    console.log(
      `\n### ClickHouse ${version}: ${fmtInt(args.profiles)} profiles, ${url.origin}/${database}${server ? ` (temporary server in ${server.dir})` : ''}`,
    );
    store = await ClickHouseStore.open({ url: url.toString(), spoolDir });
    const have = Number(await chSql(origin, `SELECT count() FROM ${database}.profiles`));
    let fillResult: (FillResult & { failedSends: number; insertPackedSeconds: number }) | null = null;
    if (have >= args.profiles) console.log(`reusing ${database}: ${fmtInt(have)} profiles already stored`);
    else if (have > 0)
      throw new Error(
        `${database} holds ${have} profiles, fewer than ${args.profiles}: drop it or pass --profiles ${have}`,
      );
    else {
      console.log(`filling through insertPacked in batches of ${fmtInt(args.chBatch)} ...`);
      fillResult = await fillClickHouse(store, args.profiles, args.chBatch, end);
      console.log(
        `filled ${fmtInt(fillResult.rows)} profiles in ${fillResult.seconds.toFixed(1)} s (flushed): ${fmtInt(fillResult.rows / fillResult.seconds)} rows/s overall, ` +
          `${fmtInt(fillResult.rows / fillResult.insertSeconds)} rows/s waiting on the store, of which ${fillResult.insertPackedSeconds.toFixed(1)} s inside insertPacked ` +
          `(encoding RowBinary) and ${(fillResult.insertSeconds - fillResult.insertPackedSeconds).toFixed(1)} s for delivery; ${fillResult.failedSends} failed sends (retried)`,
      );
    }
    const settled = await settleMerges(origin, database, 300_000);
    const parts = (
      await chSql(
        origin,
        `SELECT table, count(), sum(rows) FROM system.parts WHERE database = '${database}' AND active AND table IN ('profiles', 'profile_flows') GROUP BY table ORDER BY table FORMAT TSV`,
      )
    )
      .trim()
      .split('\n')
      .map((l) => l.split('\t'));
    console.log(
      `merges settled after ${settled.toFixed(0)} s; active parts: ${parts.map(([t, p, r]) => `${t} ${p} (${fmtInt(Number(r))} rows)`).join(', ')}`,
    );
    const rows = Number(await chSql(origin, `SELECT count() FROM ${database}.profiles`));
    const sizeBytes = await store.sizeBytes();
    const [minT, maxT] = (await chSql(origin, `SELECT min(t), max(t) FROM ${database}.profiles FORMAT TSV`))
      .trim()
      .split('\t')
      .map(Number) as [number, number];
    const now = maxT + 1;
    let params: Params;
    if (shared && shared.now === now) params = shared;
    else {
      const destinations = (
        await chSql(
          origin,
          `SELECT destinationAddress FROM ${database}.profiles WHERE t >= ${now - DAY} GROUP BY destinationAddress ORDER BY count() DESC, destinationAddress FORMAT TSV`,
        )
      )
        .trim()
        .split('\n');
      const s = store;
      params = await sampleParams(now, minT, maxT, destinations, async (t) => {
        const r = (await s.profiles({ from: t }, { limit: 1, order: 'asc' })).items[0];
        return r ? { flowId: Number(r.flowId), sourceAddress: String(r.sourceAddress) } : undefined;
      });
    }
    api = await serveApi(store);
    console.log(
      `API on ${api.base}; data ends ${new Date(now).toISOString()}, ${params.destinations.length} destinations in the last 24 h` +
        `${params === shared ? ' (parameters of the previous store: same data)' : ''}; ` +
        `${args.warmup} warm-up + ${args.requests} measured requests per query, one at a time`,
    );
    const kinds = selectedKinds(args, params);
    // Capture the SQL the store sends (its private `rows` helper), for the diagnosis.
    const captured: string[] = [];
    const inner = store as unknown as { rows: (q: string) => Promise<unknown[]> };
    const rowsFn = inner.rows.bind(store);
    inner.rows = (q: string) => {
      captured.push(q);
      return rowsFn(q);
    };
    const saved: Saved = { key: '', stats: {}, plans: {}, breakdown: {} };
    const stats = await measure(api.base, args, kinds, params, saved, () => {});

    console.log(
      `\n== ClickHouse: API latency over ${fmtInt(rows)} profiles (${fmtBytes(sizeBytes)} on disk; target p95 <= ${TARGET_P95_MS} ms) ==`,
    );
    console.log(latencyTable(stats));
    if (fillResult)
      console.log(
        `fill: ${fmtInt(fillResult.rows)} profiles in ${fillResult.seconds.toFixed(1)} s = ${fmtInt(fillResult.rows / fillResult.seconds)} rows/s ` +
          `(${fmtInt(fillResult.rows / fillResult.insertSeconds)} rows/s waiting on ClickHouseStore: insertPacked, back-pressure, flush; batches of ${fmtInt(args.chBatch)})`,
      );
    console.log(`size: ${fmtBytes(sizeBytes)} (${(sizeBytes / rows).toFixed(0)} bytes/profile, all tables)`);
    if (args.diagnose) await diagnoseClickHouse(origin, database, api.base, kinds, stats, captured);
    return {
      label: 'clickhouse',
      profiles: rows,
      stats,
      fill: fillResult,
      sizeBytes,
      params,
      end: fillResult?.end ?? null,
    };
  } finally {
    await api?.close();
    await store?.close();
    rmSync(spoolDir, { recursive: true, force: true });
    await server?.destroy();
  }
}

/**
 * For each summary, its slowest request again: the store's summary SQL run alone on the server
 * (query_log: duration, rows read, peak memory), and whether it read the hourly roll-ups.
 */
async function diagnoseClickHouse(
  origin: string,
  database: string,
  base: string,
  kinds: QueryKind[],
  stats: Map<string, Stat>,
  captured: string[],
): Promise<void> {
  const rowsOut: string[][] = [];
  let n = 0;
  const logged = async (sql: string) => {
    const tag = `kpiflow-bench-${process.pid}-${++n}`;
    const t0 = performance.now();
    await chSql(origin, `${sql}\nFORMAT Null`, { database, log_queries: '1', query_id: tag });
    const ms = performance.now() - t0;
    // The log is written asynchronously: flush until the query's row is there.
    let row: number[] = [];
    for (let i = 0; i < 10 && row.length < 4; i++) {
      await chSql(origin, 'SYSTEM FLUSH LOGS');
      const text = (
        await chSql(
          origin,
          `SELECT query_duration_ms, read_rows, read_bytes, memory_usage FROM system.query_log WHERE query_id = '${tag}' AND type = 2 FORMAT TSV`,
        )
      ).trim();
      row = text ? text.split('\t').map(Number) : [];
      if (row.length < 4) await sleep(200);
    }
    const [dur, readRows, readBytes, mem] = row;
    return {
      ms,
      dur: dur ?? Number.NaN,
      readRows: readRows ?? Number.NaN,
      readBytes: readBytes ?? 0,
      mem: mem ?? 0,
    };
  };
  for (const k of kinds) {
    if (!k.name.startsWith('summary')) continue;
    const st = stats.get(k.name);
    captured.length = 0;
    const http = await get(base, k.path(st?.worst ?? 0));
    const sql = [...captured].reverse().find((q) => /GROUP BY key, bucket/.test(q));
    if (!sql) continue;
    const full = await logged(sql);
    rowsOut.push([
      k.name,
      fmtMs(http.ms),
      fmtMs(full.dur),
      fmtInt(full.readRows),
      fmtBytes(full.readBytes),
      fmtBytes(full.mem),
      /profile_hours_/.test(sql) ? 'roll-ups' : 'rows',
    ]);
  }
  console.log(
    "\n== ClickHouse: where the summaries' time goes (the slowest request of each; server times from system.query_log) ==",
  );
  console.log(
    table(['query', 'HTTP ms', 'SQL ms', 'rows read', 'bytes read', 'memory', 'read'], rowsOut, [
      false,
      true,
      true,
      true,
      true,
      true,
      false,
    ]),
  );
  console.log(
    '  SQL: the summary statement the store sent, run alone with FORMAT Null. read: the hourly roll-ups\n' +
      '  (with the raw rows of the partial hours at the ends) or every row of the range.',
  );
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  console.log(
    `collector query bench: ${fmtInt(args.profiles)} profiles; stores: ${args.stores.join(', ')}${args.stores.includes('sqlite') ? ` (SQLite layout ${args.layout})` : ''}`,
  );
  // One end time for every fill: the stores get the same rows. A reused SQLite database brings
  // the end time it was filled with, when its run recorded it.
  let end = Date.now();
  if (args.db && args.stores[0] === 'sqlite') {
    try {
      end = (JSON.parse(readFileSync(`${args.db}.fill.json`, 'utf8')) as FillResult).end ?? end;
    } catch {
      // A new database: now.
    }
  }
  const runs: StoreRun[] = [];
  let shared: Params | null = null;
  for (const s of args.stores) {
    const run: StoreRun =
      s === 'sqlite' ? await runSqlite(args, end, shared) : await runClickHouse(args, end, shared);
    runs.push(run);
    shared ??= run.params;
  }
  if (runs.length < 2) return;

  console.log(
    `\n== Side by side: ${runs.map((r) => `${r.label} (${fmtInt(r.profiles)} profiles)`).join(' vs ')} ==`,
  );
  const [a, b] = runs as [StoreRun, StoreRun];
  const names = [...new Set([...a.stats.keys(), ...b.stats.keys()])];
  const ratio = (x: number | undefined, y: number | undefined) =>
    x === undefined || y === undefined || y === 0 ? '' : `${(x / y).toFixed(2)}x`;
  console.log(
    table(
      [
        'query',
        `${a.label} p50`,
        `${a.label} p95`,
        `${b.label} p50`,
        `${b.label} p95`,
        `p50 ${b.label}/${a.label}`,
        `p95 ${b.label}/${a.label}`,
      ],
      names.map((name) => {
        const x = a.stats.get(name);
        const y = b.stats.get(name);
        return [
          name,
          x ? fmtMs(x.p50) : '',
          x ? fmtMs(x.p95) : '',
          y ? fmtMs(y.p50) : '',
          y ? fmtMs(y.p95) : '',
          ratio(y?.p50, x?.p50),
          ratio(y?.p95, x?.p95),
        ];
      }),
      [false, true, true, true, true, true, true],
    ),
  );
  const fillText = (r: StoreRun) =>
    r.fill
      ? `${r.fill.seconds.toFixed(1)} s (${fmtInt(r.fill.rows / r.fill.seconds)} rows/s; ${fmtInt(r.fill.rows / r.fill.insertSeconds)} rows/s waiting on the store)`
      : 'not measured (reused)';
  for (const r of runs) console.log(`fill ${r.label}: ${fillText(r)}; size ${fmtBytes(r.sizeBytes)}`);
  if (a.fill && b.fill)
    console.log(
      `fill time ${b.label}/${a.label}: ${(b.fill.seconds / a.fill.seconds).toFixed(2)}x overall, ` +
        `${(b.fill.insertSeconds / a.fill.insertSeconds).toFixed(2)}x waiting on the store; size ${(b.sizeBytes / a.sizeBytes).toFixed(2)}x`,
    );
  if (a.params !== b.params && b.params !== runs[0]?.params)
    console.log('note: the stores hold data of different end times (a reused database): parameters differ');
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
