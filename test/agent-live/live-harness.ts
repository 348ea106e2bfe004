/**
 * Helpers of the live end-to-end tests: `kpiflow agent` as a child process in the host
 * namespace, TCP peers (test/agent-live/peer.py) inside test namespaces speaking JSON lines,
 * nftables impairments, the namespace's own SNMP counters, and the profiles of one connection
 * read back from a real `kpiflow collect`. Ground truth comes from the peers (TCP_INFO, the
 * bytes they moved) and the kernel's counters, never from the agent.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CollectorProcess, KPIFLOW, type Metrics, parseMetrics } from '../helpers/collector-process.js';
import { startPythonPeer } from '../helpers/json-peer.js';
import { type NetnsHost, requireRoot, rootUnavailableReason } from '../helpers/netns.js';
import { IN_CI, requireTools } from '../helpers/tools.js';

/** The peer script, from the source tree (tests run from dist/). */
export const PEER = fileURLToPath(new URL('../../../test/agent-live/peer.py', import.meta.url));

/** What `make build` makes and the live agent needs. */
const BUILT = [
  fileURLToPath(new URL('../../../build/probes/kpiflow.bpf.o', import.meta.url)),
  fileURLToPath(new URL('../../../native/build/Release/kpiflow_bpf.node', import.meta.url)),
];

/** Promise of `ms` milliseconds. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Root, BTF, python3, nft and the built probes and addon; otherwise the test is skipped with a
 * loud reason (developer machine) or fails (CI). Returns false when it was skipped.
 */
export function requireLive(t: TestContext): boolean {
  if (!requireRoot(t) || !requireTools(t, 'python3', 'nft')) return false;
  const missing = BUILT.filter((f) => !existsSync(f));
  if (missing.length === 0) return true;
  const reason = `SKIPPED: ${missing.join(', ')} not built (make build)`;
  if (IN_CI) throw new Error(`${reason}; under CI every test must run`);
  process.stderr.write(`\n*** ${t.name}: ${reason} ***\n`);
  t.skip(reason);
  return false;
}

/** A JSON line a peer printed: its phase and, mostly, TCP_INFO fields. */
export type PeerLine = Record<string, unknown> & { phase: string };

/** A running peer.py. */
export interface Peer {
  proc: ChildProcess;
  /** The first line of that phase (rejects when the peer exits first, or on timeout). */
  phase(name: string, timeoutMs?: number): Promise<PeerLine>;
  /** Sends a line to the peer's stdin (gates and closes wait for one). */
  release(): void;
  kill(): void;
}

/** Starts peer.py inside `host` (the JSON-line peer machinery of test/helpers/json-peer.ts). */
export function startPeer(host: NetnsHost, args: (string | number)[]): Peer {
  const p = startPythonPeer(host, PEER, args);
  return {
    proc: p.proc,
    // Live transfers on a loaded machine take longer than the probe tests' peers.
    phase: (name, timeoutMs = 30_000) => p.phase(name, timeoutMs) as Promise<PeerLine>,
    release: () => p.release(),
    kill: () => p.kill(),
  };
}

/** Loads an nftables table `name` with one chain at `hook` holding `rule`, inside `host`. */
export function nftAdd(host: NetnsHost, name: string, hook: 'input' | 'output', rule: string): void {
  host.exec(
    'nft',
    ['-f', '-'],
    `table inet ${name} {\n chain c {\n  type filter hook ${hook} priority 0;\n  ${rule}\n }\n}\n`,
  );
}

/** Removes table `name` from `host` if it is there (cleanup paths too: never throws). */
export function nftDelete(host: NetnsHost, name: string): void {
  spawnSync('ip', ['netns', 'exec', host.name, 'nft', 'delete', 'table', 'inet', name], { stdio: 'ignore' });
}

/** A TcpExt counter of the namespace (/proc/net/netstat read from inside it). */
export function tcpExt(host: NetnsHost, name: string): number {
  const lines = host.exec('cat', ['/proc/net/netstat']).split('\n');
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const keys = lines[i]!.split(/\s+/);
    const values = lines[i + 1]!.split(/\s+/);
    if (keys[0] !== 'TcpExt:') continue;
    const at = keys.indexOf(name);
    if (at > 0) return Number(values[at]);
  }
  throw new Error(`no TcpExt ${name} in /proc/net/netstat`);
}

/** `kpiflow agent` running as a child process of the test, in the host namespace. */
export class AgentProcess {
  /** Every JSON line it logged. */
  readonly logs: Record<string, unknown>[] = [];
  stderr = '';
  /** `http://H:P` of its /metrics. */
  metricsUrl = '';
  private exitCode: number | null | undefined = undefined;
  private readonly exited: Promise<void>;

  private constructor(readonly proc: ChildProcess) {
    this.exited = new Promise((r) =>
      proc.on('close', (code) => {
        this.exitCode = code;
        r();
      }),
    );
  }

