/**
 * The decoded form of one probe event: the contract between the kernel side (probes/ + native/,
 * decoded by agent/probe-event-decoder.ts from the ring buffer's raw bytes) and everything after
 * it (connection table, FSM, profile builder; and the events: replay source).
 *
 * Every event carries a full snapshot of the socket's counters taken when the probe ran. Events are
 * rare (life-cycle points only), so a snapshot costs little, and the profile builder gets its
 * per-window deltas by subtracting two snapshots: no state in user space can drift from the kernel.
 */

/** Event kinds, as numbered in probes/kpiflow-event.h (KF_EV_*). */
export const EVENT_KIND = {
  /** Active open: connect() sent the first SYN (sockops TCP_CONNECT_CB). */
  connect: 1,
  /** Handshake done on the connecting side (sockops ACTIVE_ESTABLISHED_CB). */
  activeEstablished: 2,
  /** Handshake done on the accepting side (sockops PASSIVE_ESTABLISHED_CB). */
  passiveEstablished: 3,
  /**
   * TCP state change (inet_sock_set_state); arg0 = old state, arg1 = new state (TCP_* numbers).
   * Its `tcpState` is the state entered (arg1): the tracepoint runs before the kernel stores it,
   * and the probe reports the new one.
   */
  state: 4,
  /** Retransmission timeout fired (sockops RTO_CB); arg0 = icsk_retransmits, arg1 = packets in flight. */
  rto: 5,
  /**
   * Congestion-avoidance state changed (tcp_cong_state_set); arg0 = old, arg1 = new (TCP_CA_*).
   * Its `caState` is the state entered (arg1), as for `state`.
   */
  congState: 7,
  /**
   * Data received that was already acknowledged (kfree_skb TCP_OLD_DATA, TCP_OLD_SEQUENCE, or
   * the already-received head of a TCP_INVALID_END_SEQUENCE or TCP_RFC7323_PAWS drop); arg0 =
   * its length in sequence space (end_seq - seq: payload, plus 1 for a SYN or FIN it carries;
   * the head's length for those two), also in `ancillary.dupOctets`.
   */
  duplicate: 8,
  /** Segment with a bad checksum (tcp_bad_csum), when it can be tied to a socket. */
  badChecksum: 9,
  /** Reset sent (tcp_send_reset). */
  resetSent: 10,
  /** Reset received (tcp_receive_reset). */
  resetReceived: 11,
  /** Snapshot of a socket by the TCP iterator (start-up pick-up, active timeout); arg0 = tcp state. */
  snapshot: 12,
  /** The socket is being destroyed (last event of a cookie). */
  destroy: 13,
  /**
   * The MPTCP connection (meta socket) of the subflow whose event came just before, at the same
   * instant: `cookie` is the connection's local key, addresses, ports and `tcpState` are the
   * meta socket's, `caState` and `mptcp.pathIndex` the subflow's; arg0 = that subflow event's
   * kind, arg1 = subflows alive now. Its counters are the connection level's (`mptcpCounters`).
   */
  mptcp: 14,
} as const;

/** One of EVENT_KIND's values. */
export type EventKind = (typeof EVENT_KIND)[keyof typeof EVENT_KIND];

/**
 * Counters read from struct tcp_sock (and icsk) when the event was made. Byte counters are u64 in
 * the kernel and exact here up to 2^53 (9 PB per connection). A counter this kernel does not have
 * is reported as absent in `ProbeEvent.missing`, never as zero.
 */
export interface TcpCounters {
  /**
   * Bytes the peer acknowledged (bytes_acked), in sequence space: it includes 1 for our SYN once
   * acked (active opens only: a passive socket starts past its SYN-ACK) and 1 for our FIN once
   * acked. The profile builder subtracts them (docs/agent.md).
   */
  bytesAcked: number;
  /**
   * Bytes received in order (bytes_received), in sequence space: it includes 1 for the peer's
   * FIN once this socket took it, never the peer's SYN.
   */
  bytesReceived: number;
  bytesSent: number;
  bytesRetrans: number;
  segsIn: number;
  segsOut: number;
  dataSegsIn: number;
  dataSegsOut: number;
  totalRetrans: number;
  /** Smoothed RTT in microseconds (srtt_us >> 3). 0 before the first sample. */
  srttUs: number;
  /** RTT mean deviation in microseconds (mdev_us >> 2). */
  mdevUs: number;
  rcvOoopack: number;
  dsackDups: number;
  reordSeen: number;
  totalRto: number;
  totalRtoRecoveries: number;
  delivered: number;
  sndCwnd: number;
  /** Bytes not yet acknowledged (snd_nxt - snd_una): > 0 means an RTO is a stall with data pending. */
  unackedBytes: number;
}

