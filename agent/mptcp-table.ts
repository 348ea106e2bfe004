/**
 * MPTCP connections (the meta sockets) and their subflows: the connection-level life-cycle and
 * profile windows (template 47563). The probes follow every event of an MPTCP subflow with an
 * `mptcp` event of its connection (same instant); the agent hands both here: `subflow` after the
 * subflow's event went through the connection table, `apply` for the connection's event.
 *
 * A connection is keyed by its local key (unique, random, 64 bits); its flowId derives from it
 * and is also every one of its subflows' flowId. Life-cycle: NEW until its initial subflow is
 * established; ESTABLISHED → UPDATE on a head-of-line stall (a subflow RTO while the connection
 * level has data unacknowledged), back on a subflow's recovery; the active timeout as for TCP;
 * the connection ends with the last of its subflows (FINISHED after the DATA_FIN exchange,
 * BROKEN on MP_FASTCLOSE or resets, UNREACHABLE if it never established).
 */
import { isTerminal, next, resumeState, STATE, type State, TCP_CA_OPEN, TCP_STATE } from './fsm.js';
import {
  addressesSet,
  EVENT_KIND,
  type MptcpCounters,
  mptcpCounters,
  type ProbeEvent,
} from './probe-event.js';

/** The connection-level counters at one instant, and the agent's sums over the subflows. */
export interface MptcpSnapshot {
  tsNs: bigint;
  counters: MptcpCounters;
  /** Σ over the subflows of their retransmitted segments (total_retrans) since tracked. */
  subflowRetrans: number;
  /** Σ over the subflows of their stalls (RTOs with data pending) since tracked. */
  subflowStalls: number;
}

/** What the table keeps of one subflow of a connection. */
interface SubflowTrack {
  alive: boolean;
  totalRetrans: number;
  stalls: number;
  /** The subflow's profile ended FINISHED (its FIN exchange), as far as its events said. */
  finished: boolean;
}

/** One tracked MPTCP connection. */
export interface MptcpConnection {
  readonly key: bigint;
  readonly flowId: bigint;
  netns: number;
  ipVersion: 4 | 6;
  localAddress: string;
  remoteAddress: string;
  localPort: number;
  remotePort: number;
  state: State;
  startReason: State;
  windowState: State;
  windowStart: MptcpSnapshot;
  last: MptcpSnapshot;
  /** Meta socket state (TCP_* numbers) at the latest event. */
  metaState: number;
  fastclose: boolean;
  /** Every subflow seen, by cookie. */
  readonly subflows: Map<bigint, SubflowTrack>;
  /** Subflows alive at some point of the current window (alive at its start, or added in it). */
  windowSubflows: Set<bigint>;
  /** Running sums over the subflows (see MptcpSnapshot). */
  subflowRetrans: number;
  subflowStalls: number;
  /** Seen from its first subflow's handshake, not picked up already open. */
  readonly adopted: boolean;
  /**
   * An `mptcp` event of the connection arrived: only then does it have counters and profiles.
   * A source that describes subflows only (the pcap replay) ties them together by flowId, and
   * its connections make no profile rather than one of zeros.
   */
  described: boolean;
  /** Wire bytes of the addresses (the profile builder's, once per connection). */
  wire: { local: Uint8Array; remote: Uint8Array } | null;
}

/** A closed window of an MPTCP connection: one meta profile. */
export interface MptcpWindow {
  readonly conn: MptcpConnection;
  readonly startReason: State;
  readonly endReason: State;
  readonly start: MptcpSnapshot;
  readonly end: MptcpSnapshot;
  /** Subflows alive at some point of the window. */
  readonly subflowCount: number;
}

/** Table settings. */
export interface MptcpTableOptions {
  /** flowId of a connection's local key (the same its subflows carry). */
  flowId: (key: bigint) => bigint;
  /** Active timeout, ns (the TCP table's). */
  activeTimeoutNs: bigint;
  /** Most connections tracked at once; past it the least recently active is evicted (DESYNC). */
  maxConnections?: number;
  onWindow: (w: MptcpWindow) => void;
}