  /** Starts `kpiflow agent --source live --metrics 127.0.0.1:0 ...args`; waits for 'agent started'. */
  static async start(args: string[], timeoutMs = 30_000): Promise<AgentProcess> {
    const proc = spawn(
      process.execPath,
      [KPIFLOW, 'agent', '--source', 'live', '--metrics', '127.0.0.1:0', ...args],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const a = new AgentProcess(proc);
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (d: string) => {
      a.stderr += d;
    });
    let started!: (line: Record<string, unknown>) => void;
    const startedLine = new Promise<Record<string, unknown>>((r) => {
      started = r;
    });
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      let obj: Record<string, unknown>;
      try {
        obj = JSON.parse(l) as Record<string, unknown>;
      } catch {
        obj = { msg: l, unparsed: true };
      }
      a.logs.push(obj);
      if (obj['msg'] === 'agent started') started(obj);
    });
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      startedLine,
      a.exited.then(() => 'exited' as const),
      new Promise<'timeout'>((r) => {
        timer = setTimeout(() => r('timeout'), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (typeof outcome === 'string') {
      await a.kill();
      throw new Error(`kpiflow agent did not start (${outcome}): ${a.stderr}${JSON.stringify(a.logs)}`);
    }
    const m = outcome['metrics'] as { host: string; port: number } | null;
    if (m) a.metricsUrl = `http://${m.host}:${m.port}`;
    return a;
  }

  /** The agent's parsed /metrics. */
  async metrics(): Promise<Metrics> {
    const r = await fetch(`${this.metricsUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
    assert.equal(r.status, 200);
    return parseMetrics(await r.text());
  }

  /** SIGTERM, then waits for the exit (graceful: DESYNC flush, exporter drained); its code. */
  async stop(timeoutMs = 15_000): Promise<number | null> {
    if (this.exitCode !== undefined) return this.exitCode;
    this.proc.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([
      this.exited.then(() => true),
      new Promise<false>((r) => {
        timer = setTimeout(() => r(false), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (!done) {
      await this.kill();
      throw new Error(`kpiflow agent did not stop within ${timeoutMs} ms of SIGTERM`);
    }
    return this.exitCode ?? null;
  }

  /** SIGKILL if it still runs (cleanup path). */
  async kill(): Promise<void> {
    if (this.exitCode !== undefined) return;
    this.proc.kill('SIGKILL');
    await this.exited;
  }
}

/** One profile as the collector's API returns it. */
export type ApiProfile = Record<string, unknown> & {
  flowId: number | string;
  startState: string;
  endState: string;
  sourceAddress: string;
  sourceTransportPort: number;
  destinationTransportPort: number;
  flowStartMilliseconds: number;
  flowEndMilliseconds: number;
};

/** A profile's numeric field (the API sends 64-bit values past 2^53 as strings). */
export function num(p: ApiProfile, field: string): number {
  const v = p[field];
  assert.ok(v !== undefined && v !== null, `profile has no ${field}: ${JSON.stringify(p)}`);
  return Number(v);
}

/** Sum of a field over profiles. */
export function sum(profiles: readonly ApiProfile[], field: string): number {
  return profiles.reduce((n, p) => n + num(p, field), 0);
}

/** "START>END" of each profile, e.g. "NEW>ESTABLISHED". */
export function transitions(profiles: readonly ApiProfile[]): string[] {
  return profiles.map((p) => `${p.startState}>${p.endState}`);
}

/** Every profile whose source (local side) is `address`. */
export async function profilesFrom(c: CollectorProcess, address: string): Promise<ApiProfile[]> {
  return (await c.all<ApiProfile>('/api/v1/profiles', { sourceAddress: address })).items;
}

/**
 * The profiles of the connection whose local end is `address`:`port`, in order (flowStart, then
 * the store's row id), once its history holds a profile ending in one of `endStates` (polls
 * until then), read through /api/v1/connections/:flowId (exact for the agent's 63-bit flowIds).
 */
export async function connectionProfiles(
  c: CollectorProcess,
  address: string,
  port: number,
  endStates: readonly string[] = ['FINISHED', 'BROKEN', 'UNREACHABLE'],
  timeoutMs = 20_000,
): Promise<ApiProfile[]> {
  let found: ApiProfile[] = [];
  await c.until(
    `a ${endStates.join('|')} profile of ${address} port ${port}`,
    async () => {
      const all = await profilesFrom(c, address);
      const mine = all.filter((p) => p.sourceTransportPort === port);
      if (!mine.some((p) => endStates.includes(p.endState))) return false;
      const flowId = String(mine[0]!.flowId);
      found = (await c.json<{ items: ApiProfile[] }>(`/api/v1/connections/${flowId}`)).items;
      return true;
    },
    timeoutMs,
  );
  return found;
}

/** A collector and a live agent exporting to it, shared by the tests of one file. */
export interface LiveStack {
  collector: CollectorProcess;
  agent: AgentProcess;
}

/**
 * Registers the hooks of a test file (or describe block) whose tests share one collector and one
 * live agent exporting to it over TCP with 50 ms flushes (`agentArgs` added): started before the
 * tests where root is available, stopped after them (the agent must exit 0; its warnings are
 * printed for whoever reads a failure). The returned function gives the stack inside a test.
 */
export function liveStack(name: string, agentArgs: string[] = []): () => LiveStack {
  let dir = '';
  let stack: LiveStack | null = null;
  let agent: AgentProcess | null = null;
  let collector: CollectorProcess | null = null;
  before(async () => {
    if (rootUnavailableReason() !== null) return;
    dir = mkdtempSync(join(tmpdir(), `kpiflow-${name}-`));
    collector = await CollectorProcess.start({ dir });
    agent = await AgentProcess.start([
      '--export',
      `tcp://127.0.0.1:${collector.tcp.port}`,
      // Profiles reach the collector within 50 ms: the tests poll for them.
      '--flush-interval',
      '50ms',
      ...agentArgs,
    ]);
    stack = { collector, agent };
  });
  after(async () => {
    try {
      for (const l of agent?.logs ?? [])
        if (Number(l['level']) >= 40) process.stderr.write(`agent: ${JSON.stringify(l).slice(0, 600)}\n`);
      if (agent) assert.equal(await agent.stop(), 0, `agent exit code; stderr: ${agent.stderr}`);
    } finally {
      await agent?.kill();
      await collector?.kill();
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  });
  return () => {
    if (!stack) throw new Error(`${name}: no collector and agent (root unavailable?)`);
    return stack;
  };
}
