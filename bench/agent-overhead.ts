/**
 * What monitoring costs the monitored host (Flowcorder, arXiv:1902.04280, section 5), measured on
 * this machine between two network namespaces over veth, in three modes:
 *   none     no probes;
 *   kpiflow  `kpiflow agent --source live` as shipped (default programs), exporting to a file;
 *   naive    only the per-packet program (kf_naive_probe), what a per-packet monitor costs.
 * Workloads: a bulk transfer (iperf3) and many short connections (bench/tcp-load.py: connect,
 * 64 bytes each way, close, one after the other). Every repetition runs all three modes, in a
 * rotating order, so each mode is compared with the no-probe run of the same repetition (paired
 * A/B on a shared, noisy VM); the report gives medians of those per-repetition figures.
 *
 * Measured: CPU time of the workload's processes (getrusage; softirq network work is charged to
 * them: this kernel has no IRQ time accounting), CPU time of the agent process (all its threads,
 * from schedstat), BPF run time and run count per program (kernel statistics, on for the whole
 * run), throughput. Then: kernel memory per socket from BTF (checked against slab usage), and the
 * agent's resident memory with 100,000 tracked connections (real idle connections held open).
 *
 *   node dist/bench/agent-overhead.js [--quick] [--reps N] [--bulk-seconds S] [--short N] [--hold N]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_PROBE_OBJECT, PROBE_NAMES, startLiveProbes } from '../agent/probe-loader.js';
import { Btf, readProbeSpec } from '../native/index.js';
import {
  enableBpfStats,
  processProgramIds,
  programRunStats,
  type RunStatsDelta,
  runStatsDelta,
} from '../test/helpers/bpf-stats.js';
import { startPythonPeer } from '../test/helpers/json-peer.js';
import { createNetnsPair, type NetnsPair, rootUnavailableReason } from '../test/helpers/netns.js';
import { hasTool, run } from '../test/helpers/tools.js';

const CLI = fileURLToPath(new URL('../cli/kpiflow.js', import.meta.url));
const LOAD = fileURLToPath(new URL('../../bench/tcp-load.py', import.meta.url));
const MODES = ['none', 'kpiflow', 'naive'] as const;
type Mode = (typeof MODES)[number];
const PORTS = { bulk: 5201, short: 5301, hold: 5401 } as const;
const SHORT_BYTES = 64;
/** Connections a second the hold phase opens: slow enough for the agent's ring buffer. */
const HOLD_RATE = 8000;
/** Connections one hold process keeps open: under the descriptor limit (20,000 here). */
const HOLD_PER_PROCESS = 15_000;

interface Options {
  reps: number;
  bulkSeconds: number;
  short: number;
  /** Tracked connections wanted in the memory phase (two sockets per TCP connection here). */
  hold: number;
}

function parseOptions(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const o: Options = quick
    ? { reps: 5, bulkSeconds: 1, short: 3000, hold: 20_000 }
    : { reps: 7, bulkSeconds: 3, short: 10_000, hold: 100_000 };
  const flags: Record<string, keyof Options> = {
    '--reps': 'reps',
    '--bulk-seconds': 'bulkSeconds',
    '--short': 'short',
    '--hold': 'hold',
  };
  for (let i = 0; i < argv.length; i++) {
    const key = flags[argv[i]!];
    if (!key) continue;
    const v = Number(argv[++i]);
    // --reps 0: the memory phase alone.
    if (!(v > 0 || (key === 'reps' && v === 0))) throw new Error(`${argv[i - 1]} needs a positive number`);
    o[key] = v;
  }
  if (o.hold % 2 !== 0) o.hold += 1;
  return o;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** CPU seconds of every live thread of a process (schedstat: ns, not 10 ms ticks). */
function processCpuSeconds(pid: number): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // thread gone meanwhile
    }
  }
  return ns / 1e9;
}

/** Busy CPU seconds of the whole host (all cores, everyone's work): a reference only. */
function hostBusySeconds(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
  const busy = f.slice(0, 8).reduce((a, b) => a + b, 0) - f[3]! - f[4]!;
  return busy / 100;
}

function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

/**
 * Bytes held by the accounted kmalloc caches (kmalloc-cg-*), where BPF map elements go (charged to
 * the memory cgroup). Other caches (dentries, proc inodes) move with whatever else the host does.
 */
