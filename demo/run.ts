/**
 * `kpiflow demo`: the collector and the live agent on this machine, traffic between two network
 * namespaces that reproduces the case studies of the Flowcorder paper (a destination with a high
 * RTT, SYN loss on the IPv4 path only, a lossy bulk transfer), progress while it runs, then a
 * terminal summary read from the collector's API and where the API is. Without root (or BTF) it
 * replays the bundled recordings of live runs through the agent instead. Ctrl-C stops everything
 * and removes the namespaces.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { addDelayedDestination, type DelayedDestination } from './delay-path.js';

const CLI = fileURLToPath(new URL('../cli/kpiflow.js', import.meta.url));
const TRAFFIC = fileURLToPath(new URL('../../demo/traffic.py', import.meta.url));
/** Recordings of this demo run live (`kpiflow demo --record`), replayed without root. */
const RECORDINGS = fileURLToPath(new URL('../../demo/recordings/', import.meta.url));

/** Settings of a demo run. */
export interface DemoOptions {
  /** Seconds of traffic. */
  seconds: number;
  /** API port on 127.0.0.1. */
  apiPort: number;
  /** Exit after the summary instead of serving the API until Ctrl-C. */
  exit: boolean;
  /** Write the summary as JSON here too (for tests). */
  summaryJson: string | null;
  /** Keep the database in this directory (else a temporary one, removed at the end). */
  dir: string | null;
  /** Replay the bundled recordings even when live probes could run. */
  replay: boolean;
  /** Live mode: the agent also records its events here (what demo/recordings/ holds). */
  record: string | null;
}

/** The namespaces and addresses of the demo. */
const NS = { client: 'kfdemo-c', server: 'kfdemo-s' } as const;
const LINK = { client: '192.0.2.1', server: '192.0.2.2', client6: '2001:db8::1', server6: '2001:db8::2' };
/** The second path of the MPTCP transfer (a second veth pair). */
const PATH2 = { client: '203.0.113.1', server: '203.0.113.2' };
const MPTCP_PORT = 8443;
/** Destinations on the server side, one per case study. */
const DEST = {
  web4: '198.51.100.10',
  web6: '2001:db8:1::10',
  far: '198.51.100.80',
  bulk: '203.0.113.20',
  near: '203.0.113.30',
} as const;
const FAR_DELAY_MS = 150;

const out = (s: string) => {
  if (!process.stdout.destroyed) process.stdout.write(`${s}\n`);
};
const err = (s: string) => {
  if (!process.stderr.destroyed) process.stderr.write(`${s}\n`);
};

/**
 * The demo's output may go to a pipe whose reader is gone (`make demo | tee log` and Ctrl-C: tee
 * dies first). A write then fails with EPIPE, which Node raises as an 'error' event on the stream;
 * unhandled, it would end the process before the namespaces are removed. So write errors only
 * stop further output, and cleanup goes on. The listeners stay for the life of the process: an
 * error of an earlier write can be raised after the demo returned.
 */
