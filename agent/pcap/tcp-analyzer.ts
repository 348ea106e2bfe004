/**
 * The passive TCP analyzer: decoded segments in, probe events out, as the live probes would have
 * made them on one end host of each connection (the "local" side: the SYN sender, or the end in
 * `--local-net`). Each connection keeps, per direction of data, what its sender and its receiver
 * would know (next sequence, acknowledged point, reassembly point, RTT estimator, recovery state),
 * and every event carries the local side's full TcpCounters and AncillaryCounters snapshot with
 * the kernel's conventions (agent/probe-event.ts): bytes_acked and bytes_received in sequence
 * space (our SYN once acked on an active open, each FIN once acked or taken), bytes_sent and
 * bytes_retrans in payload bytes, total_retrans in segments (SYNs included).
 *
 * KPI rules (how they map to tshark's tcp.analysis flags is in docs, agent/pcap/README.md):
 * - retransmission: a segment with payload, SYN or FIN that starts below the highest sequence
 *   already sent in its direction (tshark's nextseq), except keep-alives and zero-window probes;
 * - stall (RTO): a retransmission of the first unacknowledged byte after the sender was silent
 *   for max(200 ms, srtt + 4·mdev) since data left with nothing outstanding, the last ACK that
 *   advanced, or the last retransmission, with fewer than 3 duplicate ACKs;
 * - out of order at the receiver (rcv_ooopack): data starting above the next expected sequence;
 *   the distance is how far above, in bytes;
 * - duplicate: data (or a FIN) entirely below what the receiver already acknowledged;
 * - RTT: data → the ACK that first covers it, Karn's rule (no sample when retransmitted data is
 *   acknowledged), else the timestamp option's echo; fed to the kernel's estimator
 *   (tcp_rtt_estimator) so srttUs and mdevUs mean what they mean in the kernel.
 */
import { createHash } from 'node:crypto';
import { TCP_STATE } from '../fsm.js';
import { EVENT_KIND, type EventKind, type ProbeEvent, type TcpCounters } from '../probe-event.js';
import { type Cidr, formatAddress, inNets } from './addresses.js';
import { TCP_FLAG, type TcpSegment } from './packet-decoder.js';

/** TcpCounters a capture cannot show: the profile template leaves their KPIs out. */
export const PCAP_MISSING: readonly (keyof TcpCounters)[] = ['sndCwnd', 'delivered', 'reordSeen'];

const SYN = TCP_FLAG.SYN;
const ACK = TCP_FLAG.ACK;
const FIN = TCP_FLAG.FIN;
const RST = TCP_FLAG.RST;

/** Congestion-avoidance states (TCP_CA_*). */
const CA_OPEN = 0;
const CA_RECOVERY = 3;
const CA_LOSS = 4;

/** The kernel's minimum RTO (TCP_RTO_MIN), µs: also the floor of a stall's silence. */
const RTO_MIN_US = 200_000;
/** Most out-of-order intervals a receiver remembers (past it, the receiver's ACKs catch up). */
const MAX_OOO_INTERVALS = 16;
/** Most unacknowledged segments timed per direction for RTT samples. */
const MAX_RING = 2048;
/** Timestamp values remembered per direction, for echo-based RTT samples. */
const TS_RING = 64;

const seqLt = (a: number, b: number): boolean => ((a - b) | 0) < 0;
const seqGt = (a: number, b: number): boolean => ((a - b) | 0) > 0;

/** One direction of a connection's data: its sender's and its receiver's view. */
class Half {
  // --- sender ---
  started = false;
  synSeen = false;
  /** The SYN was not captured (yet): inferred from the SYN-ACK. */
  synInferred = false;
  iss = 0;
  nextSeq = 0;
  una = 0;
  segs = 0;
  dataSegs = 0;
  payload = 0;
  maxSeg = 0;
  retransSegs = 0;
  retransBytes = 0;
  synRetrans = 0;
  retransActive = false;
  retransLow = 0;
  retransHigh = 0;
  ackedRaw = 0;
  synAcked = false;
  dupAcks = 0;
  rtoStartNs = 0;
  backoff = 0;
  ca = CA_OPEN;
  highSeq = 0;
  rtos = 0;
  stalls = 0;
  rtoRecoveries = 0;
  dsacks = 0;
  finSent = false;
  finSeq = 0;
  finAcked = false;
  window = -1;
  // RTT estimator, in the kernel's units (srtt_us is 8x, mdev_us 4x).
  srtt8 = 0;
  mdev4 = 0;
  mdevMax = 0;
  rttvar = 0;
  rttSeq = 0;
  rttSamples = 0;
  ring: Float64Array | null = null;
  ringHead = 0;
  ringLen = 0;
  ringContig = 0;
  tsRing: Float64Array | null = null;
  tsNext = 0;
  lastTsVal = -1;
  // --- receiver of this direction's data ---
  rcvInit = false;
  rcvNxt = 0;
  received = 0;
  finSeen = false;
  finEnd = 0;
  finTaken = false;
  ooo: number[] = [];
  oooPkts = 0;
  oooDistSum = 0;
  oooDistSumSq = 0;
  dupPkts = 0;
  dupOctets = 0;
  dupData = 0;
}

/** Per-direction totals of a connection, as the analyzer ends it (tests, tools). */
export interface DirectionStats {
  /** Segments, segments with payload, payload bytes (retransmissions included). */
  segs: number;
  dataSegs: number;
  payloadBytes: number;
  /** Retransmitted segments (SYN and FIN ones too) and their payload bytes. */
  retransSegs: number;
  retransBytes: number;
  synRetrans: number;
  /** RTOs detected, those with data outstanding after the handshake, recoveries from them. */
  rtos: number;
  stalls: number;
  rtoRecoveries: number;
  /** D-SACK blocks the sender received. */
  dsacks: number;
  /** Sequence space the receiver acknowledged (the SYN and FIN included whenever acked: events leave a passive side SYN out, as the kernel) / took in order (the FIN included, never the SYN). */
  ackedSeq: number;
  receivedSeq: number;
  /** At the receiver: segments above the next expected sequence, distance sum and sum of squares. */
  oooPkts: number;
  oooDistSum: number;
  oooDistSumSq: number;
  /** At the receiver: segments already acknowledged, their sequence space, those with payload. */
  dupPkts: number;
  dupOctets: number;
  dupDataPkts: number;
  /** Smoothed RTT and mean deviation of this direction's sender, µs (0: no sample). */
  srttUs: number;
  mdevUs: number;
  rttSamples: number;
  finSent: boolean;
}

