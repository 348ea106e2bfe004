/**
 * A collector filled the real way for the API tests: IPFIX messages from our encoder, some of
 * them dropped to make sequence gaps, fed to Ingest over a SQLite store. It returns what it
 * sent, so tests compute expected answers from the inputs, independently of the store.
 */
import { pino } from 'pino';
import { Ingest } from '../../collector/ingest.js';
import { STATE_NAMES } from '../../collector/profile-schema.js';
import { SqliteStore } from '../../collector/store/sqlite-store.js';
import { IpfixEncoder, type IpfixRecord } from '../../ipfix/index.js';
import { profileFields } from '../helpers/profile-fields.js';

export const log = pino({ level: 'silent' });

/** The collector's clock in these tests: every receivedMilliseconds equals it. */
export const NOW = 1_800_000_000_000;
/** Start of the profiles' time range. */
export const T0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

export const EXPORTER_A = 'udp:192.0.2.10:4739'; // IPv6 template, microsecond RTT, extra fields
export const EXPORTER_B = 'udp:192.0.2.20:50000'; // IPv4 template, millisecond RTT, gaps
export const EXPORTER_C = 'udp:192.0.2.30:9995'; // plain flows

const FIELDS_A = profileFields(
  6,
  'ipVersion',
  'transferredOctetTotalCount',
  'receivedOctetTotalCount',
  'retransmittedPacketTotalCount',
  'meanLatencyMicroseconds',
  'stallCount',
  'timeToEstablishMilliseconds',
  'interfaceName',
  'octetTotalCount',
);
const FIELDS_B = profileFields(
  4,
  'ipVersion',
  'transferredOctetTotalCount',
  'receivedOctetTotalCount',
  'retransmittedPacketTotalCount',
  'meanLatencyMilliseconds',
  'stallCount',
  'timeToEstablishMilliseconds',
);
const FLOW_FIELDS = [
  'sourceIPv4Address',
  'destinationIPv4Address',
  'protocolIdentifier',
  'sourceTransportPort',
  'destinationTransportPort',
  'octetDeltaCount',
  'packetDeltaCount',
  'flowStartMilliseconds',
  'flowEndMilliseconds',
  'ingressInterface',
  'postOctetTotalCount',
];
export const FLOW_TEMPLATE = 300;

/** One profile as sent, and what the API should answer for it. */
export interface SentProfile {
  exporter: string;
  record: IpfixRecord;
  /** The API row expected (without id). */
  api: Record<string, unknown>;
  /** RTT in ms as the summary counts it, or null. */
  rtt: number | null;
  /** Unique key: flowId/flowStartMilliseconds. */
  key: string;
}

/** One flow as sent. */
export interface SentFlow {
  record: IpfixRecord;
  api: Record<string, unknown>;
  key: string;
}

/** What the fixture sent and stored. */
export interface Fixture {
  store: SqliteStore;
  ingest: Ingest;
  /** Profiles that arrived (messages not dropped). */
  profiles: SentProfile[];
  flows: SentFlow[];
  /** Records in the messages dropped from exporter B. */
  lostB: number;
  /** Messages each exporter's stream carried (before dropping). */
  messages: Record<string, number>;
  /** Records each exporter sent (before dropping). */
  sent: Record<string, number>;
  close(): Promise<void>;
}

/** Deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Key of an API row, to compare result sets. */
export const rowKey = (r: Record<string, unknown>) => `${r['flowId']}/${r['flowStartMilliseconds']}`;
export const flowKey = (r: Record<string, unknown>) =>
  `${r['sourceTransportPort']}/${r['flowStartMilliseconds']}`;

/** Messages of one template's records, each with the records it carries. */
function encodeAll(
  domain: number,
  maxMessageSize: number,
  template: number,
  fields: string[],
  records: IpfixRecord[],
): { bytes: Buffer; records: IpfixRecord[] }[] {
  const out: { bytes: Buffer; records: IpfixRecord[] }[] = [];
  let pending: IpfixRecord[] = [];
  // The encoder finishes a message before writing the record that does not fit: the records
  // added before that call are the finished message's.
  const enc = new IpfixEncoder({
    observationDomainId: domain,
    maxMessageSize,
    typeRecords: false,
    onMessage: (bytes) => {
      out.push({ bytes, records: pending });
      pending = [];
    },
  });
  enc.defineTemplate(template, fields);
  for (const r of records) {
    enc.add(template, r);
    pending.push(r);
  }
  enc.flush();
  return out;
}

/**
 * Builds the fixture: exporter A (IPv6 and IPv4-mapped addresses, 80 connections), exporter B
 * (IPv4, 60 connections, messages 2, 5 and 9 dropped), exporter C (120 plain flows, then a
 * NetFlow v9 header: one decode error).
 */
