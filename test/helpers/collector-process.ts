/**
 * End-to-end helpers: `kpiflow collect` as a child process on loopback (ports 0, a temp dir and
 * database of its own), its 'collector ready' line parsed for the bound addresses, the HTTP API
 * fetched, /metrics parsed, and the process stopped with SIGTERM or SIGKILL. `withCollector`
 * always kills the process and removes its directory, even when the test fails.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The compiled command line (dist/cli/kpiflow.js). */
export const KPIFLOW = fileURLToPath(new URL('../../cli/kpiflow.js', import.meta.url));

/** A host and port. */
export interface HostPort {
  host: string;
  port: number;
}

/** How the collector process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** One sample of the Prometheus text format. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parsed /metrics. */
export class Metrics {
  constructor(readonly samples: Sample[]) {}

  /** Sum of the samples of `name` whose labels include `labels`. */
  get(name: string, labels: Record<string, string> = {}): number {
    let sum = 0;
    for (const s of this.samples) {
      if (s.name !== name) continue;
      if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) sum += s.value;
    }
    return sum;
  }

  /** True when some sample is named `name`. */
  has(name: string): boolean {
    return this.samples.some((s) => s.name === name);
  }
}

/** Parses the Prometheus text exposition format (no timestamps, as prom-client writes it). */
export function parseMetrics(text: string): Metrics {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_x, c: string) => (c === 'n' ? '\n' : c));
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return new Metrics(samples);
}

/** Settings of a collector process; every field has a default. */
export interface CollectorProcessOptions {
  /** Directory for the database (default: a new temp dir, removed by `withCollector`). */
  dir?: string;
  /** Database file (default DIR/kpiflow.db). */
  db?: string;
  /** Extra `kpiflow collect` arguments (e.g. TLS, --batch-size). */
  args?: string[];
  /** Longest wait for 'collector ready', ms. Default 15 s. */
  readyTimeoutMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function hostPort(text: unknown): HostPort | undefined {
  if (typeof text !== 'string') return undefined;
  const i = text.lastIndexOf(':');
  return { host: text.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(text.slice(i + 1)) };
}

/** A running `kpiflow collect`. */
export class CollectorProcess {
  /** Every JSON line the process logged so far. */
  readonly logs: Record<string, unknown>[] = [];
  stdout = '';
  stderr = '';
  udp!: HostPort;
  tcp!: HostPort;
  tls: HostPort | undefined;
  /** API base URL, `http://127.0.0.1:PORT`. */
  http!: string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<Exit>;
  private exit: Exit | null = null;

  private constructor(
    readonly proc: ChildProcess,
    readonly dir: string,
    readonly db: string,
  ) {
    this.exited = new Promise((resolve) =>
      proc.on('close', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      }),
    );
  }

