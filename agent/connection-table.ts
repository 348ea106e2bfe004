/**
 * The connection table: every tracked TCP connection keyed by socket cookie, its FSM state and
 * its open profile window. Events go in (`apply`); closed windows come out through `onWindow`,
 * for the profile builder. The table is bounded: past `maxConnections` the least recently active
 * connection is evicted with a DESYNC profile (and counted).
 */
import {
  classify,
  isFinState,
  isTerminal,
  next,
  resumeState,
  STATE,
  type State,
  TCP_STATE,
  type Transition,
  tcpStateBefore,
} from './fsm.js';
import {
  type AncillaryCounters,
  addressesSet,
  EVENT_KIND,
  type ProbeEvent,
  type TcpCounters,
} from './probe-event.js';

/** Counters and ancillary state at one instant. */
export interface Snapshot {
  tsNs: bigint;
  counters: TcpCounters;
  ancillary: AncillaryCounters;
  /**
   * Sequence numbers of control flags that `counters.bytesAcked` includes at this instant: 1 for
   * our SYN once acked (active opens), 1 for our FIN once acked. The builder subtracts them so
   * profiles carry application payload bytes.
   */
  seqAcked: number;
  /** 1 once the peer's FIN is counted in `counters.bytesReceived` (the kernel counts it too). */
  seqReceived: number;
}

/** All-zero kernel counters: the baseline of a socket the agent saw from its creation. */
export const ZERO_COUNTERS: Readonly<TcpCounters> = Object.freeze({
  bytesAcked: 0,
  bytesReceived: 0,
  bytesSent: 0,
  bytesRetrans: 0,
  segsIn: 0,
  segsOut: 0,
  dataSegsIn: 0,
  dataSegsOut: 0,
  totalRetrans: 0,
  srttUs: 0,
  mdevUs: 0,
  rcvOoopack: 0,
  dsackDups: 0,
  reordSeen: 0,
  totalRto: 0,
  totalRtoRecoveries: 0,
  delivered: 0,
  sndCwnd: 0,
  unackedBytes: 0,
});

/** All-zero ancillary counters. */
export const ZERO_ANCILLARY: Readonly<AncillaryCounters> = Object.freeze({
  synNs: 0n,
  synRetrans: 0,
  dupPackets: 0,
  dupOctets: 0,
  badChecksums: 0,
  stalls: 0,
  ofoDistCount: 0,
  ofoDistSum: 0,
  ofoDistSumSq: 0,
});

/**
 * The part of an event a connection keeps: holding the whole event would also hold its address
 * strings and arguments, for every tracked connection. `c` says which SYN and FIN sequence
 * numbers the kernel's byte counters include at this event (after `trackSequence`).
 */
function snap(ev: ProbeEvent, c: SequenceFlags): Snapshot {
  return {
    tsNs: ev.tsNs,
    counters: ev.counters,
    ancillary: ev.ancillary,
    seqAcked: (c.active && ev.counters.bytesAcked > 0 ? 1 : 0) + (c.finAcked ? 1 : 0),
    seqReceived: c.peerFin ? 1 : 0,
  };
}

/** What a connection knows of the SYN and FINs the kernel counts in its byte counters. */
interface SequenceFlags {
  /** This side sent the SYN (connect): its acknowledgement is 1 in bytes_acked. */
  active: boolean;
  /** Our FIN was acknowledged: 1 in bytes_acked. */
  finAcked: boolean;
  /** The peer's FIN was taken in order by this socket: 1 in bytes_received. */
  peerFin: boolean;
  /** bytes_received when FIN_WAIT2 was entered, -1 before. */
  finWait2Received: number;
}

/**
 * Updates what `c` knows of the SYN and FINs counted in its byte counters from one event. The
 * kernel counts sequence space: bytes_acked takes 1 for an acked SYN or FIN, bytes_received 1 for
 * the peer's FIN (not for its SYN). States give it away: FIN_WAIT2 and TIME_WAIT mean our FIN was
 * acked; CLOSE_WAIT, CLOSING, LAST_ACK and TIME_WAIT that the peer's FIN was taken; a close from
 * LAST_ACK or CLOSING with nothing outstanding is the ack of our FIN. A close from FIN_WAIT2 is
 * ambiguous: the peer's FIN reached this socket (bytes_received grew in FIN_WAIT2), or an
 * orphaned socket was handed to a time-wait socket that takes the FIN instead (it did not).
 */