function survivePipeErrors(): void {
  for (const stream of [process.stdout, process.stderr])
    if (stream.listenerCount('error') === 0) stream.on('error', () => stream.destroy());
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function sh(cmd: string, args: string[], input?: string): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.trim()}`);
}

/** Why the live agent cannot run here, or null. */
function liveUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'not root';
  if (!existsSync('/sys/kernel/btf/vmlinux')) return 'no BTF at /sys/kernel/btf/vmlinux';
  if (spawnSync('ip', ['-V'], { stdio: 'ignore' }).status !== 0) return 'iproute2 (ip) missing';
  if (spawnSync('nft', ['--version'], { stdio: 'ignore' }).status !== 0) return 'nftables (nft) missing';
  return null;
}

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Everything started, stopped in reverse order. */
class Stack {
  private readonly undo: { what: string; fn: () => void | Promise<void> }[] = [];

  add(what: string, fn: () => void | Promise<void>): void {
    this.undo.push({ what, fn });
  }

  async unwind(): Promise<void> {
    for (const u of this.undo.reverse()) {
      try {
        await u.fn();
      } catch (e) {
        err(`demo: cleaning up ${u.what}: ${(e as Error).message}`);
      }
    }
    this.undo.length = 0;
  }
}

function start(cmd: string, args: string[], name: string): ChildProcess {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let tail = '';
  p.stderr!.on('data', (d: Buffer) => {
    tail = (tail + d.toString()).slice(-4000);
  });
  p.once('exit', (code, signal) => {
    if (code && code !== 0) err(`demo: ${name} exited ${code ?? signal}: ${tail.trim()}`);
  });
  return p;
}

async function stopProcess(p: ChildProcess, ms = 10_000): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const done = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), ms);
  await done;
  clearTimeout(t);
}

async function api<T>(port: number, path: string): Promise<T> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  if (!r.ok) throw new Error(`GET ${path}: ${r.status} ${await r.text()}`);
  return (await r.json()) as T;
}

async function profilesStored(port: number): Promise<number> {
  const ex = await api<{ items: { profiles: number }[] }>(port, '/api/v1/exporters');
  return ex.items.reduce((a, e) => a + e.profiles, 0);
}

function netns(stack: Stack): void {
  for (const n of Object.values(NS)) spawnSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
  for (const n of Object.values(NS)) {
    sh('ip', ['netns', 'add', n]);
    stack.add(`namespace ${n}`, () => sh('ip', ['netns', 'del', n]));
    sh('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
  }
  sh('ip', [
    'link',
    'add',
    'kfdemo0',
    'netns',
    NS.client,
    'type',
    'veth',
    'peer',
    'name',
    'kfdemo1',
    'netns',
    NS.server,
  ]);
  const cfg: [string, string, string, string][] = [
    [NS.client, 'kfdemo0', LINK.client, LINK.client6],
    [NS.server, 'kfdemo1', LINK.server, LINK.server6],
  ];
  for (const [n, dev, v4, v6] of cfg) {
    sh('ip', ['-n', n, 'addr', 'add', `${v4}/24`, 'dev', dev]);
    sh('ip', ['-n', n, 'addr', 'add', `${v6}/64`, 'dev', dev, 'nodad']);
    sh('ip', ['-n', n, 'link', 'set', dev, 'up']);
  }
  // Path 2, for MPTCP: the server announces its address there and the client joins it.
  sh('ip', [
    'link',
    'add',
    'kfdemo2',
    'netns',
    NS.client,
    'type',
    'veth',
    'peer',
    'name',
    'kfdemo3',
    'netns',
    NS.server,
  ]);
  for (const [n, dev, v4] of [
    [NS.client, 'kfdemo2', PATH2.client],
    [NS.server, 'kfdemo3', PATH2.server],
  ] as const) {
    sh('ip', ['-n', n, 'addr', 'add', `${v4}/30`, 'dev', dev]);
    sh('ip', ['-n', n, 'link', 'set', dev, 'up']);
    sh('ip', ['netns', 'exec', n, 'sysctl', '-qw', 'net.mptcp.enabled=1', 'net.ipv4.conf.all.rp_filter=0']);
  }
  sh('ip', ['-n', NS.server, 'mptcp', 'limits', 'set', 'subflows', '2', 'add_addr_accepted', '0']);
  sh('ip', ['-n', NS.client, 'mptcp', 'limits', 'set', 'subflows', '2', 'add_addr_accepted', '2']);
  sh('ip', [
    '-n',
    NS.server,
    'mptcp',
    'endpoint',
    'add',
    PATH2.server,
    'dev',
    'kfdemo3',
    'id',
    '2',
    'signal',
  ]);
  sh('ip', ['-n', NS.client, 'route', 'add', 'default', 'via', LINK.server]);
  sh('ip', ['-n', NS.client, '-6', 'route', 'add', 'default', 'via', LINK.server6]);
  for (const a of [DEST.web4, DEST.bulk, DEST.near])
    sh('ip', ['-n', NS.server, 'addr', 'add', `${a}/32`, 'dev', 'lo']);
  sh('ip', ['-n', NS.server, 'addr', 'add', `${DEST.web6}/128`, 'dev', 'lo']);
}

/**
 * The nftables rules of the case studies, loaded in the server namespace: SYN loss on the IPv4
 * path only (a third of first SYNs), 2 % loss towards the bulk server.
 */
function impairments(): string {
  return `table inet kfdemo {
  chain input {
    type filter hook input priority 0; policy accept;
    ip daddr ${DEST.web4} tcp flags & (syn | ack) == syn numgen random mod 3 == 0 drop
    ip daddr ${DEST.bulk} numgen random mod 50 == 0 drop
  }
}
`;
}

interface SummaryItem {
  key: string | number | null;
  profiles: number;
  connections: number;
  retransmittedPacketTotalCount: number;
  stallCount: number;
  rtt: { mean: number; p50: number; p90: number } | null;
  timeToEstablish: { mean: number; p50: number; p90: number } | null;
}

/** The summary the demo prints (and writes as JSON with --summary-json). */
export interface DemoSummary {
  mode: 'live' | 'replay';
  profiles: number;
  destinations: SummaryItem[];
  ipVersions: SummaryItem[];
  /** MPTCP connection profiles (template 47563) and subflow profiles (47564) stored. */
  mptcp: { connectionProfiles: number; subflowProfiles: number; pathIndexes: number[] };
}

const ms = (v: number | undefined | null) =>
  v === undefined || v === null ? '-' : v.toFixed(v < 10 ? 2 : 0);

function printSummary(s: DemoSummary, port: number): void {
  out(`\n== kpiflow demo summary (${s.mode}, ${s.profiles} profiles) ==`);
  out('\nDestinations by RTT (median, ms), with stalls and retransmissions:');
  out(
    `${'destination'.padEnd(20)}${'conns'.padStart(7)}${'rtt p50'.padStart(9)}${'rtt p90'.padStart(9)}${'stalls'.padStart(8)}${'retrans'.padStart(9)}`,
  );
  const byRtt = [...s.destinations].sort((a, b) => (b.rtt?.p50 ?? -1) - (a.rtt?.p50 ?? -1));
  for (const d of byRtt.slice(0, 8))
    out(
      `${String(d.key).padEnd(20)}${String(d.connections).padStart(7)}${ms(d.rtt?.p50).padStart(9)}${ms(d.rtt?.p90).padStart(9)}${String(d.stallCount).padStart(8)}${String(d.retransmittedPacketTotalCount).padStart(9)}`,
    );
  out('\nTime to establish by IP version (ms):');
  out(
    `${'IP version'.padEnd(12)}${'conns'.padStart(7)}${'mean'.padStart(8)}${'p50'.padStart(8)}${'p90'.padStart(8)}`,
  );
  for (const v of [...s.ipVersions].sort((a, b) => Number(a.key) - Number(b.key))) {
    // Handshakes under 1 ms are reported as 0 ms and left out of the statistics.
    const t = v.timeToEstablish;
    const cells = t ? [ms(t.mean), ms(t.p50), ms(t.p90)] : ['< 1', '< 1', '< 1'];
    out(
      `${`IPv${v.key}`.padEnd(12)}${String(v.connections).padStart(7)}${cells.map((c) => c.padStart(8)).join('')}`,
    );
  }
  out(
    `\nMPTCP: ${s.mptcp.connectionProfiles} connection profiles, ${s.mptcp.subflowProfiles} subflow profiles on paths ${s.mptcp.pathIndexes.join(', ') || '-'}`,
  );
  out(
    `\nAPI: http://127.0.0.1:${port}/api/v1/profiles/summary?groupBy=destination  (OpenAPI: http://127.0.0.1:${port}/docs)`,
  );
  out(`Metrics: http://127.0.0.1:${port}/metrics`);
  out(
    `Dashboards: dashboards/*.json for Grafana (datasources in grafana/provisioning: Prometheus on these metrics, and this API through the Infinity plugin)`,
  );
}