const ZERO_MPTCP: Readonly<MptcpCounters> = Object.freeze({
  bytesAcked: 0,
  bytesReceived: 0,
  bytesSent: 0,
  bytesRetrans: 0,
  rcvBuf: 0,
  subflowsCreated: 0,
  subflowsAlive: 0,
  holStalls: 0,
  reinjectedSegs: 0,
  outOfOrder: 0,
  unackedBytes: 0,
});

/** Meta socket states past the handshake. */
const OPEN_STATES: ReadonlySet<number> = new Set([
  TCP_STATE.ESTABLISHED,
  TCP_STATE.FIN_WAIT1,
  TCP_STATE.FIN_WAIT2,
  TCP_STATE.CLOSE_WAIT,
  TCP_STATE.CLOSING,
  TCP_STATE.LAST_ACK,
  TCP_STATE.TIME_WAIT,
]);

/** Meta socket states of an orderly close (DATA_FIN sent or received). */
const FIN_STATES: ReadonlySet<number> = new Set([
  TCP_STATE.FIN_WAIT1,
  TCP_STATE.FIN_WAIT2,
  TCP_STATE.CLOSE_WAIT,
  TCP_STATE.CLOSING,
  TCP_STATE.LAST_ACK,
  TCP_STATE.TIME_WAIT,
]);

/** The MPTCP connection table. */
export class MptcpTable {
  readonly stats = { created: 0, adopted: 0, windows: 0, removed: 0, evicted: 0 };
  private readonly conns = new Map<bigint, MptcpConnection>();
  private readonly maxConnections: number;

  constructor(private readonly options: MptcpTableOptions) {
    this.maxConnections = options.maxConnections ?? 100_000;
  }

  /** Connections tracked now. */
  get size(): number {
    return this.conns.size;
  }

  /** The connection of a local key, if tracked. */
  get(key: bigint): MptcpConnection | undefined {
    return this.conns.get(key);
  }

  /**
   * A subflow's event, after the TCP table applied it: `ended` when the subflow's connection
   * reached its last profile (or was never tracked). Subflows whose connection key is not known
   * yet are left for their next event.
   */
  subflow(ev: ProbeEvent, ended: boolean, finished: boolean): void {
    const key = ev.mptcp?.key ?? 0n;
    if (key === 0n) return;
    const c = this.conns.get(key) ?? this.open(ev, key);
    let s = c.subflows.get(ev.cookie);
    if (s === undefined) {
      // Counted from zero when seen from its handshake, from this event when picked up open.
      const fresh =
        ev.kind === EVENT_KIND.connect ||
        ev.kind === EVENT_KIND.activeEstablished ||
        ev.kind === EVENT_KIND.passiveEstablished;
      s = {
        alive: true,
        totalRetrans: fresh ? 0 : ev.counters.totalRetrans,
        stalls: fresh ? 0 : ev.ancillary.stalls,
        finished: false,
      };
      c.subflows.set(ev.cookie, s);
      c.windowSubflows.add(ev.cookie);
    }
    const dr = (ev.counters.totalRetrans - s.totalRetrans) >>> 0;
    const ds = (ev.ancillary.stalls - s.stalls) >>> 0;
    // A snapshot older than the latest event (iterator overtaken) would go back: ignore it.
    if (dr < 0x80000000) {
      c.subflowRetrans += dr;
      s.totalRetrans = ev.counters.totalRetrans;
    }
    if (ds < 0x80000000) {
      c.subflowStalls += ds;
      s.stalls = ev.ancillary.stalls;
    }
    if (ended && s.alive) {
      s.alive = false;
      s.finished = finished;
      // Never described by an event of its own: forgotten with its last subflow.
      if (!c.described && ![...c.subflows.values()].some((x) => x.alive)) this.conns.delete(key);
    }
  }