/** A connection as the analyzer ends it: identity, which end is local, both directions. */
export interface ConnectionSummary {
  cookie: bigint;
  ipVersion: 4 | 6;
  clientAddress: string;
  clientPort: number;
  serverAddress: string;
  serverPort: number;
  /** True when the client (SYN sender, or guessed for a connection seen mid-stream) is local. */
  localIsClient: boolean;
  /** Seen from its SYN; false: picked up mid-stream. */
  handshake: boolean;
  established: boolean;
  mptcpSubflow: boolean;
  /** Index of the MPTCP connection (see `mptcpConnections`) or -1. */
  mptcpConnection: number;
  clientToServer: DirectionStats;
  serverToClient: DirectionStats;
  /** How it ended: fin, reset, idle (expired), evicted, capture-end. */
  end: 'fin' | 'reset' | 'idle' | 'evicted' | 'capture-end' | 'reused';
}

/** An MPTCP connection: its tokens and the subflows tied to it. */
export interface MptcpConnectionInfo {
  id: number;
  version: number;
  /** Tokens of its keys (client's and server's as seen; RFC 8684 3.1/3.2). */
  tokens: number[];
  subflows: { cookie: bigint; client: string; server: string; join: boolean }[];
}

/** One tracked connection. */
class Conn {
  next: Conn | null = null;
  readonly ab = new Half();
  readonly ba = new Half();
  readonly aw = new Uint32Array(4);
  readonly bw = new Uint32Array(4);
  clientIsA = true;
  localIsA = true;
  handshake = false;
  established = false;
  closed = false;
  evented = false;
  state = 0;
  ca = CA_OPEN;
  synNs = -1;
  lastNs = 0;
  lastEventNs = 0;
  mpSynOpt = -1;
  mpSubflow = false;
  mpJoin = false;
  mpVersion = 0;
  meta: MptcpMeta | null = null;
  /** Its position among its MPTCP connection's subflows, in order of appearance (1-based). */
  mpPathIndex = 0;
  endReason: ConnectionSummary['end'] = 'fin';
  localAddr = '';
  remoteAddr = '';
  localPort = 0;
  remotePort = 0;
  constructor(
    readonly cookie: bigint,
    readonly hash: number,
    readonly ipVersion: 4 | 6,
    readonly aPort: number,
    readonly bPort: number,
  ) {}
}

interface MptcpMeta {
  id: number;
  version: number;
  tokens: number[];
  subflows: MptcpConnectionInfo['subflows'];
}

/** Analyzer settings. */
export interface TcpAnalyzerOptions {
  /** Networks of the local host: the end inside is the local side. Default: the SYN sender. */
  localNets?: readonly Cidr[];
  /** Most connections tracked at once; past it the oldest is ended (counted). Default 100,000. */
  maxConnections?: number;
  /** A connection silent this long (capture time) is ended. Default 1 h (memory is bounded by maxConnections anyway). */
  idleTimeoutMs?: number;
  /** A connection with no event this long (capture time) gets a snapshot event. Default 15 s. */
  snapshotIntervalMs?: number;
  /** A closed connection is remembered this long to absorb its last packets. Default 60 s. */
  closedLingerMs?: number;
  /** Called as each connection leaves the analyzer. */
  onConnectionEnd?: (s: ConnectionSummary) => void;
}

/** Counters of the analyzer's own work. */
export interface TcpAnalyzerStats {
  segments: number;
  connections: number;
  /** Connections first seen mid-stream (no SYN), so adopted as established. */
  midStream: number;
  evicted: number;
  expired: number;
  /** Resets for no tracked connection, or outside the receiver's window (not acceptable). */
  strayResets: number;
  ignoredResets: number;
  events: number;
  mptcpSubflows: number;
  mptcpJoinUnknownToken: number;
}

/** The analyzer. Feed `segment()`; take events from `out` (the caller empties it). */
export class TcpAnalyzer {
  /** Events made so far and not yet taken. */
  out: ProbeEvent[] = [];
  readonly stats: TcpAnalyzerStats = {
    segments: 0,
    connections: 0,
    midStream: 0,
    evicted: 0,
    expired: 0,
    strayResets: 0,
    ignoredResets: 0,
    events: 0,
    mptcpSubflows: 0,
    mptcpJoinUnknownToken: 0,
  };
  private readonly table = new Map<number, Conn>();
  private size = 0;
  private nextCookie = 1n;
  private readonly localNets: readonly Cidr[];
  private readonly maxConnections: number;
  private readonly idleNs: number;
  private readonly snapshotNs: number;
  private readonly lingerNs: number;
  private readonly housekeepNs: number;
  private nextHousekeep = Number.NEGATIVE_INFINITY;
  private readonly onEnd: ((s: ConnectionSummary) => void) | undefined;
  private readonly metaByToken = new Map<number, MptcpMeta>();
  private readonly metas: MptcpMeta[] = [];
  private nextMetaId = 0;
  private fromA = true;
  /** Capture time of time 0 of the analyzer's clock, ns since the epoch. */
  private baseNs = 0n;

