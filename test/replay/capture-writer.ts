/**
 * Builds small captures byte by byte for the replay tests: TCP/IP packets (IPv4 with options,
 * IPv6 with extension headers, TCP options), link-layer wrappers (Ethernet with VLAN tags, Linux
 * cooked SLL and SLL2, raw IP) and the two file formats (pcap in either byte order with µs or ns
 * times, pcapng with enhanced and simple packet blocks). tshark reads every file these make, so
 * the tests compare against it rather than against our own reader.
 */

/** One TCP segment to build. */
export interface SegmentSpec {
  v6?: boolean;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  seq: number;
  ack?: number;
  /** Flag letters: S A F R P. */
  flags: string;
  payload?: number;
  window?: number;
  /** TCP options, raw bytes (padded to 4 by the builder). */
  options?: number[];
  /** IPv4 options (raw, padded to 4) / an IPv6 hop-by-hop header before TCP. */
  ipOptions?: boolean;
  /** IPv4 fragment offset in 8-byte units (non-zero: a non-first fragment). */
  fragOffset?: number;
}

function v4(text: string): number[] {
  return text.split('.').map(Number);
}

function v6(text: string): number[] {
  const [h, t] = text.split('::');
  const hs = h ? h.split(':') : [];
  const ts = t ? t.split(':') : [];
  const g = [...hs, ...Array(8 - hs.length - ts.length).fill('0'), ...ts].map((x) => Number.parseInt(x, 16));
  return g.flatMap((x) => [x >> 8, x & 255]);
}

/** The IP packet (no link header) of one segment. */
export function ipPacket(s: SegmentSpec): Buffer {
  const opts = [...(s.options ?? [])];
  while (opts.length % 4) opts.push(1);
  const tcpHdr = 20 + opts.length;
  const payload = s.payload ?? 0;
  const tcp = Buffer.alloc(tcpHdr + payload, 0x61);
  tcp.writeUInt16BE(s.sport, 0);
  tcp.writeUInt16BE(s.dport, 2);
  tcp.writeUInt32BE(s.seq >>> 0, 4);
  tcp.writeUInt32BE((s.ack ?? 0) >>> 0, 8);
  tcp[12] = (tcpHdr / 4) << 4;
  let f = 0;
  for (const ch of s.flags) f |= { F: 1, S: 2, R: 4, P: 8, A: 16 }[ch as 'F'] ?? 0;
  tcp[13] = f;
  tcp.writeUInt16BE(s.window ?? 65535, 14);
  tcp.writeUInt16BE(0, 16);
  tcp.writeUInt16BE(0, 18);
  Buffer.from(opts).copy(tcp, 20);
  if (s.v6) {
    const ext = s.ipOptions ? Buffer.from([6, 0, 1, 4, 0, 0, 0, 0]) : Buffer.alloc(0);
    const h = Buffer.alloc(40);
    h[0] = 0x60;
    h.writeUInt16BE(ext.length + tcp.length, 4);
    h[6] = s.ipOptions ? 0 : 6;
    h[7] = 64;
    Buffer.from(v6(s.src)).copy(h, 8);
    Buffer.from(v6(s.dst)).copy(h, 24);
    return Buffer.concat([h, ext, tcp]);
  }
  const ipOpts = s.ipOptions ? Buffer.from([1, 1, 1, 0]) : Buffer.alloc(0);
  const h = Buffer.alloc(20 + ipOpts.length);
  h[0] = 0x40 | (h.length / 4);
  h.writeUInt16BE(h.length + tcp.length, 2);
  h.writeUInt16BE((s.fragOffset ?? 0) & 0x1fff, 6);
  h[8] = 64;
  h[9] = 6;
  Buffer.from(v4(s.src)).copy(h, 12);
  Buffer.from(v4(s.dst)).copy(h, 16);
  ipOpts.copy(h, 20);
  let sum = 0;
  for (let i = 0; i < h.length; i += 2) sum += h.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  h.writeUInt16BE(~sum & 0xffff, 10);
  return Buffer.concat([h, tcp]);
}

/** A UDP/IPv4 packet (non-TCP traffic). */
export function udpPacket(): Buffer {
  const h = Buffer.alloc(28);
  h[0] = 0x45;
  h.writeUInt16BE(28, 2);
  h[8] = 64;
  h[9] = 17;
  Buffer.from([192, 0, 2, 1, 192, 0, 2, 2]).copy(h, 12);
  h.writeUInt16BE(53, 20);
  h.writeUInt16BE(53, 22);
  h.writeUInt16BE(8, 24);
  return h;
}

