/**
 * The profile builder: a closed window (two snapshots of one connection) becomes one IPFIX
 * profile record. Counters are the differences between the two snapshots, so the profiles of a
 * connection add up exactly to the kernel's totals; RTT is the mean of the samples the window's
 * events carried. The exact definitions are in docs/agent.md.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IpfixRecord } from '../ipfix/index.js';
import type { ProfileWindow } from './connection-table.js';
import type { MptcpWindow } from './mptcp-table.js';
import type { TcpCounters } from './probe-event.js';
import {
  addressBytes,
  availableKpis,
  MPTCP_META_KPI_FIELDS,
  mptcpMetaFields,
  mptcpSubflowFields,
  PROFILE_IDENTITY_FIELDS,
  PROFILE_TEMPLATE_IDS,
  TCP_KPI_FIELDS,
  tcpProfileFields,
} from './profile-templates.js';

/** One profile: the template it belongs to and its record, keyed by element name. */
export interface Profile {
  templateId: number;
  record: IpfixRecord;
}

const U16 = 0xffff;
const U32 = 0xffffffff;

/**
 * Delta of a counter narrower than 64 bits: a smaller value in the later snapshot means it
 * wrapped, not that it went back. Widths: the kernel's total_retrans, rcv_ooopack, dsack_dups
 * and reord_seen are u32, total_rto_recoveries u16; the probes' own event counters are u32.
 */
function wrapDelta(cur: number, base: number, bits: number): number {
  const d = cur - base;
  return d >= 0 ? d : d + 2 ** bits;
}

/** Builder settings. */
export interface ProfileBuilderOptions {
  /** Wall-clock minus monotonic time, ns (see `measureClockOffset`). */
  clockOffsetNs: bigint;
  /** TcpCounters fields the kernel cannot provide: their KPIs are left out. */
  missing?: Iterable<keyof TcpCounters>;
  /**
   * The source measures the out-of-order distance (per-packet mode): meanReorderingDistance and
   * varReorderingDistance are added. Otherwise they are left out, never sent as 0.
   */
  reorderingDistance?: boolean;
  /** MPTCP connection fields the source cannot measure: left out, never sent as 0. */
  mptcpUnmeasured?: readonly string[];
}

/** Counters of oddities the builder met, for metrics and logs. */
export interface ProfileBuilderStats {
  profiles: number;
  /** A 64-bit kernel counter was smaller in the later snapshot (it must not): sent as 0. */
  negativeDeltas: number;
  /** A value larger than its element's type: sent as the type's maximum. */
  saturated: number;
}

/** Turns closed windows into profile records. */
export class ProfileBuilder {
  readonly clockOffsetNs: bigint;
  /** Element names of the TCP template this builder fills (the KPIs the kernel provides). */
  readonly fields: readonly string[];
  /** Element names of the MPTCP subflow (47564) and connection (47563) templates. */
  readonly subflowFields: readonly string[];
  readonly mptcpFields: readonly string[];
  readonly stats: ProfileBuilderStats = { profiles: 0, negativeDeltas: 0, saturated: 0 };
  /** True when the kernel lacks a counter some KPI needs: records are cut to the template. */
  private readonly partial: boolean;
  private readonly mptcpPartial: boolean;
  private readonly reorderingDistance: boolean;

  constructor(options: ProfileBuilderOptions) {
    this.clockOffsetNs = options.clockOffsetNs;
    const missing = [...(options.missing ?? [])];
    this.reorderingDistance = options.reorderingDistance ?? false;
    this.fields = tcpProfileFields(missing, { reorderingDistance: this.reorderingDistance });
    this.subflowFields = mptcpSubflowFields(missing, { reorderingDistance: this.reorderingDistance });
    this.mptcpFields = mptcpMetaFields(missing, { mptcpUnmeasured: options.mptcpUnmeasured ?? [] });
    this.partial = availableKpis(TCP_KPI_FIELDS, missing).length < TCP_KPI_FIELDS.length;
    this.mptcpPartial =
      this.mptcpFields.length < PROFILE_IDENTITY_FIELDS.length + MPTCP_META_KPI_FIELDS.length;
  }

  /** A 64-bit delta: never negative (a kernel counter must not go back; counted if it does). */
  private u64(d: number): number {
    if (d >= 0) return d;
    this.stats.negativeDeltas++;
    return 0;
  }

  /** A delta or quantity clamped to its element's type (counted when it does not fit). */
  private fit(v: number, max: number): number {
    if (v < 0) {
      this.stats.negativeDeltas++;
      return 0;
    }
    if (v > max) {
      this.stats.saturated++;
      return max;
    }
    return v;
  }

  /** Epoch milliseconds of a monotonic timestamp. */
  wallMs(tsNs: bigint): number {
    return Number((tsNs + this.clockOffsetNs) / 1_000_000n);
  }

