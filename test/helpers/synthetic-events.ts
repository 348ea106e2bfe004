/**
 * Synthetic probe events for agent tests: a simulated socket keeps its own counters the way the
 * kernel would (bytes acked and received, retransmissions, RTT...) and every method returns the
 * event the probes would emit, with a frozen copy of the counters at that instant. Ground truth
 * for the tests is the socket's final counters, never the agent's output. Like the kernel, it
 * counts sequence space in bytes_acked (our SYN on an active open, our FIN once acked) and in
 * bytes_received (the peer's FIN); `appSent` and `appReceived` are the application's payload.
 */
import {
  type AncillaryCounters,
  EVENT_KIND,
  type EventKind,
  type ProbeEvent,
  TCP_STATE,
  type TcpCounters,
  ZERO_COUNTERS,
} from '../../agent/index.js';

/** Settings of a simulated socket. */
export interface SyntheticSocketOptions {
  cookie: bigint;
  /** Monotonic time of the first event, ns. Default 1,000 s. */
  t0Ns?: bigint;
  ipVersion?: 4 | 6;
  localAddress?: string;
  remoteAddress?: string;
  localPort?: number;
  remotePort?: number;
  missing?: readonly (keyof TcpCounters)[];
  /** Initial counters (a connection the agent did not see start). */
  counters?: Partial<TcpCounters>;
  tcpState?: number;
  mptcpSubflow?: boolean;
}

const MS = 1_000_000n;

/** A simulated TCP socket that emits the probe events of its life. */
export class SyntheticSocket {
  readonly cookie: bigint;
  tsNs: bigint;
  tcpState: number;
  caState = 0;
  readonly counters: TcpCounters;
  readonly ancillary: AncillaryCounters;
  /** Payload bytes the application sent that the peer acknowledged, and received in order. */
  appSent = 0;
  appReceived = 0;
  private readonly o: Required<Omit<SyntheticSocketOptions, 'counters' | 't0Ns' | 'tcpState' | 'cookie'>>;

  constructor(options: SyntheticSocketOptions) {
    this.cookie = options.cookie;
    this.tsNs = options.t0Ns ?? 1_000_000_000_000n;
    this.tcpState = options.tcpState ?? TCP_STATE.CLOSE;
    const v6 = options.ipVersion === 6;
    this.o = {
      ipVersion: options.ipVersion ?? 4,
      localAddress: options.localAddress ?? (v6 ? '2001:db8::1' : '192.0.2.1'),
      remoteAddress: options.remoteAddress ?? (v6 ? '2001:db8:1::2' : '198.51.100.2'),
      localPort: options.localPort ?? 40000 + Number(options.cookie % 20000n),
      remotePort: options.remotePort ?? 443,
      missing: options.missing ?? [],
      mptcpSubflow: options.mptcpSubflow ?? false,
    };
    this.counters = {
      ...ZERO_COUNTERS,
      sndCwnd: 10,
      ...options.counters,
    };
    this.ancillary = {
      synNs: 0n,
      synRetrans: 0,
      dupPackets: 0,
      dupOctets: 0,
      badChecksums: 0,
      stalls: 0,
      ofoDistCount: 0,
      ofoDistSum: 0,
      ofoDistSumSq: 0,
    };
  }

  /** Moves time forward. */
  wait(ms: number): this {
    this.tsNs += BigInt(Math.round(ms * 1e6));
    return this;
  }

  /** The event of `kind` now, with a copy of the counters. */
  event(kind: EventKind, arg0 = 0, arg1 = 0): ProbeEvent {
    return {
      kind,
      tsNs: this.tsNs,
      cookie: this.cookie,
      netns: 4026531840,
      ipVersion: this.o.ipVersion,
      localAddress: this.o.localAddress,
      remoteAddress: this.o.remoteAddress,
      localPort: this.o.localPort,
      remotePort: this.o.remotePort,
      tcpState: this.tcpState,
      caState: this.caState,
      mptcpSubflow: this.o.mptcpSubflow,
      arg0,
      arg1,
      counters: Object.freeze({ ...this.counters }),
      ancillary: Object.freeze({ ...this.ancillary }),
      missing: this.o.missing,
    };
  }

  private setState(to: number): ProbeEvent {
    const from = this.tcpState;
    this.tcpState = to;
    return this.event(EVENT_KIND.state, from, to);
  }