  constructor(options: TcpAnalyzerOptions = {}) {
    this.localNets = options.localNets ?? [];
    this.maxConnections = options.maxConnections ?? 100_000;
    this.idleNs = (options.idleTimeoutMs ?? 3_600_000) * 1e6;
    this.snapshotNs = (options.snapshotIntervalMs ?? 15_000) * 1e6;
    this.lingerNs = (options.closedLingerMs ?? 60_000) * 1e6;
    this.housekeepNs = Math.max(1e9, Math.min(this.snapshotNs, this.idleNs, this.lingerNs) / 4);
    this.onEnd = options.onConnectionEnd;
  }

  /** Sets the epoch time (ns) that the analyzer's relative times count from. */
  setBase(baseNs: bigint): void {
    this.baseNs = baseNs;
  }

  /** Connections tracked now. */
  get connections(): number {
    return this.size;
  }

  /** MPTCP connections seen, with their subflows (the most recent 10,000). */
  mptcpConnections(): MptcpConnectionInfo[] {
    return this.metas.map((m) => ({ ...m, tokens: [...m.tokens], subflows: [...m.subflows] }));
  }

  /** One decoded segment captured at `t` ns after the base. */
  segment(s: TcpSegment, t: number): void {
    this.stats.segments++;
    if (t >= this.nextHousekeep) this.housekeep(t);
    const hash = hashOf(s);
    let c = this.lookup(hash, s);
    const flags = s.flags;
    if (c?.closed) {
      // A new SYN on the tuple of a closed connection opens a new one; anything else is a
      // straggler (a last ACK, a retransmitted FIN): counted, but the socket is gone, so no event.
      if ((flags & (SYN | ACK)) === SYN) {
        this.remove(c, null);
        c = null;
      }
    } else if (c !== null && (flags & (SYN | ACK)) === SYN && c.established) {
      const h = this.fromA ? c.ab : c.ba;
      if (!h.synSeen || s.seq !== h.iss) {
        // The tuple is reused by a new connection while the old one was never seen closing.
        this.remove(c, 'reused');
        c = null;
      }
    }
    if (c === null) {
      if (flags & RST) {
        this.stats.strayResets++;
        return;
      }
      c = this.create(s, hash, t);
    }
    const fromA = this.fromA;
    const snd = fromA ? c.ab : c.ba;
    const rcv = fromA ? c.ba : c.ab;
    const fromLocal = fromA === c.localIsA;
    c.lastNs = t;
    snd.segs++;
    if (flags & RST) {
      this.reset(c, s, snd, fromLocal, t);
      return;
    }
    if (flags & ACK) this.ackOf(c, snd === c.ab ? c.ba : c.ab, s, t, !fromLocal);
    if (flags & SYN) {
      if (snd.synInferred && (flags & ACK) === 0 && s.seq === snd.iss) {
        // The SYN the connection was inferred from, captured after its SYN-ACK: nothing new.
        snd.synInferred = false;
        return;
      }
      this.synOf(c, snd, s, t);
    }
    if (s.mpSubtype >= 0) this.mptcpOf(c, s, fromA);
    const len = s.payloadLen;
    if (len > 0 || flags & (SYN | FIN)) {
      this.sendOf(c, snd, rcv, s, t, fromLocal);
      if (len > 0 || flags & FIN) this.receiveOf(c, snd, s, t, !fromLocal);
    }
    snd.window = s.window;
    if (s.hasTs && s.tsVal !== snd.lastTsVal) recordTs(snd, s.tsVal, t);
    if (!c.established) this.handshakeProgress(c, s, t, fromLocal);
    else if (!c.closed && (snd.finSent || rcv.finSent || snd.finTaken || rcv.finTaken))
      this.closeProgress(c, t);
    // Long quiet stretches without events: a snapshot lets the agent's active timeout see time pass.
    if (c.evented && !c.closed && t - c.lastEventNs >= this.snapshotNs)
      this.emit(c, EVENT_KIND.snapshot, c.state, 0, t);
  }

  /** The capture ended at `t`: every open connection gets a last snapshot and leaves. */
  finish(t: number): void {
    for (const head of [...this.table.values()]) {
      for (let c: Conn | null = head; c !== null; ) {
        const nx: Conn | null = c.next;
        if (!c.closed && c.evented) this.emit(c, EVENT_KIND.snapshot, c.state, 0, Math.max(t, c.lastNs));
        this.remove(c, c.closed ? null : 'capture-end');
        c = nx;
      }
    }
  }

  // --- table ---

  private lookup(hash: number, s: TcpSegment): Conn | null {
    for (let c = this.table.get(hash) ?? null; c !== null; c = c.next) {
      if (c.ipVersion !== s.ipVersion) continue;
      if (c.aPort === s.srcPort && c.bPort === s.dstPort && eq(c.aw, s.src) && eq(c.bw, s.dst)) {
        this.fromA = true;
        return c;
      }
      if (c.aPort === s.dstPort && c.bPort === s.srcPort && eq(c.aw, s.dst) && eq(c.bw, s.src)) {
        this.fromA = false;
        return c;
      }
    }
    return null;
  }

