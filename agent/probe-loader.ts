/**
 * The live kernel side of the agent: checks privileges, finds the cgroup v2 mount, mounts bpffs
 * and tracefs when absent, decides from this kernel's BTF which probes can load and which KPIs it
 * therefore cannot measure, loads build/probes/kpiflow.bpf.o with its knobs, attaches the default
 * programs, and turns ring-buffer batches and iterator runs into ProbeEvents. Every decision is
 * here; native/ only offers primitives.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  Btf,
  createProbeLoader,
  type Link,
  loadNativeBinding,
  type NativeBinding,
  NativeError,
  type ProbeSet,
  type ProbeSpec,
  readProbeSpec,
  type Subscription,
} from '../native/index.js';
import { AgentError, type AgentErrorCode } from './errors.js';
import type { ProbeEvent, TcpCounters } from './probe-event.js';
import { decodeProbeEvents, PROBE_COUNTERS, PROBE_EVENT_SIZE } from './probe-event-decoder.js';

/** Where `make build` puts the probes. */
export const DEFAULT_PROBE_OBJECT = fileURLToPath(
  new URL('../../build/probes/kpiflow.bpf.o', import.meta.url),
);

/** The ring buffer's map, statistics map and iterator program in the object. */
export const PROBE_NAMES = {
  events: 'kf_events',
  stats: 'kf_stats',
  iterator: 'kf_iter_tcp',
  sockops: 'kf_sockops',
  perPacket: 'kf_naive_probe',
} as const;

/** Indexes of kf_stats (enum kf_stat in probes/kpiflow-event.h). */
export const PROBE_STAT = {
  lost: 0,
  events: 1,
  badChecksumsHost: 2,
  noStorage: 3,
  quietStates: 4,
  quietDestroys: 5,
} as const;

/**
 * The KPIs each program provides, so a program this kernel cannot load is reported as the KPIs
 * it takes away (never exported as zeros).
 */
export const PROGRAM_KPIS: Readonly<Record<string, readonly string[]>> = {
  kf_sockops: ['connect', 'timeToEstablish', 'synRetransmissions', 'stalls'],
  kf_state: ['tcpStateChanges'],
  kf_cong_state: ['recovery'],
  kf_kfree_skb: ['duplicates', 'checksumErrors'],
  kf_bad_csum: ['checksumErrorsHost'],
  kf_send_reset: ['resetsSent'],
  kf_receive_reset: ['resetsReceived'],
  kf_destroy: ['connectionEnd'],
  kf_iter_tcp: ['snapshots'],
  kf_naive_probe: ['ofoDistance'],
  kf_mptcp_get_send: ['mptcpReinjectedSegments'],
  kf_mptcp_frag: ['mptcpReinjectedSegments'],
  kf_mptcp_data_avail: ['mptcpOutOfOrder'],
};

/** A KPI this kernel (or this configuration) cannot measure, and why. */
export interface UnavailableKpi {
  kpi: string;
  reason: string;
}

/** Which step of starting the live source failed. */
export type ProbeFailure = 'privileges' | 'not-built' | 'kernel' | 'cgroup' | 'load' | 'attach';

const REPLAY_HINT =
  'or replay recorded events with --source events:FILE, or a capture with --source pcap:FILE';

/** The catalogue code of each failed step: privileges and the kernel have codes of their own. */
const FAILURE_CODE: Record<ProbeFailure, AgentErrorCode> = {
  privileges: 'AGT_ERR_PRIVILEGES',
  kernel: 'AGT_ERR_KERNEL_TOO_OLD',
  'not-built': 'AGT_ERR_SOURCE_UNAVAILABLE',
  cgroup: 'AGT_ERR_SOURCE_UNAVAILABLE',
  load: 'AGT_ERR_SOURCE_UNAVAILABLE',
  attach: 'AGT_ERR_SOURCE_UNAVAILABLE',
};

/**
 * The live probes could not start. `code` says why to callers (AGT_ERR_PRIVILEGES,
 * AGT_ERR_KERNEL_TOO_OLD, else AGT_ERR_SOURCE_UNAVAILABLE); `step` says where, for logs.
 */
export class ProbeSourceError extends AgentError {
  /** Which step failed. */
  readonly step: ProbeFailure;
  /** Capabilities the process lacks (AGT_ERR_PRIVILEGES). */
  readonly missingCapabilities: readonly string[];