export async function buildFixture(options: { path?: string; seed?: number } = {}): Promise<Fixture> {
  const rand = prng(options.seed ?? 7);
  const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
  const store = new SqliteStore({ path: options.path ?? ':memory:' });
  const ingest = new Ingest({ store, log, batchSize: 50, clock: () => NOW });
  const peer = (key: string) => {
    const [, address, port] = key.split(':');
    return { address: address!, port: Number(port) };
  };

  const makeProfiles = (exporter: string, v6: boolean, connections: number, firstFlowId: number) => {
    const list: SentProfile[] = [];
    for (let c = 0; c < connections; c++) {
      const flowId = firstFlowId + c;
      const mapped = v6 && c % 3 === 0;
      const src = v6 ? (mapped ? '::ffff:10.1.0.1' : '2001:db8::1') : '10.2.0.1';
      const dstHost = int(1, 6);
      const dst = v6
        ? mapped
          ? `::ffff:10.9.0.${dstHost}`
          : `2001:db8:0:9::${dstHost}`
        : `10.9.0.${dstHost}`;
      const sport = 40000 + (flowId % 20000);
      const dport = [443, 80, 8443][int(0, 2)]!;
      const n = int(1, 4);
      // Starts on a coarse grid so that many profiles share a start time: paging must break ties.
      let t = T0 + int(0, 40) * 15_000;
      for (let k = 0; k < n; k++) {
        const last = k === n - 1;
        const start = k === 0 ? 1 : 3;
        const end = last ? [4, 5, 6][int(0, 2)]! : k === 0 ? 2 : 3;
        const dur = int(100, 9000);
        const record: IpfixRecord = {
          flowId,
          [v6 ? 'sourceIPv6Address' : 'sourceIPv4Address']: src,
          [v6 ? 'destinationIPv6Address' : 'destinationIPv4Address']: dst,
          sourceTransportPort: sport,
          destinationTransportPort: dport,
          flowStartMilliseconds: t,
          flowEndMilliseconds: t + dur,
          flowStartReason: start,
          flowEndReason: end,
          ipVersion: v6 && !mapped ? 6 : 4,
          transferredOctetTotalCount: int(0, 5_000_000),
          receivedOctetTotalCount: int(0, 50_000),
          retransmittedPacketTotalCount: int(0, 20),
          stallCount: int(0, 2),
          timeToEstablishMilliseconds: k === 0 ? int(1, 300) : 0,
        };
        let rtt: number;
        if (v6) {
          record['meanLatencyMicroseconds'] = int(200, 400_000);
          rtt = (record['meanLatencyMicroseconds'] as number) / 1000;
          record['interfaceName'] = `veth${c % 4}`;
          record['octetTotalCount'] = c % 10 === 0 ? 0xffffffffffffffffn : c * 1000;
        } else {
          record['meanLatencyMilliseconds'] = int(1, 400);
          rtt = record['meanLatencyMilliseconds'] as number;
        }
        const api: Record<string, unknown> = {
          exporter,
          observationDomainId: v6 ? 1 : 2,
          templateId: 47561,
          receivedMilliseconds: NOW,
          flowId,
          flowStartMilliseconds: t,
          flowEndMilliseconds: t + dur,
          startState: STATE_NAMES[start],
          endState: STATE_NAMES[end],
          ipVersion: record['ipVersion'],
          sourceAddress: src.replace('::ffff:', ''),
          destinationAddress: dst.replace('::ffff:', ''),
          sourceTransportPort: sport,
          destinationTransportPort: dport,
          transferredOctetTotalCount: record['transferredOctetTotalCount'],
          receivedOctetTotalCount: record['receivedOctetTotalCount'],
          retransmittedPacketTotalCount: record['retransmittedPacketTotalCount'],
          ...(v6
            ? { meanLatencyMicroseconds: record['meanLatencyMicroseconds'] }
            : { meanLatencyMilliseconds: record['meanLatencyMilliseconds'] }),
          stallCount: record['stallCount'],
          timeToEstablishMilliseconds: record['timeToEstablishMilliseconds'],
        };
        if (v6) {
          const big = record['octetTotalCount'];
          api['extra'] = {
            interfaceName: record['interfaceName'],
            octetTotalCount: typeof big === 'bigint' ? big.toString() : big,
          };
        }
        list.push({ exporter, record, api, rtt, key: `${flowId}/${t}` });
        t += dur + int(0, 2) * 15_000;
      }
    }
    return list;
  };

  // Exporter A: everything arrives.
  const sentA = makeProfiles(EXPORTER_A, true, 80, 1_000);
  const msgsA = encodeAll(
    1,
    1400,
    47561,
    FIELDS_A,
    sentA.map((p) => p.record),
  );
  for (const m of msgsA) ingest.message(EXPORTER_A, 'udp', m.bytes, peer(EXPORTER_A));

  // Exporter B: three messages lost on the way.
  const sentB = makeProfiles(EXPORTER_B, false, 60, 5_000);
  const msgsB = encodeAll(
    2,
    400,
    47561,
    FIELDS_B,
    sentB.map((p) => p.record),
  );
  const dropped = new Set([2, 5, 9]);
  if (msgsB.length < 12) throw new Error(`exporter B made ${msgsB.length} messages, the gaps need 12`);
  const lostRecords = new Set<IpfixRecord>();
  for (const [i, m] of msgsB.entries()) {
    if (dropped.has(i)) for (const r of m.records) lostRecords.add(r);
    else ingest.message(EXPORTER_B, 'udp', m.bytes, peer(EXPORTER_B));
  }

  // Exporter C: plain flows, then a message of another protocol version.
  const flows: SentFlow[] = [];
  for (let i = 0; i < 120; i++) {
    const start = T0 + int(0, 600) * 1000;
    const record: IpfixRecord = {
      sourceIPv4Address: `172.16.0.${1 + (i % 5)}`,
      destinationIPv4Address: `172.16.1.${1 + (i % 7)}`,
      protocolIdentifier: i % 4 === 0 ? 17 : 6,
      sourceTransportPort: 20_000 + i,
      destinationTransportPort: i % 4 === 0 ? 53 : 443,
      octetDeltaCount: int(40, 1_000_000),
      packetDeltaCount: int(1, 1000),
      flowStartMilliseconds: start,
      flowEndMilliseconds: start + int(0, 5000),
      ingressInterface: i % 3,
      // Past 2^53: only the lossless `fields` column holds it.
      postOctetTotalCount: i % 10 === 7 ? 0xffffffffffffffffn : i,
    };
    const iso = (ms: number) => new Date(ms).toISOString();
    const post = record['postOctetTotalCount'];
    flows.push({
      record,
      key: `${20_000 + i}/${start}`,
      api: {
        exporter: EXPORTER_C,
        observationDomainId: 0,
        templateId: FLOW_TEMPLATE,
        receivedMilliseconds: NOW,
        flowStartMilliseconds: start,
        flowEndMilliseconds: record['flowEndMilliseconds'],
        protocolIdentifier: record['protocolIdentifier'],
        ipVersion: 4,
        sourceAddress: record['sourceIPv4Address'],
        destinationAddress: record['destinationIPv4Address'],
        sourceTransportPort: record['sourceTransportPort'],
        destinationTransportPort: record['destinationTransportPort'],
        octetDeltaCount: record['octetDeltaCount'],
        packetDeltaCount: record['packetDeltaCount'],
        fields: {
          ...record,
          postOctetTotalCount: typeof post === 'bigint' ? post.toString() : post,
          flowStartMilliseconds: iso(start),
          flowEndMilliseconds: iso(record['flowEndMilliseconds'] as number),
        },
      },
    });
  }
  const msgsC = encodeAll(
    0,
    1400,
    FLOW_TEMPLATE,
    FLOW_FIELDS,
    flows.map((f) => f.record),
  );
  for (const m of msgsC) ingest.message(EXPORTER_C, 'udp', m.bytes, peer(EXPORTER_C));
  const v9 = Buffer.alloc(20);
  v9.writeUInt16BE(9, 0);
  ingest.message(EXPORTER_C, 'udp', v9, peer(EXPORTER_C));

  await ingest.flush();
  return {
    store,
    ingest,
    profiles: [...sentA, ...sentB.filter((p) => !lostRecords.has(p.record))],
    flows,
    lostB: lostRecords.size,
    sent: { [EXPORTER_A]: sentA.length, [EXPORTER_B]: sentB.length, [EXPORTER_C]: flows.length },
    messages: { [EXPORTER_A]: msgsA.length, [EXPORTER_B]: msgsB.length, [EXPORTER_C]: msgsC.length + 1 },
    async close() {
      await ingest.close();
      await store.close();
    },
  };
}

/** Nearest-rank percentile, as the API documents it. */
export function nearestRank(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length))) - 1]!;
}

/** Parses RFC 4180 CSV (quoted fields, doubled quotes, CRLF). */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\r' && text[i + 1] === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
      i++;
    } else field += ch;
  }
  if (field !== '' || row.length) throw new Error('CSV does not end with CRLF');
  return rows;
}

/** Parses Prometheus text into `name{labels}` -> value. */
export function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{.*\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    out.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return out;
}
