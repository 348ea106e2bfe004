/**
 * Link layer → IP → TCP, into one reused `TcpSegment` (no allocation per packet). Link types:
 * Ethernet (with 802.1Q / 802.1ad / QinQ tags), Linux cooked SLL and SLL2, raw IP (101, 228, 229,
 * and 12 as some systems write it), BSD loopback (0). IPv4 with options and fragments (non-first
 * fragments are skipped: they carry no TCP header); IPv6 with its extension headers. TCP with the
 * options the analyzer uses: MSS, window scale, SACK, timestamps and MPTCP (RFC 8684: MP_CAPABLE,
 * MP_JOIN, DSS). The payload length comes from the IP header, so a packet cut by the snapshot
 * length still counts its whole payload.
 */

/** Why a packet was not handed to the analyzer. 0 means it was. */
export const SKIP = {
  ok: 0,
  /** Link type the decoder does not read. */
  linkType: 1,
  /** Not IPv4 or IPv6 (ARP, LLDP, ...). */
  notIp: 2,
  /** IP but not TCP (UDP, ICMP, ...). */
  notTcp: 3,
  /** A fragment other than the first: it has no TCP header. */
  fragment: 4,
  /** Headers cut short by the snapshot length or the end of the packet. */
  truncated: 5,
  /** Impossible header fields (IP header length, TCP data offset, version). */
  malformed: 6,
} as const;

/** One of SKIP's values. */
export type SkipReason = (typeof SKIP)[keyof typeof SKIP];

/** TCP flag bits. */
export const TCP_FLAG = { FIN: 1, SYN: 2, RST: 4, PSH: 8, ACK: 16 } as const;

/** A decoded TCP segment; the decoder overwrites one instance for every packet. */
export interface TcpSegment {
  ipVersion: 4 | 6;
  /** Addresses as four 32-bit words (IPv4: words 0-2 are 0, word 3 is the address). */
  src: Uint32Array;
  dst: Uint32Array;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  /** Payload bytes, from the IP lengths (not the captured length). */
  payloadLen: number;
  hasTs: boolean;
  tsVal: number;
  tsEcr: number;
  /** SACK blocks: left and right edges, `sackCount` of them. */
  sackCount: number;
  sack: Uint32Array;
  /** MPTCP option subtype (0 MP_CAPABLE, 1 MP_JOIN, 2 DSS, ...) or -1; the first one only. */
  mpSubtype: number;
  mpVersion: number;
  /** MP_CAPABLE keys present: the sender's key at `mpKeyOff`, the receiver's at `mpKeyOff + 8`. */
  mpKeys: number;
  mpKeyOff: number;
  /** MP_JOIN SYN: the receiver's token; -1 when absent. */
  mpToken: number;
  /** True when some DSS option was present. */
  mpDss: boolean;
  /** The packet's bytes, for MPTCP keys (valid until the next packet). */
  buf: Buffer;
}

/** A fresh segment object for `decodePacket` to fill. */
export function newSegment(): TcpSegment {
  return {
    ipVersion: 4,
    src: new Uint32Array(4),
    dst: new Uint32Array(4),
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
    payloadLen: 0,
    hasTs: false,
    tsVal: 0,
    tsEcr: 0,
    sackCount: 0,
    sack: new Uint32Array(8),
    mpSubtype: -1,
    mpVersion: 0,
    mpKeys: 0,
    mpKeyOff: 0,
    mpToken: 0,
    mpDss: false,
    buf: Buffer.alloc(0),
  };
}

/** Link types `decodePacket` reads. */
export const SUPPORTED_LINK_TYPES: ReadonlySet<number> = new Set([0, 1, 12, 101, 113, 228, 229, 276]);

const ETH_IPV4 = 0x0800;
const ETH_IPV6 = 0x86dd;

/**
 * Decodes the packet at `buf[off .. off + caplen)` (`origLen` bytes on the wire) captured on `linkType` into `s`. Returns
 * SKIP.ok when `s` holds a TCP segment, otherwise why not.
 */