  constructor(
    step: ProbeFailure,
    detail: string,
    options: { cause?: unknown; missingCapabilities?: string[] } = {},
  ) {
    super(FAILURE_CODE[step], detail, options.cause === undefined ? {} : { cause: options.cause });
    this.step = step;
    this.missingCapabilities = options.missingCapabilities ?? [];
  }
}

/** The one sentence of AGT_ERR_PRIVILEGES for a process that lacks `caps`. */
export function privilegesMessage(caps: readonly string[]): string {
  return `live probes need CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN and this process lacks ${caps.join(', ')}: run as root or grant them, or use --source events:FILE (recorded events) or --source pcap:FILE (a capture), which need none`;
}

/**
 * What the live probes cannot do without, and the kernel that brought it: checked in the
 * kernel's BTF before loading, so an old kernel gets AGT_ERR_KERNEL_TOO_OLD naming the feature
 * rather than a verifier log.
 */
export function kernelTooOld(kernel: Pick<Btf, 'struct'>): string | null {
  if (kernel.struct('bpf_ringbuf') === null) return 'the BPF ring buffer (Linux 5.8+)';
  if (kernel.struct('bpf_local_storage') === null)
    return 'socket-local storage for tracing programs (Linux 5.11+)';
  return null;
}

const CAPS = { CAP_NET_ADMIN: 12, CAP_SYS_ADMIN: 21, CAP_PERFMON: 38, CAP_BPF: 39 } as const;

/**
 * Capabilities the live probes need that the process lacks, from /proc/self/status's CapEff:
 * CAP_BPF (load), CAP_PERFMON (tracing programs), CAP_NET_ADMIN (sockops on the cgroup).
 * CAP_SYS_ADMIN stands in for the first two, as the kernel allows.
 */
export function missingCapabilities(status = readFileSync('/proc/self/status', 'utf8')): string[] {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  const eff = m ? BigInt(`0x${m[1]}`) : 0n;
  const has = (bit: number) => ((eff >> BigInt(bit)) & 1n) === 1n;
  const missing: string[] = [];
  const sys = has(CAPS.CAP_SYS_ADMIN);
  if (!sys && !has(CAPS.CAP_BPF)) missing.push('CAP_BPF');
  if (!sys && !has(CAPS.CAP_PERFMON)) missing.push('CAP_PERFMON');
  if (!has(CAPS.CAP_NET_ADMIN)) missing.push('CAP_NET_ADMIN');
  return missing;
}

/** The mount point of the cgroup v2 hierarchy in /proc/mounts text, preferring /sys/fs/cgroup. */
export function findCgroup2Mount(mounts = readFileSync('/proc/mounts', 'utf8')): string | null {
  const points = mounts
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup2' && f[1])
    .map((f) => f[1]!.replace(/\\040/g, ' '));
  return points.find((p) => p === '/sys/fs/cgroup') ?? points[0] ?? null;
}

/** True when /proc/mounts text has a filesystem of `type` mounted at `point`. */
function mountedAt(mounts: string, point: string, type: string): boolean {
  return mounts.split('\n').some((l) => {
    const f = l.split(' ');
    return f[1] === point && f[2] === type;
  });
}

/**
 * Mounts bpffs (/sys/fs/bpf) and tracefs (/sys/kernel/tracing) where absent: libbpf resolves
 * classic tracepoints through tracefs, and bpffs is where links would be pinned. Returns what it
 * mounted and what it could not (not fatal: tp_btf and sockops need neither).
 */
export function ensureKernelFilesystems(): { mounted: string[]; failed: string[] } {
  const mounts = readFileSync('/proc/mounts', 'utf8');
  const wanted = [
    { point: '/sys/fs/bpf', type: 'bpf' },
    { point: '/sys/kernel/tracing', type: 'tracefs' },
  ];
  const mounted: string[] = [];
  const failed: string[] = [];
  for (const w of wanted) {
    if (mountedAt(mounts, w.point, w.type) || !existsSync(w.point)) continue;
    const r = spawnSync('mount', ['-t', w.type, w.type, w.point], { stdio: 'ignore' });
    (r.status === 0 ? mounted : failed).push(w.point);
  }
  return { mounted, failed };
}

