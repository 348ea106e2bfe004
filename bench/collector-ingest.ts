/**
 * Collector ingest benchmark: a load generator in its own process sends the same IPFIX profile
 * stream over UDP on loopback to `kpiflow collect` (SQLite) and to nfdump's nfcapd, at
 * increasing rates. For each rate: records sent, records each receiver stored, lost records from
 * sequence numbers, and the kernel's drop count for each socket (/proc/net/udp). Reports the
 * highest rate each stored with zero loss. With several SQLite layouts (docs/storage.md), each
 * rate runs once per layout, one after the other, so the layouts are compared in the same run.
 *
 *   node dist/bench/collector-ingest.js [--rates 50000,100000,...] [--seconds 10] [--layouts rows,blocks]
 *     [--template flowcorder|agent]
 */
import { execFileSync, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';

const { values } = parseArgs({
  options: {
    rates: { type: 'string', default: '50000,100000,150000,200000,250000,300000' },
    // Long enough that the 32 MiB socket buffers (about 2 s of records) cannot hide a deficit.
    seconds: { type: 'string', default: '10' },
    layouts: { type: 'string', default: 'rows,blocks' },
    // The profile stream (bench/ipfix-loadgen.ts): flowcorder (21 fields, 2 kept in `extra`) or
    // agent (the template kpiflow agents send).
    template: { type: 'string', default: 'flowcorder' },
  },
});
type Layout = 'rows' | 'blocks';
const LAYOUTS = values.layouts.split(',').map((l) => {
  if (l !== 'rows' && l !== 'blocks') throw new Error(`--layouts: ${l} is not rows or blocks`);
  return l as Layout;
});
const RATES = values.rates.split(',').map(Number);
const SECONDS = Number(values.seconds);
const CLI = fileURLToPath(new URL('../cli/kpiflow.js', import.meta.url));
const LOADGEN = fileURLToPath(new URL('./ipfix-loadgen.js', import.meta.url));
const BUFFER = 32 * 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

interface StepResult {
  layout: Layout;
  rate: number;
  achieved: number;
  sent: number;
  collector: { stored: number; lost: number; drops: number };
  nfcapd: { stored: number; seqFailures: number; drops: number };
}

async function step(rate: number, layout: Layout): Promise<StepResult> {
  const dir = mkdtempSync(join(tmpdir(), 'kpiflow-ingest-bench-'));
  const [cport, nport, hport] = [await freePort(), await freePort(), await freePort()];
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
      '--sqlite-layout',
      layout,
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const nfdir = join(dir, 'nf');
  execFileSync('mkdir', ['-p', nfdir]);
  const nfcapd = spawn(
    'nfcapd',
    ['-w', nfdir, '-p', String(nport), '-b', '127.0.0.1', '-B', String(BUFFER)],
    {
      stdio: ['ignore', 'ignore', 'ignore'],
    },
  );
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
    const out = execFileSync(
      process.execPath,
      [
        LOADGEN,
        '--target',
        `127.0.0.1:${cport}`,
        '--target',
        `127.0.0.1:${nport}`,
        '--rate',
        String(rate),
        '--seconds',
        String(SECONDS),
        '--template',
        values.template,
      ],
      { encoding: 'utf8' },
    );
    const gen = JSON.parse(out) as { sentProfiles: number; achievedRecordsPerSecond: number };
    // Let the collector work through its socket buffer: wait until its record count stands still.
    let last = -1;
    for (let i = 0; i < 120; i++) {
      await sleep(500);
      const ex = (await fetch(`http://127.0.0.1:${hport}/api/v1/exporters`).then((r) => r.json())) as {
        items: { records: number }[];
      };
      const n = ex.items.reduce((a, e) => a + e.records, 0);
      if (n === last) break;
      last = n;
    }
    const cdrops = socketDrops(cport);
    const ndrops = socketDrops(nport);
    collector.kill('SIGTERM');
    nfcapd.kill('SIGTERM');
    await Promise.all([
      new Promise((r) => collector.once('exit', r)),
      new Promise((r) => nfcapd.once('exit', r)),
    ]);
    const db = new Database(join(dir, 'k.db'), { readonly: true });
    const stored = (
      db
        .prepare(
          layout === 'blocks'
            ? 'SELECT total(n) AS n FROM profile_blocks'
            : 'SELECT count(*) AS n FROM profiles',
        )
        .get() as { n: number }
    ).n;
    const lost = (db.prepare('SELECT TOTAL(lostRecords) AS n FROM exporters').get() as { n: number }).n;
    db.close();
    const files = readdirSync(nfdir).filter((f) => f.startsWith('nfcapd.'));
    let nstored = 0;
    let seqFailures = 0;
    for (const f of files) {
      const info = execFileSync('nfdump', ['-r', join(nfdir, f), '-I'], { encoding: 'utf8' });
      nstored += Number(/^Flows:\s+(\d+)/m.exec(info)?.[1] ?? 0);
      seqFailures += Number(/^Sequence failures:\s+(\d+)/m.exec(info)?.[1] ?? 0);
    }
    return {
      layout,
      rate,
      achieved: gen.achievedRecordsPerSecond,
      sent: gen.sentProfiles,
      collector: { stored, lost, drops: cdrops },
      nfcapd: { stored: nstored, seqFailures, drops: ndrops },
    };
  } finally {
    if (collector.exitCode === null) collector.kill('SIGKILL');
    if (nfcapd.exitCode === null) nfcapd.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
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
  process.stdout.write(
    `Collector ingest benchmark: IPFIX TCP profiles (${values.template === 'agent' ? "the agent's template" : '21 Flowcorder-style fields'}) over UDP loopback, ${SECONDS} s per rate, same stream to both receivers\n` +
      `socket buffers ${BUFFER >> 20} MiB${rmemNote}; loss = sent - stored (the profiles each receiver kept)\n\n`,
  );
  const head = [
    'layout',
    'target rec/s',
    'sent rec/s',
    'sent',
    'kpiflow stored',
    'lost',
    'drops',
    'nfcapd stored',
    'seq fail',
    'drops',
  ];
  process.stdout.write(`${head.map((h) => h.padStart(14)).join('')}\n`);
  const results: StepResult[] = [];
  for (const rate of RATES)
    for (const layout of LAYOUTS) {
      const r = await step(rate, layout);
      results.push(r);
      const row = [
        r.layout,
        r.rate,
        r.achieved,
        r.sent,
        r.collector.stored,
        r.sent - r.collector.stored,
        r.collector.drops,
        r.nfcapd.stored,
        r.nfcapd.seqFailures,
        r.nfcapd.drops,
      ];
      process.stdout.write(`${row.map((v) => String(v).padStart(14)).join('')}\n`);
    }
  const best = (ok: (r: StepResult) => boolean) => Math.max(0, ...results.filter(ok).map((r) => r.achieved));
  process.stdout.write('\n');
  for (const layout of LAYOUTS)
    process.stdout.write(
      `highest rate stored with zero loss (layout ${layout}): kpiflow ${best((r) => r.layout === layout && r.collector.stored === r.sent)} rec/s, nfcapd ${best((r) => r.layout === layout && r.nfcapd.stored === r.sent)} rec/s (target for kpiflow: >= 250000)\n`,
    );
}

void main();
