/**
 * IPFIX codec throughput on kpiflow's own traffic: Flowcorder TCP profile records (21 fields,
 * IANA and PEN 65534 elements). One JS thread; warm-up rounds, then timed rounds, medians:
 *
 *   encode       IpfixEncoder.add for every record, flush into 1400-byte messages
 *   decode       IpfixDecoder.decode of those messages into record objects (what the collector stores),
 *                all kept until the round ends; "decode (1)" drops them per message (streamed)
 *   Buffer.copy  the same message bytes copied into one buffer: the physical reference
 *
 * Usage: node dist/bench/ipfix-codec.js [--records N] [--rounds R] [--json]
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import { IpfixDecoder, IpfixEncoder, type IpfixRecord } from '../ipfix/index.js';

/** The profile template: what kpiflow's agent exports for each TCP connection. */
const FIELDS = [
  'flowId',
  'sourceIPv4Address',
  'destinationIPv4Address',
  'sourceTransportPort',
  'destinationTransportPort',
  'ipVersion',
  'flowStartMilliseconds',
  'flowEndMilliseconds',
  'flowStartReason',
  'flowEndReason',
  'transferredOctetTotalCount',
  'receivedOctetTotalCount',
  'retransmittedPacketTotalCount',
  'meanLatencyMilliseconds',
  'duplicatePacketTotalCount',
  'duplicateOctetTotalCount',
  'stallCount',
  'reorderingPacketCount',
  'reorderingOctetCount',
  'meanReorderingDistance',
  'timeToEstablishMilliseconds',
];

const TARGETS = { encode: 1_000_000, decode: 1_500_000 } as const;

function profile(i: number): IpfixRecord {
  return {
    flowId: 1_000_000 + i,
    sourceIPv4Address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    destinationIPv4Address: `192.0.2.${i % 250}`,
    sourceTransportPort: 32768 + (i % 28000),
    destinationTransportPort: i % 3 === 0 ? 80 : 443,
    ipVersion: 4,
    flowStartMilliseconds: 1_700_000_000_000 + i * 10,
    flowEndMilliseconds: 1_700_000_000_000 + i * 10 + (i % 5000),
    flowStartReason: 1 + (i % 7),
    flowEndReason: 1 + (i % 5),
    transferredOctetTotalCount: 1_000_000 + i * 1460,
    receivedOctetTotalCount: 50_000 + i * 7,
    retransmittedPacketTotalCount: i % 13,
    meanLatencyMilliseconds: 20 + (i % 200),
    duplicatePacketTotalCount: i % 3,
    duplicateOctetTotalCount: (i % 3) * 1460,
    stallCount: i % 2,
    reorderingPacketCount: i % 11,
    reorderingOctetCount: (i % 11) * 1460,
    meanReorderingDistance: i % 4,
    timeToEstablishMilliseconds: 1 + (i % 300),
  };
}

interface Round {
  ms: number;
  records: number;
  bytes: number;
}

/** A full collection between the encode and decode phases: decoding never pays for encoding's garbage. */
const collect: () => void = (() => {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) return g;
  try {
    v8.setFlagsFromString('--expose-gc');
    return vm.runInNewContext('gc') as () => void;
  } catch {
    return () => {};
  }
})();

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function encodeRound(records: IpfixRecord[]): { round: Round; messages: Buffer[] } {
  const t0 = performance.now();
  const enc = new IpfixEncoder({ maxMessageSize: 1400, observationDomainId: 1 });
  enc.defineTemplate(256, FIELDS);
  for (let i = 0; i < records.length; i++) enc.add(256, records[i]!);
  const messages = enc.flush();
  const ms = performance.now() - t0;
  let bytes = 0;
  for (const m of messages) bytes += m.length;
  return { round: { ms, records: records.length, bytes }, messages };
}

/** Decoded records of the last round: kept, as a collector keeps them until they are stored. */
let kept: IpfixRecord[][] = [];

/**
 * Decodes every message on a fresh decoder. `keep`: every record stays referenced until the
 * round ends (a collector storing a large batch); otherwise each message's records are dropped
 * once counted (records streamed straight to their sink).
 */
function decodeRound(messages: Buffer[], expected: number, keep: boolean): Round {
  kept = [];
  const t0 = performance.now();
  const dec = new IpfixDecoder();
  const store: IpfixRecord[][] = [];
  let records = 0;
  let bytes = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    const res = dec.decode('bench', m, 'tcp');
    bytes += m.length;
    for (const ds of res.dataSets) {
      if (ds.templateId !== 256) continue;
      if (keep) store.push(ds.records);
      records += ds.records.length;
    }
  }
  const ms = performance.now() - t0;
  kept = store;
  if (records !== expected) throw new Error(`decoded ${records} records, expected ${expected}`);
  return { ms, records, bytes };
}