/** One network namespace of the host: its inode and a path that opens it. */
export interface NetworkNamespace {
  inode: number;
  path: string;
}

/**
 * Every network namespace in use: those of running processes (/proc/PID/ns/net) and those kept
 * by `ip netns` (/run/netns), one path per inode. The agent's own comes first.
 */
export function listNetworkNamespaces(): NetworkNamespace[] {
  const seen = new Map<number, string>();
  const add = (path: string) => {
    try {
      const ino = statSync(path).ino;
      if (!seen.has(ino)) seen.set(ino, path);
    } catch {
      // The process exited or the name was removed meanwhile.
    }
  };
  add('/proc/self/ns/net');
  if (existsSync('/run/netns')) for (const n of readdirSync('/run/netns')) add(`/run/netns/${n}`);
  for (const pid of readdirSync('/proc')) if (/^\d+$/.test(pid)) add(`/proc/${pid}/ns/net`);
  return [...seen].map(([inode, path]) => ({ inode, path }));
}

/** What this kernel's BTF says the object can do. */
export interface KernelSupport {
  /** Programs to leave unloaded: their hook does not exist here. */
  skip: string[];
  unavailable: UnavailableKpi[];
  /** TcpCounters fields struct tcp_sock lacks here. */
  missing: (keyof TcpCounters)[];
  /** State events come from sockops STATE_CB (no inet_sock_set_state tracepoint). */
  stateViaSockops: boolean;
}

/** Decides from the kernel's BTF which programs of `spec` can load, and what is lost. */
export function kernelSupport(spec: ProbeSpec, kernel: Btf): KernelSupport {
  const skip: string[] = [];
  const unavailable: UnavailableKpi[] = [];
  const lose = (program: string, reason: string) => {
    skip.push(program);
    for (const kpi of PROGRAM_KPIS[program] ?? [program]) unavailable.push({ kpi, reason });
  };
  for (const p of spec.programs) {
    if (p.kind === 'tp_btf') {
      const params = kernel.typedefParams(`btf_trace_${p.target}`);
      if (params === null) lose(p.name, `no ${p.target} tracepoint in this kernel`);
      // kfree_skb names the receiving socket only since Linux 6.11 (rx_sk).
      else if (p.target === 'kfree_skb' && params.length < 5)
        lose(p.name, 'kfree_skb has no rx_sk (Linux 6.11+)');
    } else if (p.kind === 'iter' && kernel.struct(`bpf_iter__${p.target}`) === null) {
      lose(p.name, `no ${p.target} iterator in this kernel (Linux 5.9+)`);
    } else if (p.kind === 'fentry' || p.kind === 'fexit') {
      if (kernel.find(p.target).length === 0) lose(p.name, `no function ${p.target} in this kernel`);
    }
  }
  const fields: Record<keyof TcpCounters, string> = {
    bytesAcked: 'bytes_acked',
    bytesReceived: 'bytes_received',
    bytesSent: 'bytes_sent',
    bytesRetrans: 'bytes_retrans',
    segsIn: 'segs_in',
    segsOut: 'segs_out',
    dataSegsIn: 'data_segs_in',
    dataSegsOut: 'data_segs_out',
    totalRetrans: 'total_retrans',
    srttUs: 'srtt_us',
    mdevUs: 'mdev_us',
    rcvOoopack: 'rcv_ooopack',
    dsackDups: 'dsack_dups',
    reordSeen: 'reord_seen',
    totalRto: 'total_rto',
    totalRtoRecoveries: 'total_rto_recoveries',
    delivered: 'delivered',
    sndCwnd: 'snd_cwnd',
    unackedBytes: 'snd_nxt',
  };
  const missing = PROBE_COUNTERS.map((c) => c.name).filter((n) => !kernel.hasMember('tcp_sock', fields[n]));
  for (const m of missing) unavailable.push({ kpi: m, reason: `struct tcp_sock has no ${fields[m]} here` });
  const stateViaSockops = skip.includes('kf_state');
  return { skip, unavailable, missing, stateViaSockops };
}

/**
 * MPTCP KPIs this kernel cannot give. The connection level's counters come from struct
 * mptcp_sock, read at the subflows' events (no hook on the meta socket itself); what the kernel
 * keeps only per namespace (MPTcpExt) and no MPTCP tracepoint reaches is never measured.
 */