  /** The profile record of one closed window. */
  build(w: ProfileWindow): Profile {
    const c = w.conn;
    const a = w.start.counters;
    const b = w.end.counters;
    const aa = w.start.ancillary;
    const ba = w.end.ancillary;
    let establishMs = 0;
    if (w.handshake && w.endReason === 2) {
      const syn = ba.synNs > 0n && ba.synNs <= w.end.tsNs ? ba.synNs : w.start.tsNs;
      establishMs = Math.round(Number(w.end.tsNs - syn) / 1e6);
    }
    // Once per connection: every profile of it reuses the bytes.
    c.wire ??= {
      local: addressBytes(c.localAddress, c.ipVersion),
      remote: addressBytes(c.remoteAddress, c.ipVersion),
    };
    const n = w.rttSamples;
    const meanUs = n > 0 ? Math.round(w.srttSumUs / n) : 0;
    // One object literal in template order: a stable shape is several times faster to build
    // than adding the fields one by one.
    let r: IpfixRecord = {
      flowId: c.flowId,
      sourceIPv6Address: c.wire.local,
      destinationIPv6Address: c.wire.remote,
      ipVersion: c.ipVersion,
      sourceTransportPort: c.localPort,
      destinationTransportPort: c.remotePort,
      flowStartMilliseconds: this.wallMs(w.start.tsNs),
      flowEndMilliseconds: this.wallMs(w.end.tsNs),
      flowStartReason: w.startReason,
      flowEndReason: w.endReason,
      // Application payload: the SYN and FINs the kernel counts in sequence space are taken out.
      transferredOctetTotalCount: this.u64(b.bytesAcked - w.end.seqAcked - (a.bytesAcked - w.start.seqAcked)),
      receivedOctetTotalCount: this.u64(
        b.bytesReceived - w.end.seqReceived - (a.bytesReceived - w.start.seqReceived),
      ),
      droppedOctetTotalCount: this.u64(b.bytesRetrans - a.bytesRetrans),
      retransmittedPacketTotalCount: this.fit(wrapDelta(b.totalRetrans, a.totalRetrans, 32), U32),
      // In the handshake window a timeout is a SYN retransmission; counting the probes' stalls
      // too would count it twice.
      stallCount: this.fit(
        w.handshake ? wrapDelta(ba.synRetrans, aa.synRetrans, 32) : wrapDelta(ba.stalls, aa.stalls, 32),
        U16,
      ),
      reorderingPacketCount: this.fit(wrapDelta(b.rcvOoopack, a.rcvOoopack, 32), U32),
      duplicatePacketTotalCount: this.fit(wrapDelta(ba.dupPackets, aa.dupPackets, 32), U32),
      duplicateOctetTotalCount: this.u64(ba.dupOctets - aa.dupOctets),
      dsackCount: this.fit(wrapDelta(b.dsackDups, a.dsackDups, 32), U32),
      reorderSeenCount: this.fit(wrapDelta(b.reordSeen, a.reordSeen, 32), U32),
      rtoRecoveryCount: this.fit(wrapDelta(b.totalRtoRecoveries, a.totalRtoRecoveries, 16), U32),
      checksumErrorCount: this.fit(wrapDelta(ba.badChecksums, aa.badChecksums, 32), U32),
      synRetransmissionCount: this.fit(wrapDelta(ba.synRetrans, aa.synRetrans, 32), U16),
      timeToEstablishMilliseconds: this.fit(establishMs, U32),
      meanLatencyMicroseconds: this.fit(meanUs, U32),
      latencyJitterMicroseconds: this.fit(n > 0 ? Math.round(w.mdevSumUs / n) : 0, U32),
      meanLatencyMilliseconds: this.fit(Math.round(meanUs / 1000), U16),
    };
    if (this.reorderingDistance) {
      // Mean and variance of the window's out-of-order distances (bytes beyond rcv_nxt), from
      // the count, sum and sum of squares the per-packet probe keeps; 0 with no such segment.
      const n = wrapDelta(ba.ofoDistCount ?? 0, aa.ofoDistCount ?? 0, 32);
      const s1 = (ba.ofoDistSum ?? 0) - (aa.ofoDistSum ?? 0);
      const s2 = (ba.ofoDistSumSq ?? 0) - (aa.ofoDistSumSq ?? 0);
      const mean = n > 0 ? s1 / n : 0;
      r['meanReorderingDistance'] = this.fit(Math.round(mean), U32);
      r['varReorderingDistance'] = this.fit(n > 0 ? Math.max(0, Math.round(s2 / n - mean * mean)) : 0, U32);
    }
    // A subflow: its path index after the TCP KPIs (0 when the source cannot tell it).
    if (c.mptcpSubflow) r['pathIndex'] = this.fit(c.pathIndex, 0xff);
    if (this.partial) {
      // The kernel lacks some counters: keep exactly the template's fields, in its order.
      const kept: IpfixRecord = {};
      for (const f of c.mptcpSubflow ? this.subflowFields : this.fields) kept[f] = r[f]!;
      r = kept;
    }
    this.stats.profiles++;
    return {
      templateId: c.mptcpSubflow ? PROFILE_TEMPLATE_IDS.mptcpSubflow : PROFILE_TEMPLATE_IDS.tcp,
      record: r,
    };
  }

