/**
 * Decodes the probes' raw events (struct kf_event in probes/kpiflow-event.h) into ProbeEvents.
 * Batches come from the ring buffer (and the TCP iterator) as fixed-size records back to back;
 * one DataView over the batch reads them with constant offsets, allocating only the event
 * objects themselves. PROBE_EVENT_LAYOUT is the mirror of the C struct: a test checks it against
 * the compiled object's BTF, so C and TypeScript cannot drift apart. Nothing throws: a record
 * that cannot be an event is counted and skipped.
 */
import { EVENT_KIND, type EventKind, type ProbeEvent, type TcpCounters } from './probe-event.js';

/** Size in bytes of struct kf_event. */
export const PROBE_EVENT_SIZE = 240;

/** Byte offset and size of every field of struct kf_event (nested structs as dotted paths). */
export const PROBE_EVENT_LAYOUT = {
  ts_ns: { offset: 0, size: 8 },
  cookie: { offset: 8, size: 8 },
  saddr: { offset: 16, size: 16 },
  daddr: { offset: 32, size: 16 },
  netns: { offset: 48, size: 4 },
  sport: { offset: 52, size: 2 },
  dport: { offset: 54, size: 2 },
  kind: { offset: 56, size: 1 },
  ip_version: { offset: 57, size: 1 },
  tcp_state: { offset: 58, size: 1 },
  ca_state: { offset: 59, size: 1 },
  flags: { offset: 60, size: 1 },
  path_index: { offset: 61, size: 1 },
  _pad0: { offset: 62, size: 2 },
  missing: { offset: 64, size: 4 },
  arg0: { offset: 68, size: 4 },
  arg1: { offset: 72, size: 4 },
  mptcp_token: { offset: 76, size: 4 },
  'counters.bytes_acked': { offset: 80, size: 8 },
  'counters.bytes_received': { offset: 88, size: 8 },
  'counters.bytes_sent': { offset: 96, size: 8 },
  'counters.bytes_retrans': { offset: 104, size: 8 },
  'counters.segs_in': { offset: 112, size: 4 },
  'counters.segs_out': { offset: 116, size: 4 },
  'counters.data_segs_in': { offset: 120, size: 4 },
  'counters.data_segs_out': { offset: 124, size: 4 },
  'counters.total_retrans': { offset: 128, size: 4 },
  'counters.srtt_us': { offset: 132, size: 4 },
  'counters.mdev_us': { offset: 136, size: 4 },
  'counters.rcv_ooopack': { offset: 140, size: 4 },
  'counters.dsack_dups': { offset: 144, size: 4 },
  'counters.reord_seen': { offset: 148, size: 4 },
  'counters.total_rto': { offset: 152, size: 4 },
  'counters.total_rto_recoveries': { offset: 156, size: 4 },
  'counters.delivered': { offset: 160, size: 4 },
  'counters.snd_cwnd': { offset: 164, size: 4 },
  'counters.unacked_bytes': { offset: 168, size: 4 },
  'counters._pad': { offset: 172, size: 4 },
  'anc.syn_ns': { offset: 176, size: 8 },
  'anc.dup_octets': { offset: 184, size: 8 },
  'anc.syn_retrans': { offset: 192, size: 4 },
  'anc.dup_packets': { offset: 196, size: 4 },
  'anc.bad_checksums': { offset: 200, size: 4 },
  'anc.stalls': { offset: 204, size: 4 },
  'anc.ofo_dist_count': { offset: 208, size: 4 },
  'anc._pad': { offset: 212, size: 4 },
  'anc.ofo_dist_sum': { offset: 216, size: 8 },
  'anc.ofo_dist_sumsq': { offset: 224, size: 8 },
  mptcp_key: { offset: 232, size: 8 },
} as const satisfies Record<string, { offset: number; size: number }>;

/** Name of struct kf_event's type in the object's BTF. */
export const PROBE_EVENT_STRUCT = 'kf_event';

/**
 * TcpCounters fields in the order of kf_event.counters and of the `missing` bits (bit i is
 * PROBE_COUNTERS[i]), with their C field.
 */