  private create(s: TcpSegment, hash: number, t: number): Conn {
    if (this.size >= this.maxConnections) this.evictOne();
    const c = new Conn(this.nextCookie++, hash, s.ipVersion, s.srcPort, s.dstPort);
    c.aw.set(s.src);
    c.bw.set(s.dst);
    c.next = this.table.get(hash) ?? null;
    this.table.set(hash, c);
    this.size++;
    this.stats.connections++;
    this.fromA = true;
    const syn = s.flags & SYN;
    // The client sent the SYN; seen from a SYN-ACK, the other end; seen mid-stream, the end with
    // the higher (ephemeral-looking) port.
    c.clientIsA = syn ? !(s.flags & ACK) : s.srcPort >= s.dstPort;
    let localIsClient = true;
    if (this.localNets.length > 0) {
      const aIn = inNets(this.localNets, s.ipVersion, s.src);
      const bIn = inNets(this.localNets, s.ipVersion, s.dst);
      const clientIn = c.clientIsA ? aIn : bIn;
      const serverIn = c.clientIsA ? bIn : aIn;
      if (serverIn && !clientIn) localIsClient = false;
    }
    c.localIsA = localIsClient === c.clientIsA;
    const lw = c.localIsA ? c.aw : c.bw;
    const rw = c.localIsA ? c.bw : c.aw;
    c.localAddr = formatAddress(c.ipVersion, lw);
    c.remoteAddr = formatAddress(c.ipVersion, rw);
    c.localPort = c.localIsA ? c.aPort : c.bPort;
    c.remotePort = c.localIsA ? c.bPort : c.aPort;
    if (syn) {
      c.handshake = true;
      if (s.flags & ACK) {
        // Its SYN was not captured: the SYN-ACK's ACK says what it was.
        const cl = c.ba;
        cl.synSeen = true;
        cl.synInferred = true;
        cl.started = true;
        cl.iss = (s.ack - 1) >>> 0;
        cl.una = cl.iss;
        cl.nextSeq = s.ack;
        cl.rtoStartNs = t;
        cl.rcvInit = true;
        cl.rcvNxt = s.ack;
        c.synNs = t;
        if (localIsClient) {
          c.state = TCP_STATE.SYN_SENT;
          this.emit(c, EVENT_KIND.connect, 0, 0, t);
        }
      }
    } else {
      // Picked up mid-stream: adopted as established, from zero counters on.
      this.stats.midStream++;
      c.established = true;
      c.state = TCP_STATE.ESTABLISHED;
      this.emit(c, EVENT_KIND.snapshot, TCP_STATE.ESTABLISHED, 0, t);
    }
    return c;
  }

  private unlink(c: Conn): void {
    let h = this.table.get(c.hash) ?? null;
    if (h === c) {
      if (c.next === null) this.table.delete(c.hash);
      else this.table.set(c.hash, c.next);
    } else {
      while (h !== null && h.next !== c) h = h.next;
      if (h !== null) h.next = c.next;
    }
    c.next = null;
    this.size--;
  }

  /** Takes `c` out; `end` says why when it was still open (null: it had closed). */
  private remove(c: Conn, end: ConnectionSummary['end'] | null): void {
    this.unlink(c);
    this.onEnd?.(summary(c, end ?? c.endReason));
  }

  private evictOne(): void {
    const first = this.table.values().next();
    if (first.done) return;
    const c = first.value;
    this.stats.evicted++;
    if (!c.closed && c.evented) this.emit(c, EVENT_KIND.snapshot, c.state, 0, c.lastNs);
    this.remove(c, c.closed ? null : 'evicted');
  }

  private housekeep(t: number): void {
    this.nextHousekeep = t + this.housekeepNs;
    const idle: Conn[] = [];
    for (const head of this.table.values()) {
      for (let c: Conn | null = head; c !== null; c = c.next) {
        const quiet = t - c.lastNs;
        if (c.closed ? quiet >= this.lingerNs : quiet >= this.idleNs) idle.push(c);
        else if (c.evented && !c.closed && t - c.lastEventNs >= this.snapshotNs)
          this.emit(c, EVENT_KIND.snapshot, c.state, 0, t);
      }
    }
    for (const c of idle) {
      if (!c.closed) {
        this.stats.expired++;
        if (c.evented) this.emit(c, EVENT_KIND.snapshot, c.state, 0, c.lastNs);
      }
      this.remove(c, c.closed ? null : 'idle');
    }
  }

  // --- per segment ---

  private synOf(c: Conn, snd: Half, s: TcpSegment, t: number): void {
    if (snd.synSeen || snd.started) return;
    snd.synSeen = true;
    snd.started = true;
    snd.iss = s.seq;
    snd.nextSeq = s.seq;
    snd.una = s.seq;
    snd.rtoStartNs = t;
    snd.rcvInit = true;
    snd.rcvNxt = (s.seq + 1) >>> 0;
    if (c.synNs < 0) c.synNs = t;
  }

  /** The ACK field of a segment: it acknowledges `h`'s data. */
  private ackOf(c: Conn, h: Half, s: TcpSegment, t: number, localSender: boolean): void {
    const ack = s.ack;
    if (!h.started) {
      // Mid-stream: the first ACK tells where this direction's data stands.
      h.started = true;
      h.una = ack;
      h.nextSeq = ack;
      h.rtoStartNs = t;
      if (!h.rcvInit) {
        h.rcvInit = true;
        h.rcvNxt = ack;
      }
      return;
    }
    const d = (ack - h.una) | 0;
    if (d > 0) {
      if (seqGt(ack, h.nextSeq)) h.nextSeq = ack;
      const prevUna = h.una;
      h.una = ack;
      h.ackedRaw += d;
      if (h.synSeen && prevUna === h.iss) h.synAcked = true;
      h.dupAcks = 0;
      h.backoff = 0;
      h.rtoStartNs = t;
      // The receiver holds everything it acknowledges, captured or not.
      if (h.rcvInit && seqGt(ack, h.rcvNxt)) advanceRcv(h, ack);
      let sampleNs = -1;
      const karn = h.retransActive && seqLt(h.retransLow, ack);
      const ring = h.ring;
      if (ring !== null && h.ringLen > 0) {
        let first = true;
        while (h.ringLen > 0) {
          const i = h.ringHead * 3;
          if (seqGt(ring[i + 1]!, ack)) break;
          if (first && !karn && !seqGt(ring[i]!, prevUna)) sampleNs = t - ring[i + 2]!;
          first = false;
          h.ringHead = (h.ringHead + 1) % (ring.length / 3);
          h.ringLen--;
        }
      }
      if (sampleNs < 0 && s.hasTs && s.tsEcr !== 0) sampleNs = tsSample(h, s.tsEcr, t);
      if (sampleNs >= 0) rttEstimate(h, sampleNs, prevUna);
      if (h.retransActive) {
        if (!seqLt(ack, h.retransHigh)) h.retransActive = false;
        else if (seqLt(h.retransLow, ack)) h.retransLow = ack;
      }
      if (h.finSent && !h.finAcked && seqGt(ack, h.finSeq)) h.finAcked = true;
      if (h.ca !== CA_OPEN && !seqLt(ack, h.highSeq)) {
        const old = h.ca;
        if (old === CA_LOSS) h.rtoRecoveries++;
        h.ca = CA_OPEN;
        if (localSender && c.evented) {
          c.ca = CA_OPEN;
          this.emit(c, EVENT_KIND.congState, old, CA_OPEN, t);
        }
      }
    } else if (d === 0 && s.payloadLen === 0 && (s.flags & (SYN | FIN | RST)) === 0 && h.nextSeq !== h.una) {
      h.dupAcks++;
    }
    const n = s.sackCount;
    if (n > 0) {
      // D-SACK (RFC 2883): the first block lies below the cumulative ACK, or inside the second.
      const l0 = s.sack[0]!;
      const r0 = s.sack[1]!;
      if (seqLt(l0, ack) || (n > 1 && !seqLt(l0, s.sack[2]!) && !seqGt(r0, s.sack[3]!))) h.dsacks++;
    }
  }