  /** connect(): the first SYN goes out. */
  connect(): ProbeEvent[] {
    this.ancillary.synNs = this.tsNs;
    this.tcpState = TCP_STATE.SYN_SENT;
    this.counters.segsOut++;
    this.counters.unackedBytes = 1;
    return [this.event(EVENT_KIND.connect)];
  }

  /** A SYN retransmission after `ms` (an RTO in SYN_SENT). */
  synTimeout(ms: number): ProbeEvent[] {
    this.wait(ms);
    this.ancillary.synRetrans++;
    this.counters.totalRetrans++;
    this.counters.totalRto++;
    this.counters.segsOut++;
    return [this.event(EVENT_KIND.rto, this.ancillary.synRetrans, 1)];
  }

  /** The handshake completes after `rttMs` (active side), with that RTT as the first sample. */
  establish(rttMs: number): ProbeEvent[] {
    this.wait(rttMs);
    this.counters.segsIn++;
    this.counters.segsOut++;
    this.counters.unackedBytes = 0;
    this.rtt(rttMs, rttMs / 2);
    // The SYN-ACK acknowledges our SYN: one sequence number in bytes_acked.
    this.counters.bytesAcked += 1;
    const state = this.setState(TCP_STATE.ESTABLISHED);
    return [state, this.event(EVENT_KIND.activeEstablished)];
  }

  /** Accepting side: the SYN came `synAgoMs` ago; the handshake completes now. */
  accept(synAgoMs: number, rttMs: number): ProbeEvent[] {
    this.ancillary.synNs = this.tsNs - BigInt(Math.round(synAgoMs * 1e6));
    this.counters.segsIn += 2;
    this.counters.segsOut++;
    this.rtt(rttMs, rttMs / 2);
    this.tcpState = TCP_STATE.ESTABLISHED;
    return [this.event(EVENT_KIND.passiveEstablished)];
  }

  /** Sets the smoothed RTT and its deviation (ms). */
  rtt(srttMs: number, mdevMs: number): this {
    this.counters.srttUs = Math.round(srttMs * 1000);
    this.counters.mdevUs = Math.round(mdevMs * 1000);
    return this;
  }

  /** Data exchanged for `ms`: `sent` bytes acked by the peer, `received` bytes in order. No event. */
  transfer(ms: number, sent: number, received: number): this {
    this.wait(ms);
    const mss = 1448;
    this.counters.bytesSent += sent;
    this.counters.bytesAcked += sent;
    this.counters.bytesReceived += received;
    this.appSent += sent;
    this.appReceived += received;
    const out = Math.ceil(sent / mss);
    const inn = Math.ceil(received / mss);
    this.counters.dataSegsOut += out;
    this.counters.dataSegsIn += inn;
    this.counters.segsOut += out + inn;
    this.counters.segsIn += inn + out;
    this.counters.delivered += out;
    return this;
  }

  /** An RTO with `pending` bytes unacknowledged (a stall when > 0). */
  rto(pending: number): ProbeEvent[] {
    this.counters.unackedBytes = pending;
    this.counters.totalRto++;
    this.counters.totalRetrans++;
    this.counters.bytesRetrans += Math.min(pending, 1448);
    this.counters.bytesSent += Math.min(pending, 1448);
    this.counters.segsOut++;
    if (pending > 0) this.ancillary.stalls++;
    const from = this.caState;
    this.caState = 4;
    return [this.event(EVENT_KIND.rto, 1, 1), this.event(EVENT_KIND.congState, from, 4)];
  }

  /** Recovery ends: the pending data is acked, the CA state goes back to Open. */
  recover(): ProbeEvent[] {
    this.counters.bytesAcked += this.counters.unackedBytes;
    this.appSent += this.counters.unackedBytes;
    this.counters.unackedBytes = 0;
    this.counters.totalRtoRecoveries++;
    const from = this.caState;
    this.caState = 0;
    return [this.event(EVENT_KIND.congState, from, 0)];
  }

  /** Fast retransmissions, D-SACKs, reordering and out-of-order segments, without any event. */
  losses(retrans: number, bytes: number, dsacks = 0, reord = 0, ooo = 0): this {
    this.counters.totalRetrans += retrans;
    this.counters.bytesRetrans += bytes;
    this.counters.bytesSent += bytes;
    this.counters.segsOut += retrans;
    this.counters.dsackDups += dsacks;
    this.counters.reordSeen += reord;
    this.counters.rcvOoopack += ooo;
    return this;
  }