export const PROBE_COUNTERS: readonly { name: keyof TcpCounters; field: keyof typeof PROBE_EVENT_LAYOUT }[] =
  [
    { name: 'bytesAcked', field: 'counters.bytes_acked' },
    { name: 'bytesReceived', field: 'counters.bytes_received' },
    { name: 'bytesSent', field: 'counters.bytes_sent' },
    { name: 'bytesRetrans', field: 'counters.bytes_retrans' },
    { name: 'segsIn', field: 'counters.segs_in' },
    { name: 'segsOut', field: 'counters.segs_out' },
    { name: 'dataSegsIn', field: 'counters.data_segs_in' },
    { name: 'dataSegsOut', field: 'counters.data_segs_out' },
    { name: 'totalRetrans', field: 'counters.total_retrans' },
    { name: 'srttUs', field: 'counters.srtt_us' },
    { name: 'mdevUs', field: 'counters.mdev_us' },
    { name: 'rcvOoopack', field: 'counters.rcv_ooopack' },
    { name: 'dsackDups', field: 'counters.dsack_dups' },
    { name: 'reordSeen', field: 'counters.reord_seen' },
    { name: 'totalRto', field: 'counters.total_rto' },
    { name: 'totalRtoRecoveries', field: 'counters.total_rto_recoveries' },
    { name: 'delivered', field: 'counters.delivered' },
    { name: 'sndCwnd', field: 'counters.snd_cwnd' },
    { name: 'unackedBytes', field: 'counters.unacked_bytes' },
  ];

/** kf_event.flags bit: the socket is an MPTCP subflow. */
export const PROBE_FLAG_MPTCP_SUBFLOW = 1;
/** kf_event.flags bit: an `mptcp` event (the MPTCP connection, not a TCP socket). */
export const PROBE_FLAG_MPTCP_META = 2;
/** kf_event.flags bit: the MPTCP connection was closed by MP_FASTCLOSE. */
export const PROBE_FLAG_MPTCP_FASTCLOSE = 4;

/** What one batch decoded to. */
export interface ProbeDecodeResult {
  events: ProbeEvent[];
  /** Records skipped: unknown event kind or IP version (a probe newer than this decoder). */
  malformed: number;
  /** Bytes at the end of the batch too few for a whole event. */
  trailingBytes: number;
}

const L = PROBE_EVENT_LAYOUT;
const KINDS: ReadonlySet<number> = new Set(Object.values(EVENT_KIND));
const NO_MISSING: readonly (keyof TcpCounters)[] = Object.freeze([]);
const missingCache = new Map<number, readonly (keyof TcpCounters)[]>();

function missingNames(mask: number): readonly (keyof TcpCounters)[] {
  if (mask === 0) return NO_MISSING;
  let names = missingCache.get(mask);
  if (!names) {
    names = Object.freeze(PROBE_COUNTERS.filter((_, i) => (mask >>> i) & 1).map((c) => c.name));
    if (missingCache.size < 1024) missingCache.set(mask, names);
  }
  return names;
}

function u64(v: DataView, at: number): number {
  return v.getUint32(at + 4, true) * 4294967296 + v.getUint32(at, true);
}

// A direct-mapped cache of IPv4 texts: a host's events repeat a few addresses, and one shared
// string costs less than a fresh concatenation per event (garbage at 100,000 events a second).
const IP4_SLOTS = 1024;
const ip4Keys = new Float64Array(IP4_SLOTS).fill(-1);
const ip4Texts = new Array<string>(IP4_SLOTS).fill('');

function ipv4(v: DataView, at: number): string {
  const k = v.getUint32(at, false);
  const slot = (k ^ (k >>> 10) ^ (k >>> 20)) & (IP4_SLOTS - 1);
  if (ip4Keys[slot] === k) return ip4Texts[slot]!;
  const text = `${k >>> 24}.${(k >>> 16) & 0xff}.${(k >>> 8) & 0xff}.${k & 0xff}`;
  ip4Keys[slot] = k;
  ip4Texts[slot] = text;
  return text;
}