  /** Sender side of a segment with payload, SYN or FIN. */
  private sendOf(c: Conn, snd: Half, peer: Half, s: TcpSegment, t: number, fromLocal: boolean): void {
    const len = s.payloadLen;
    const syn = s.flags & SYN ? 1 : 0;
    const fin = s.flags & FIN ? 1 : 0;
    const seq = s.seq;
    if (!snd.started) {
      snd.started = true;
      snd.nextSeq = seq;
      snd.una = seq;
      snd.rtoStartNs = t;
    }
    if (len > 0) {
      snd.dataSegs++;
      snd.payload += len;
      if (len > snd.maxSeg) snd.maxSeg = len;
    }
    const end = (seq + len + syn + fin) >>> 0;
    const nxt = snd.nextSeq;
    // A keep-alive (nothing or one old byte just below what was sent) is no retransmission.
    if (len <= 1 && syn + fin === 0 && ((nxt - seq) | 0) === 1) return;
    const zeroWindowProbe = len === 1 && seq === nxt && peer.window === 0;
    let notAdvanced = seqLt(seq, nxt);
    if (len > 1 && ((nxt - seq) | 0) === 1) notAdvanced = false;
    if (notAdvanced) {
      snd.retransSegs++;
      snd.retransBytes += len;
      if (syn) snd.synRetrans++;
      if (!snd.retransActive) {
        snd.retransActive = true;
        snd.retransLow = seq;
        snd.retransHigh = end;
      } else {
        if (seqLt(seq, snd.retransLow)) snd.retransLow = seq;
        if (seqGt(end, snd.retransHigh)) snd.retransHigh = end;
      }
      const outstanding = snd.nextSeq !== snd.una;
      if (outstanding && seq === snd.una && snd.dupAcks < 3) {
        const thresholdNs = Math.max(RTO_MIN_US, (snd.srtt8 >> 3) + snd.mdev4) * 1000;
        if (t - snd.rtoStartNs >= thresholdNs) this.rto(c, snd, t, fromLocal, syn !== 0);
      } else if (snd.dupAcks >= 3 && snd.ca === CA_OPEN) {
        snd.ca = CA_RECOVERY;
        snd.highSeq = snd.nextSeq;
        if (fromLocal && c.evented) {
          c.ca = CA_RECOVERY;
          this.emit(c, EVENT_KIND.congState, CA_OPEN, CA_RECOVERY, t);
        }
      }
      snd.rtoStartNs = t;
    } else {
      if (snd.una === snd.nextSeq) snd.rtoStartNs = t;
      ringPush(snd, seq, end, t);
    }
    if (seqGt(end, nxt) && !zeroWindowProbe) snd.nextSeq = end;
    if (fin && !snd.finSent) {
      snd.finSent = true;
      snd.finSeq = (seq + len + syn) >>> 0;
    }
  }

  private rto(c: Conn, snd: Half, t: number, fromLocal: boolean, syn: boolean): void {
    snd.rtos++;
    snd.backoff++;
    // SYN timeouts are counted as SYN retransmissions, not stalls (probe-event.ts).
    if (!syn) snd.stalls++;
    const old = snd.ca;
    snd.ca = CA_LOSS;
    snd.highSeq = snd.nextSeq;
    // The kernel has no socket yet for a SYN-ACK's timeout (it is a request socket's timer).
    if (!fromLocal || !c.evented) return;
    const inFlight = Math.ceil(((snd.nextSeq - snd.una) >>> 0) / Math.max(1, snd.maxSeg));
    this.emit(c, EVENT_KIND.rto, snd.backoff, inFlight, t);
    if (old !== CA_LOSS) {
      c.ca = CA_LOSS;
      this.emit(c, EVENT_KIND.congState, old, CA_LOSS, t);
    }
  }

  /** Receiver side: `h`'s data (payload or FIN) reaching its receiver. */
  private receiveOf(c: Conn, h: Half, s: TcpSegment, t: number, localReceiver: boolean): void {
    const syn = s.flags & SYN ? 1 : 0;
    const fin = s.flags & FIN ? 1 : 0;
    const seq = (s.seq + syn) >>> 0;
    const end = (seq + s.payloadLen + fin) >>> 0;
    if (!h.rcvInit) {
      h.rcvInit = true;
      h.rcvNxt = seq;
    }
    if (fin && !h.finSeen) {
      h.finSeen = true;
      h.finEnd = end;
    }
    if (!syn && !seqGt(end, h.una)) {
      // Everything in it was acknowledged already: the peer retransmitted needlessly.
      h.dupPkts++;
      const space = (end - seq) >>> 0;
      h.dupOctets += space;
      if (s.payloadLen > 0) h.dupData++;
      if (localReceiver && c.evented) this.emit(c, EVENT_KIND.duplicate, space, 0, t);
      return;
    }
    const d = (seq - h.rcvNxt) | 0;
    if (d > 0) {
      h.oooPkts++;
      h.oooDistSum += d;
      h.oooDistSumSq += d * d;
      if (h.ooo.length < MAX_OOO_INTERVALS * 2) h.ooo.push(seq, end);
    } else if (seqGt(end, h.rcvNxt)) {
      advanceRcv(h, end);
    }
  }