  /** The connection's event (kind `mptcp`): advances its life-cycle. */
  apply(ev: ProbeEvent): void {
    const key = ev.cookie;
    let c = this.conns.get(key);
    if (c === undefined) c = this.open(ev, key);
    else {
      // Recency order for eviction.
      this.conns.delete(key);
      this.conns.set(key, c);
    }
    if (ev.tsNs < c.last.tsNs) return;
    c.described = true;
    // Picked up open from a subflow's event: the first connection event is the baseline (and
    // what happened before it, a past head-of-line stall say, is no transition now).
    if (c.adopted && c.windowStart.counters === ZERO_MPTCP) {
      c.windowStart = { ...c.windowStart, counters: mptcpCounters(ev) };
      c.last = c.windowStart;
    }
    // The meta socket gets its ends from its initial subflow after that subflow's first events
    // (mptcp_copy_inaddrs, addresses then ports): each part is taken from the events that carry
    // it set, so a connection event read before or during the copy never replaces known ends.
    if (c.localPort === 0 || ev.localPort !== 0) {
      c.localPort = ev.localPort;
      c.remotePort = ev.remotePort;
      c.wire = null;
    }
    if (addressesSet(ev) || !addressesSet(c)) {
      c.localAddress = ev.localAddress;
      c.remoteAddress = ev.remoteAddress;
      c.ipVersion = ev.ipVersion;
      c.wire = null;
    }
    const prev = c.last;
    c.last = this.snap(c, ev);
    c.metaState = ev.tcpState;
    c.fastclose ||= ev.mptcp?.fastclose ?? false;
    if (isTerminal(c.state)) return;
    if (c.state === STATE.DESYNC) {
      c.state = resumeState(ev.tcpState);
      c.windowState = c.state;
    }
    const due = ev.tsNs - c.windowStart.tsNs >= this.options.activeTimeoutNs;
    const alive = [...c.subflows.values()].some((s) => s.alive);
    if (!alive && c.subflows.size > 0) {
      const end = this.endReason(c);
      this.close(c, end, c.last);
      c.state = end;
      this.conns.delete(key);
      this.stats.removed++;
      return;
    }
    let input: Parameters<typeof next>[1] = 'observe';
    if (c.state === STATE.NEW) {
      if (
        OPEN_STATES.has(ev.tcpState) ||
        ev.arg0 === EVENT_KIND.activeEstablished ||
        ev.arg0 === EVENT_KIND.passiveEstablished
      )
        input = 'established';
    } else if (c.last.counters.holStalls !== prev.counters.holStalls) input = 'stall';
    else if (ev.arg0 === EVENT_KIND.congState && ev.caState === TCP_CA_OPEN) input = 'recovered';
    const t = next(c.state, input, due);
    if (t === null) return;
    if (t.profile) this.close(c, t.to, c.last);
    c.state = t.to;
  }

  /** How a connection whose last subflow ended ended. */
  private endReason(c: MptcpConnection): State {
    if (c.state === STATE.NEW) return STATE.UNREACHABLE;
    if (c.fastclose) return STATE.BROKEN;
    if (FIN_STATES.has(c.metaState)) return STATE.FINISHED;
    // The meta socket is closed already: an orderly end if its subflows ended with FINs.
    const subs = [...c.subflows.values()];
    if (c.metaState === TCP_STATE.CLOSE && subs.some((s) => s.finished)) return STATE.FINISHED;
    return STATE.BROKEN;
  }

  /**
   * Every open connection gets a DESYNC profile up to its latest event (events lost, or the
   * agent stops); with `remove` the table is emptied. Returns the number of profiles.
   */
  desyncAll(remove = false): number {
    let n = 0;
    for (const c of this.conns.values()) {
      if (!c.described || isTerminal(c.state) || c.state === STATE.DESYNC) continue;
      this.close(c, STATE.DESYNC, c.last);
      c.state = STATE.DESYNC;
      n++;
    }
    if (remove) this.conns.clear();
    return n;
  }