export function decodePacket(
  buf: Buffer,
  off: number,
  caplen: number,
  origLen: number,
  linkType: number,
  s: TcpSegment,
): SkipReason {
  const end = off + caplen;
  // Bytes the packet had on the wire: an IP length claiming more is cut to it (as tshark does).
  const wireEnd = off + Math.max(origLen, caplen);
  let p = off;
  let etherType: number;
  switch (linkType) {
    case 1: {
      if (caplen < 14) return SKIP.truncated;
      etherType = (buf[p + 12]! << 8) | buf[p + 13]!;
      p += 14;
      // 802.1Q, 802.1ad and the older QinQ type: skip each tag (bounded: a packet is finite).
      while (etherType === 0x8100 || etherType === 0x88a8 || etherType === 0x9100) {
        if (p + 4 > end) return SKIP.truncated;
        etherType = (buf[p + 2]! << 8) | buf[p + 3]!;
        p += 4;
      }
      break;
    }
    case 113:
      if (caplen < 16) return SKIP.truncated;
      etherType = (buf[p + 14]! << 8) | buf[p + 15]!;
      p += 16;
      break;
    case 276:
      if (caplen < 20) return SKIP.truncated;
      etherType = (buf[p]! << 8) | buf[p + 1]!;
      p += 20;
      break;
    case 0: {
      // BSD loopback: the address family in the host's byte order.
      if (caplen < 4) return SKIP.truncated;
      const le = buf.readUInt32LE(p);
      const fam = le < 0x10000 ? le : buf.readUInt32BE(p);
      p += 4;
      etherType = fam === 2 ? ETH_IPV4 : fam === 24 || fam === 28 || fam === 30 ? ETH_IPV6 : -1;
      break;
    }
    case 12:
    case 101:
    case 228:
    case 229: {
      if (caplen < 1) return SKIP.truncated;
      const v = buf[p]! >> 4;
      etherType = v === 4 ? ETH_IPV4 : v === 6 ? ETH_IPV6 : -1;
      break;
    }
    default:
      return SKIP.linkType;
  }
  let tcpLen: number;
  if (etherType === ETH_IPV4) {
    if (p + 20 > end) return SKIP.truncated;
    const vihl = buf[p]!;
    if (vihl >> 4 !== 4) return SKIP.malformed;
    const ihl = (vihl & 15) * 4;
    if (ihl < 20) return SKIP.malformed;
    const total = (buf[p + 2]! << 8) | buf[p + 3]!;
    const frag = ((buf[p + 6]! << 8) | buf[p + 7]!) & 0x1fff;
    if (buf[p + 9] !== 6) return SKIP.notTcp;
    if (frag !== 0) return SKIP.fragment;
    if (p + ihl > end) return SKIP.truncated;
    s.ipVersion = 4;
    const src = s.src;
    const dst = s.dst;
    src[0] = src[1] = src[2] = 0;
    dst[0] = dst[1] = dst[2] = 0;
    src[3] = buf.readUInt32BE(p + 12);
    dst[3] = buf.readUInt32BE(p + 16);
    // Total length 0 is what segmentation offload leaves in some captures: take the captured bytes.
    if (total !== 0 && total < ihl) return SKIP.malformed;
    tcpLen = Math.min(total === 0 ? end - p - ihl : total - ihl, wireEnd - p - ihl);
    p += ihl;
  } else if (etherType === ETH_IPV6) {
    if (p + 40 > end) return SKIP.truncated;
    if (buf[p]! >> 4 !== 6) return SKIP.malformed;
    const plen = (buf[p + 4]! << 8) | buf[p + 5]!;
    let next = buf[p + 6]!;
    s.ipVersion = 6;
    const src = s.src;
    const dst = s.dst;
    for (let i = 0; i < 4; i++) {
      src[i] = buf.readUInt32BE(p + 8 + i * 4);
      dst[i] = buf.readUInt32BE(p + 24 + i * 4);
    }
    p += 40;
    // A payload length of 0 is a jumbogram (or offload): take the captured bytes.
    let remaining = plen === 0 ? end - p : plen;
    // Extension headers (bounded by the packet: each one advances p by at least 8).
    for (;;) {
      if (next === 6) break;
      if (next === 0 || next === 43 || next === 60 || next === 135 || next === 139 || next === 140) {
        if (p + 8 > end) return SKIP.truncated;
        const hlen = (buf[p + 1]! + 1) * 8;
        next = buf[p]!;
        p += hlen;
        remaining -= hlen;
      } else if (next === 44) {
        if (p + 8 > end) return SKIP.truncated;
        const fragOff = ((buf[p + 2]! << 8) | buf[p + 3]!) >> 3;
        if (fragOff !== 0) return SKIP.fragment;
        next = buf[p]!;
        p += 8;
        remaining -= 8;
      } else if (next === 51) {
        if (p + 8 > end) return SKIP.truncated;
        const hlen = (buf[p + 1]! + 2) * 4;
        next = buf[p]!;
        p += hlen;
        remaining -= hlen;
      } else {
        return SKIP.notTcp;
      }
      if (remaining < 0) return SKIP.malformed;
    }
    tcpLen = Math.min(remaining, wireEnd - p);
  } else {
    return SKIP.notIp;
  }
  // TCP header.
  if (p + 20 > end) return SKIP.truncated;
  const doff = (buf[p + 12]! >> 4) * 4;
  if (doff < 20 || doff > tcpLen) return SKIP.malformed;
  if (p + doff > end) return SKIP.truncated;
  s.srcPort = (buf[p]! << 8) | buf[p + 1]!;
  s.dstPort = (buf[p + 2]! << 8) | buf[p + 3]!;
  s.seq = buf.readUInt32BE(p + 4);
  s.ack = buf.readUInt32BE(p + 8);
  s.flags = buf[p + 13]!;
  s.window = (buf[p + 14]! << 8) | buf[p + 15]!;
  s.payloadLen = tcpLen - doff;
  s.hasTs = false;
  s.sackCount = 0;
  s.mpSubtype = -1;
  s.mpKeys = 0;
  s.mpToken = -1;
  s.mpDss = false;
  if (doff > 20) parseOptions(buf, p + 20, p + doff, s);
  return SKIP.ok;
}

