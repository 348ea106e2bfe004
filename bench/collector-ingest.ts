/**
 * Collector ingest benchmark: a load generator in its own process sends the same IPFIX profile
 * stream over UDP on loopback to `kpiflow collect` and to nfdump's nfcapd, at increasing rates.
 * For each rate: records sent, records each receiver stored, lost records from sequence numbers,
 * and the kernel's drop count for each socket (/proc/net/udp). Reports the highest rate each
 * stored with zero loss. Each rate runs once per store variant (SQLite layouts, docs/storage.md,
 * and ClickHouse), one after the other, so the variants are compared in the same run.
 *
 * ClickHouse (`--stores ...,clickhouse`): one clickhouse-server for the run (test/helpers), a fresh
 * database per step. The collector's store takes batches into a spool and delivers them later, so
 * a record counts as stored only once `SELECT count()` finds it in ClickHouse after the spool
 * drained; the backlog the collector held when the load ended (pending rows, spool bytes) and the
 * time it took to drain show whether the rate was sustained rather than merely buffered.
 *
 *   node dist/bench/collector-ingest.js [--rates 50000,100000,...] [--seconds 10]
 *     [--stores sqlite,clickhouse] [--layouts rows,blocks] [--template flowcorder|agent] [--no-nfcapd]
 */