/** Link layers the builder can wrap an IP packet in, with their LINKTYPE numbers. */
export const LINK = { ethernet: 1, raw: 101, ipv4: 228, ipv6: 229, sll: 113, sll2: 276 } as const;

/** Wraps an IP packet for `link`; `vlans` adds 802.1Q tags (two: QinQ with an 802.1ad outer tag). */
export function frame(ip: Buffer, link: keyof typeof LINK, vlans: number[] = []): Buffer {
  const etherType = ip[0]! >> 4 === 6 ? 0x86dd : 0x0800;
  switch (link) {
    case 'ethernet': {
      const parts: Buffer[] = [Buffer.from([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1])];
      vlans.forEach((id, i) => {
        const t = Buffer.alloc(4);
        t.writeUInt16BE(i === 0 && vlans.length > 1 ? 0x88a8 : 0x8100, 0);
        t.writeUInt16BE(id, 2);
        parts.push(t);
      });
      const et = Buffer.alloc(2);
      et.writeUInt16BE(etherType, 0);
      // Tags: each tag's type field precedes its TCI, so the layout is [type, tci]... [ethertype].
      return Buffer.concat([...parts, et, ip]);
    }
    case 'sll': {
      const h = Buffer.alloc(16);
      h.writeUInt16BE(0, 0);
      h.writeUInt16BE(1, 2);
      h.writeUInt16BE(6, 4);
      h.writeUInt16BE(etherType, 14);
      return Buffer.concat([h, ip]);
    }
    case 'sll2': {
      const h = Buffer.alloc(20);
      h.writeUInt16BE(etherType, 0);
      h.writeUInt32BE(2, 4);
      h.writeUInt16BE(1, 8);
      h[11] = 6;
      return Buffer.concat([h, ip]);
    }
    default:
      return ip;
  }
}

/** One record of a capture: time (seconds, float) and bytes (cut to `snaplen` if given). */
export interface Record {
  t: number;
  data: Buffer;
}

/** A pcap file. */
export function pcapFile(
  records: readonly Record[],
  opts: { linkType: number; bigEndian?: boolean; nanos?: boolean; snaplen?: number },
): Buffer {
  const be = opts.bigEndian ?? false;
  const w32 = (b: Buffer, v: number, at: number) =>
    be ? b.writeUInt32BE(v >>> 0, at) : b.writeUInt32LE(v >>> 0, at);
  const w16 = (b: Buffer, v: number, at: number) => (be ? b.writeUInt16BE(v, at) : b.writeUInt16LE(v, at));
  const snaplen = opts.snaplen ?? 262144;
  const h = Buffer.alloc(24);
  w32(h, opts.nanos ? 0xa1b23c4d : 0xa1b2c3d4, 0);
  w16(h, 2, 4);
  w16(h, 4, 6);
  w32(h, snaplen, 16);
  w32(h, opts.linkType, 20);
  const out: Buffer[] = [h];
  for (const r of records) {
    const rh = Buffer.alloc(16);
    const sec = Math.floor(r.t);
    const frac = opts.nanos ? Math.round((r.t - sec) * 1e9) : Math.round((r.t - sec) * 1e6);
    const cap = Math.min(r.data.length, snaplen);
    w32(rh, sec, 0);
    w32(rh, frac, 4);
    w32(rh, cap, 8);
    w32(rh, r.data.length, 12);
    out.push(rh, r.data.subarray(0, cap));
  }
  return Buffer.concat(out);
}

function block(type: number, body: Buffer): Buffer {
  const pad = (4 - (body.length % 4)) % 4;
  const len = 12 + body.length + pad;
  const b = Buffer.alloc(len);
  b.writeUInt32LE(type, 0);
  b.writeUInt32LE(len, 4);
  body.copy(b, 8);
  b.writeUInt32LE(len, len - 4);
  return b;
}