export function mptcpUnavailable(kernel: Pick<Btf, 'struct' | 'hasMember'>): UnavailableKpi[] {
  const out: UnavailableKpi[] = [];
  if (kernel.struct('mptcp_sock') === null) {
    out.push({
      kpi: 'mptcpConnection',
      reason: 'no struct mptcp_sock (MPTCP not built): subflows are plain TCP',
    });
    return out;
  }
  for (const [kpi, field] of [
    ['mptcpReinjectedBytes', 'bytes_retrans'],
    ['mptcpSubflowsCreated', 'subflow_id'],
  ] as const)
    if (!kernel.hasMember('mptcp_sock', field))
      out.push({ kpi, reason: `struct mptcp_sock has no ${field} here` });
  // Reinjected segments and out-of-order data come from MPTCP-only tracepoints (PROGRAM_KPIS).
  out.push({
    kpi: 'mptcpReinjectionsReceived',
    reason:
      'the kernel counts it per namespace only (MPTcpExtDuplicateData), in a function no tracepoint reaches',
  });
  return out;
}

/**
 * Where each kernel function of `names` lies in the kernel's text: from its address in
 * /proc/kallsyms to the next symbol's. Null for one absent, or when the addresses are hidden.
 */
export function kernelTextRanges(
  names: readonly string[],
  kallsyms = '/proc/kallsyms',
): ({ lo: bigint; hi: bigint } | null)[] {
  let text: string;
  try {
    text = readFileSync(kallsyms, 'utf8');
  } catch {
    return names.map(() => null);
  }
  const addrs: bigint[] = [];
  const found = new Map<string, bigint>();
  for (const line of text.split('\n')) {
    const sp = line.indexOf(' ');
    if (sp <= 0) continue;
    const a = BigInt(`0x${line.slice(0, sp)}`);
    addrs.push(a);
    const sym = line.slice(line.indexOf(' ', sp + 1) + 1);
    if (names.includes(sym)) found.set(sym, a);
  }
  addrs.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  return names.map((n) => {
    const lo = found.get(n);
    if (!lo) return null;
    const hi = addrs.find((a) => a > lo);
    return hi ? { lo, hi } : null;
  });
}

/** Options of startLiveProbes. */
export interface LiveProbesOptions {
  /** The compiled probes (default: build/probes/kpiflow.bpf.o of this checkout). */
  objectPath?: string;
  /** The addon (default: native/build/Release); tests pass a fake. */
  getBinding?: () => NativeBinding;
  /** Only this network namespace (inode); 0 or absent: every namespace. */
  netns?: number;
  /** Ring buffer size in bytes: a power of two, a multiple of the page size (default 4 MiB). */
  ringBytes?: number;
  /** cgroup v2 directory for sockops (default: the cgroup2 mount's root). */
  cgroupPath?: string;
  /** Also attach the per-packet program (out-of-order distance; the overhead baseline). */
  perPacket?: boolean;
  /** Attach exactly these programs instead of the defaults (benchmarks). */
  programs?: readonly string[];
  /** The iterator turns on RTO/state callbacks for sockets it finds (default true). */
  enableCallbacksOnOpenSockets?: boolean;
  /** BTF of the running kernel (default /sys/kernel/btf/vmlinux); tests pass another. */
  kernelBtf?: Btf;
  /** Skip the capability check (tests with a fake binding). */
  skipPrivilegeCheck?: boolean;
}

/** Counters of the kernel side (kf_stats, summed over CPUs). */
export interface ProbeStats {
  /** Events submitted to the ring buffer. */
  events: bigint;
  /** Events dropped because the ring buffer was full. */
  lost: bigint;
  /** Bad TCP checksums anywhere on the host (tied to a socket or not). */
  badChecksumsHost: bigint;
  /** Times per-socket storage could not be allocated. */
  noStorage: bigint;
  /** State changes the probes counted but did not send (the agent needs nothing from them). */
  quietStates: bigint;
  /** Socket destructions not sent because the socket's close was already reported. */
  quietDestroys: bigint;
}

/** The probes loaded and attached to the running kernel. */
export class LiveProbes {
  private lostSeen = 0n;
  private timer: NodeJS.Timeout | null = null;
  private subscription: Subscription | null = null;