  private handshakeProgress(c: Conn, s: TcpSegment, t: number, fromLocal: boolean): void {
    const cl = c.clientIsA ? c.ab : c.ba;
    const sv = c.clientIsA ? c.ba : c.ab;
    const localIsClient = c.clientIsA === c.localIsA;
    if (localIsClient && fromLocal && c.state === 0 && (s.flags & (SYN | ACK)) === SYN) {
      c.state = TCP_STATE.SYN_SENT;
      this.emit(c, EVENT_KIND.connect, 0, 0, t);
    }
    if (!cl.synAcked || !sv.synSeen) return;
    if (!localIsClient && !sv.synAcked) return;
    c.established = true;
    c.state = TCP_STATE.ESTABLISHED;
    this.emit(c, localIsClient ? EVENT_KIND.activeEstablished : EVENT_KIND.passiveEstablished, 0, 0, t);
    if (cl.finSent || sv.finSent) this.closeProgress(c, t);
  }

  /** Moves the local side through the FIN states as its FIN and the peer's are sent, taken, acked. */
  private closeProgress(c: Conn, t: number): void {
    const L = c.localIsA ? c.ab : c.ba;
    const R = c.localIsA ? c.ba : c.ab;
    for (;;) {
      const st = c.state;
      let to = 0;
      switch (st) {
        case TCP_STATE.ESTABLISHED:
          to = R.finTaken ? TCP_STATE.CLOSE_WAIT : L.finSent ? TCP_STATE.FIN_WAIT1 : 0;
          break;
        case TCP_STATE.FIN_WAIT1:
          to = L.finAcked ? TCP_STATE.FIN_WAIT2 : R.finTaken ? TCP_STATE.CLOSING : 0;
          break;
        case TCP_STATE.FIN_WAIT2:
          to = R.finTaken ? TCP_STATE.TIME_WAIT : 0;
          break;
        case TCP_STATE.CLOSING:
          to = L.finAcked ? TCP_STATE.TIME_WAIT : 0;
          break;
        case TCP_STATE.CLOSE_WAIT:
          to = L.finSent ? TCP_STATE.LAST_ACK : 0;
          break;
        case TCP_STATE.LAST_ACK:
          to = L.finAcked ? TCP_STATE.CLOSE : 0;
          break;
      }
      if (to === 0) return;
      c.state = to;
      this.emit(c, EVENT_KIND.state, st, to, t);
      if (to === TCP_STATE.TIME_WAIT || to === TCP_STATE.CLOSE) {
        this.emit(c, EVENT_KIND.destroy, 0, 0, t);
        c.closed = true;
        c.endReason = 'fin';
        return;
      }
    }
  }

  private reset(c: Conn, s: TcpSegment, snd: Half, fromLocal: boolean, t: number): void {
    if (!fromLocal) {
      // RFC 5961 as the kernel applies it: a reset counts only at the exact next sequence (or
      // acking our SYN while connecting); any other is answered with a challenge ACK.
      const L = c.localIsA ? c.ab : c.ba;
      const ok =
        c.state === TCP_STATE.SYN_SENT
          ? (s.flags & ACK) !== 0 && s.ack === L.nextSeq
          : !snd.rcvInit || s.seq === snd.rcvNxt || s.seq === (snd.rcvNxt - 1) >>> 0;
      if (!ok) {
        this.stats.ignoredResets++;
        return;
      }
    }
    if (c.evented) {
      this.emit(c, fromLocal ? EVENT_KIND.resetSent : EVENT_KIND.resetReceived, 0, 0, t);
      c.state = TCP_STATE.CLOSE;
      this.emit(c, EVENT_KIND.destroy, 0, 0, t);
    }
    c.closed = true;
    c.endReason = 'reset';
  }

  private mptcpOf(c: Conn, s: TcpSegment, fromA: boolean): void {
    const syn = (s.flags & SYN) !== 0;
    const ack = (s.flags & ACK) !== 0;
    const fromClient = fromA === c.clientIsA;
    if (s.mpSubtype === 0) {
      if (syn && !ack && fromClient) {
        c.mpSynOpt = 0;
        c.mpVersion = s.mpVersion;
        c.mpSubflow = true;
      }
      if (s.mpKeys > 0) {
        const meta = c.meta ?? this.newMeta(s.mpVersion);
        if (c.meta === null) this.attach(c, meta, false);
        this.addToken(meta, tokenOf(s.buf, s.mpKeyOff, s.mpVersion));
        if (s.mpKeys > 1) this.addToken(meta, tokenOf(s.buf, s.mpKeyOff + 8, s.mpVersion));
      }
    } else if (s.mpSubtype === 1 && syn && !ack && fromClient && s.mpToken >= 0 && c.meta === null) {
      c.mpSynOpt = 1;
      c.mpSubflow = true;
      c.mpJoin = true;
      let meta = this.metaByToken.get(s.mpToken);
      if (meta === undefined) {
        this.stats.mptcpJoinUnknownToken++;
        meta = this.newMeta(c.mpVersion);
        this.addToken(meta, s.mpToken);
      }
      this.attach(c, meta, true);
    }
  }