async function collectSummary(port: number, mode: 'live' | 'replay'): Promise<DemoSummary> {
  const d = await api<{ items: SummaryItem[] }>(
    port,
    '/api/v1/profiles/summary?groupBy=destination&limit=50',
  );
  const v = await api<{ items: SummaryItem[] }>(port, '/api/v1/profiles/summary?groupBy=ipVersion&limit=10');
  const count = async (id: number) =>
    (
      await api<{ items: SummaryItem[] }>(port, `/api/v1/profiles/summary?groupBy=exporter&templateId=${id}`)
    ).items.reduce((a, g) => a + g.profiles, 0);
  const subflows = (
    await api<{ items: Record<string, unknown>[] }>(port, '/api/v1/profiles?templateId=47564&limit=1000')
  ).items;
  return {
    mode,
    profiles: await profilesStored(port),
    destinations: d.items,
    ipVersions: v.items,
    mptcp: {
      connectionProfiles: await count(47563),
      subflowProfiles: await count(47564),
      pathIndexes: [...new Set(subflows.map((p) => Number(p['pathIndex'])))].sort((a, b) => a - b),
    },
  };
}

/** Runs the demo; returns the exit code. */
export async function runDemo(opts: DemoOptions): Promise<number> {
  const stack = new Stack();
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    interrupted = true;
    out(`\ndemo: stopping (${signal === 'SIGINT' ? 'Ctrl-C' : signal}) ...`);
  };
  // A closed terminal (SIGHUP) or a service manager (SIGTERM) stops it as Ctrl-C does.
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const s of signals) process.on(s, onSignal);
  survivePipeErrors();
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'kpiflow-demo-'));
  if (!opts.dir) stack.add('temporary directory', () => rmSync(dir, { recursive: true, force: true }));
  try {
    const why = opts.replay ? 'asked to replay' : liveUnavailable();
    const mode = why ? 'replay' : 'live';
    out(
      `kpiflow demo: ${mode === 'live' ? 'live agent (root, BTF)' : `replaying recorded live runs (${why})`}`,
    );
    const ipfixPort = await freePort();
    const collector = start(
      process.execPath,
      [
        CLI,
        'collect',
        '--db',
        join(dir, 'demo.db'),
        '--ipfix-udp',
        'off',
        '--ipfix-tcp',
        `127.0.0.1:${ipfixPort}`,
        '--ipfix-tls',
        'off',
        '--http',
        `127.0.0.1:${opts.apiPort}`,
        '--log-level',
        'warn',
      ],
      'collector',
    );
    stack.add('collector', () => stopProcess(collector));
    for (let i = 0; ; i++) {
      if (collector.exitCode !== null)
        throw new Error('the collector did not start (port in use? see above)');
      const ok = await fetch(`http://127.0.0.1:${opts.apiPort}/healthz`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      if (i > 100) throw new Error('the collector did not answer /healthz in 10 s');
      await sleep(100);
    }
    out(`collector: IPFIX on tcp://127.0.0.1:${ipfixPort}, API on http://127.0.0.1:${opts.apiPort}`);
    if (mode === 'replay') await replay(ipfixPort);
    else await live(opts, stack, ipfixPort, opts.apiPort, () => interrupted);
    // Everything the agent sent is stored once the count stands still.
    let last = -1;
    for (let i = 0; i < 40; i++) {
      const n = await profilesStored(opts.apiPort);
      if (n === last) break;
      last = n;
      await sleep(250);
    }
    const summary = await collectSummary(opts.apiPort, mode);
    printSummary(summary, opts.apiPort);
    if (opts.summaryJson) writeFileSync(opts.summaryJson, `${JSON.stringify(summary, null, 2)}\n`);
    if (!opts.exit && !interrupted) {
      out('\nThe collector keeps serving the API; Ctrl-C stops it and removes the namespaces.');
      while (!interrupted) await sleep(200);
    }
    return interrupted ? 130 : 0;
  } catch (e) {
    err(`demo: ${(e as Error).message}`);
    // Ctrl-C reaches the collector and the agent too: what failed after it is part of stopping.
    return interrupted ? 130 : 1;
  } finally {
    await stack.unwind();
    for (const s of signals) process.off(s, onSignal);
  }
}