  /**
   * Connections none of whose live subflows `isTracked` any more (their closes were lost and a
   * scan dropped them): a DESYNC profile, then removed. Returns how many.
   */
  dropOrphans(isTracked: (cookie: bigint) => boolean): number {
    let n = 0;
    for (const c of [...this.conns.values()]) {
      const live = [...c.subflows].filter(([, s]) => s.alive);
      if (live.length === 0 || live.some(([cookie]) => isTracked(cookie))) continue;
      if (!isTerminal(c.state) && c.state !== STATE.DESYNC) this.close(c, STATE.DESYNC, c.last);
      this.conns.delete(c.key);
      n++;
    }
    return n;
  }

  private snap(c: MptcpConnection, ev: ProbeEvent): MptcpSnapshot {
    return {
      tsNs: ev.tsNs,
      counters: ev.kind === EVENT_KIND.mptcp ? mptcpCounters(ev) : c.last.counters,
      subflowRetrans: c.subflowRetrans,
      subflowStalls: c.subflowStalls,
    };
  }

  private open(ev: ProbeEvent, key: bigint): MptcpConnection {
    if (this.conns.size >= this.maxConnections) this.evictOldest();
    // Seen from its start when the first event is a subflow's handshake (or the connection's
    // event that follows it); otherwise picked up open, counting from this event.
    const trigger = ev.kind === EVENT_KIND.mptcp ? ev.arg0 : ev.kind;
    const fresh =
      trigger === EVENT_KIND.connect ||
      trigger === EVENT_KIND.activeEstablished ||
      trigger === EVENT_KIND.passiveEstablished;
    const counters = ev.kind === EVENT_KIND.mptcp && !fresh ? mptcpCounters(ev) : ZERO_MPTCP;
    const synNs = ev.ancillary.synNs;
    const start: MptcpSnapshot = {
      tsNs: fresh && synNs > 0n && synNs <= ev.tsNs ? synNs : ev.tsNs,
      counters,
      subflowRetrans: 0,
      subflowStalls: 0,
    };
    const state = fresh ? STATE.NEW : STATE.ESTABLISHED;
    const c: MptcpConnection = {
      key,
      flowId: this.options.flowId(key),
      netns: ev.netns,
      ipVersion: ev.ipVersion,
      localAddress: ev.localAddress,
      remoteAddress: ev.remoteAddress,
      localPort: ev.localPort,
      remotePort: ev.remotePort,
      state,
      startReason: state,
      windowState: state,
      windowStart: start,
      last: start,
      metaState: ev.kind === EVENT_KIND.mptcp ? ev.tcpState : TCP_STATE.SYN_SENT,
      fastclose: false,
      subflows: new Map(),
      windowSubflows: new Set(),
      subflowRetrans: 0,
      subflowStalls: 0,
      adopted: !fresh,
      described: false,
      wire: null,
    };
    this.conns.set(key, c);
    if (fresh) this.stats.created++;
    else this.stats.adopted++;
    return c;
  }

  private evictOldest(): void {
    const oldest = this.conns.values().next();
    if (oldest.done) return;
    const c = oldest.value;
    this.conns.delete(c.key);
    this.stats.evicted++;
    if (!isTerminal(c.state) && c.state !== STATE.DESYNC) this.close(c, STATE.DESYNC, c.last);
  }

  private close(c: MptcpConnection, endReason: State, end: MptcpSnapshot): void {
    if (!c.described) return;
    this.stats.windows++;
    this.options.onWindow({
      conn: c,
      startReason: c.startReason,
      endReason,
      start: c.windowStart,
      end,
      subflowCount: c.windowSubflows.size,
    });
    c.startReason = endReason;
    c.windowState = endReason;
    c.windowStart = end;
    // The next window starts with the subflows alive now.
    c.windowSubflows = new Set([...c.subflows].filter(([, s]) => s.alive).map(([cookie]) => cookie));
  }
}