  private newMeta(version: number): MptcpMeta {
    const meta: MptcpMeta = { id: this.nextMetaId++, version, tokens: [], subflows: [] };
    this.metas.push(meta);
    if (this.metas.length > 10_000) {
      const old = this.metas.shift()!;
      for (const tk of old.tokens) if (this.metaByToken.get(tk) === old) this.metaByToken.delete(tk);
    }
    return meta;
  }

  private addToken(meta: MptcpMeta, token: number): void {
    if (meta.tokens.includes(token)) return;
    meta.tokens.push(token);
    this.metaByToken.set(token, meta);
  }

  private attach(c: Conn, meta: MptcpMeta, join: boolean): void {
    c.meta = meta;
    this.stats.mptcpSubflows++;
    const cl = formatAddress(c.ipVersion, c.clientIsA ? c.aw : c.bw);
    const sv = formatAddress(c.ipVersion, c.clientIsA ? c.bw : c.aw);
    const cp = c.clientIsA ? c.aPort : c.bPort;
    const sp = c.clientIsA ? c.bPort : c.aPort;
    meta.subflows.push({
      cookie: c.cookie,
      client: `${c.ipVersion === 6 ? `[${cl}]` : cl}:${cp}`,
      server: `${c.ipVersion === 6 ? `[${sv}]` : sv}:${sp}`,
      join,
    });
    c.mpPathIndex = meta.subflows.length;
  }

  // --- events ---

  private emit(c: Conn, kind: EventKind, arg0: number, arg1: number, t: number): void {
    // A closed connection's socket is gone: its stragglers change counters, not the agent's view.
    if (c.closed) return;
    const L = c.localIsA ? c.ab : c.ba;
    const R = c.localIsA ? c.ba : c.ab;
    const localIsClient = c.clientIsA === c.localIsA;
    c.evented = true;
    c.lastEventNs = t;
    this.stats.events++;
    // A passive socket is born past its SYN-ACK: the kernel's bytes_acked never counts it.
    const acked = L.ackedRaw - (!localIsClient && L.synAcked ? 1 : 0);
    const ancillary = {
      synNs: c.synNs >= 0 ? this.baseNs + BigInt(Math.round(c.synNs)) : 0n,
      synRetrans: L.synRetrans,
      dupPackets: R.dupPkts,
      dupOctets: R.dupOctets,
      badChecksums: 0,
      stalls: L.stalls,
      ofoDistCount: R.oooPkts,
      ofoDistSum: R.oooDistSum,
      ofoDistSumSq: R.oooDistSumSq,
    };
    const counters: TcpCounters = {
      bytesAcked: acked,
      bytesReceived: R.received,
      bytesSent: L.payload,
      bytesRetrans: L.retransBytes,
      segsIn: R.segs,
      segsOut: L.segs,
      dataSegsIn: R.dataSegs,
      dataSegsOut: L.dataSegs,
      totalRetrans: L.retransSegs,
      srttUs: L.srtt8 >>> 3,
      mdevUs: L.mdev4 >>> 2,
      rcvOoopack: R.oooPkts,
      dsackDups: L.dsacks,
      reordSeen: 0,
      totalRto: L.rtos,
      totalRtoRecoveries: L.rtoRecoveries,
      delivered: 0,
      sndCwnd: 0,
      unackedBytes: L.started ? (L.nextSeq - L.una) >>> 0 : 0,
    };
    this.out.push({
      kind,
      tsNs: this.baseNs + BigInt(Math.round(t)),
      cookie: c.cookie,
      netns: 0,
      ipVersion: c.ipVersion,
      localAddress: c.localAddr,
      remoteAddress: c.remoteAddr,
      localPort: c.localPort,
      remotePort: c.remotePort,
      tcpState: kind === EVENT_KIND.state ? arg1 : c.state,
      caState: kind === EVENT_KIND.congState ? arg1 : c.ca,
      mptcpSubflow: c.mpSubflow,
      arg0,
      arg1,
      counters,
      ancillary,
      missing: PCAP_MISSING,
      // An MPTCP subflow tied to its connection: the capture's connection number stands for the
      // kernel's key (flowIds are salted by the file anyway), the order of appearance for its
      // subflow id.
      ...(c.meta
        ? {
            mptcp: {
              token: c.meta.tokens[0] ?? 0,
              key: BigInt(c.meta.id) + 1n,
              pathIndex: c.mpPathIndex,
              fastclose: false,
            },
          }
        : {}),
    });
  }
}

// --- helpers ---

function eq(a: Uint32Array, b: Uint32Array): boolean {
  return a[3] === b[3] && a[2] === b[2] && a[1] === b[1] && a[0] === b[0];
}

/** Hash of the connection's tuple, the same in both directions. */
function hashOf(s: TcpSegment): number {
  const a = s.src;
  const b = s.dst;
  let ha = Math.imul(a[3]! ^ Math.imul(a[2]! ^ a[1]! ^ a[0]!, 0x27d4eb2d), 0x9e3779b1) ^ s.srcPort;
  let hb = Math.imul(b[3]! ^ Math.imul(b[2]! ^ b[1]! ^ b[0]!, 0x27d4eb2d), 0x9e3779b1) ^ s.dstPort;
  ha = Math.imul(ha ^ (ha >>> 15), 0x85ebca6b);
  hb = Math.imul(hb ^ (hb >>> 15), 0x85ebca6b);
  // Small integers stay unboxed map keys.
  return ((ha + hb) ^ ((ha + hb) >>> 13)) & 0x3fffffff;
}

function advanceRcv(h: Half, to: number): void {
  h.received += (to - h.rcvNxt) >>> 0;
  h.rcvNxt = to;
  const ooo = h.ooo;
  if (ooo.length > 0) {
    // Intervals the new point reaches are taken in; repeat until none is left to take.
    let merged = true;
    while (merged) {
      merged = false;
      for (let i = 0; i < ooo.length; i += 2) {
        if (seqGt(ooo[i]!, h.rcvNxt)) continue;
        const r = ooo[i + 1]!;
        if (seqGt(r, h.rcvNxt)) {
          h.received += (r - h.rcvNxt) >>> 0;
          h.rcvNxt = r;
        }
        ooo.splice(i, 2);
        merged = true;
        break;
      }
    }
  }
  if (h.finSeen && !h.finTaken && !seqLt(h.rcvNxt, h.finEnd)) h.finTaken = true;
}