/** RFC 5952 text: the longest run of two or more zero groups becomes "::", hex in lower case. */
function ipv6(v: DataView, at: number): string {
  const g = new Array<number>(8);
  for (let i = 0; i < 8; i++) g[i] = v.getUint16(at + 2 * i, false);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number) =>
    g
      .slice(from, to)
      .map((x) => x.toString(16))
      .join(':');
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`;
}

/** Decodes one event at `offset` of `view`; null when it is not a valid event. */
export function decodeProbeEvent(view: DataView, offset: number): ProbeEvent | null {
  const o = offset;
  const kind = view.getUint8(o + L.kind.offset);
  const version = view.getUint8(o + L.ip_version.offset);
  if (!KINDS.has(kind) || (version !== 4 && version !== 6)) return null;
  const text = version === 4 ? ipv4 : ipv6;
  const flags = view.getUint8(o + L.flags.offset);
  const ev: ProbeEvent = {
    kind: kind as EventKind,
    tsNs: view.getBigUint64(o + L.ts_ns.offset, true),
    cookie: view.getBigUint64(o + L.cookie.offset, true),
    netns: view.getUint32(o + L.netns.offset, true),
    ipVersion: version,
    localAddress: text(view, o + L.saddr.offset),
    remoteAddress: text(view, o + L.daddr.offset),
    localPort: view.getUint16(o + L.sport.offset, true),
    remotePort: view.getUint16(o + L.dport.offset, true),
    tcpState: view.getUint8(o + L.tcp_state.offset),
    caState: view.getUint8(o + L.ca_state.offset),
    mptcpSubflow: (flags & PROBE_FLAG_MPTCP_SUBFLOW) !== 0,
    arg0: view.getUint32(o + L.arg0.offset, true),
    arg1: view.getUint32(o + L.arg1.offset, true),
    counters: {
      bytesAcked: u64(view, o + L['counters.bytes_acked'].offset),
      bytesReceived: u64(view, o + L['counters.bytes_received'].offset),
      bytesSent: u64(view, o + L['counters.bytes_sent'].offset),
      bytesRetrans: u64(view, o + L['counters.bytes_retrans'].offset),
      segsIn: view.getUint32(o + L['counters.segs_in'].offset, true),
      segsOut: view.getUint32(o + L['counters.segs_out'].offset, true),
      dataSegsIn: view.getUint32(o + L['counters.data_segs_in'].offset, true),
      dataSegsOut: view.getUint32(o + L['counters.data_segs_out'].offset, true),
      totalRetrans: view.getUint32(o + L['counters.total_retrans'].offset, true),
      srttUs: view.getUint32(o + L['counters.srtt_us'].offset, true),
      mdevUs: view.getUint32(o + L['counters.mdev_us'].offset, true),
      rcvOoopack: view.getUint32(o + L['counters.rcv_ooopack'].offset, true),
      dsackDups: view.getUint32(o + L['counters.dsack_dups'].offset, true),
      reordSeen: view.getUint32(o + L['counters.reord_seen'].offset, true),
      totalRto: view.getUint32(o + L['counters.total_rto'].offset, true),
      totalRtoRecoveries: view.getUint32(o + L['counters.total_rto_recoveries'].offset, true),
      delivered: view.getUint32(o + L['counters.delivered'].offset, true),
      sndCwnd: view.getUint32(o + L['counters.snd_cwnd'].offset, true),
      unackedBytes: view.getUint32(o + L['counters.unacked_bytes'].offset, true),
    },
    ancillary: {
      synNs: view.getBigUint64(o + L['anc.syn_ns'].offset, true),
      synRetrans: view.getUint32(o + L['anc.syn_retrans'].offset, true),
      dupPackets: view.getUint32(o + L['anc.dup_packets'].offset, true),
      dupOctets: u64(view, o + L['anc.dup_octets'].offset),
      badChecksums: view.getUint32(o + L['anc.bad_checksums'].offset, true),
      stalls: view.getUint32(o + L['anc.stalls'].offset, true),
      ofoDistCount: view.getUint32(o + L['anc.ofo_dist_count'].offset, true),
      ofoDistSum: u64(view, o + L['anc.ofo_dist_sum'].offset),
      ofoDistSumSq: u64(view, o + L['anc.ofo_dist_sumsq'].offset),
    },
    missing: missingNames(view.getUint32(o + L.missing.offset, true)),
  };
  // MPTCP only: plain TCP events keep the shape they always had.
  if ((flags & (PROBE_FLAG_MPTCP_SUBFLOW | PROBE_FLAG_MPTCP_META)) !== 0) {
    ev.mptcp = {
      token: view.getUint32(o + L.mptcp_token.offset, true),
      key: view.getBigUint64(o + L.mptcp_key.offset, true),
      pathIndex: view.getUint8(o + L.path_index.offset),
      fastclose: (flags & PROBE_FLAG_MPTCP_FASTCLOSE) !== 0,
    };
  }
  return ev;
}

/** Decodes a batch of events back to back (ring-buffer batch or iterator output). */
export function decodeProbeEvents(batch: Uint8Array): ProbeDecodeResult {
  const view = new DataView(batch.buffer, batch.byteOffset, batch.byteLength);
  const whole = batch.byteLength - (batch.byteLength % PROBE_EVENT_SIZE);
  const events: ProbeEvent[] = [];
  let malformed = 0;
  for (let o = 0; o < whole; o += PROBE_EVENT_SIZE) {
    const ev = decodeProbeEvent(view, o);
    if (ev) events.push(ev);
    else malformed++;
  }
  return { events, malformed, trailingBytes: batch.byteLength - whole };
}

function writeAddress(buf: Buffer, at: number, text: string, version: 4 | 6): void {
  if (version === 4) {
    const parts = text.split('.');
    for (let i = 0; i < 4; i++) buf[at + i] = Number(parts[i]);
    return;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const h = head ? head.split(':') : [];
  const t = tail === undefined ? [] : tail ? tail.split(':') : [];
  const groups = [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
  for (let i = 0; i < 8; i++) buf.writeUInt16BE(Number.parseInt(groups[i]!, 16), at + 2 * i);
}

function writeU64(buf: Buffer, at: number, n: number): void {
  buf.writeUInt32LE(n % 4294967296, at);
  buf.writeUInt32LE(Math.floor(n / 4294967296), at + 4);
}

/**
 * The raw bytes the probes would have written for `ev`: the decoder's inverse, for tests, canned
 * ring-buffer batches and event recordings.
 */
export function encodeProbeEvent(ev: ProbeEvent): Buffer {
  const b = Buffer.alloc(PROBE_EVENT_SIZE);
  b.writeBigUInt64LE(ev.tsNs, L.ts_ns.offset);
  b.writeBigUInt64LE(ev.cookie, L.cookie.offset);
  writeAddress(b, L.saddr.offset, ev.localAddress, ev.ipVersion);
  writeAddress(b, L.daddr.offset, ev.remoteAddress, ev.ipVersion);
  b.writeUInt32LE(ev.netns, L.netns.offset);
  b.writeUInt16LE(ev.localPort, L.sport.offset);
  b.writeUInt16LE(ev.remotePort, L.dport.offset);
  b[L.kind.offset] = ev.kind;
  b[L.ip_version.offset] = ev.ipVersion;
  b[L.tcp_state.offset] = ev.tcpState;
  b[L.ca_state.offset] = ev.caState;
  b[L.flags.offset] =
    (ev.mptcpSubflow ? PROBE_FLAG_MPTCP_SUBFLOW : 0) |
    (ev.kind === EVENT_KIND.mptcp ? PROBE_FLAG_MPTCP_META : 0) |
    (ev.mptcp?.fastclose ? PROBE_FLAG_MPTCP_FASTCLOSE : 0);
  if (ev.mptcp) {
    b[L.path_index.offset] = ev.mptcp.pathIndex;
    b.writeUInt32LE(ev.mptcp.token, L.mptcp_token.offset);
    b.writeBigUInt64LE(ev.mptcp.key, L.mptcp_key.offset);
  }
  let mask = 0;
  PROBE_COUNTERS.forEach((c, i) => {
    if (ev.missing.includes(c.name)) mask |= 1 << i;
    const f = L[c.field];
    if (f.size === 8) writeU64(b, f.offset, ev.counters[c.name]);
    else b.writeUInt32LE(ev.counters[c.name], f.offset);
  });
  b.writeUInt32LE(mask >>> 0, L.missing.offset);
  b.writeUInt32LE(ev.arg0, L.arg0.offset);
  b.writeUInt32LE(ev.arg1, L.arg1.offset);
  b.writeBigUInt64LE(ev.ancillary.synNs, L['anc.syn_ns'].offset);
  writeU64(b, L['anc.dup_octets'].offset, ev.ancillary.dupOctets);
  b.writeUInt32LE(ev.ancillary.synRetrans, L['anc.syn_retrans'].offset);
  b.writeUInt32LE(ev.ancillary.dupPackets, L['anc.dup_packets'].offset);
  b.writeUInt32LE(ev.ancillary.badChecksums, L['anc.bad_checksums'].offset);
  b.writeUInt32LE(ev.ancillary.stalls, L['anc.stalls'].offset);
  b.writeUInt32LE(ev.ancillary.ofoDistCount ?? 0, L['anc.ofo_dist_count'].offset);
  writeU64(b, L['anc.ofo_dist_sum'].offset, ev.ancillary.ofoDistSum ?? 0);
  writeU64(b, L['anc.ofo_dist_sumsq'].offset, ev.ancillary.ofoDistSumSq ?? 0);
  return b;
}
