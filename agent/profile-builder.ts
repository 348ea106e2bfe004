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
import type { AncillaryCounters, TcpCounters } from './probe-event.js';
import {
  availableKpis,
  mappedAddress,
  PROFILE_TEMPLATE_IDS,
  TCP_KPI_FIELDS,
  tcpProfileFields,
} from './profile-templates.js';

/** One profile: the template it belongs to and its record, keyed by element name. */
export interface Profile {
  templateId: number;
  record: IpfixRecord;
}

/**
 * Width in bits of the kernel counters that are narrower than 64 bits: a smaller value in the
 * later snapshot means the counter wrapped, not that it went back.
 */
const COUNTER_BITS: Partial<Record<keyof TcpCounters, number>> = {
  segsIn: 32,
  segsOut: 32,
  dataSegsIn: 32,
  dataSegsOut: 32,
  totalRetrans: 32,
  rcvOoopack: 32,
  dsackDups: 32,
  reordSeen: 32,
  totalRto: 16,
  totalRtoRecoveries: 16,
  delivered: 32,
};

/** The probes keep their event counters in u32 (dupOctets in u64). */
const ANCILLARY_BITS: Partial<Record<keyof AncillaryCounters, number>> = {
  synRetrans: 32,
  dupPackets: 32,
  badChecksums: 32,
  stalls: 32,
};

const U16 = 0xffff;
const U32 = 0xffffffff;

/** Largest value of each KPI's element type; a larger delta is sent saturated (and counted). */
const KPI_MAX: Record<string, number> = {
  retransmittedPacketTotalCount: U32,
  stallCount: U16,
  reorderingPacketCount: U32,
  duplicatePacketTotalCount: U32,
  dsackCount: U32,
  reorderSeenCount: U32,
  rtoRecoveryCount: U32,
  checksumErrorCount: U32,
  synRetransmissionCount: U16,
  timeToEstablishMilliseconds: U32,
  meanLatencyMicroseconds: U32,
  latencyJitterMicroseconds: U32,
  meanLatencyMilliseconds: U16,
};

function wrapDelta(cur: number, base: number, bits: number | undefined): number {
  const d = cur - base;
  if (d >= 0) return d;
  return bits === undefined ? -1 : d + 2 ** bits;
}

/** Builder settings. */
export interface ProfileBuilderOptions {
  /** Wall-clock minus monotonic time, ns (see `measureClockOffset`). */
  clockOffsetNs: bigint;
  /** TcpCounters fields the kernel cannot provide: their KPIs are left out. */
  missing?: Iterable<keyof TcpCounters>;
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
  readonly stats: ProfileBuilderStats = { profiles: 0, negativeDeltas: 0, saturated: 0 };
  private readonly kpis: ReadonlySet<string>;

  constructor(options: ProfileBuilderOptions) {
    this.clockOffsetNs = options.clockOffsetNs;
    const missing = [...(options.missing ?? [])];
    this.fields = tcpProfileFields(missing);
    this.kpis = new Set(availableKpis(TCP_KPI_FIELDS, missing).map((k) => k.name));
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
    const r: IpfixRecord = {
      flowId: c.flowId,
      sourceIPv6Address: mappedAddress(c.localAddress, c.ipVersion),
      destinationIPv6Address: mappedAddress(c.remoteAddress, c.ipVersion),
      ipVersion: c.ipVersion,
      sourceTransportPort: c.localPort,
      destinationTransportPort: c.remotePort,
      flowStartMilliseconds: this.wallMs(w.start.tsNs),
      flowEndMilliseconds: this.wallMs(w.end.tsNs),
      flowStartReason: w.startReason,
      flowEndReason: w.endReason,
    };
    const k = this.kpis;
    const set = (name: string, v: number) => {
      if (!k.has(name)) return;
      const max = KPI_MAX[name];
      if (v < 0) {
        this.stats.negativeDeltas++;
        v = 0;
      } else if (max !== undefined && v > max) {
        this.stats.saturated++;
        v = max;
      }
      r[name] = v;
    };
    const d = (f: keyof TcpCounters) => wrapDelta(b[f], a[f], COUNTER_BITS[f]);
    const da = (f: Exclude<keyof AncillaryCounters, 'synNs'>) => wrapDelta(ba[f], aa[f], ANCILLARY_BITS[f]);
    set('transferredOctetTotalCount', d('bytesAcked'));
    set('receivedOctetTotalCount', d('bytesReceived'));
    set('droppedOctetTotalCount', d('bytesRetrans'));
    set('retransmittedPacketTotalCount', d('totalRetrans'));
    // In the handshake window a timeout is a SYN retransmission; counting the probes' stalls too
    // would count it twice.
    set('stallCount', w.handshake ? da('synRetrans') : da('stalls'));
    set('reorderingPacketCount', d('rcvOoopack'));
    set('duplicatePacketTotalCount', da('dupPackets'));
    set('duplicateOctetTotalCount', da('dupOctets'));
    set('dsackCount', d('dsackDups'));
    set('reorderSeenCount', d('reordSeen'));
    set('rtoRecoveryCount', d('totalRtoRecoveries'));
    set('checksumErrorCount', da('badChecksums'));
    set('synRetransmissionCount', da('synRetrans'));
    let establishMs = 0;
    if (w.handshake && w.endReason === 2) {
      const syn = ba.synNs > 0n && ba.synNs <= w.end.tsNs ? ba.synNs : w.start.tsNs;
      establishMs = Math.round(Number(w.end.tsNs - syn) / 1e6);
    }
    set('timeToEstablishMilliseconds', establishMs);
    const n = w.rttSamples;
    const meanUs = n > 0 ? Math.round(w.srttSumUs / n) : 0;
    set('meanLatencyMicroseconds', meanUs);
    set('latencyJitterMicroseconds', n > 0 ? Math.round(w.mdevSumUs / n) : 0);
    set('meanLatencyMilliseconds', Math.round(meanUs / 1000));
    this.stats.profiles++;
    return {
      templateId: c.mptcpSubflow ? PROFILE_TEMPLATE_IDS.mptcpSubflow : PROFILE_TEMPLATE_IDS.tcp,
      record: r,
    };
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
 * flowId of a socket cookie: 63 bits of SHA-256(bootId, cookie). The same for every profile of
 * one connection, also across agent restarts within one kernel boot (cookies are unique there),
 * different across boots and hosts; 63 bits so signed 64-bit stores (SQLite) keep it exact.
 */
export function flowIdOf(bootId: string, cookie: bigint): bigint {
  const h = createHash('sha256').update(bootId).update(':').update(cookie.toString()).digest();
  return h.readBigUInt64BE(0) & 0x7fff_ffff_ffff_ffffn;
}