  constructor(
    /** The loaded object. */
    readonly probes: ProbeSet,
    /** Attached programs. */
    readonly links: readonly Link[],
    /** KPIs this kernel or configuration cannot measure. */
    readonly unavailable: readonly UnavailableKpi[],
    /** TcpCounters fields this kernel lacks. */
    readonly missing: readonly (keyof TcpCounters)[],
    /** Where sockops is attached. */
    readonly cgroupPath: string,
  ) {}

  /** kf_stats summed over CPUs. */
  stats(): ProbeStats {
    const s = (i: number) => this.probes.perCpuSum(PROBE_NAMES.stats, i);
    return {
      events: s(PROBE_STAT.events),
      lost: s(PROBE_STAT.lost),
      badChecksumsHost: s(PROBE_STAT.badChecksumsHost),
      noStorage: s(PROBE_STAT.noStorage),
      quietStates: s(PROBE_STAT.quietStates),
      quietDestroys: s(PROBE_STAT.quietDestroys),
    };
  }

  /** Events lost so far (ring buffer full). */
  lostEvents(): bigint {
    return this.probes.perCpuSum(PROBE_NAMES.stats, PROBE_STAT.lost);
  }

  /**
   * Delivers events batch by batch as the kernel makes them; `onLost(n)` when the lost counter
   * grew (checked after each batch and every `lostCheckMs`). One subscription at a time.
   */
  subscribe(
    onEvents: (events: ProbeEvent[]) => void,
    onLost: (count: number) => void = () => {},
    lostCheckMs = 1000,
  ): { close(): void } {
    if (this.subscription) throw new NativeError('NAT_ERR_ARGUMENT', 'already subscribed');
    this.lostSeen = this.lostEvents();
    const checkLost = () => {
      const now = this.lostEvents();
      if (now > this.lostSeen) {
        const n = now - this.lostSeen;
        this.lostSeen = now;
        onLost(Number(n));
      }
    };
    const sub = this.probes.subscribe(PROBE_NAMES.events, PROBE_EVENT_SIZE, (batch) => {
      const r = decodeProbeEvents(batch);
      if (r.events.length > 0) onEvents(r.events);
      checkLost();
    });
    this.timer = setInterval(checkLost, lostCheckMs);
    this.timer.unref();
    this.subscription = sub;
    return {
      close: () => {
        if (this.timer) clearInterval(this.timer);
        this.timer = null;
        sub.close();
        this.subscription = null;
      },
    };
  }

  /** Namespaces the last snapshot() could not walk (vanished, or refused), with the reason. */
  snapshotErrors: { path: string; error: string }[] = [];

  /**
   * One snapshot event per open TCP connection, by the iterator, in each namespace given (default:
   * every namespace of the host). A namespace that cannot be walked (it vanished meanwhile, or
   * refused) is skipped and listed in snapshotErrors; the others are still reported.
   */
  snapshot(namespaces: readonly NetworkNamespace[] = listNetworkNamespaces()): ProbeEvent[] {
    const self = statSync('/proc/self/ns/net').ino;
    const out: ProbeEvent[] = [];
    this.snapshotErrors = [];
    for (const ns of namespaces) {
      let bytes: Buffer;
      try {
        bytes =
          ns.inode === self
            ? this.probes.iterate(PROBE_NAMES.iterator)
            : this.probes.iterate(PROBE_NAMES.iterator, ns.path);
      } catch (err) {
        if (!(err instanceof NativeError) || err.code !== 'NAT_ERR_ITER') throw err;
        this.snapshotErrors.push({ path: ns.path, error: err.message });
        continue;
      }
      out.push(...decodeProbeEvents(bytes).events);
    }
    return out;
  }

  /** Stops delivery, detaches everything and frees the object (idempotent). */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.subscription = null;
    this.probes.close();
  }
}

/**
 * Loads and attaches the probes. Throws ProbeSourceError with one clear sentence:
 * AGT_ERR_PRIVILEGES (missing capability), AGT_ERR_KERNEL_TOO_OLD (a feature the probes need),
 * AGT_ERR_SOURCE_UNAVAILABLE (probes not built, no cgroup v2, load or attach failure).
 */