function trackSequence(c: SequenceFlags & { resetSeen: boolean }, ev: ProbeEvent): void {
  const entered = ev.kind === EVENT_KIND.state ? ev.arg1 : ev.tcpState;
  switch (entered) {
    case TCP_STATE.FIN_WAIT2:
      c.finAcked = true;
      if (c.finWait2Received < 0) c.finWait2Received = ev.counters.bytesReceived;
      break;
    case TCP_STATE.TIME_WAIT:
      c.finAcked = true;
      c.peerFin = true;
      break;
    case TCP_STATE.CLOSE_WAIT:
    case TCP_STATE.CLOSING:
    case TCP_STATE.LAST_ACK:
      c.peerFin = true;
      break;
    case TCP_STATE.CLOSE: {
      if (ev.kind !== EVENT_KIND.state || c.resetSeen) break;
      const from = ev.arg0;
      // The probes do not send the changes into these states: the close's old state says it.
      if (from === TCP_STATE.CLOSE_WAIT || from === TCP_STATE.CLOSING || from === TCP_STATE.LAST_ACK)
        c.peerFin = true;
      if ((from === TCP_STATE.LAST_ACK || from === TCP_STATE.CLOSING) && ev.counters.unackedBytes === 0)
        c.finAcked = true;
      if (
        from === TCP_STATE.FIN_WAIT2 &&
        c.finWait2Received >= 0 &&
        ev.counters.bytesReceived > c.finWait2Received
      )
        c.peerFin = true;
      break;
    }
  }
}

/** One tracked connection. */
export interface Connection extends SequenceFlags {
  readonly cookie: bigint;
  /**
   * The same for every profile of the connection; an MPTCP subflow takes its MPTCP connection's
   * (set from the connection's key as soon as an event carries it, before the first profile).
   */
  flowId: bigint;
  netns: number;
  ipVersion: 4 | 6;
  localAddress: string;
  remoteAddress: string;
  localPort: number;
  remotePort: number;
  mptcpSubflow: boolean;
  /** MPTCP subflows: the connection's local key (0 until known) and the subflow's path index. */
  mptcpKey: bigint;
  pathIndex: number;
  state: State;
  /** State that opened the current window (its flowStartReason). */
  startReason: State;
  /** FSM state when the current window opened: NEW marks the handshake window. */
  windowState: State;
  /** Baseline of the current window; its tsNs is the window's start. */
  windowStart: Snapshot;
  /** The latest event seen. */
  last: Snapshot;
  /** RTT samples (events with srtt > 0) in the current window, and their sums. */
  rttSamples: number;
  srttSumUs: number;
  mdevSumUs: number;
  sawFin: boolean;
  resetSeen: boolean;
  /** Picked up already open (by a snapshot or another event), not from its first SYN. */
  readonly adopted: boolean;
  /** Wire bytes of the addresses, made by the profile builder at the first profile (null before). */
  wire: { local: Uint8Array; remote: Uint8Array } | null;
}

/** A closed profile window: what the builder turns into one profile record. */
export interface ProfileWindow {
  readonly conn: Connection;
  readonly startReason: State;
  readonly endReason: State;
  /** True for the window that began in NEW (handshake, or an attempt that never established). */
  readonly handshake: boolean;
  readonly start: Snapshot;
  readonly end: Snapshot;
  readonly rttSamples: number;
  readonly srttSumUs: number;
  readonly mdevSumUs: number;
}

/** Table settings. */
export interface ConnectionTableOptions {
  /** Most connections tracked at once. Default 100,000. */
  maxConnections?: number;
  /** Active timeout, ns: an ESTABLISHED (or UPDATE) window older than this is closed. Default 60 s. */
  activeTimeoutNs?: bigint;
  /** flowId of a cookie (same for every profile of the connection). */
  flowId: (cookie: bigint) => bigint;
  /** flowId of an MPTCP connection from its local key: its subflows' (default: flowId(key)). */
  mptcpFlowId?: (key: bigint) => bigint;
  /** Receives each closed window, synchronously. */
  onWindow: (w: ProfileWindow) => void;
}

/** Counters of the table's own work, for metrics. */
export interface ConnectionTableStats {
  /** Connections seen from their start (connect, passive established, handshake snapshot). */
  created: number;
  /** Connections picked up already established (snapshot or other event of an unknown cookie). */
  adopted: number;
  /** Connections evicted because the table was full. */
  evicted: number;
  /** Connections removed at their last profile (or when their socket was destroyed). */
  removed: number;
  /** Events of unknown cookies that carried nothing to track (listeners, closes, late resets). */
  ignored: number;
  /** Windows closed, i.e. profiles handed to the builder. */
  windows: number;
  /** Events older than the connection's latest (a ring event overtaken by an iterator snapshot). */
  stale: number;
  /** Connections a complete scan no longer found in the kernel (their close was lost): DESYNC. */
  vanished: number;
}