/** A pcapng file: one section, interfaces with link type and tsresol exponent, EPBs (or SPBs). */
export function pcapngFile(
  interfaces: readonly { linkType: number; tsresol?: number }[],
  packets: readonly { iface: number; t: number; data: Buffer; simple?: boolean }[],
): Buffer {
  const shb = Buffer.alloc(16);
  shb.writeUInt32LE(0x1a2b3c4d, 0);
  shb.writeUInt16LE(1, 4);
  shb.writeUInt16LE(0, 6);
  shb.writeInt32LE(-1, 8);
  shb.writeInt32LE(-1, 12);
  const out = [block(0x0a0d0d0a, shb)];
  for (const i of interfaces) {
    const opts: Buffer[] = [];
    if (i.tsresol !== undefined) {
      const o = Buffer.alloc(8);
      o.writeUInt16LE(9, 0);
      o.writeUInt16LE(1, 2);
      o[4] = i.tsresol;
      opts.push(o);
    }
    opts.push(Buffer.alloc(4));
    const b = Buffer.alloc(8);
    b.writeUInt16LE(i.linkType, 0);
    b.writeUInt32LE(0, 4);
    out.push(block(1, Buffer.concat([b, ...opts])));
  }
  for (const p of packets) {
    if (p.simple) {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(p.data.length, 0);
      out.push(block(3, Buffer.concat([b, p.data])));
      continue;
    }
    const res = interfaces[p.iface]!.tsresol ?? 6;
    const units = (BigInt(Math.round(p.t * 1e6)) * 10n ** BigInt(res)) / 1_000_000n;
    const b = Buffer.alloc(20);
    b.writeUInt32LE(p.iface, 0);
    b.writeUInt32LE(Number(units >> 32n), 4);
    b.writeUInt32LE(Number(units & 0xffffffffn), 8);
    b.writeUInt32LE(p.data.length, 12);
    b.writeUInt32LE(p.data.length, 16);
    out.push(block(6, Buffer.concat([b, p.data])));
  }
  return Buffer.concat(out);
}

/**
 * A complete small connection: handshake with MSS/SACK-permitted/timestamp options, `chunks`
 * data segments from the client (one of them retransmitted, one delivered out of order), the
 * server's ACKs, and a FIN exchange. Times start at `t0`, 10 ms apart.
 */
export function conversation(opts: { v6?: boolean; t0?: number; ipOptions?: boolean } = {}): Record[] {
  const c = opts.v6 ? '2001:db8::1' : '192.0.2.1';
  const s = opts.v6 ? '2001:db8::2' : '192.0.2.2';
  const base = { v6: opts.v6, ipOptions: opts.ipOptions };
  const cs = (seq: number, ack: number, flags: string, payload = 0, options?: number[]) => ({
    ...base,
    src: c,
    dst: s,
    sport: 40000,
    dport: 80,
    seq,
    ack,
    flags,
    payload,
    options,
  });
  const sc = (seq: number, ack: number, flags: string, payload = 0, options?: number[]) => ({
    ...base,
    src: s,
    dst: c,
    sport: 80,
    dport: 40000,
    seq,
    ack,
    flags,
    payload,
    options,
  });
  const ci = 1000;
  const si = 5000;
  const synOpts = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0];
  const segs: SegmentSpec[] = [
    cs(ci, 0, 'S', 0, synOpts),
    sc(si, ci + 1, 'SA', 0, synOpts),
    cs(ci + 1, si + 1, 'A'),
    cs(ci + 1, si + 1, 'PA', 100),
    // The segment at ci+101 is "lost": the next one arrives above the expected sequence.
    cs(ci + 201, si + 1, 'PA', 100),
    sc(si + 1, ci + 101, 'A', 0, [
      1,
      1,
      5,
      10,
      0,
      0,
      (ci + 201) >> 8,
      (ci + 201) & 255,
      0,
      0,
      (ci + 301) >> 8,
      (ci + 301) & 255,
    ]),
    cs(ci + 101, si + 1, 'PA', 100),
    sc(si + 1, ci + 301, 'A'),
    // A needless retransmission of already acknowledged data: a duplicate at the server.
    cs(ci + 201, si + 1, 'PA', 100),
    sc(si + 1, ci + 301, 'PA', 50),
    cs(ci + 301, si + 51, 'FA'),
    sc(si + 51, ci + 302, 'FA'),
    cs(ci + 302, si + 52, 'A'),
  ];
  const t0 = opts.t0 ?? 1_700_000_000.5;
  return segs.map((g, i) => ({ t: t0 + i * 0.01, data: ipPacket(g) }));
}