  /** Starts the process and waits for its 'collector ready' line. */
  static async start(options: CollectorProcessOptions = {}): Promise<CollectorProcess> {
    const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'kpiflow-e2e-'));
    const db = options.db ?? join(dir, 'kpiflow.db');
    const proc = spawn(
      process.execPath,
      [
        KPIFLOW,
        'collect',
        '--ipfix-udp',
        '127.0.0.1:0',
        '--ipfix-tcp',
        '127.0.0.1:0',
        '--http',
        '127.0.0.1:0',
        '--db',
        db,
        ...(options.args ?? []),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const c = new CollectorProcess(proc, dir, db);
    let ready!: (line: Record<string, unknown>) => void;
    const readyLine = new Promise<Record<string, unknown>>((r) => {
      ready = r;
    });
    let partial = '';
    proc.stdout!.setEncoding('utf8');
    proc.stdout!.on('data', (d: string) => {
      c.stdout += d;
      partial += d;
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        if (!line.trim()) continue;
        let obj: Record<string, unknown>;
        try {
          obj = JSON.parse(line) as Record<string, unknown>;
        } catch {
          obj = { msg: line, unparsed: true };
        }
        c.logs.push(obj);
        if (obj['msg'] === 'collector ready') ready(obj);
      }
    });
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (d: string) => {
      c.stderr += d;
    });
    const timeout = options.readyTimeoutMs ?? 15_000;
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      readyLine,
      c.exited.then((e) => e),
      new Promise<'timeout'>((r) => {
        timer = setTimeout(() => r('timeout'), timeout);
      }),
    ]);
    clearTimeout(timer);
    if (outcome === 'timeout' || 'code' in outcome) {
      if (c.exit === null) proc.kill('SIGKILL');
      throw new Error(
        `kpiflow collect did not become ready (${outcome === 'timeout' ? `${timeout} ms` : `exit ${JSON.stringify(outcome)}`}): ${c.stderr}${c.stdout}`,
      );
    }
    c.udp = hostPort(outcome['udp'])!;
    c.tcp = hostPort(outcome['tcp'])!;
    c.tls = hostPort(outcome['tls']);
    c.http = String(outcome['http']);
    return c;
  }

  /** True while the process runs. */
  get running(): boolean {
    return this.exit === null;
  }

  /** GET `path` of the API; returns the status and the parsed JSON (or text) body. */
  async request(path: string, init: RequestInit = {}): Promise<{ status: number; body: unknown }> {
    const r = await fetch(this.http + path, { ...init, signal: AbortSignal.timeout(10_000) });
    const text = await r.text();
    let body: unknown = text;
    if ((r.headers.get('content-type') ?? '').includes('json')) body = JSON.parse(text);
    return { status: r.status, body };
  }

  /** GET `path` and return its JSON; throws unless the status is 200. */
  async json<T = unknown>(path: string): Promise<T> {
    const r = await this.request(path);
    if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body as T;
  }

  /** Every item of a list endpoint, following nextCursor page by page; also the page count. */
  async all<T = Record<string, unknown>>(
    path: string,
    query: Record<string, string | number> = {},
    limit = 1000,
  ): Promise<{ items: T[]; pages: number }> {
    const items: T[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const q = new URLSearchParams({
        ...Object.fromEntries(Object.entries(query).map(([k, v]) => [k, String(v)])),
        limit: String(limit),
      });
      if (cursor) q.set('cursor', cursor);
      const page: { items: T[]; nextCursor: string | null } = await this.json(`${path}?${q}`);
      items.push(...page.items);
      cursor = page.nextCursor;
      pages++;
      if (pages > 100_000) throw new Error(`${path}: pagination does not end`);
    } while (cursor);
    return { items, pages };
  }

  /** The parsed /metrics. */
  async metrics(): Promise<Metrics> {
    const r = await this.request('/metrics');
    if (r.status !== 200) throw new Error(`GET /metrics: ${r.status}`);
    return parseMetrics(String(r.body));
  }

  /** The exporters the API lists. */
  async exporters(): Promise<ExporterItem[]> {
    const body = await this.json<{ items: ExporterItem[] }>('/api/v1/exporters');
    return body.items;
  }

  /** Polls `check` (every 50 ms) until it returns true; throws with `what` after `timeoutMs`. */
  async until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.running) throw new Error(`collector exited while waiting for ${what}: ${this.stderr}`);
      if (await check()) return;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await sleep(50);
    }
  }

  /** Sends `signal` and waits for the exit (SIGKILL after `timeoutMs`, and then throws). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<Exit> {
    if (this.exit) return this.exit;
    this.proc.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      this.exited,
      new Promise<null>((res) => {
        timer = setTimeout(() => res(null), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (r === null) {
      this.proc.kill('SIGKILL');
      await this.exited;
      throw new Error(`kpiflow collect did not exit within ${timeoutMs} ms of ${signal}`);
    }
    return r;
  }

  /** Kills the process if it still runs (cleanup path). */
  async kill(): Promise<void> {
    if (this.exit) return;
    this.proc.kill('SIGKILL');
    await this.exited;
  }
}

/** One exporter as /api/v1/exporters lists it. */
export interface ExporterItem {
  exporter: string;
  transport: string;
  address: string | null;
  port: number | null;
  firstSeen: number;
  lastSeen: number;
  records: number;
  profiles: number;
  flows: number;
  lostRecords: number;
  decodeErrors: number;
  templateIds: number[];
}

/** `withCollector` settings: `args` may be built from the temp dir (e.g. certificates made there). */
export interface WithCollectorOptions extends Omit<CollectorProcessOptions, 'args'> {
  args?: string[] | ((dir: string) => string[]);
}