function ringPush(h: Half, start: number, end: number, t: number): void {
  let ring = h.ring;
  if (ring === null) {
    ring = new Float64Array(16 * 3);
    h.ring = ring;
  }
  let cap = ring.length / 3;
  if (h.ringLen === cap) {
    if (cap >= MAX_RING) return;
    // Grow, keeping order: a busy bulk sender has thousands of segments in flight.
    const bigger = new Float64Array(cap * 2 * 3);
    for (let k = 0; k < h.ringLen; k++) {
      const from = ((h.ringHead + k) % cap) * 3;
      bigger[k * 3] = ring[from]!;
      bigger[k * 3 + 1] = ring[from + 1]!;
      bigger[k * 3 + 2] = ring[from + 2]!;
    }
    h.ring = ring = bigger;
    h.ringHead = 0;
    cap *= 2;
  }
  const i = ((h.ringHead + h.ringLen) % cap) * 3;
  ring[i] = start;
  ring[i + 1] = end;
  ring[i + 2] = t;
  h.ringLen++;
}

function recordTs(h: Half, tsVal: number, t: number): void {
  let r = h.tsRing;
  if (r === null) {
    r = new Float64Array(TS_RING * 2);
    r.fill(-1);
    h.tsRing = r;
  }
  h.lastTsVal = tsVal;
  const i = h.tsNext * 2;
  r[i] = tsVal;
  r[i + 1] = t;
  h.tsNext = (h.tsNext + 1) % TS_RING;
}

/** Time since the first segment that carried `tsEcr` as its TSval, or -1 if not remembered. */
function tsSample(h: Half, tsEcr: number, t: number): number {
  const r = h.tsRing;
  if (r === null) return -1;
  for (let k = 0; k < TS_RING; k++) if (r[k * 2] === tsEcr) return t - r[k * 2 + 1]!;
  return -1;
}

/** tcp_rtt_estimator() of net/ipv4/tcp_input.c, on µs samples. */
function rttEstimate(h: Half, sampleNs: number, una: number): void {
  let m = Math.max(1, Math.floor(sampleNs / 1000));
  h.rttSamples++;
  let srtt = h.srtt8;
  if (srtt !== 0) {
    m -= srtt >>> 3;
    srtt += m;
    if (m < 0) {
      m = -m;
      m -= h.mdev4 >>> 2;
      if (m > 0) m >>= 3;
    } else {
      m -= h.mdev4 >>> 2;
    }
    h.mdev4 += m;
    if (h.mdev4 > h.mdevMax) {
      h.mdevMax = h.mdev4;
      if (h.mdevMax > h.rttvar) h.rttvar = h.mdevMax;
    }
    if (seqGt(una, h.rttSeq)) {
      if (h.mdevMax < h.rttvar) h.rttvar -= (h.rttvar - h.mdevMax) >> 2;
      h.rttSeq = h.nextSeq;
      h.mdevMax = RTO_MIN_US;
    }
  } else {
    srtt = m * 8;
    h.mdev4 = m * 2;
    h.rttvar = Math.max(h.mdev4, RTO_MIN_US);
    h.mdevMax = h.rttvar;
    h.rttSeq = h.nextSeq;
  }
  h.srtt8 = Math.max(1, srtt);
}

/** Token of an MPTCP key: the most significant 32 bits of its SHA-1 (v0) or SHA-256 (v1) hash. */
export function tokenOf(buf: Buffer, off: number, version: number): number {
  const key = buf.subarray(off, off + 8);
  return createHash(version === 0 ? 'sha1' : 'sha256')
    .update(key)
    .digest()
    .readUInt32BE(0);
}

function dirStats(h: Half): DirectionStats {
  return {
    segs: h.segs,
    dataSegs: h.dataSegs,
    payloadBytes: h.payload,
    retransSegs: h.retransSegs,
    retransBytes: h.retransBytes,
    synRetrans: h.synRetrans,
    rtos: h.rtos,
    stalls: h.stalls,
    rtoRecoveries: h.rtoRecoveries,
    dsacks: h.dsacks,
    ackedSeq: h.ackedRaw,
    receivedSeq: h.received,
    oooPkts: h.oooPkts,
    oooDistSum: h.oooDistSum,
    oooDistSumSq: h.oooDistSumSq,
    dupPkts: h.dupPkts,
    dupOctets: h.dupOctets,
    dupDataPkts: h.dupData,
    srttUs: h.srtt8 >>> 3,
    mdevUs: h.mdev4 >>> 2,
    rttSamples: h.rttSamples,
    finSent: h.finSent,
  };
}

function summary(c: Conn, end: ConnectionSummary['end']): ConnectionSummary {
  const cw = c.clientIsA ? c.aw : c.bw;
  const sw = c.clientIsA ? c.bw : c.aw;
  return {
    cookie: c.cookie,
    ipVersion: c.ipVersion,
    clientAddress: formatAddress(c.ipVersion, cw),
    clientPort: c.clientIsA ? c.aPort : c.bPort,
    serverAddress: formatAddress(c.ipVersion, sw),
    serverPort: c.clientIsA ? c.bPort : c.aPort,
    localIsClient: c.clientIsA === c.localIsA,
    handshake: c.handshake,
    established: c.established,
    mptcpSubflow: c.mpSubflow,
    mptcpConnection: c.meta?.id ?? -1,
    clientToServer: dirStats(c.clientIsA ? c.ab : c.ba),
    serverToClient: dirStats(c.clientIsA ? c.ba : c.ab),
    end,
  };
}