import { execFileSync, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { ClickHouseServer } from '../test/helpers/clickhouse-server.js';

const { values } = parseArgs({
  options: {
    rates: { type: 'string', default: '50000,100000,150000,200000,250000,300000' },
    // Long enough that the 32 MiB socket buffers (about 2 s of records) cannot hide a deficit.
    seconds: { type: 'string', default: '10' },
    stores: { type: 'string', default: 'sqlite' },
    // SQLite layouts (each one a variant); ignored without sqlite in --stores.
    layouts: { type: 'string', default: 'rows,blocks' },
    // The profile stream (bench/ipfix-loadgen.ts): flowcorder (21 fields, 2 kept in `extra`) or
    // agent (the template kpiflow agents send).
    template: { type: 'string', default: 'flowcorder' },
    // nfcapd is the reference receiver; without it the collector and the store have more CPU.
    'no-nfcapd': { type: 'boolean', default: false },
    // Longest wait for a ClickHouse spool to drain after the load, s.
    'drain-timeout': { type: 'string', default: '300' },
  },
});
type Layout = 'rows' | 'blocks';
type Variant = { store: 'sqlite'; layout: Layout } | { store: 'clickhouse' };
const LAYOUTS = values.layouts.split(',').map((l) => {
  if (l !== 'rows' && l !== 'blocks') throw new Error(`--layouts: ${l} is not rows or blocks`);
  return l as Layout;
});
const VARIANTS: Variant[] = values.stores.split(',').flatMap((s): Variant[] => {
  if (s === 'sqlite') return LAYOUTS.map((layout) => ({ store: 'sqlite', layout }));
  if (s === 'clickhouse') return [{ store: 'clickhouse' }];
  throw new Error(`--stores: ${s} is not sqlite or clickhouse`);
});
const RATES = values.rates.split(',').map(Number);
const SECONDS = Number(values.seconds);
const NFCAPD = !values['no-nfcapd'];
const DRAIN_TIMEOUT_MS = Number(values['drain-timeout']) * 1000;
const CLI = fileURLToPath(new URL('../cli/kpiflow.js', import.meta.url));
const LOADGEN = fileURLToPath(new URL('./ipfix-loadgen.js', import.meta.url));
const BUFFER = 32 * 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A variant's name in the tables. */
function label(v: Variant): string {
  return v.store === 'sqlite' ? `sqlite/${v.layout}` : 'clickhouse';
}

async function freePort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

/** Kernel drops of the UDP socket bound to 127.0.0.1:port (last column of /proc/net/udp). */
function socketDrops(port: number): number {
  const hex = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const line of readFileSync('/proc/net/udp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === hex) return Number(f[f.length - 1]);
  }
  return Number.NaN;
}

/** The collector's /metrics, the samples of `kpiflow_collector_*` summed over their labels. */
interface Metrics {
  received: number;
  /** Rows decoded and not yet handed to the store (the ingest queue). */
  pending: number;
  /** Records the collector dropped (overload, store errors; not decoding). */
  dropped: number;
  /** Profiles the store accepted: for SQLite written, for ClickHouse queued in the spool. */
  stored: number;
  storePending: number;
  spoolBytes: number;
  delivered: number;
  failedWrites: number;
}

async function scrape(httpPort: number): Promise<Metrics> {
  const text = await fetch(`http://127.0.0.1:${httpPort}/metrics`).then((r) => r.text());
  const sum = (name: string, labels?: RegExp) => {
    let n = 0;
    const re = new RegExp(`^kpiflow_collector_${name}(\\{[^}]*\\})? (\\S+)$`, 'gm');
    for (const m of text.matchAll(re)) if (!labels || labels.test(m[1] ?? '')) n += Number(m[2]);
    return n;
  };
  return {
    received: sum('records_received_total'),
    pending: sum('pending_rows'),
    dropped: sum('records_dropped_total', /reason="(overload|store_error)"/),
    stored: sum('records_stored_total', /kind="profile"/),
    storePending: sum('store_pending_rows'),
    spoolBytes: sum('store_spool_bytes'),
    delivered: sum('store_delivered_rows_total'),
    failedWrites: sum('store_failed_writes_total'),
  };
}

interface StepResult {
  variant: Variant;
  rate: number;
  achieved: number;
  sent: number;
  collector: {
    stored: number;
    lost: number;
    drops: number;
    /** Records the collector received and dropped itself (overload, store errors). */
    dropped: number;
    /** Profiles in the store when the load ended, per second of load: the sustained rate. */
    inStoreRate: number;
    /** What the collector held for the store when the load ended, and at most during it. */
    backlogRows: number;
    spoolBytes: number;
    peakBacklogRows: number;
    peakSpoolBytes: number;
    /** From the end of the load until the store held everything, s. */
    drainSeconds: number;
    failedWrites: number;
  };
  nfcapd: { stored: number; seqFailures: number; drops: number };
  /** ClickHouse's own view of the step (null for SQLite). */
  server: ServerStep | null;
}

/** What clickhouse-server did during a step: its system.events deltas and its parts. */
interface ServerStep {
  inserts: number;
  insertedRows: number;
  /** Inserts the server slowed down because a partition had too many parts, and for how long. */
  delayedInserts: number;
  delayedMs: number;
  rejectedInserts: number;
  merges: number;
  /** Most active parts of one partition of one table, polled once a second during the load. */
  maxParts: number;
}

const SERVER_EVENTS = [
  'InsertQuery',
  'InsertedRows',
  'DelayedInserts',
  'DelayedInsertsMilliseconds',
  'RejectedInserts',
  'Merge',
] as const;

async function serverEvents(ch: ClickHouseServer): Promise<Record<string, number>> {
  const text = await ch.query(
    `SELECT event, value FROM system.events WHERE event IN (${SERVER_EVENTS.map((e) => `'${e}'`).join(', ')}) FORMAT TSV`,
  );
  const out: Record<string, number> = {};
  for (const line of text.trim().split('\n')) {
    const [k, v] = line.split('\t');
    if (k) out[k] = Number(v);
  }
  return out;
}

async function maxParts(ch: ClickHouseServer, database: string): Promise<number> {
  return Number(
    await ch.query(
      `SELECT max(n) FROM (SELECT count() AS n FROM system.parts WHERE database = '${database}' AND active GROUP BY table, partition)`,
    ),
  );
}

let stepNo = 0;

async function step(rate: number, variant: Variant, ch: ClickHouseServer | null): Promise<StepResult> {
  const dir = mkdtempSync(join(tmpdir(), 'kpiflow-ingest-bench-'));
  const [cport, nport, hport] = [await freePort(), await freePort(), await freePort()];
  const database = `ingest_bench_${process.pid}_${++stepNo}`;
  const storeArgs =
    variant.store === 'sqlite'
      ? ['--sqlite-layout', variant.layout]
      : [
          '--store',
          'clickhouse',
          '--clickhouse-url',
          ch!.url(database),
          '--clickhouse-spool',
          join(dir, 'spool'),
        ];
  const collector = spawn(
    process.execPath,
    [
      '--max-semi-space-size=32',
      CLI,
      'collect',
      '--ipfix-udp',
      `127.0.0.1:${cport}`,
      '--ipfix-tcp',
      'off',
      '--http',
      `127.0.0.1:${hport}`,
      '--db',
      join(dir, 'k.db'),
      '--log-level',
      'warn',
      '--retention',
      'off',
      ...storeArgs,
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const nfdir = join(dir, 'nf');
  mkdirSync(nfdir);
  const nfcapd = NFCAPD
    ? spawn('nfcapd', ['-w', nfdir, '-p', String(nport), '-b', '127.0.0.1', '-B', String(BUFFER)], {
        stdio: ['ignore', 'ignore', 'ignore'],
      })
    : null;
  try {
    for (let i = 0; i < 100; i++) {
      const ok = await fetch(`http://127.0.0.1:${hport}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      await sleep(100);
    }
    await sleep(300);
    const events0 = ch && variant.store === 'clickhouse' ? await serverEvents(ch) : null;
    let peakParts = 0;
    const targets = ['--target', `127.0.0.1:${cport}`, ...(NFCAPD ? ['--target', `127.0.0.1:${nport}`] : [])];
    const gen = spawn(
      process.execPath,
      [
        LOADGEN,
        ...targets,
        '--rate',
        String(rate),
        '--seconds',
        String(SECONDS),
        '--template',
        values.template,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    gen.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const genExit = new Promise<number | null>((r) => gen.once('exit', r));
    // The backlog during the load, once a second (a scrape costs the collector little).
    let peakBacklogRows = 0;
    let peakSpoolBytes = 0;
    let running = true;
    void genExit.then(() => {
      running = false;
    });
    while (running) {
      await Promise.race([genExit, sleep(1000)]);
      if (!running) break;
      const m = await scrape(hport);
      peakBacklogRows = Math.max(peakBacklogRows, m.storePending + m.pending);
      peakSpoolBytes = Math.max(peakSpoolBytes, m.spoolBytes);
      if (events0) peakParts = Math.max(peakParts, await maxParts(ch!, database));
    }
    if ((await genExit) !== 0) throw new Error('ipfix-loadgen failed');
    const atEnd = await scrape(hport);
    const loadEnd = performance.now();
    const gen0 = JSON.parse(out) as { sentProfiles: number; achievedRecordsPerSecond: number };
    // Let the collector work through its socket buffer and its store through its backlog: wait
    // until nothing is received any more and nothing waits for the store.
    let last = -1;
    let drainSeconds = 0;
    let final = atEnd;
    for (;;) {
      await sleep(500);
      final = await scrape(hport);
      const idle = final.received === last && final.pending === 0 && final.storePending === 0;
      last = final.received;
      if (idle) {
        drainSeconds = Math.max(0, (performance.now() - loadEnd - 500) / 1000);
        break;
      }
      if (performance.now() - loadEnd > DRAIN_TIMEOUT_MS) {
        drainSeconds = Number.POSITIVE_INFINITY;
        process.stderr.write(
          `${label(variant)} at ${rate} rec/s: the store still holds ${final.storePending} rows after ${DRAIN_TIMEOUT_MS / 1000} s\n`,
        );
        break;
      }
    }
    const cdrops = socketDrops(cport);
    const ndrops = NFCAPD ? socketDrops(nport) : 0;
    collector.kill('SIGTERM');
    nfcapd?.kill('SIGTERM');
    await Promise.all([
      new Promise((r) => collector.once('exit', r)),
      nfcapd ? new Promise((r) => nfcapd.once('exit', r)) : null,
    ]);
    let stored: number;
    let lost: number;
    let inStore: number;
    let server: ServerStep | null = null;
    if (variant.store === 'sqlite') {
      const db = new Database(join(dir, 'k.db'), { readonly: true });
      stored = (
        db
          .prepare(
            variant.layout === 'blocks'
              ? 'SELECT total(n) AS n FROM profile_blocks'
              : 'SELECT count(*) AS n FROM profiles',
          )
          .get() as { n: number }
      ).n;
      lost = (db.prepare('SELECT TOTAL(lostRecords) AS n FROM exporters').get() as { n: number }).n;
      db.close();
      inStore = atEnd.stored;
    } else {
      // Counted in ClickHouse itself: what the spool delivered, not what it accepted.
      stored = Number(await ch!.query(`SELECT count() FROM ${database}.profiles`));
      lost = Number(await ch!.query(`SELECT sum(lostRecords) FROM ${database}.exporter_deltas`));
      inStore = atEnd.delivered;
      const events1 = await serverEvents(ch!);
      const d = (e: (typeof SERVER_EVENTS)[number]) => (events1[e] ?? 0) - (events0?.[e] ?? 0);
      server = {
        inserts: d('InsertQuery'),
        insertedRows: d('InsertedRows'),
        delayedInserts: d('DelayedInserts'),
        delayedMs: d('DelayedInsertsMilliseconds'),
        rejectedInserts: d('RejectedInserts'),
        merges: d('Merge'),
        maxParts: peakParts,
      };
      await ch!.query(`DROP DATABASE ${database}`);
    }
    let nstored = 0;
    let seqFailures = 0;
    if (NFCAPD)
      for (const f of readdirSync(nfdir).filter((f) => f.startsWith('nfcapd.'))) {
        const info = execFileSync('nfdump', ['-r', join(nfdir, f), '-I'], { encoding: 'utf8' });
        nstored += Number(/^Flows:\s+(\d+)/m.exec(info)?.[1] ?? 0);
        seqFailures += Number(/^Sequence failures:\s+(\d+)/m.exec(info)?.[1] ?? 0);
      }
    return {
      variant,
      rate,
      achieved: gen0.achievedRecordsPerSecond,
      sent: gen0.sentProfiles,
      collector: {
        stored,
        lost,
        drops: cdrops,
        dropped: final.dropped,
        inStoreRate: Math.round(inStore / SECONDS),
        backlogRows: atEnd.storePending + atEnd.pending,
        spoolBytes: atEnd.spoolBytes,
        peakBacklogRows: Math.max(peakBacklogRows, atEnd.storePending + atEnd.pending),
        peakSpoolBytes: Math.max(peakSpoolBytes, atEnd.spoolBytes),
        drainSeconds,
        failedWrites: final.failedWrites,
      },
      nfcapd: { stored: nstored, seqFailures, drops: ndrops },
      server,
    };
  } finally {
    if (collector.exitCode === null) collector.kill('SIGKILL');
    if (nfcapd && nfcapd.exitCode === null) nfcapd.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

function fmtBytes(b: number): string {
  if (b >= 2 ** 20) return `${(b / 2 ** 20).toFixed(1)}M`;
  if (b >= 2 ** 10) return `${(b / 2 ** 10).toFixed(0)}K`;
  return String(b);
}

/**
 * Sustained: nothing lost, and when the load ended the collector held at most one second of
 * records for the store (a spool that keeps growing would be more).
 */
function sustained(r: StepResult): boolean {
  return r.collector.stored === r.sent && r.collector.backlogRows <= r.rate;
}

async function main(): Promise<void> {
  // Both receivers get the same large socket buffer; the kernel caps it at net.core.rmem_max.
  let rmemNote = '';
  try {
    const cur = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8'));
    if (cur < BUFFER) {
      writeFileSync('/proc/sys/net/core/rmem_max', String(BUFFER));
      rmemNote = ` (raised net.core.rmem_max from ${cur})`;
    }
  } catch {
    rmemNote = ' (could not raise net.core.rmem_max: not root)';
  }
  const ch = VARIANTS.some((v) => v.store === 'clickhouse') ? await ClickHouseServer.start() : null;
  const stop = () => {
    void ch?.destroy().finally(() => process.exit(130));
  };
  process.once('SIGINT', stop);
  try {
    let version = '';
    if (ch) version = ` (clickhouse-server ${(await ch.query('SELECT version()')).trim()} on loopback)`;
    process.stdout.write(
      `Collector ingest benchmark: IPFIX TCP profiles (${values.template === 'agent' ? "the agent's template" : '21 Flowcorder-style fields'}) over UDP loopback, ${SECONDS} s per rate${NFCAPD ? ', same stream to nfcapd' : ''}\n` +
        `stores: ${VARIANTS.map(label).join(', ')}${version}\n` +
        `socket buffers ${BUFFER >> 20} MiB${rmemNote}; lost = sent - stored (the profiles each receiver kept; for ClickHouse, counted in ClickHouse)\n` +
        'drops: datagrams the kernel dropped at the socket (each holds several records); ovl: records the collector dropped itself (overload, store errors)\n' +
        'in store/s: profiles in the store when the load ended, per second of load (ClickHouse: delivered by the spool)\n' +
        'backlog, spool: rows waiting for the store (ingest queue + spool) and spool file bytes when the load ended; peak: the most during it\n' +
        'drain s: from the end of the load until nothing waited for the store\n\n',
    );
    const head = [
      'store',
      'target rec/s',
      'sent rec/s',
      'sent',
      'stored',
      'lost',
      'drops',
      'ovl',
      'in store/s',
      'backlog',
      'spool',
      'peak backlog',
      'peak spool',
      'drain s',
      ...(NFCAPD ? ['nfcapd stored', 'seq fail', 'drops'] : []),
    ];
    const W = 14;
    process.stdout.write(`${head.map((h) => h.padStart(W)).join('')}\n`);
    const results: StepResult[] = [];
    for (const rate of RATES)
      for (const variant of VARIANTS) {
        const r = await step(rate, variant, ch);
        results.push(r);
        const c = r.collector;
        const row = [
          label(r.variant),
          r.rate,
          r.achieved,
          r.sent,
          c.stored,
          r.sent - c.stored,
          c.drops,
          c.dropped,
          c.inStoreRate,
          c.backlogRows,
          fmtBytes(c.spoolBytes),
          c.peakBacklogRows,
          fmtBytes(c.peakSpoolBytes),
          Number.isFinite(c.drainSeconds) ? c.drainSeconds.toFixed(1) : 'timeout',
          ...(NFCAPD ? [r.nfcapd.stored, r.nfcapd.seqFailures, r.nfcapd.drops] : []),
        ];
        process.stdout.write(`${row.map((v) => String(v).padStart(W)).join('')}\n`);
      }
    const best = (ok: (r: StepResult) => boolean) =>
      Math.max(0, ...results.filter(ok).map((r) => r.achieved));
    process.stdout.write('\n');
    for (const v of VARIANTS) {
      const mine = (r: StepResult) => label(r.variant) === label(v);
      process.stdout.write(
        `${label(v).padEnd(14)} highest rate stored with zero loss: ${best((r) => mine(r) && r.collector.stored === r.sent)} rec/s, ` +
          `sustained (zero loss, backlog <= 1 s at the end): ${best((r) => mine(r) && sustained(r))} rec/s` +
          (NFCAPD
            ? `; nfcapd in the same steps: ${best((r) => mine(r) && r.nfcapd.stored === r.sent)} rec/s`
            : '') +
          '\n',
      );
    }
    const chSteps = results.filter((r) => r.server);
    if (chSteps.length) {
      process.stdout.write(
        '\nclickhouse-server during each ClickHouse step (system.events from the start of the load until the spool drained):\n' +
          'inserts (rows/insert), delayed: inserts it slowed down for too many parts in a partition and their total delay, ' +
          'max parts: most active parts of one partition (polled each second of the load)\n',
      );
      const h = [
        'target rec/s',
        'inserts',
        'rows/insert',
        'delayed',
        'delayed ms',
        'rejected',
        'merges',
        'max parts',
      ];
      process.stdout.write(`${h.map((x) => x.padStart(W)).join('')}\n`);
      for (const r of chSteps) {
        const v = r.server!;
        const row = [
          r.rate,
          v.inserts,
          v.inserts ? Math.round(v.insertedRows / v.inserts) : 0,
          v.delayedInserts,
          v.delayedMs,
          v.rejectedInserts,
          v.merges,
          v.maxParts,
        ];
        process.stdout.write(`${row.map((x) => String(x).padStart(W)).join('')}\n`);
      }
    }
    // Ratios between variants at each rate (same run, same machine load).
    if (VARIANTS.length > 1) {
      const base = VARIANTS[0]!;
      process.stdout.write(
        `\nin store/s and stored relative to ${label(base)} at the same rate (1.00 = the same)\n`,
      );
      process.stdout.write(
        `${['target rec/s', ...VARIANTS.slice(1).flatMap((v) => [`${label(v)} in/s`, `${label(v)} stored`])].map((h) => h.padStart(20)).join('')}\n`,
      );
      for (const rate of RATES) {
        const at = (v: Variant) => results.find((r) => r.rate === rate && label(r.variant) === label(v))!;
        const b = at(base);
        const cells = VARIANTS.slice(1).flatMap((v) => {
          const r = at(v);
          return [
            (r.collector.inStoreRate / b.collector.inStoreRate).toFixed(2),
            (r.collector.stored / b.collector.stored).toFixed(2),
          ];
        });
        process.stdout.write(`${[rate, ...cells].map((c) => String(c).padStart(20)).join('')}\n`);
      }
    }
  } finally {
    process.off('SIGINT', stop);
    await ch?.destroy();
  }
}

void main();