/**
 * Runs `fn` with a fresh collector in a temp dir; afterwards (even on failure) kills the process
 * if it still runs and removes the dir. `fn` may stop or restart collectors itself.
 */
export async function withCollector<T>(
  options: WithCollectorOptions,
  fn: (c: CollectorProcess, dir: string) => Promise<T>,
): Promise<T> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'kpiflow-e2e-'));
  let c: CollectorProcess | undefined;
  try {
    const args = typeof options.args === 'function' ? options.args(dir) : options.args;
    const { args: _args, ...rest } = options;
    c = await CollectorProcess.start({ ...rest, dir, ...(args ? { args } : {}) });
    return await fn(c, dir);
  } finally {
    await c?.kill();
    if (!options.dir) rmSync(dir, { recursive: true, force: true });
  }
}

/** Source ports `sendUdp` has sent from in this process: each call must be a new exporter. */
const usedUdpPorts = new Set<number>();

/** A UDP socket bound on 127.0.0.1 to an ephemeral port no earlier `sendUdp` call of this process used. */
async function freshUdpSocket(): Promise<dgram.Socket> {
  // The kernel picks ephemeral UDP ports at random, so two calls can get the same one (about one
  // chance in 28,000 a pair): the collector would then see the same exporter twice, and a test
  // waiting for "the exporter of port P has 1 record" would read the earlier call's record.
  const rejected: dgram.Socket[] = [];
  try {
    for (;;) {
      const sock = dgram.createSocket('udp4');
      await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
      const port = sock.address().port;
      if (!usedUdpPorts.has(port)) {
        usedUdpPorts.add(port);
        return sock;
      }
      rejected.push(sock); // held open until a new port comes, so the kernel cannot pick it again
    }
  } finally {
    for (const s of rejected) s.close();
  }
}

/**
 * Sends each message as one UDP datagram from a fresh socket (one exporter, on a source port no
 * earlier call used); returns its port.
 */
export async function sendUdp(target: HostPort, messages: readonly Uint8Array[]): Promise<number> {
  const sock = await freshUdpSocket();
  try {
    for (const m of messages)
      await new Promise<void>((res, rej) =>
        sock.send(m, target.port, target.host, (err) => (err ? rej(err) : res())),
      );
    return sock.address().port;
  } finally {
    sock.close();
  }
}

/** A datagram the relay passed on. */
export interface RelayedDatagram {
  payload: Buffer;
  /** The exporter's source port. */
  port: number;
}

/**
 * A UDP socket in the middle: exporters send to it, it keeps a copy of every datagram (for an
 * independent decode by tshark or ipfixDump) and forwards it unchanged to `target`. The collector
 * sees the relay's address and port as the exporter.
 */
export class UdpRelay {
  readonly datagrams: RelayedDatagram[] = [];
  private forwarded = 0;

  private constructor(
    private readonly sock: dgram.Socket,
    readonly target: HostPort,
  ) {
    sock.on('message', (payload, rinfo) => {
      this.datagrams.push({ payload, port: rinfo.port });
      sock.send(payload, target.port, target.host, () => {
        this.forwarded++;
      });
    });
  }

  /** Opens the relay on 127.0.0.1 (port 0). */
  static async open(target: HostPort): Promise<UdpRelay> {
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    return new UdpRelay(sock, target);
  }

  /** Where exporters send. */
  get address(): HostPort {
    const a = this.sock.address();
    return { host: a.address, port: a.port };
  }

  /** The exporter key the collector gives the relay (`udp:127.0.0.1:PORT`). */
  get exporterKey(): string {
    return `udp:127.0.0.1:${this.address.port}`;
  }

  /** Waits until `count` datagrams arrived and were forwarded (up to `timeoutMs`). */
  async settle(count: number, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.datagrams.length < count || this.forwarded < this.datagrams.length) {
      if (Date.now() > deadline)
        throw new Error(
          `relay: ${this.datagrams.length} of ${count} datagrams received, ${this.forwarded} forwarded`,
        );
      await sleep(5);
    }
  }

  close(): void {
    this.sock.close();
  }
}