/** The connection table. */
export class ConnectionTable {
  readonly maxConnections: number;
  readonly activeTimeoutNs: bigint;
  readonly stats: ConnectionTableStats = {
    created: 0,
    adopted: 0,
    evicted: 0,
    removed: 0,
    ignored: 0,
    windows: 0,
    stale: 0,
    vanished: 0,
  };
  /** Cookies removed while a scan is being applied: its older snapshots must not re-adopt them. */
  private removedDuringScan: Set<bigint> | null = null;
  // Insertion order is recency order: every event moves its connection to the end.
  private readonly conns = new Map<bigint, Connection>();
  private readonly flowId: (cookie: bigint) => bigint;
  private readonly mptcpFlowId: (key: bigint) => bigint;
  private readonly onWindow: (w: ProfileWindow) => void;

  constructor(options: ConnectionTableOptions) {
    this.maxConnections = options.maxConnections ?? 100_000;
    if (!Number.isInteger(this.maxConnections) || this.maxConnections < 1)
      throw new RangeError(`maxConnections ${this.maxConnections} is not a positive integer`);
    this.activeTimeoutNs = options.activeTimeoutNs ?? 60_000_000_000n;
    this.flowId = options.flowId;
    this.mptcpFlowId = options.mptcpFlowId ?? options.flowId;
    this.onWindow = options.onWindow;
  }

  /** Connections tracked now. */
  get size(): number {
    return this.conns.size;
  }

  /** The connection of a cookie, if tracked. */
  get(cookie: bigint): Connection | undefined {
    return this.conns.get(cookie);
  }

  /** Every tracked connection, least recently active first. */
  connections(): IterableIterator<Connection> {
    return this.conns.values();
  }

  /**
   * Applies one event: creates, advances or removes its connection, closing windows on the way.
   * Returns the event's connection (also when this event removed it), or undefined when the
   * event had nothing to track.
   */
  apply(ev: ProbeEvent): Connection | undefined {
    let c = this.conns.get(ev.cookie);
    if (c === undefined) {
      if (this.removedMeanwhile(ev)) {
        this.stats.stale++;
        return undefined;
      }
      c = this.open(ev);
      if (c === undefined) {
        this.stats.ignored++;
        return undefined;
      }
    } else {
      this.conns.delete(ev.cookie);
      this.conns.set(ev.cookie, c);
      this.advance(c, ev);
    }
    // A connection ends at its last profile: the probes send its socket's destroy only when the
    // close itself was lost, and any later event of the cookie carries nothing to track.
    if (ev.kind === EVENT_KIND.destroy || isTerminal(c.state)) {
      if (this.conns.delete(c.cookie)) {
        this.stats.removed++;
        this.removedDuringScan?.add(c.cookie);
      }
    }
    return c;
  }

  /**
   * A scan's snapshots are about to be applied in several slices, with ring events in between:
   * until `endScan`, a snapshot of a connection removed meanwhile is dropped, not adopted again.
   */
  beginScan(): void {
    this.removedDuringScan = new Set();
  }

  /** The scan's snapshots are all applied. */
  endScan(): void {
    this.removedDuringScan = null;
  }

  /** True when `ev` is a snapshot of a connection that ended while its scan was applied. */
  private removedMeanwhile(ev: ProbeEvent): boolean {
    return ev.kind === EVENT_KIND.snapshot && this.removedDuringScan?.has(ev.cookie) === true;
  }

  /**
   * After a complete scan: every tracked connection of the walked namespaces that the scan did
   * not find, and that had no event since the scan began, is gone from the kernel (its close, and
   * destroy, were lost). It gets a DESYNC profile up to its latest event and is removed
   * (counted as `vanished`). Returns how many.
   */
  dropVanished(netns: ReadonlySet<number>, found: ReadonlySet<bigint>, startNs: bigint): number {
    let n = 0;
    for (const c of [...this.conns.values()]) {
      if (!netns.has(c.netns) || found.has(c.cookie) || c.last.tsNs >= startNs) continue;
      if (!isTerminal(c.state) && c.state !== STATE.DESYNC) this.close(c, STATE.DESYNC, c.last);
      this.conns.delete(c.cookie);
      this.stats.vanished++;
      n++;
    }
    return n;
  }