  /**
   * The profile record of one closed window of an MPTCP connection (template 47563); the
   * definitions are in docs/agent.md.
   */
  buildMptcp(w: MptcpWindow): Profile {
    const c = w.conn;
    const a = w.start.counters;
    const b = w.end.counters;
    c.wire ??= {
      local: addressBytes(c.localAddress, c.ipVersion),
      remote: addressBytes(c.remoteAddress, c.ipVersion),
    };
    // Data acked, without the DATA_FIN the kernel counts in data sequence space once acked:
    // acked data never exceeds data sent, and the DATA_FIN is acked only after all of it.
    const acked = (x: typeof a) => Math.min(x.bytesAcked, x.bytesSent);
    let r: IpfixRecord = {
      flowId: c.flowId,
      sourceIPv6Address: c.wire.local,
      destinationIPv6Address: c.wire.remote,
      ipVersion: c.ipVersion,
      sourceTransportPort: c.localPort,
      destinationTransportPort: c.remotePort,
      flowStartMilliseconds: this.wallMs(w.start.tsNs),
      flowEndMilliseconds: this.wallMs(w.end.tsNs),
      flowStartReason: w.startReason,
      flowEndReason: w.endReason,
      transferredOctetTotalCount: this.u64(acked(b) - acked(a)),
      receivedOctetTotalCount: this.u64(b.bytesReceived - a.bytesReceived),
      retransmittedPacketTotalCount: this.fit(w.end.subflowRetrans - w.start.subflowRetrans, U32),
      stallCount: this.fit(w.end.subflowStalls - w.start.subflowStalls, U16),
      subflowCount: this.fit(w.subflowCount, 0xff),
      rcvBufOctetCount: this.fit(b.rcvBuf, U32),
      headOfLineStallCount: this.fit(wrapDelta(b.holStalls, a.holStalls, 32), U32),
      reinjectionOctetOut: this.u64(b.bytesRetrans - a.bytesRetrans),
      reinjectionPacketOut: this.fit(wrapDelta(b.reinjectedSegs, a.reinjectedSegs, 32), U32),
      reorderingPacketCount: this.fit(wrapDelta(b.outOfOrder, a.outOfOrder, 32), U32),
    };
    if (this.mptcpPartial) {
      const kept: IpfixRecord = {};
      for (const f of this.mptcpFields) kept[f] = r[f]!;
      r = kept;
    }
    this.stats.profiles++;
    return { templateId: PROFILE_TEMPLATE_IDS.mptcpMeta, record: r };
  }
}

/** A clock pair: monotonic (the probes' bpf_ktime_get_ns) and wall. Injectable for tests. */
export interface AgentClock {
  /** CLOCK_MONOTONIC nanoseconds, as bpf_ktime_get_ns() reads them. */
  monotonicNs(): bigint;
  /** Epoch milliseconds. */
  wallMs(): number;
}

/** The process's clocks: process.hrtime.bigint() is CLOCK_MONOTONIC on Linux, as the probes' clock. */
export const systemClock: AgentClock = {
  monotonicNs: () => process.hrtime.bigint(),
  wallMs: () => Date.now(),
};

/**
 * Wall minus monotonic time, ns: added to an event's timestamp it gives epoch time. Read in the
 * order mono, wall, mono and centred, so the error is within half the gap (plus Date.now's 1 ms).
 */
export function measureClockOffset(clock: AgentClock = systemClock): bigint {
  const m0 = clock.monotonicNs();
  const w = clock.wallMs();
  const m1 = clock.monotonicNs();
  return BigInt(w) * 1_000_000n - (m0 + (m1 - m0) / 2n);
}

/**
 * The boot id flowIds derive from: the kernel's (/proc/sys/kernel/random/boot_id), since socket
 * cookies are unique within one kernel boot; random when it cannot be read.
 */
export function defaultBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return randomBytes(16).toString('hex');
  }
}

/**
 * flowId of an MPTCP connection: 63 bits of SHA-256(bootId, "mptcp", local key). The key is the
 * connection's own 64-bit random number (struct mptcp_sock local_key), so the flowId is the same
 * for every profile of the connection and of each of its subflows, across agent restarts.
 */
export function mptcpFlowIdOf(bootId: string, key: bigint): bigint {
  const h = createHash('sha256').update(bootId).update(':mptcp:').update(key.toString()).digest();
  return h.readBigUInt64BE(0) & 0x7fff_ffff_ffff_ffffn;
}

/**
 * flowId of a socket cookie: 63 bits of SHA-256(bootId, cookie). The same for every profile of
 * one connection, also across agent restarts within one kernel boot (cookies are unique there),
 * different across boots and hosts; 63 bits so signed 64-bit stores (SQLite) keep it exact.
 */
export function flowIdOf(bootId: string, cookie: bigint): bigint {
  const h = createHash('sha256').update(bootId).update(':').update(cookie.toString()).digest();
  return h.readBigUInt64BE(0) & 0x7fff_ffff_ffff_ffffn;
}