function parseOptions(buf: Buffer, p: number, end: number, s: TcpSegment): void {
  while (p < end) {
    const kind = buf[p]!;
    if (kind === 0) return;
    if (kind === 1) {
      p++;
      continue;
    }
    if (p + 1 >= end) return;
    const len = buf[p + 1]!;
    // A length under 2 or past the header ends parsing (as the kernel does): never a loop.
    if (len < 2 || p + len > end) return;
    switch (kind) {
      case 8:
        if (len === 10) {
          s.hasTs = true;
          s.tsVal = buf.readUInt32BE(p + 2);
          s.tsEcr = buf.readUInt32BE(p + 6);
        }
        break;
      case 5: {
        const n = Math.min(4, (len - 2) >> 3);
        for (let i = 0; i < n; i++) {
          s.sack[i * 2] = buf.readUInt32BE(p + 2 + i * 8);
          s.sack[i * 2 + 1] = buf.readUInt32BE(p + 6 + i * 8);
        }
        s.sackCount = n;
        break;
      }
      case 30: {
        if (len < 3) break;
        const subtype = buf[p + 2]! >> 4;
        if (subtype === 2) s.mpDss = true;
        if (s.mpSubtype >= 0) break;
        s.mpSubtype = subtype;
        s.mpVersion = buf[p + 2]! & 15;
        if (subtype === 0) {
          // MP_CAPABLE: 12 bytes carry the sender's key; 20 and more both keys (RFC 8684 3.1).
          s.mpKeys = len >= 20 ? 2 : len >= 12 ? 1 : 0;
          s.mpKeyOff = p + 4;
          s.buf = buf;
        } else if (subtype === 1 && len === 12) {
          // MP_JOIN on a SYN: the receiver's token (RFC 8684 3.2).
          s.mpToken = buf.readUInt32BE(p + 4);
        }
        break;
      }
    }
    p += len;
  }
}
