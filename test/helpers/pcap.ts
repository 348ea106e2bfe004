/**
 * Helpers for interoperability tests with third-party tools. A tiny pcap writer wraps IPFIX
 * messages we hold in IPv4/UDP packets (destination port 4739 by default) so tshark can dissect
 * them; `udpPayloads` pulls the UDP payloads of captures out with tshark so our decoder can read
 * them. Readers for the tools' views: tshark's cflow dissection (`-T pdml`) and libfixbuf's
 * ipfixDump text output.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES } from './tools.js';

/**
 * Runs a third-party tool with TZ=UTC (tshark prints absolute times in the local zone) and
 * returns its stdout; throws with its stderr when it fails.
 */
export function tool(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, {
    maxBuffer: 512 * 1024 * 1024,
    encoding: 'utf8',
    env: { ...process.env, TZ: 'UTC' },
  });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** pcap link types this writer produces. */
export const LINKTYPE_ETHERNET = 1;
/** Raw IP: every packet starts with its IPv4 header. */
export const LINKTYPE_RAW = 101;

/** The IANA port for IPFIX over UDP. */
export const IPFIX_PORT = 4739;

/** How packets are wrapped; every field has a default. */
export interface PcapOptions {
  /** 'raw' (LINKTYPE_RAW, default) or 'ethernet'. */
  linkType?: 'raw' | 'ethernet';
  /** IPv4 source address. Default 192.0.2.1. */
  srcAddr?: string;
  /** IPv4 destination address. Default 192.0.2.2. */
  dstAddr?: string;
  /** UDP source port. Default 40000. */
  srcPort?: number;
  /** UDP destination port. Default 4739. */
  dstPort?: number;
  /** Capture time of the first packet, seconds since the epoch; later ones are 1 ms apart. Default 1700000000. */
  startTime?: number;
}

function ipv4Bytes(text: string): number[] {
  const parts = text.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new Error(`not an IPv4 address: ${text}`);
  }
  return parts;
}