/** Per-connection ancillary state the probes keep themselves (socket-local storage). */
export interface AncillaryCounters {
  /** Monotonic ns of the first SYN sent or received (0 if the probes saw neither). */
  synNs: bigint;
  /** SYN (or SYN-ACK) retransmissions before the handshake completed. */
  synRetrans: number;
  /** Segments and payload bytes received that were already acknowledged. */
  dupPackets: number;
  dupOctets: number;
  /** Segments dropped for a bad checksum. */
  badChecksums: number;
  /**
   * RTOs that fired with data outstanding once established. SYN (SYN-ACK) timeouts are not
   * here but in `synRetrans`: the profile builder counts those as the handshake window's
   * stalls, so a SYN timeout is never counted twice.
   */
  stalls: number;
  /**
   * Per-packet mode only (0 otherwise): segments received beyond rcv_nxt, and the sum and sum
   * of squares of their distance to rcv_nxt in bytes (sequence space); u32, u64, u64 in the
   * kernel. The decoder always sets them; they are optional so that events made by hand (tests,
   * benchmarks) may leave them out, which means 0.
   */
  ofoDistCount?: number;
  ofoDistSum?: number;
  ofoDistSumSq?: number;
}

/** What MPTCP subflow events and `mptcp` events carry besides a TCP event's fields. */
export interface MptcpIdentity {
  /** Token of the MPTCP connection (0 until the kernel chose it). */
  token: number;
  /** Local key of the MPTCP connection (0 until the kernel chose it): its flowId derives from it. */
  key: bigint;
  /** The subflow's id in its connection (1: the initial subflow, then 2, 3, ...): pathIndex. */
  pathIndex: number;
  /** `mptcp` events: the connection was closed by MP_FASTCLOSE. */
  fastclose: boolean;
}

/** The counters of an `mptcp` event, by their meaning (probes/kpiflow-event.h). */
export interface MptcpCounters {
  /** Connection-level bytes acked by the peer (data sequence space: a DATA_FIN counts 1). */
  bytesAcked: number;
  /** Connection-level bytes received in order. */
  bytesReceived: number;
  /** Connection-level bytes sent (first transmissions). */
  bytesSent: number;
  /** Bytes reinjected by the MPTCP retransmission timer (retransmitted at connection level). */
  bytesRetrans: number;
  /** The meta socket's receive buffer (sk_rcvbuf), bytes: a level, not a counter. */
  rcvBuf: number;
  /** Subflows the connection created so far. */
  subflowsCreated: number;
  /** Subflows alive now. */
  subflowsAlive: number;
  /** Subflow RTOs while the connection level had data unacknowledged (head-of-line stalls). */
  holStalls: number;
  /** Segments reinjected by the MPTCP retransmission path (probes, MPTcpExtMPTCPRetrans's). */
  reinjectedSegs: number;
  /** Data moved to the connection's out-of-order queue (probes, MPTcpExtOFOQueue's). */
  outOfOrder: number;
  /** Connection-level bytes not yet acknowledged. */
  unackedBytes: number;
}

/** The connection-level counters of an `mptcp` event. */
export function mptcpCounters(ev: ProbeEvent): MptcpCounters {
  const c = ev.counters;
  return {
    bytesAcked: c.bytesAcked,
    bytesReceived: c.bytesReceived,
    bytesSent: c.bytesSent,
    bytesRetrans: c.bytesRetrans,
    rcvBuf: c.segsIn,
    subflowsCreated: c.segsOut,
    subflowsAlive: ev.arg1,
    holStalls: ev.ancillary.stalls,
    reinjectedSegs: c.dataSegsOut,
    outOfOrder: c.rcvOoopack,
    unackedBytes: c.unackedBytes,
  };
}

/** One decoded probe event. */
export interface ProbeEvent {
  kind: EventKind;
  /** bpf_ktime_get_ns(): CLOCK_MONOTONIC nanoseconds. */
  tsNs: bigint;
  /** Socket cookie (bpf_get_socket_cookie): the connection's key for its whole life. */
  cookie: bigint;
  /** Inode number of the socket's network namespace. */
  netns: number;
  /** 4 or 6 (v4-mapped IPv6 sockets are reported as 4 with IPv4 addresses). */
  ipVersion: 4 | 6;
  localAddress: string;
  remoteAddress: string;
  localPort: number;
  remotePort: number;
  /** TCP state of the socket when the event was made (TCP_ESTABLISHED = 1, ...). */
  tcpState: number;
  /** Congestion-avoidance state (TCP_CA_Open = 0, ...). */
  caState: number;
  /** True when the socket is an MPTCP subflow. */
  mptcpSubflow: boolean;
  /** Kind-specific arguments (see EVENT_KIND). */
  arg0: number;
  arg1: number;
  counters: TcpCounters;
  ancillary: AncillaryCounters;
  /** Names of TcpCounters fields this kernel cannot provide (CO-RE field checks failed). */
  missing: readonly (keyof TcpCounters)[];
  /** MPTCP subflow events and `mptcp` events only. */
  mptcp?: MptcpIdentity;
}

/**
 * True when both addresses of `x` are ones the kernel had set when the probe read them. The
 * probes read a socket's addresses as they are at that instant, and some events come before the
 * kernel sets them or after it cleared them: an MPTCP connection before its initial subflow's
 * addresses are copied to it (`::`, or half copied while the copy runs on another CPU), a socket
 * after tcp_disconnect reset its source (the first subflow of an MPTCP connection). An
 * unspecified address (`::`, `0.0.0.0`) is never a connection's end.
 */
export function addressesSet(x: Pick<ProbeEvent, 'localAddress' | 'remoteAddress'>): boolean {
  return !isUnspecified(x.localAddress) && !isUnspecified(x.remoteAddress);
}

function isUnspecified(a: string): boolean {
  return a === '::' || a === '0.0.0.0';
}