function accountedSlabBytes(): number {
  let total = 0;
  for (const l of readFileSync('/proc/slabinfo', 'utf8').split('\n').slice(2)) {
    const f = l.split(/\s+/);
    if (f[0]?.startsWith('kmalloc-cg-')) total += Number(f[1]) * Number(f[3]);
  }
  return total;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** The mode's probes, loaded and attached, and the agent process for kpiflow. */
interface ActiveMode {
  mode: Mode;
  /** Program names and kernel ids whose run statistics count for this mode. */
  programs: Map<string, number>;
  agent: { pid: number; metrics: string } | null;
  close(): Promise<void>;
}

async function startAgent(dir: string, maxConnections: number): Promise<ActiveMode> {
  const port = await freePort();
  const proc: ChildProcess = spawn(
    process.execPath,
    [
      CLI,
      'agent',
      '--source',
      'live',
      '--export',
      `file:${join(dir, `agent-${Date.now()}.ipfix`)}`,
      '--metrics',
      `127.0.0.1:${port}`,
      '--max-connections',
      String(maxConnections),
      '--log-level',
      'warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  proc.stdout?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  proc.stderr?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  const metrics = `http://127.0.0.1:${port}`;
  const close = async () => {
    if (gone) return;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 15000);
    await exited;
    clearTimeout(timer);
  };
  for (const deadline = Date.now() + 30000; ; ) {
    if (gone) throw new Error(`kpiflow agent exited at start: ${output}`);
    const ok = await fetch(`${metrics}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) {
      await close();
      throw new Error(`kpiflow agent not ready within 30 s: ${output}`);
    }
    await sleep(100);
  }
  const programs = processProgramIds(proc.pid!);
  if (!programs.has(PROBE_NAMES.sockops)) {
    await close();
    throw new Error(`kpiflow agent holds no ${PROBE_NAMES.sockops} program: ${[...programs.keys()]}`);
  }
  return { mode: 'kpiflow', programs, agent: { pid: proc.pid!, metrics }, close };
}

async function activate(mode: Mode, dir: string, maxConnections = 100_000): Promise<ActiveMode> {
  if (mode === 'kpiflow') return startAgent(dir, maxConnections);
  if (mode === 'naive') {
    const probes = startLiveProbes({ programs: [PROBE_NAMES.perPacket] });
    return {
      mode,
      programs: probes.probes.programIds(),
      agent: null,
      close: async () => probes.close(),
    };
  }
  return { mode, programs: new Map(), agent: null, close: async () => {} };
}

async function metric(agent: { metrics: string }, name: string): Promise<number> {
  const text = await (await fetch(`${agent.metrics}/metrics`)).text();
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) sum += Number(m[1]);
  return sum;
}

/** Waits until the agent has caught up: under 2 ms of CPU in 250 ms (at most 15 s). */
async function agentIdle(pid: number): Promise<void> {
  let last = processCpuSeconds(pid);
  for (const deadline = Date.now() + 15000; Date.now() < deadline; ) {
    await sleep(250);
    const now = processCpuSeconds(pid);
    if (now - last < 0.002) return;
    last = now;
  }
}

/** kpiflow programs loaded on this host by someone else (parallel tests): they add noise. */
function foreignKpiflowPrograms(ours: Map<string, number>): number {
  const mine = new Set(ours.values());
  const all = JSON.parse(run('bpftool', ['prog', 'show', '-j'])) as { id: number; name?: string }[];
  return all.filter((p) => p.name?.startsWith('kf_') && !mine.has(p.id)).length;
}

interface Measured {
  /** CPU seconds of the workload's own processes. */
  workloadCpu: number;
  agentCpu: number;
  hostBusy: number;
  bpf: RunStatsDelta;
  foreign: number;
  /** Events the agent received, and events lost because its ring buffer was full. */
  agentEvents: number;
  agentLost: number;
}

async function measure<T extends { cpu: number }>(
  m: ActiveMode,
  work: () => Promise<T>,
): Promise<Measured & { work: T }> {
  const foreign = foreignKpiflowPrograms(m.programs);
  const before = programRunStats(m.programs);
  const agent0 = m.agent ? processCpuSeconds(m.agent.pid) : 0;
  const host0 = hostBusySeconds();
  const events0 = m.agent ? await metric(m.agent, 'kpiflow_agent_events_total') : 0;
  const lost0 = m.agent ? await metric(m.agent, 'kpiflow_agent_lost_events_total') : 0;
  const w = await work();
  if (m.agent) await agentIdle(m.agent.pid);
  const bpf = runStatsDelta(programRunStats(m.programs), before);
  return {
    agentEvents: m.agent ? (await metric(m.agent, 'kpiflow_agent_events_total')) - events0 : 0,
    agentLost: m.agent ? (await metric(m.agent, 'kpiflow_agent_lost_events_total')) - lost0 : 0,
    work: w,
    workloadCpu: w.cpu,
    agentCpu: m.agent ? processCpuSeconds(m.agent.pid) - agent0 : 0,
    hostBusy: hostBusySeconds() - host0,
    bpf,
    foreign,
  };
}

const cpuOf = (l: Record<string, unknown>) => Number(l['utime']) + Number(l['stime']);

async function waitListening(pair: NetnsPair, port: number): Promise<void> {
  for (const deadline = Date.now() + 10000; Date.now() < deadline; await sleep(20)) {
    if (pair.b.exec('ss', ['-Hltn', `sport = :${port}`]).trim()) return;
  }
  throw new Error(`nothing listens on port ${port} within 10 s`);
}

/** iperf3 from a to b for `seconds`; CPU of both iperf3 processes. */
async function bulk(pair: NetnsPair, seconds: number) {
  const ip = pair.b.ipv4;
  const srv = startPythonPeer(pair.b, LOAD, ['run', 'iperf3', '-s', '-1', '-B', ip, '-p', PORTS.bulk]);
  let cli: ReturnType<typeof startPythonPeer> | null = null;
  try {
    await waitListening(pair, PORTS.bulk);
    cli = startPythonPeer(pair.a, LOAD, ['run', 'iperf3', '-c', ip, '-p', PORTS.bulk, '-t', seconds, '-J']);
    const cdone = await cli.phase('done', (seconds + 30) * 1000);
    const sdone = await srv.phase('done', 30000);
    const json = cli.lines.filter((l) => l.phase === 'output').map((l) => l['line']);
    const report = JSON.parse(json.join('\n')) as {
      end: { sum_received: { bytes: number; seconds: number } };
    };
    if (cdone['rc'] !== 0) throw new Error(`iperf3 client exited ${cdone['rc']}`);
    const r = report.end.sum_received;
    return { bytes: r.bytes, seconds: r.seconds, cpu: cpuOf(cdone) + cpuOf(sdone) };
  } finally {
    cli?.kill();
    srv.kill();
  }
}

/** n short connections from a to b, one after the other; CPU of client and server. */
async function shortConnections(pair: NetnsPair, n: number) {
  const ip = pair.b.ipv4;
  const srv = startPythonPeer(pair.b, LOAD, ['short-server', ip, PORTS.short, n, SHORT_BYTES]);
  let cli: ReturnType<typeof startPythonPeer> | null = null;
  try {
    await srv.phase('listening');
    cli = startPythonPeer(pair.a, LOAD, ['short-client', ip, PORTS.short, n, SHORT_BYTES]);
    const cdone = await cli.phase('done', 300000);
    const sdone = await srv.phase('done', 30000);
    return { connections: n, seconds: Number(cdone['seconds']), cpu: cpuOf(cdone) + cpuOf(sdone) };
  } finally {
    cli?.kill();
    srv.kill();
  }
}

/** A pair whose client side can open connections fast: wide port range, TIME_WAIT reuse. */
function benchPair(): NetnsPair {
  const pair = createNetnsPair();
  try {
    pair.a.exec('sysctl', ['-qw', 'net.ipv4.ip_local_port_range=1024 65535', 'net.ipv4.tcp_tw_reuse=1']);
    return pair;
  } catch (err) {
    pair.close();
    throw err;
  }
}

interface HoldResult {
  mode: Mode;
  connections: number;
  openSeconds: number;
  slabDelta: number;
  rssBefore: number;
  rssAfter: number;
  tracked: number;
  lostEvents: number;
}

/** Holds `hold / 2` TCP connections open between the namespaces (both ends are tracked). */
async function holdConnections(mode: Mode, dir: string, hold: number): Promise<HoldResult> {
  const conns = hold / 2;
  const pair = benchPair();
  let m: ActiveMode | null = null;
  const peers: ReturnType<typeof startPythonPeer>[] = [];
  try {
    // Room for the host's other connections, so none of ours is evicted.
    m = await activate(mode, dir, hold + 50_000);
    if (m.agent) await agentIdle(m.agent.pid);
    const rssBefore = m.agent ? rssBytes(m.agent.pid) : 0;
    const tracked0 = m.agent ? await metric(m.agent, 'kpiflow_agent_connections') : 0;
    const slab0 = accountedSlabBytes();
    const ip = pair.b.ipv4;
    // One descriptor per connection, and a hard limit of descriptors per process this sandbox
    // will not raise: split the connections over client/server pairs, one port each.
    const groups = Math.ceil(conns / HOLD_PER_PROCESS);
    const servers = Array.from({ length: groups }, (_, g) => {
      const n = Math.floor(conns / groups) + (g < conns % groups ? 1 : 0);
      const srv = startPythonPeer(pair.b, LOAD, ['hold-server', ip, PORTS.hold + g, n]);
      peers.push(srv);
      return { srv, n, port: PORTS.hold + g };
    });
    await Promise.all(servers.map((s) => s.srv.phase('listening')));
    const clients = servers.map(({ n, port }) => {
      const cli = startPythonPeer(pair.a, LOAD, ['hold-client', ip, port, n, HOLD_RATE / groups]);
      peers.push(cli);
      return cli;
    });
    const held = await Promise.all(clients.map((c) => c.phase('held', (conns / HOLD_RATE + 60) * 1000)));
    await Promise.all(servers.map((s) => s.srv.phase('held', 60000)));
    let tracked = 0;
    if (m.agent) {
      await agentIdle(m.agent.pid);
      tracked = (await metric(m.agent, 'kpiflow_agent_connections')) - tracked0;
    }
    const result: HoldResult = {
      mode,
      connections: conns,
      openSeconds: Math.max(...held.map((h) => Number(h['seconds']))),
      slabDelta: accountedSlabBytes() - slab0,
      rssBefore,
      rssAfter: m.agent ? rssBytes(m.agent.pid) : 0,
      tracked,
      lostEvents: m.agent ? await metric(m.agent, 'kpiflow_agent_lost_events_total') : 0,
    };
    for (const p of peers) p.endInput();
    await Promise.all(peers.map((p) => p.phase('done', 60000)));
    return result;
  } finally {
    for (const p of peers) p.kill();
    await m?.close();
    pair.close();
  }
}

/** Kernel memory kpiflow adds per socket, from the BTF of the probes and of this kernel. */
function kernelStatePerSocket() {
  const value = readProbeSpec(DEFAULT_PROBE_OBJECT).btf.layout('kf_sk_state').size;
  const kernel = new Btf(readFileSync('/sys/kernel/btf/vmlinux'));
  const elemHeader = kernel.layout('bpf_local_storage_elem').size;
  const storage = kernel.layout('bpf_local_storage').size;
  // Both are kmalloc'ed (sk storage does not use the BPF memory allocator): size classes.
  const kmalloc = (n: number) => [32, 64, 96, 128, 192, 256, 512, 1024, 2048].find((c) => c >= n) ?? n;
  return {
    value,
    elemHeader,
    storage,
    bytes: value + elemHeader + storage,
    slab: kmalloc(value + elemHeader) + kmalloc(storage),
  };
}

interface RepResult {
  bulk: Measured & { work: { bytes: number; seconds: number; cpu: number } };
  short: Measured & { work: { connections: number; seconds: number; cpu: number } };
}

const fmt = (n: number, digits = 0) =>
  n.toLocaleString('en', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const pct = (r: number) => `${r >= 0 ? '+' : ''}${(r * 100).toFixed(1)} %`;
const MiB = 1048576;

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2));
  const why = rootUnavailableReason();
  if (why) {
    process.stderr.write(`agent-overhead: cannot run: ${why}\n`);
    return 1;
  }
  for (const tool of ['iperf3', 'bpftool', 'python3']) {
    if (!hasTool(tool)) {
      process.stderr.write(`agent-overhead: ${tool} is missing (make deps installs it)\n`);
      return 1;
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'kpiflow-overhead-'));
  const stats = await enableBpfStats();
  const started = Date.now();
  const results: Record<Mode, RepResult[]> = { none: [], kpiflow: [], naive: [] };
  const holds: HoldResult[] = [];
  try {
    console.log(
      `agent overhead: ${o.reps} repetitions × 3 modes; bulk: iperf3 ${o.bulkSeconds} s; short: ${fmt(o.short)} connections of ${SHORT_BYTES} bytes each way; memory: ${fmt(o.hold)} tracked connections`,
    );
    const pair = benchPair();
    try {
      for (let rep = 0; rep < o.reps; rep++) {
        // Rotating order: each mode runs first, second and third equally often.
        const order = MODES.map((_, i) => MODES[(i + rep) % MODES.length]!);
        for (const mode of order) {
          const m = await activate(mode, dir);
          try {
            const b = await measure(m, () => bulk(pair, o.bulkSeconds));
            const s = await measure(m, () => shortConnections(pair, o.short));
            results[mode].push({ bulk: b, short: s });
            process.stdout.write(
              `  rep ${rep + 1} ${mode.padEnd(7)} bulk ${((b.work.bytes * 8) / b.work.seconds / 1e9).toFixed(1)} Gbit/s ${((b.workloadCpu / b.work.bytes) * 1e9).toFixed(3)} CPU s/GB, bpf ${fmt(b.bpf.runs)} runs ${fmt(b.bpf.ns / 1e3)} µs; short ${fmt(s.work.connections / s.work.seconds)} conn/s, bpf ${fmt(s.bpf.ns / s.work.connections)} ns/conn, agent ${(s.agentCpu * 1e3).toFixed(0)} ms for ${fmt(s.agentEvents)} events (${fmt(s.agentLost)} lost)\n`,
            );
          } finally {
            await m.close();
          }
        }
      }
    } finally {
      pair.close();
    }
    for (const mode of ['none', 'kpiflow'] as const) holds.push(await holdConnections(mode, dir, o.hold));
  } finally {
    stats.close();
    rmSync(dir, { recursive: true, force: true });
  }

  if (o.reps > 0) printRuns(o, results);
  printMemory(holds);
  const foreign = MODES.flatMap((m) => results[m].flatMap((r) => [r.bulk.foreign, r.short.foreign]));
  const noisy = foreign.filter((f) => f > 0).length;
  console.log(
    `\n${noisy} of ${foreign.length} measured runs had other kpiflow probes loaded on the host (parallel tests); total time ${((Date.now() - started) / 1000).toFixed(0)} s`,
  );
  return 0;
}

/** The bulk and short-connection tables. */
function printRuns(o: Options, results: Record<Mode, RepResult[]>): void {
  // Per repetition, each mode against the no-probe run of the same repetition.
  const none = results.none;
  const ratio = (mode: Mode, f: (r: RepResult) => number) =>
    median(results[mode].map((r, i) => f(r) / f(none[i]!) - 1));
  const bulkCpuPerGB = (r: RepResult) => ((r.bulk.workloadCpu + r.bulk.agentCpu) / r.bulk.work.bytes) * 1e9;
  const shortCpuPerConn = (r: RepResult) =>
    (r.short.workloadCpu + r.short.agentCpu) / r.short.work.connections;
  const med = (mode: Mode, f: (r: RepResult) => number) => median(results[mode].map(f));

  console.log(`\n## Bulk transfer (iperf3, ${o.bulkSeconds} s, medians of ${o.reps} paired runs)\n`);
  console.log(
    '| mode | throughput | workload CPU / GB | agent CPU / GB | BPF time / GB (runs) | total CPU / GB vs none | BPF + agent / workload CPU |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- |');
  for (const mode of MODES) {
    const gb = (r: RepResult) => r.bulk.work.bytes / 1e9;
    console.log(
      `| ${mode} | ${med(mode, (r) => (r.bulk.work.bytes * 8) / r.bulk.work.seconds / 1e9).toFixed(1)} Gbit/s | ${med(mode, (r) => r.bulk.workloadCpu / gb(r)).toFixed(3)} s | ${(med(mode, (r) => r.bulk.agentCpu / gb(r)) * 1e3).toFixed(2)} ms | ${(med(mode, (r) => r.bulk.bpf.ns / gb(r)) / 1e6).toFixed(3)} ms (${fmt(med(mode, (r) => r.bulk.bpf.runs / gb(r)))}) | ${mode === 'none' ? '-' : pct(ratio(mode, bulkCpuPerGB))} | ${mode === 'none' ? '-' : `${(med(mode, (r) => (r.bulk.bpf.ns / 1e9 + r.bulk.agentCpu) / r.bulk.workloadCpu) * 100).toFixed(3)} %`} |`,
    );
  }

  console.log(
    `\n## Short connections (${fmt(o.short)} a run, ${SHORT_BYTES} bytes each way, medians of ${o.reps} paired runs)\n`,
  );
  console.log(
    '| mode | connections/s | workload CPU / conn | workload + agent CPU vs none | BPF ns / conn (runs) | agent CPU / 10k conn |',
  );
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const mode of MODES) {
    const n = (r: RepResult) => r.short.work.connections;
    console.log(
      `| ${mode} | ${fmt(med(mode, (r) => n(r) / r.short.work.seconds))} | ${(med(mode, (r) => r.short.workloadCpu / n(r)) * 1e6).toFixed(1)} µs | ${mode === 'none' ? '-' : pct(ratio(mode, shortCpuPerConn))} | ${fmt(med(mode, (r) => r.short.bpf.ns / n(r)))} (${med(mode, (r) => r.short.bpf.runs / n(r)).toFixed(1)}) | ${mode === 'kpiflow' ? `${(med(mode, (r) => (r.short.agentCpu / n(r)) * 1e4) * 1e3).toFixed(0)} ms` : '-'} |`,
    );
  }
  const per: Record<string, number[]> = {};
  for (const r of results.kpiflow)
    for (const [name, s] of Object.entries(r.short.bpf.per)) {
      per[name] = [...(per[name] ?? []), s.ns / r.short.work.connections];
    }
  console.log(
    `\nkpiflow BPF ns per short connection by program (medians): ${Object.entries(per)
      .map(([name, xs]) => `${name} ${fmt(median(xs))}`)
      .join(', ')}`,
  );
  const kp = results.kpiflow.map((r) => r.short);
  const events = kp.reduce((a, r) => a + r.agentEvents, 0);
  const lost = kp.reduce((a, r) => a + r.agentLost, 0);
  console.log(
    `kpiflow agent, short connections: ${med('kpiflow', (r) => r.short.agentEvents / r.short.work.connections).toFixed(1)} events per connection (median), ${(med('kpiflow', (r) => r.short.agentCpu / Math.max(1, r.short.agentEvents)) * 1e6).toFixed(1)} µs of agent CPU per event; ${fmt(lost)} of ${fmt(events + lost)} events lost (ring buffer full) over all runs`,
  );
}

/** Kernel state per socket, slab growth and agent RSS. */
function printMemory(holds: HoldResult[]): void {
  const k = kernelStatePerSocket();
  const [holdNone, holdKp] = holds as [HoldResult, HoldResult];
  const sockets = holdKp.connections * 2;
  console.log('\n## Memory\n');
  console.log('| measure | value |');
  console.log('| --- | --- |');
  console.log(
    `| kernel state per socket, from BTF | ${k.bytes} bytes (kf_sk_state ${k.value} + element header ${k.elemHeader} + per-socket bpf_local_storage ${k.storage}); ${k.slab} bytes in kmalloc size classes |`,
  );
  console.log(
    `| kmalloc-cg-* slab growth per socket, kpiflow − none (${fmt(sockets)} sockets held) | ${fmt((holdKp.slabDelta - holdNone.slabDelta) / sockets)} bytes |`,
  );
  console.log(
    `| agent RSS with ${fmt(holdKp.tracked)} tracked connections (${fmt(holdKp.connections)} TCP connections, both ends) | ${fmt(holdKp.rssAfter / MiB)} MiB (${fmt(holdKp.rssBefore / MiB)} MiB before: ${fmt((holdKp.rssAfter - holdKp.rssBefore) / Math.max(1, holdKp.tracked))} bytes per connection); ${fmt(holdKp.lostEvents)} events lost |`,
  );
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`agent-overhead: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