function copyRound(messages: Buffer[], into: Buffer, records: number): Round {
  const t0 = performance.now();
  let o = 0;
  for (let i = 0; i < messages.length; i++) o += messages[i]!.copy(into, o);
  const ms = performance.now() - t0;
  return { ms, records, bytes: o };
}

function args(argv: string[]): { records: number; rounds: number; json: boolean } {
  const o = { records: 200_000, rounds: 9, json: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--records') o.records = Number(argv[++i]);
    else if (argv[i] === '--rounds') o.rounds = Number(argv[++i]);
    else if (argv[i] === '--json') o.json = true;
  }
  return o;
}

function main(): void {
  const opt = args(process.argv.slice(2));
  let records: IpfixRecord[] | null = Array.from({ length: opt.records }, (_, i) => profile(i));
  const n = records.length;
  const rounds = { encode: [] as Round[], decode: [] as Round[], stream: [] as Round[], copy: [] as Round[] };
  const warmup = 2;
  // Encoding first; then the input records are released, as a collector never holds them, and
  // the decode and copy rounds alternate over the messages of the last encode round.
  let messages: Buffer[] = [];
  for (let r = 0; r < warmup + opt.rounds; r++) {
    const e = encodeRound(records);
    messages = e.messages;
    if (r >= warmup) rounds.encode.push(e.round);
  }
  records = null;
  collect();
  const total = messages.reduce((t, m) => t + m.length, 0);
  const into = Buffer.alloc(total);
  for (let r = 0; r < warmup + opt.rounds; r++) {
    const d = decodeRound(messages, n, true);
    const s = decodeRound(messages, n, false);
    const c = copyRound(messages, into, n);
    if (r >= warmup) {
      rounds.decode.push(d);
      rounds.stream.push(s);
      rounds.copy.push(c);
    }
  }
  void kept;

  const perSec = (rs: Round[]) => rs.map((r) => (r.records * 1000) / r.ms);
  const rate = (rs: Round[]) => ({
    recordsPerSec: median(perSec(rs)),
    minRecordsPerSec: Math.min(...perSec(rs)),
    maxRecordsPerSec: Math.max(...perSec(rs)),
    mbPerSec: median(rs.map((r) => r.bytes / 1e6 / (r.ms / 1000))),
    ms: median(rs.map((r) => r.ms)),
  });
  const enc = rate(rounds.encode);
  const dec = rate(rounds.decode);
  const str = rate(rounds.stream);
  const cpy = rate(rounds.copy);
  const recordBytes = (total - messages.length * 20) / n;

  if (opt.json) {
    console.log(
      JSON.stringify({ encode: enc, decode: dec, decodeStreamed: str, copy: cpy, targets: TARGETS }),
    );
    return;
  }
  const M = (x: number) => (x / 1e6).toFixed(2);
  const widths = [13, 11, 13, 9, 10, 9, 16, 7];
  const row = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[0]!) : c.padStart(widths[i]!))).join(' ');
  const vs = (x: number) => `1/${(cpy.mbPerSec / x).toFixed(0)}`;
  const line = (name: string, r: ReturnType<typeof rate>, target?: number) =>
    row([
      name,
      `${M(r.recordsPerSec)} M`,
      `${M(r.minRecordsPerSec)}-${M(r.maxRecordsPerSec)}`,
      r.mbPerSec.toFixed(1),
      r.ms.toFixed(r.ms < 10 ? 2 : 1),
      r === cpy ? '1/1' : vs(r.mbPerSec),
      target ? `>= ${M(target)} M rec/s` : '-',
      target ? (r.recordsPerSec >= target ? 'ok' : 'MISSED') : '-',
    ]);
  console.log(
    `IPFIX codec benchmark: Flowcorder TCP profile, ${FIELDS.length} fields, ${recordBytes.toFixed(0)}-byte records, ` +
      `${messages.length} messages of <= 1400 bytes (${(total / 1e6).toFixed(1)} MB)`,
  );
  console.log(
    `node ${process.version}, one JS thread, ${opt.records} records per round, ${warmup} warm-up + ` +
      `${opt.rounds} timed rounds (medians)`,
  );
  console.log('');
  console.log(
    row(['operation', 'records/s', 'range M/s', 'MB/s', 'ms/round', 'vs copy', 'target', 'status']),
  );
  console.log(row(widths.map((w) => '-'.repeat(w))));
  console.log(line('encode', enc, TARGETS.encode));
  console.log(line('decode', dec, TARGETS.decode));
  console.log(line('decode, drop', str));
  console.log(line('Buffer.copy', cpy));
  console.log('');
  console.log(
    'encode: IpfixEncoder.add of every record, flush into messages. decode: IpfixDecoder.decode of those\n' +
      `messages, every record kept referenced until the round ends (a collector holding ${opt.records}\n` +
      "records for its store). decode, drop: each message's records dropped once counted (streamed to a\n" +
      'sink). vs copy: MB/s as a fraction of Buffer.copy of the same message bytes.',
  );
}

main();