export function startLiveProbes(options: LiveProbesOptions = {}): LiveProbes {
  if (!options.skipPrivilegeCheck) {
    const caps = missingCapabilities();
    if (caps.length > 0) {
      throw new ProbeSourceError('privileges', privilegesMessage(caps), { missingCapabilities: caps });
    }
    ensureKernelFilesystems();
  }
  const objectPath = options.objectPath ?? DEFAULT_PROBE_OBJECT;
  if (!existsSync(objectPath)) {
    throw new ProbeSourceError('not-built', `${objectPath} is missing: run make build, ${REPLAY_HINT}`);
  }
  const spec = readProbeSpec(objectPath);
  let kernel = options.kernelBtf;
  if (!kernel) {
    if (!existsSync('/sys/kernel/btf/vmlinux')) {
      throw new ProbeSourceError(
        'kernel',
        `the probes need the kernel's BTF (/sys/kernel/btf/vmlinux: CONFIG_DEBUG_INFO_BTF, Linux 5.5+), ${REPLAY_HINT}`,
      );
    }
    kernel = new Btf(readFileSync('/sys/kernel/btf/vmlinux'));
    // Only the running kernel's BTF has every kernel type (tests hand in the object's own).
    const lacking = kernelTooOld(kernel);
    if (lacking) throw new ProbeSourceError('kernel', `the probes need ${lacking}, ${REPLAY_HINT}`);
  }
  const support = kernelSupport(spec, kernel);
  const cgroupPath = options.cgroupPath ?? findCgroup2Mount();
  if (!cgroupPath) {
    throw new ProbeSourceError(
      'cgroup',
      `no cgroup v2 hierarchy is mounted (sockops needs one), ${REPLAY_HINT}`,
    );
  }
  const wanted =
    options.programs ??
    spec.programs
      .filter((p) => p.kind !== 'iter' && (options.perPacket || p.name !== PROBE_NAMES.perPacket))
      .map((p) => p.name);
  const unavailable = [...support.unavailable, ...mptcpUnavailable(kernel)];
  // Reinjected segments: mptcp_sendmsg_frag called by __mptcp_retrans (see the probes).
  const [retrans, frag] = kernelTextRanges(['__mptcp_retrans', 'mptcp_sendmsg_frag']);
  if ((!retrans || !frag) && kernel.struct('mptcp_sock') !== null)
    unavailable.push({
      kpi: 'mptcpReinjectedSegments',
      reason: 'no __mptcp_retrans or mptcp_sendmsg_frag in /proc/kallsyms',
    });
  if (!wanted.includes(PROBE_NAMES.perPacket)) {
    unavailable.push({ kpi: 'ofoDistance', reason: 'needs the per-packet mode (perPacket), off by default' });
  }
  const skip = spec.programs
    .map((p) => p.name)
    .filter((n) => support.skip.includes(n) || (!wanted.includes(n) && n !== PROBE_NAMES.iterator));

  const loader = createProbeLoader(options.getBinding ?? loadNativeBinding);
  let probes: ProbeSet;
  try {
    probes = loader.load(spec, {
      knobs: {
        kf_netns_filter: options.netns ?? 0,
        kf_state_via_sockops: support.stateViaSockops,
        kf_iter_enable_callbacks: options.enableCallbacksOnOpenSockets ?? true,
        kf_retrans_lo: retrans?.lo ?? 0n,
        kf_retrans_hi: retrans?.hi ?? 0n,
        kf_frag_lo: frag?.lo ?? 0n,
        kf_frag_hi: frag?.hi ?? 0n,
      },
      skip,
      maxEntries: { [PROBE_NAMES.events]: options.ringBytes ?? 4 << 20 },
    });
  } catch (err) {
    const e = err as NativeError;
    const where = e.failedProgram ? ` (program ${e.failedProgram})` : '';
    const step: ProbeFailure = e.code === 'NAT_ERR_BINDING' ? 'not-built' : 'load';
    throw new ProbeSourceError(step, `${e.message}${where}, ${REPLAY_HINT}`, { cause: err });
  }
  const links: Link[] = [];
  try {
    for (const name of wanted) {
      if (skip.includes(name)) continue;
      const p = probes.program(name);
      links.push(probes.attach(name, p.kind === 'cgroup' ? cgroupPath : undefined));
    }
  } catch (err) {
    probes.close();
    throw new ProbeSourceError('attach', `${(err as Error).message}, ${REPLAY_HINT}`, { cause: err });
  }
  return new LiveProbes(probes, links, unavailable, support.missing, cgroupPath);
}