/** Ones' complement sum of 16-bit words (RFC 1071), not yet complemented. */
function sum16(b: Uint8Array, start: number, end: number, initial = 0): number {
  let s = initial;
  for (let i = start; i < end; i += 2) s += (b[i]! << 8) | (i + 1 < end ? b[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** One IPv4/UDP packet carrying `payload`, with valid IP and UDP checksums. */
export function ipv4UdpPacket(
  payload: Uint8Array,
  srcAddr: string,
  dstAddr: string,
  srcPort: number,
  dstPort: number,
  id = 0,
): Buffer {
  const udpLength = 8 + payload.length;
  const total = 20 + udpLength;
  if (total > 65535) throw new Error(`payload of ${payload.length} bytes does not fit one IPv4 packet`);
  const p = Buffer.alloc(total);
  const src = ipv4Bytes(srcAddr);
  const dst = ipv4Bytes(dstAddr);
  p[0] = 0x45;
  p.writeUInt16BE(total, 2);
  p.writeUInt16BE(id & 0xffff, 4);
  p.writeUInt16BE(0x4000, 6); // don't fragment
  p[8] = 64;
  p[9] = 17;
  p.set(src, 12);
  p.set(dst, 16);
  p.writeUInt16BE(~sum16(p, 0, 20) & 0xffff, 10);
  p.writeUInt16BE(srcPort, 20);
  p.writeUInt16BE(dstPort, 22);
  p.writeUInt16BE(udpLength, 24);
  p.set(payload, 28);
  // Pseudo-header: addresses, zero, protocol, UDP length.
  const pseudo = sum16(p, 12, 20, 17 + udpLength);
  const c = ~sum16(p, 20, total, pseudo) & 0xffff;
  p.writeUInt16BE(c === 0 ? 0xffff : c, 26);
  return p;
}

/** A packet whose addressing differs from the file's defaults. */
export interface PcapPacket {
  payload: Uint8Array;
  srcAddr?: string;
  srcPort?: number;
  dstPort?: number;
}

/** A whole pcap file (microsecond timestamps) with one IPv4/UDP packet per payload. */
export function buildPcap(packets: readonly (Uint8Array | PcapPacket)[], options: PcapOptions = {}): Buffer {
  const ethernet = options.linkType === 'ethernet';
  const dstAddr = options.dstAddr ?? '192.0.2.2';
  const start = options.startTime ?? 1700000000;
  const chunks: Buffer[] = [];
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0xa1b2c3d4, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(262144, 16); // snaplen
  header.writeUInt32LE(ethernet ? LINKTYPE_ETHERNET : LINKTYPE_RAW, 20);
  chunks.push(header);
  packets.forEach((p, i) => {
    const pk: PcapPacket = p instanceof Uint8Array ? { payload: p } : p;
    let frame = ipv4UdpPacket(
      pk.payload,
      pk.srcAddr ?? options.srcAddr ?? '192.0.2.1',
      dstAddr,
      pk.srcPort ?? options.srcPort ?? 40000,
      pk.dstPort ?? options.dstPort ?? IPFIX_PORT,
      i + 1,
    );
    if (ethernet) {
      const eth = Buffer.alloc(14);
      eth.set([0x02, 0, 0, 0, 0, 2], 0);
      eth.set([0x02, 0, 0, 0, 0, 1], 6);
      eth.writeUInt16BE(0x0800, 12);
      frame = Buffer.concat([eth, frame]);
    }
    const rec = Buffer.alloc(16);
    const micros = Math.round(start * 1e6) + i * 1000;
    rec.writeUInt32LE(Math.floor(micros / 1e6), 0);
    rec.writeUInt32LE(micros % 1e6, 4);
    rec.writeUInt32LE(frame.length, 8);
    rec.writeUInt32LE(frame.length, 12);
    chunks.push(rec, frame);
  });
  return Buffer.concat(chunks);
}

/** Writes packets as a pcap file at `path`. */
export function writePcap(
  path: string,
  packets: readonly (Uint8Array | PcapPacket)[],
  options: PcapOptions = {},
): void {
  writeFileSync(path, buildPcap(packets, options));
}

/** One UDP datagram of a capture, as tshark saw it. */
export interface UdpDatagram {
  /** Frame number in the capture (1-based). */
  frame: number;
  /** Source address (IPv4 or IPv6 text as tshark prints it). */
  src: string;
  srcPort: number;
  dstPort: number;
  payload: Buffer;
}

/**
 * The UDP payloads of a capture in frame order, read by tshark (`-T fields -e udp.payload`).
 * Only the outermost IP/UDP headers count: tshark may dissect packets quoted inside a payload
 * (an IPFIX dataLinkFrameSection, an ICMP error), whose fields come after. Packets that are
 * ICMP errors quoting a UDP header are left out, and so are empty payloads.
 */
export function udpPayloads(pcapPath: string): UdpDatagram[] {
  const out = tool('tshark', [
    '-r',
    pcapPath,
    '-n',
    '-Y',
    'udp',
    '-T',
    'fields',
    '-E',
    'separator=/t',
    '-E',
    'occurrence=f',
    '-e',
    'frame.number',
    '-e',
    'ip.proto',
    '-e',
    'ipv6.nxt',
    '-e',
    'ip.src',
    '-e',
    'ipv6.src',
    '-e',
    'udp.srcport',
    '-e',
    'udp.dstport',
    '-e',
    'udp.payload',
  ]);
  const datagrams: UdpDatagram[] = [];
  for (const line of out.split('\n')) {
    if (!line.trim()) continue;
    const [frame, proto4, proto6, ip4, ip6, sport, dport, hex] = line.split('\t');
    const proto = Number(proto4 || proto6);
    if (!hex || proto === 1 || proto === 58) continue;
    datagrams.push({
      frame: Number(frame),
      src: ip4 || ip6 || '',
      srcPort: Number(sport),
      dstPort: Number(dport),
      payload: Buffer.from(hex.replace(/:/g, ''), 'hex'),
    });
  }
  return datagrams;
}

/** One field of tshark's PDML output, with its subtree. Text-only items have an empty name. */
export interface PdmlField {
  name: string;
  /** Displayed value (`show`), or the label of a text item. */
  show: string;
  /** Raw bytes as hex, when tshark gives them. */
  value: string;
  pos: number;
  size: number;
  children: PdmlField[];
}

/** One packet of PDML: its protocol layers, each a PdmlField named after the protocol. */
export interface PdmlPacket {
  layers: PdmlField[];
}

const XML_ENTITIES: Record<string, string> = { quot: '"', amp: '&', lt: '<', gt: '>', apos: "'" };

function unescapeXml(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|quot|amp|lt|gt|apos);/g, (_m, e: string) => {
    if (e.startsWith('#x')) return String.fromCodePoint(Number.parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(Number(e.slice(1)));
    return XML_ENTITIES[e]!;
  });
}

function attr(tag: string, name: string): string {
  const m = new RegExp(`\\s${name}="([^"]*)"`).exec(tag);
  return m ? unescapeXml(m[1]!) : '';
}

/** Parses tshark `-T pdml` output (one element per line, as tshark writes it). */
export function parsePdml(xml: string): PdmlPacket[] {
  const packets: PdmlPacket[] = [];
  let packet: PdmlPacket | null = null;
  const stack: PdmlField[] = [];
  for (const raw of xml.split('\n')) {
    const line = raw.trim();
    if (line === '<packet>') {
      packet = { layers: [] };
      packets.push(packet);
    } else if (line === '</packet>') {
      packet = null;
      stack.length = 0;
    } else if (line.startsWith('<proto ') || line.startsWith('<field ')) {
      if (!packet) continue;
      const f: PdmlField = {
        name: attr(line, 'name'),
        show: attr(line, 'show'),
        value: attr(line, 'value'),
        pos: Number(attr(line, 'pos') || 0),
        size: Number(attr(line, 'size') || 0),
        children: [],
      };
      if (stack.length === 0) packet.layers.push(f);
      else stack[stack.length - 1]!.children.push(f);
      if (!line.endsWith('/>')) stack.push(f);
    } else if (line === '</proto>' || line === '</field>') {
      stack.pop();
    }
  }
  return packets;
}

/** Runs `tshark -T pdml` on a capture; `args` adds options such as `-d udp.port==2055,cflow`. */
export function tsharkPdml(pcapPath: string, args: string[] = []): PdmlPacket[] {
  return parsePdml(tool('tshark', ['-r', pcapPath, '-n', ...args, '-T', 'pdml']));
}

/** Every field of a subtree, depth first, the root excluded. */
export function flatten(f: PdmlField): PdmlField[] {
  const out: PdmlField[] = [];
  const walk = (x: PdmlField) => {
    for (const c of x.children) {
      out.push(c);
      walk(c);
    }
  };
  walk(f);
  return out;
}

/** A set of a NetFlow/IPFIX message as tshark's cflow dissector shows it. */
export interface CflowSet {
  setId: number;
  /** Data records ("Flow N" subtrees, flattened); null when tshark found no template. */
  flows: PdmlField[][] | null;
}

/** One NetFlow/IPFIX message as tshark's cflow dissector shows it. */
export interface CflowMessage {
  frame: number;
  /** Exporter address and port (the transport session). */
  src: string;
  srcPort: number;
  version: number;
  observationDomainId: number;
  sets: CflowSet[];
  /** Expert items of severity error or worse (malformed packets included). */
  errors: number;
  /** "no template found" expert items. */
  missingTemplates: number;
}

function first(fields: PdmlField[], name: string): PdmlField | undefined {
  return fields.find((f) => f.name === name);
}

/** PI_ERROR in epan/proto.h; PDML prints expert severities as decimal numbers. */
const PI_ERROR = 0x00800000;

/**
 * Reads a capture with tshark's cflow (NetFlow/IPFIX) dissector: one entry per UDP packet that
 * carries cflow. `decodeAsPort` makes tshark dissect those UDP ports as cflow.
 */
export function cflowMessages(pcapPath: string, decodeAsPort?: number | number[]): CflowMessage[] {
  const ports = decodeAsPort === undefined ? [] : [decodeAsPort].flat();
  const args = ports.flatMap((p) => ['-d', `udp.port==${p},cflow`]);
  const out: CflowMessage[] = [];
  for (const p of tsharkPdml(pcapPath, args)) {
    const cflow = p.layers.find((l) => l.name === 'cflow');
    if (!cflow) continue;
    const layer = (n: string) => p.layers.find((l) => l.name === n);
    const frame = first(layer('frame')?.children ?? [], 'frame.number');
    const ip = layer('ip') ?? layer('ipv6');
    const udp = layer('udp');
    const all = p.layers.flatMap((l) => flatten(l));
    const sets: CflowSet[] = [];
    for (const c of cflow.children) {
      const m = /^Set \d+ \[id=(\d+)\]/.exec(c.show);
      if (!m || c.name !== '') continue;
      const setId = Number(m[1]);
      if (setId < 256) {
        sets.push({ setId, flows: [] });
        continue;
      }
      const flowNodes = c.children.filter((f) => f.name === '' && /^Flow \d+\b/.test(f.show));
      const noTemplate = flatten(c).some((f) => f.name === 'cflow.no_template_found');
      sets.push({ setId, flows: noTemplate ? null : flowNodes.map(flatten) });
    }
    out.push({
      frame: Number(frame?.show ?? 0),
      src: first(ip?.children ?? [], 'ip.src')?.show ?? first(ip?.children ?? [], 'ipv6.src')?.show ?? '',
      srcPort: Number(first(udp?.children ?? [], 'udp.srcport')?.show ?? 0),
      version: Number(first(cflow.children, 'cflow.version')?.show ?? 0),
      observationDomainId: Number(first(cflow.children, 'cflow.od_id')?.show ?? 0),
      sets,
      errors:
        all.filter((f) => f.name === '_ws.expert.severity' && Number(f.show) >= PI_ERROR).length +
        all.filter((f) => f.name === '_ws.malformed').length,
      missingTemplates: all.filter((f) => f.name === 'cflow.no_template_found').length,
    });
  }
  return out;
}

/** One field of a data record as ipfixDump prints it: `(pen/id) name : value`. */
export interface DumpField {
  pen: number;
  id: number;
  name: string;
  /** True for scope fields of options records (ipfixDump marks them `(S)`). */
  scope: boolean;
  value: string;
}

/** One data record of ipfixDump's output (top-level fields only; list contents are left out). */
export interface DumpRecord {
  templateId: number;
  observationDomainId: number;
  fields: DumpField[];
  /** ipfixDump's data type of each field (`uint32`, `octet`, `string`...), from the template it used. */
  types: string[];
}

/** One template record of ipfixDump's output. */
export interface DumpTemplate {
  templateId: number;
  scopeCount: number;
  fields: { pen: number; id: number; type: string; length: number; name: string }[];
}

/** What ipfixDump printed for a file. */
export interface IpfixDumpOutput {
  templates: DumpTemplate[];
  records: DumpRecord[];
  /** The closing "File Stats" line and per-template table. */
  stats: { messages: number; dataRecords: number; templateRecords: number; perTemplate: Map<number, number> };
  /** False when octetArrays are printed as lengths only (ipfixDump crashed with --hexdump). */
  hexdump: boolean;
  /** Warning lines ipfixDump wrote to stderr. */
  warnings: string[];
  /** Data sets ipfixDump skipped for want of a template (its "Missing external template" warnings). */
  missingTemplates: { observationDomainId: number; templateId: number }[];
}

/** Parses the text output of libfixbuf's ipfixDump (version 2.4), and its stderr when given. */
export function parseIpfixDump(text: string, stderr = ''): IpfixDumpOutput {
  const out: IpfixDumpOutput = {
    templates: [],
    records: [],
    stats: { messages: 0, dataRecords: 0, templateRecords: 0, perTemplate: new Map() },
    hexdump: true,
    warnings: [],
    missingTemplates: [],
  };
  let record: DumpRecord | null = null;
  let template: DumpTemplate | null = null;
  let inStats = false;
  let domain = 0;
  // Templates by domain and id, as ipfixDump's session holds them.
  const current = new Map<string, DumpTemplate>();
  const RE = {
    domain: /observation domain id: (\d+)/,
    stats: /^\*\*\* File Stats: (\d+) Messages, (\d+) Data Records, (\d+) Template Records/,
    perTemplate: /^\s+(\d+) \(0x[0-9a-f]+\)\|\s*(\d+)/,
    recordHeader: /^\tcount: +\d+ +tid: +(\d+)/,
    // ipfixDump prints enterprise numbers as signed 32-bit integers.
    recordField: /^\t\((?:(-?\d+)\/)?(\d+)\)\s+(\(S\)\s+)?(\S+) : ?(.*)$/,
    templateHeader: /^\ttid: +(\d+) \(0x[0-9a-f]+\) +field count: +\d+ +scope: +(\d+)/,
    templateField: /^\tent: +(-?\d+) +id: +(\d+) +type: (\S+) +len: +(\d+) +(?:\(S\) +)?(\S+)/,
  };
  for (const line of text.split('\n')) {
    const domainLine = RE.domain.exec(line);
    if (domainLine) {
      domain = Number(domainLine[1]);
      continue;
    }
    if (line.startsWith('--- data record')) {
      record = { templateId: -1, observationDomainId: domain, fields: [], types: [] };
      template = null;
      out.records.push(record);
      continue;
    }
    if (line.startsWith('--- template record') || line.startsWith('--- options template record')) {
      template = { templateId: -1, scopeCount: 0, fields: [] };
      record = null;
      out.templates.push(template);
      continue;
    }
    if (line.startsWith('--- ') || line.startsWith('*** Msg')) {
      record = null;
      template = null;
      continue;
    }
    const stats = RE.stats.exec(line);
    if (stats) {
      out.stats.messages = Number(stats[1]);
      out.stats.dataRecords = Number(stats[2]);
      out.stats.templateRecords = Number(stats[3]);
      inStats = true;
      record = null;
      template = null;
      continue;
    }
    const perTemplate = inStats ? RE.perTemplate.exec(line) : null;
    if (perTemplate) {
      out.stats.perTemplate.set(Number(perTemplate[1]), Number(perTemplate[2]));
      continue;
    }
    if (record) {
      const header = RE.recordHeader.exec(line);
      if (header) {
        record.templateId = Number(header[1]);
        record.types = current.get(`${domain}/${record.templateId}`)?.fields.map((f) => f.type) ?? [];
        continue;
      }
      const f = RE.recordField.exec(line);
      if (f) {
        record.fields.push({
          pen: Number(f[1] ?? 0) >>> 0,
          id: Number(f[2]),
          name: f[4]!,
          scope: !!f[3],
          value: f[5]!,
        });
      }
      continue;
    }
    if (template) {
      const header = RE.templateHeader.exec(line);
      if (header) {
        template.templateId = Number(header[1]);
        template.scopeCount = Number(header[2]);
        current.set(`${domain}/${template.templateId}`, template);
        continue;
      }
      const f = RE.templateField.exec(line);
      if (f) {
        template.fields.push({
          pen: Number(f[1]) >>> 0,
          id: Number(f[2]),
          type: f[3]!,
          length: Number(f[4]),
          name: f[5]!,
        });
      }
    }
  }
  for (const line of stderr.split('\n')) {
    if (!/warn/i.test(line)) continue;
    out.warnings.push(line.trim());
    const m = /Missing external template ([0-9a-f]+):([0-9a-f]+)/.exec(line);
    if (m)
      out.missingTemplates.push({
        observationDomainId: Number.parseInt(m[1]!, 16),
        templateId: Number.parseInt(m[2]!, 16),
      });
  }
  return out;
}

/**
 * Runs ipfixDump on an RFC 5655 file and parses its output. octetArrays are printed in full as
 * hex; libfixbuf 2.4.1 crashes (SIGSEGV) printing some of them, and then they are printed as
 * lengths only (`hexdump: false`).
 */
export function ipfixDump(path: string, args: string[] = []): IpfixDumpOutput {
  const r = spawnSync('ipfixDump', ['--in', path, '--hexdump=65535', ...args], {
    maxBuffer: 512 * 1024 * 1024,
    encoding: 'utf8',
  });
  if (r.error) throw r.error;
  if (r.status === 0) return parseIpfixDump(r.stdout, r.stderr);
  if (r.signal === null) throw new Error(`ipfixDump --in ${path} exited ${r.status}: ${r.stderr}`);
  const again = spawnSync('ipfixDump', ['--in', path, ...args], {
    maxBuffer: 512 * 1024 * 1024,
    encoding: 'utf8',
  });
  if (again.status !== 0) throw new Error(`ipfixDump --in ${path} exited ${again.status}: ${again.stderr}`);
  const out = parseIpfixDump(again.stdout, again.stderr);
  out.hexdump = false;
  return out;
}

/** Third-party TCP captures (../shared/fixtures) that make many conversations once merged. */
export const TCP_CAPTURES = [
  'tcp/zeek-tcprs/comp002.pcap',
  'tcp/tcpdump/mptcp-v0.pcap',
  'tcp/zeek/tcp-fast-open.pcap',
  'tcp/zeek/reassembly.pcap',
  'tcp/zeek/ssh-dups.pcap',
  'tcp/zeek/handshake-reorder.pcap',
  'tcp/zeek/missing-syn.pcap',
  'tcp/tcpdump/mptcp-aa-v1.pcap',
  'tcp/tcpdump/mptcp-fclose.pcap',
  'tcp/zeek/rst-inject-rae.pcap',
] as const;

/** mergecap: TCP_CAPTURES in time order as one pcap file `dir`/merged.pcap; returns its path. */
export function mergedTcpCapture(dir: string): string {
  const out = join(dir, 'merged.pcap');
  tool('mergecap', ['-F', 'pcap', '-w', out, ...TCP_CAPTURES.map((c) => join(FIXTURES, c))]);
  return out;
}