/** Replays every bundled recording through the agent into the collector. */
async function replay(ipfixPort: number): Promise<void> {
  const files = existsSync(RECORDINGS)
    ? readdirSync(RECORDINGS)
        .map(String)
        .filter((f) => f.endsWith('.kfev'))
    : [];
  if (files.length === 0)
    throw new Error(`no recordings under ${RECORDINGS} (make them with kpiflow demo --record)`);
  for (const f of files) {
    const r = spawnSync(
      process.execPath,
      [
        CLI,
        'agent',
        '--source',
        `events:${join(RECORDINGS, f)}`,
        '--export',
        `tcp://127.0.0.1:${ipfixPort}`,
        '--log-level',
        'warn',
      ],
      { encoding: 'utf8' },
    );
    if (r.status !== 0) throw new Error(`replay of ${f} failed (${r.status}): ${r.stderr.trim()}`);
    out(`replayed ${f}`);
  }
}

/** Namespaces, impairments, the live agent and the traffic; returns when the traffic is done. */
async function live(
  opts: DemoOptions,
  stack: Stack,
  ipfixPort: number,
  apiPort: number,
  stopped: () => boolean,
): Promise<void> {
  netns(stack);
  sh('ip', ['netns', 'exec', NS.server, 'nft', '-f', '-'], impairments());
  const far: DelayedDestination = await addDelayedDestination(
    { name: NS.client, ipv4: LINK.client },
    { name: NS.server, ipv4: LINK.server },
    DEST.far,
    FAR_DELAY_MS,
    'kfdemodly',
  );
  stack.add('delayed path', () => far.close());
  out(
    `namespaces ${NS.client} (client) and ${NS.server} (server): ${DEST.far} behind ${FAR_DELAY_MS} ms, SYN loss towards ${DEST.web4} (IPv4 only), 2 % loss towards ${DEST.bulk}, MPTCP uploads to ${LINK.server} port ${MPTCP_PORT} over two paths`,
  );
  const agent = start(
    process.execPath,
    [
      CLI,
      'agent',
      '--source',
      'live',
      '--netns',
      NS.client,
      '--export',
      `tcp://127.0.0.1:${ipfixPort}`,
      '--flush-interval',
      '200ms',
      '--log-level',
      'warn',
      ...(opts.record ? ['--record', opts.record] : []),
    ],
    'agent',
  );
  stack.add('agent', () => stopProcess(agent));
  // The agent is ready once its probes are attached: give it a moment, then check it lives.
  await sleep(2000);
  if (agent.exitCode !== null) throw new Error('the agent did not start (see above)');
  const server = start(
    'ip',
    [
      'netns',
      'exec',
      NS.server,
      'python3',
      TRAFFIC,
      'server',
      '--port',
      '443',
      '--mptcp-port',
      String(MPTCP_PORT),
    ],
    'traffic server',
  );
  stack.add('traffic server', () => stopProcess(server, 2000));
  await sleep(500);
  const plan = [
    { name: 'web (IPv4)', addr: DEST.web4, port: 443, weight: 6, request: 500, response: 20_000 },
    { name: 'web (IPv6)', addr: DEST.web6, port: 443, weight: 6, request: 500, response: 20_000 },
    { name: 'far', addr: DEST.far, port: 443, weight: 3, request: 500, response: 50_000 },
    { name: 'near', addr: DEST.near, port: 443, weight: 4, request: 500, response: 5_000 },
    { name: 'bulk', addr: DEST.bulk, port: 443, weight: 1, request: 4 << 20, response: 100 },
    {
      name: 'mptcp',
      addr: LINK.server,
      port: MPTCP_PORT,
      weight: 1,
      request: 8 << 20,
      response: 100,
      mptcp: true,
    },
  ];
  const client = start(
    'ip',
    [
      'netns',
      'exec',
      NS.client,
      'python3',
      TRAFFIC,
      'client',
      '--duration',
      String(opts.seconds),
      '--workers',
      '4',
      '--plan',
      JSON.stringify(plan),
    ],
    'traffic client',
  );
  stack.add('traffic client', () => stopProcess(client, 2000));
  const lines = createInterface({ input: client.stdout! });
  let lastPrint = 0;
  const done = new Promise<void>((resolve) => client.once('exit', () => resolve()));
  lines.on('line', (l) => {
    let m: { phase: string; seconds?: number; counts?: Record<string, { ok: number; errors: number }> };
    try {
      m = JSON.parse(l);
    } catch {
      return;
    }
    if (m.phase !== 'progress' || (m.seconds ?? 0) - lastPrint < 5) return;
    lastPrint = m.seconds ?? 0;
    const c = Object.values(m.counts ?? {}).reduce((a, x) => a + x.ok + x.errors, 0);
    void profilesStored(apiPort).then(
      (p) => out(`  ${lastPrint}/${opts.seconds} s: ${c} connections, ${p} profiles stored`),
      () => {},
    );
  });
  while (client.exitCode === null && !stopped()) await Promise.race([done, sleep(200)]);
  await stopProcess(client, 2000);
  // The agent exports what it holds when it stops.
  await stopProcess(agent);
}