  private advance(c: Connection, ev: ProbeEvent): void {
    // Events of one socket reach the ring in order; only an iterator snapshot can overtake some,
    // and it already carries their counters: the older event has nothing left to say.
    if (ev.tsNs < c.last.tsNs) {
      this.stats.stale++;
      return;
    }
    if (ev.kind === EVENT_KIND.resetSent || ev.kind === EVENT_KIND.resetReceived) c.resetSeen = true;
    trackSequence(c, ev);
    c.last = snap(ev, c);
    this.identify(c, ev);
    if (c.mptcpSubflow && c.mptcpKey === 0n && ev.mptcp && ev.mptcp.key !== 0n) this.joinMptcp(c, ev);
    if (isTerminal(c.state)) return;
    if (c.state === STATE.DESYNC) {
      c.state = resumeState(tcpStateBefore(ev));
      c.windowState = c.state;
    }
    if (ev.counters.srttUs > 0) {
      c.rttSamples++;
      c.srttSumUs += ev.counters.srttUs;
      c.mdevSumUs += ev.counters.mdevUs;
    }
    const input = classify(ev, c);
    if ((ev.kind === EVENT_KIND.state && isFinState(ev.arg1)) || isFinState(ev.tcpState)) c.sawFin = true;
    const due = ev.tsNs - c.windowStart.tsNs >= this.activeTimeoutNs;
    const t = next(c.state, input, due);
    if (t !== null) this.take(c, t, c.last);
  }

  private take(c: Connection, t: Transition, end: Snapshot): void {
    if (t.profile) this.close(c, t.to, end);
    c.state = t.to;
  }

  /** Closes the current window of `c` with `endReason` at `end`, and opens the next one there. */
  private close(c: Connection, endReason: State, end: Snapshot): void {
    let { rttSamples, srttSumUs, mdevSumUs } = c;
    if (rttSamples === 0 && end.counters.srttUs > 0) {
      // A window with no event of its own (DESYNC right after it opened) takes the last RTT known.
      rttSamples = 1;
      srttSumUs = end.counters.srttUs;
      mdevSumUs = end.counters.mdevUs;
    }
    this.stats.windows++;
    this.onWindow({
      conn: c,
      startReason: c.startReason,
      endReason,
      handshake: c.windowState === STATE.NEW,
      start: c.windowStart,
      end,
      rttSamples,
      srttSumUs,
      mdevSumUs,
    });
    c.startReason = endReason;
    c.windowState = endReason;
    c.windowStart = end;
    c.rttSamples = 0;
    c.srttSumUs = 0;
    c.mdevSumUs = 0;
  }

  /** Starts tracking the cookie of `ev`, or returns undefined when there is nothing to track. */
  private open(ev: ProbeEvent): Connection | undefined {
    switch (ev.kind) {
      case EVENT_KIND.connect:
        return this.add(ev, STATE.NEW, false);
      case EVENT_KIND.activeEstablished:
      case EVENT_KIND.passiveEstablished: {
        // Seen from its handshake (the accepting side has no earlier event): the handshake profile.
        const c = this.add(ev, STATE.NEW, false);
        this.advance(c, ev);
        return c;
      }
      case EVENT_KIND.destroy:
      case EVENT_KIND.resetSent:
      case EVENT_KIND.resetReceived:
        return undefined;
      case EVENT_KIND.state:
        if (ev.arg1 === TCP_STATE.CLOSE || ev.arg1 === TCP_STATE.TIME_WAIT) return undefined;
        return this.adopt(ev);
      default:
        return this.adopt(ev);
    }
  }

  /** A connection the agent did not see start: tracked from this event on. */
  private adopt(ev: ProbeEvent): Connection | undefined {
    const s = ev.tcpState;
    if (
      s === TCP_STATE.LISTEN ||
      s === TCP_STATE.CLOSE ||
      s === TCP_STATE.TIME_WAIT ||
      s === TCP_STATE.NEW_SYN_RECV
    )
      return undefined;
    // Still in its handshake: nothing happened yet but the SYN, so it is followed as a new one.
    if (s === TCP_STATE.SYN_SENT || s === TCP_STATE.SYN_RECV) {
      return this.add(ev, STATE.NEW, false);
    }
    return this.add(ev, STATE.ESTABLISHED, true);
  }