  /**
   * Segments received out of order at these distances beyond rcv_nxt (bytes), as the kernel
   * counts them and the per-packet probe measures them. No event.
   */
  outOfOrder(...distances: number[]): this {
    this.counters.rcvOoopack += distances.length;
    const a = this.ancillary as Required<AncillaryCounters>;
    for (const d of distances) {
      a.ofoDistCount++;
      a.ofoDistSum += d;
      a.ofoDistSumSq += d * d;
    }
    return this;
  }

  /** A duplicate segment of `bytes` received. */
  duplicate(bytes: number): ProbeEvent[] {
    this.ancillary.dupPackets++;
    this.ancillary.dupOctets += bytes;
    this.counters.segsIn++;
    return [this.event(EVENT_KIND.duplicate, bytes)];
  }

  /** A segment with a bad checksum. */
  badChecksum(): ProbeEvent[] {
    this.ancillary.badChecksums++;
    return [this.event(EVENT_KIND.badChecksum)];
  }

  /** An iterator snapshot. */
  snapshot(): ProbeEvent[] {
    return [this.event(EVENT_KIND.snapshot, this.tcpState)];
  }

  /** The peer acknowledges our FIN, hence everything before it: 1 more in sequence space. */
  private ackAllAndFin(): void {
    this.appSent += this.counters.unackedBytes;
    this.counters.bytesAcked += this.counters.unackedBytes + 1;
    this.counters.unackedBytes = 0;
  }

  /** Orderly active close: FIN_WAIT1, FIN_WAIT2, then CLOSE (the socket goes to time-wait). */
  closeActive(): ProbeEvent[] {
    this.counters.segsOut++;
    const a = this.setState(TCP_STATE.FIN_WAIT1);
    this.wait(1);
    this.ackAllAndFin();
    const b = this.setState(TCP_STATE.FIN_WAIT2);
    this.wait(1);
    this.counters.segsIn++;
    this.counters.bytesReceived += 1; // the peer's FIN, taken by this socket
    const c = this.setState(TCP_STATE.CLOSE);
    return [a, b, c];
  }

  /**
   * Active close of an orphaned socket whose FIN is acked before the peer's FIN comes: the kernel
   * hands it to a time-wait socket at once (FIN_WAIT2 to CLOSE), and that one takes the peer's
   * FIN, so this socket's bytes_received never counts it.
   */
  closeActiveToTimeWait(): ProbeEvent[] {
    this.counters.segsOut++;
    const a = this.setState(TCP_STATE.FIN_WAIT1);
    this.wait(1);
    this.ackAllAndFin();
    const b = this.setState(TCP_STATE.FIN_WAIT2);
    const c = this.setState(TCP_STATE.CLOSE);
    return [a, b, c];
  }

  /** Orderly passive close: CLOSE_WAIT, LAST_ACK, CLOSE. */
  closePassive(): ProbeEvent[] {
    this.counters.segsIn++;
    this.counters.bytesReceived += 1; // the peer's FIN
    const a = this.setState(TCP_STATE.CLOSE_WAIT);
    this.wait(1);
    this.counters.segsOut++;
    const b = this.setState(TCP_STATE.LAST_ACK);
    this.wait(1);
    this.ackAllAndFin();
    const c = this.setState(TCP_STATE.CLOSE);
    return [a, b, c];
  }

  /** A reset received (peer aborted, or refused in SYN_SENT), then CLOSE. */
  resetByPeer(): ProbeEvent[] {
    this.counters.segsIn++;
    const a = this.event(EVENT_KIND.resetReceived);
    return [a, this.setState(TCP_STATE.CLOSE)];
  }

  /** A reset sent (local abort), then CLOSE. */
  resetLocal(): ProbeEvent[] {
    this.counters.segsOut++;
    const a = this.event(EVENT_KIND.resetSent);
    return [a, this.setState(TCP_STATE.CLOSE)];
  }

  /** The handshake gives up (SYN retries exhausted): SYN_SENT to CLOSE. */
  giveUp(): ProbeEvent[] {
    return [this.setState(TCP_STATE.CLOSE)];
  }

  /** The socket is freed. */
  destroy(): ProbeEvent[] {
    return [this.event(EVENT_KIND.destroy)];
  }
}

/** n ms as ns. */
export function ms(n: number): bigint {
  return BigInt(n) * MS;
}