  private add(ev: ProbeEvent, state: State, adopted: boolean): Connection {
    if (this.conns.size >= this.maxConnections) this.evictOldest();
    // Which end sent the SYN is known only for connections seen from their handshake; for an
    // adopted one it does not matter: its SYN is in the baseline and in every later snapshot.
    const flags: SequenceFlags & { resetSeen: boolean } = {
      active:
        !adopted &&
        (ev.kind === EVENT_KIND.connect ||
          ev.kind === EVENT_KIND.activeEstablished ||
          ev.tcpState === TCP_STATE.SYN_SENT),
      finAcked: false,
      peerFin: false,
      finWait2Received: -1,
      resetSeen: false,
    };
    trackSequence(flags, ev);
    // A connection seen from its start counts from zero, so its profiles add up to the kernel's
    // totals; an adopted one counts from the snapshot it was found with.
    const last = snap(ev, flags);
    const start: Snapshot = adopted
      ? last
      : {
          tsNs: ev.ancillary.synNs > 0n && ev.ancillary.synNs <= ev.tsNs ? ev.ancillary.synNs : ev.tsNs,
          counters: ZERO_COUNTERS,
          ancillary: ZERO_ANCILLARY,
          seqAcked: 0,
          seqReceived: 0,
        };
    const key = ev.mptcpSubflow ? (ev.mptcp?.key ?? 0n) : 0n;
    const c: Connection = {
      cookie: ev.cookie,
      flowId: key !== 0n ? this.mptcpFlowId(key) : this.flowId(ev.cookie),
      netns: ev.netns,
      ipVersion: ev.ipVersion,
      localAddress: ev.localAddress,
      remoteAddress: ev.remoteAddress,
      localPort: ev.localPort,
      remotePort: ev.remotePort,
      mptcpSubflow: ev.mptcpSubflow,
      mptcpKey: key,
      pathIndex: ev.mptcp?.pathIndex ?? 0,
      state,
      startReason: state,
      windowState: state,
      windowStart: start,
      last,
      rttSamples: 0,
      srttSumUs: 0,
      mdevSumUs: 0,
      sawFin: isFinState(ev.tcpState),
      adopted,
      wire: null,
      active: flags.active,
      finAcked: flags.finAcked,
      peerFin: flags.peerFin,
      finWait2Received: flags.finWait2Received,
      resetSeen: flags.resetSeen,
    };
    this.conns.set(ev.cookie, c);
    if (adopted) this.stats.adopted++;
    else this.stats.created++;
    return c;
  }

  /**
   * An MPTCP subflow whose connection's key was not chosen yet at its first event (an active
   * open's connect): it takes the connection's flowId now, before its first profile.
   */
  private joinMptcp(c: Connection, ev: ProbeEvent): void {
    c.mptcpKey = ev.mptcp!.key;
    c.pathIndex = ev.mptcp!.pathIndex;
    c.flowId = this.mptcpFlowId(c.mptcpKey);
  }

  /**
   * Completes what the first event could not say of the connection's ends: its ports once an
   * event carries them (the first had local port 0), its addresses once an event carries both
   * set (the first had `::` or `0.0.0.0`, see `addressesSet`). What is known is never replaced:
   * an event read after the kernel cleared an address (tcp_disconnect) keeps the profile's ends.
   */
  private identify(c: Connection, ev: ProbeEvent): void {
    if (c.localPort === 0 && ev.localPort !== 0) {
      c.netns = ev.netns;
      c.localPort = ev.localPort;
      c.remotePort = ev.remotePort;
      c.wire = null;
    }
    if (!addressesSet(c) && addressesSet(ev)) {
      c.ipVersion = ev.ipVersion;
      c.localAddress = ev.localAddress;
      c.remoteAddress = ev.remoteAddress;
      c.wire = null;
    }
  }

  private evictOldest(): void {
    const oldest = this.conns.values().next();
    if (oldest.done) return;
    const c = oldest.value;
    this.conns.delete(c.cookie);
    this.stats.evicted++;
    if (!isTerminal(c.state) && c.state !== STATE.DESYNC) this.close(c, STATE.DESYNC, c.last);
  }

  /**
   * The agent lost track of every connection (events lost, or it is stopping): each open one
   * gets a DESYNC profile up to its latest event. With `remove` the table is emptied (shutdown,
   * end of a replay); otherwise each connection resumes from its next event, in a window that
   * starts with DESYNC. Returns the number of DESYNC profiles.
   */
  desyncAll(remove = false): number {
    let n = 0;
    for (const c of this.conns.values()) {
      if (isTerminal(c.state) || c.state === STATE.DESYNC) continue;
      this.close(c, STATE.DESYNC, c.last);
      c.state = STATE.DESYNC;
      n++;
    }
    if (remove) this.conns.clear();
    return n;
  }
}
