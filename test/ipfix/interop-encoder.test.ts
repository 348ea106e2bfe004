/**
 * Messages our IpfixEncoder writes, read by third-party collectors: libfixbuf's ipfixDump
 * (learning our enterprise elements from the RFC 5610 type records we send), tshark's cflow
 * dissector, and nfdump's nfcapd receiving them over UDP. Expected values come from the input
 * records, never from our decoder; the round trip through IpfixDecoder is checked separately.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  defaultLength,
  type FieldDefinition,
  IpfixDecoder,
  IpfixEncoder,
  type IpfixRecord,
  KPIFLOW_PEN,
  kpiflowElements,
} from '../../ipfix/index.js';
import { cflowMessages, ipfixDump, type PdmlField, tool, udpPayloads, writePcap } from '../helpers/pcap.js';
import { requireTools } from '../helpers/tools.js';

const TCP_V4 = 47561;
const TCP_V6 = 47562;
const EXPORTER_OPTIONS = 47570;
const DOMAIN = 7;
const EXPORT_TIME_MS = 1_700_000_100_000;

/** A Flowcorder-style TCP profile: IANA identity and timing, kpiflow KPIs under PEN 65534. */
const TCP_FIELDS: FieldDefinition[] = [
  'flowId',
  'sourceIPv4Address',
  'destinationIPv4Address',
  'sourceTransportPort',
  'destinationTransportPort',
  'protocolIdentifier',
  'flowStartMilliseconds',
  'flowEndMilliseconds',
  'flowStartReason',
  'flowEndReason',
  'transferredOctetTotalCount',
  'receivedOctetTotalCount',
  'retransmittedPacketTotalCount',
  'meanLatencyMilliseconds',
  'stallCount',
  // Reduced-size encoding (RFC 7011 6.2): an unsigned64 in 4 bytes.
  { name: 'octetDeltaCount', length: 4 },
  'packetDeltaCount',
  'applicationName',
  'flowStartMicroseconds',
  'flowEndNanoseconds',
  'samplingProbability',
  'dataRecordsReliability',
  'sourceMacAddress',
];

const TCP_V6_FIELDS: FieldDefinition[] = TCP_FIELDS.map((f) =>
  f === 'sourceIPv4Address'
    ? 'sourceIPv6Address'
    : f === 'destinationIPv4Address'
      ? 'destinationIPv6Address'
      : f,
);

const OPTIONS_FIELDS: FieldDefinition[] = [
  'meteringProcessId',
  'systemInitTimeMilliseconds',
  'exportedMessageTotalCount',
  'exportedFlowRecordTotalCount',
];

function profile(i: number, v6: boolean): IpfixRecord {
  const start = 1_700_000_000_123 + i * 1000;
  const addresses: IpfixRecord = v6
    ? { sourceIPv6Address: `2001:db8::${i + 16}`, destinationIPv6Address: '2001:db8:1::20' }
    : { sourceIPv4Address: `192.0.2.${i + 10}`, destinationIPv4Address: '198.51.100.20' };
  return {
    // One profile past 2^53: 64-bit identifiers must survive every tool.
    flowId: i === 0 ? 9007199254740993n : i + 1,
    ...addresses,
    sourceTransportPort: 43210 + i,
    destinationTransportPort: 443,
    protocolIdentifier: 6,
    flowStartMilliseconds: start,
    flowEndMilliseconds: start + 5333,
    flowStartReason: 1 + (i % 7),
    flowEndReason: 3,
    transferredOctetTotalCount: 123456789012 + i,
    receivedOctetTotalCount: 987654 + i,
    retransmittedPacketTotalCount: 12 + i,
    meanLatencyMilliseconds: 35 + i,
    stallCount: i,
    octetDeltaCount: 4_000_000_000 - i,
    packetDeltaCount: 3000 + i,
    applicationName: i % 2 ? 'https' : 'https-é',
    flowStartMicroseconds: start * 1000 + 456,
    flowEndNanoseconds: BigInt(start + 5333) * 1000000n + 789123n,
    samplingProbability: 1 / (i + 2),
    dataRecordsReliability: i % 2 === 0,
    sourceMacAddress: `02:00:5e:10:00:${(i + 1).toString(16).padStart(2, '0')}`,
  };
}

interface Exported {
  messages: Buffer[];
  /** Data records in the order they were added. */
  records: { templateId: number; record: IpfixRecord }[];
}

/** Encodes 3 IPv4 profiles, 2 IPv6 profiles and an options record, in messages of at most 700 bytes. */
function exportProfiles(): Exported {
  const enc = new IpfixEncoder({
    observationDomainId: DOMAIN,
    maxMessageSize: 700,
    clock: () => EXPORT_TIME_MS,
  });
  enc.defineTemplate(TCP_V4, TCP_FIELDS);
  enc.defineTemplate(TCP_V6, TCP_V6_FIELDS);
  enc.defineTemplate(EXPORTER_OPTIONS, OPTIONS_FIELDS, 1);
  const records: Exported['records'] = [];
  const add = (templateId: number, record: IpfixRecord) => {
    enc.add(templateId, record);
    records.push({ templateId, record });
  };
  for (let i = 0; i < 3; i++) add(TCP_V4, profile(i, false));
  for (let i = 3; i < 5; i++) add(TCP_V6, profile(i, true));
  add(EXPORTER_OPTIONS, {
    meteringProcessId: 4242,
    systemInitTimeMilliseconds: 1_699_999_000_000,
    exportedMessageTotalCount: 3,
    exportedFlowRecordTotalCount: 5,
  });
  return { messages: enc.flush(), records };
}

/** The kpiflow enterprise elements our TCP template uses, by id. */
const ENTERPRISE = new Map(
  kpiflowElements()
    .filter((e) => TCP_FIELDS.includes(e.name))
    .map((e) => [e.id, e]),
);

function withTmp<T>(fn: (dir: string) => Promise<T> | T): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'kpiflow-encoder-'));
  return Promise.resolve()
    .then(() => fn(dir))
    .finally(() => rmSync(dir, { recursive: true, force: true }));
}

/** RFC 5952 text of an IPv6 address, whatever form it was printed in. */
const ipv6 = (text: string) => new URL(`http://[${text}]/`).hostname.slice(1, -1);

/** `YYYY-MM-DD HH:MM:SS.mmm` (UTC) of epoch milliseconds, as ipfixDump prints times. */
const utc = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace('Z', '');

/** tshark's `Nov 14, 2023 22:13:20.123456000 UTC` as nanoseconds since the epoch. */
function tsharkNs(text: string): bigint {
  const m = /^(\w{3}) +(\d+), (\d{4}) (\d\d:\d\d:\d\d)\.(\d{9}) UTC$/.exec(text);
  assert.ok(m, `tshark time ${text}`);
  return BigInt(Date.parse(`${m[1]} ${m[2]}, ${m[3]} ${m[4]} UTC`)) * 1000000n + BigInt(m[5]!);
}

/** Big-endian hex bytes as tshark prints them (colon-separated). */
function beHex(v: number | bigint, length: number): string {
  return BigInt(v)
    .toString(16)
    .padStart(length * 2, '0')
    .match(/../g)!
    .join(':');
}

describe('records our IpfixEncoder writes are read back by third-party collectors', () => {
  it('round trip: IpfixDecoder decodes our messages to exactly the input records, across several messages', () => {
    const { messages, records } = exportProfiles();
    assert.ok(messages.length > 1, 'the export spans several messages');
    const dec = new IpfixDecoder();
    const out: { templateId: number; record: IpfixRecord }[] = [];
    let sequence = 0;
    for (const m of messages) {
      const res = dec.decode('exporter', m, 'udp');
      assert.deepEqual(res.errors, []);
      assert.equal(res.header?.sequenceNumber, sequence);
      for (const ds of res.dataSets) {
        if (ds.templateId === 65000) continue; // RFC 5610 type records
        for (const record of ds.records) out.push({ templateId: ds.templateId, record });
      }
      sequence += res.dataSets.reduce((n, ds) => n + ds.records.length, 0);
    }
    assert.deepEqual(out, records);
    assert.equal(
      dec.sessions()[0]!.domains[0]!.stats.lostRecords,
      0,
      'sequence numbers count every data record, type records included',
    );
  });

  it('ipfixDump --rfc5610 prints the same values and names our enterprise elements from our RFC 5610 type records', async (t) => {
    if (!requireTools(t, 'ipfixDump')) return;
    const { messages, records } = exportProfiles();
    await withTmp((dir) => {
      const file = join(dir, 'export.ipfix');
      writeFileSync(file, Buffer.concat(messages));
      const dump = ipfixDump(file, ['--rfc5610']);
      // No warning at all: in particular no "IPFIX Message out of sequence".
      assert.deepEqual(dump.warnings, []);
      assert.equal(dump.stats.messages, messages.length);

      // Type records first: one per enterprise element of the templates, all kpiflow's.
      const typeRecords = dump.records.filter((r) => r.templateId === 65000);
      const value = (r: (typeof typeRecords)[number], name: string) =>
        r.fields.find((f) => f.name === name)?.value;
      assert.deepEqual(
        typeRecords.map((r) => [
          value(r, 'privateEnterpriseNumber'),
          value(r, 'informationElementId'),
          value(r, 'informationElementName'),
        ]),
        [...ENTERPRISE.values()].map((e) => [
          String(KPIFLOW_PEN),
          String(e.id),
          `(len: ${e.name.length}) ${e.name}`,
        ]),
      );

      const data = dump.records.filter((r) => r.templateId !== 65000);
      assert.deepEqual(
        data.map((r) => r.templateId),
        records.map((r) => r.templateId),
      );
      data.forEach((d, i) => {
        const input = records[i]!.record;
        const got = new Map(d.fields.map((f) => [f.name, f]));
        assert.equal(d.fields.length, Object.keys(input).length, `record ${i}: field count`);
        for (const [name, v] of Object.entries(input)) {
          const f = got.get(name);
          assert.ok(f, `record ${i}: ipfixDump names no field ${name} (has ${[...got.keys()]})`);
          const text = f.value;
          const where = `record ${i} ${name}`;
          if (f.pen === KPIFLOW_PEN) assert.equal(ENTERPRISE.get(f.id)?.name, name, `${where}: learned name`);
          switch (name) {
            case 'sourceIPv6Address':
            case 'destinationIPv6Address':
              assert.equal(ipv6(text), v, where);
              break;
            case 'flowStartMilliseconds':
            case 'flowEndMilliseconds':
            case 'systemInitTimeMilliseconds':
              assert.equal(text, utc(v as number), where);
              break;
            case 'flowStartMicroseconds': {
              // libfixbuf 2.4.1 prints micro- and nanosecond times with a zero fraction
              // (tshark shows the fraction; see the tshark test): check the second.
              const us = v as number;
              assert.equal(text, `${utc(Math.floor(us / 1e6) * 1000).slice(0, 19)}.000000`, where);
              break;
            }
            case 'flowEndNanoseconds': {
              const ns = v as bigint;
              assert.equal(text, `${utc(Number(ns / 1000000000n) * 1000).slice(0, 19)}.000000000`, where);
              break;
            }
            case 'applicationName':
              assert.equal(text, `(len: ${Buffer.byteLength(v as string)}) ${v}`, where);
              break;
            case 'samplingProbability':
              // ipfixDump prints 8 significant digits.
              assert.ok(Math.abs(Number(text) - (v as number)) < 1e-8, `${where}: ${text}`);
              break;
            case 'dataRecordsReliability':
              // RFC 7011 6.1.5: true is 1, false is 2.
              assert.equal(text, v ? '1' : '2', where);
              break;
            default:
              assert.equal(text, String(v), where);
          }
        }
      });
    });
  });

  it('without --rfc5610, ipfixDump does not know our enterprise elements: the names above came from our type records', async (t) => {
    if (!requireTools(t, 'ipfixDump')) return;
    const { messages } = exportProfiles();
    await withTmp((dir) => {
      const file = join(dir, 'export.ipfix');
      writeFileSync(file, Buffer.concat(messages));
      const names = new Set(
        ipfixDump(file)
          .records.flatMap((r) => r.fields)
          .filter((f) => f.pen === KPIFLOW_PEN)
          .map((f) => f.name),
      );
      assert.deepEqual([...names], ['_alienInformationElement']);
    });
  });

  it('tshark dissects our messages without malformed or error items and shows the same standard fields', async (t) => {
    if (!requireTools(t, 'tshark')) return;
    const { messages, records } = exportProfiles();
    await withTmp((dir) => {
      const pcap = join(dir, 'export.pcap');
      writePcap(pcap, messages);
      // Our pcap writer itself: both link types carry the exact bytes, with valid checksums.
      const ethernet = join(dir, 'export-ethernet.pcap');
      writePcap(ethernet, messages, { linkType: 'ethernet' });
      for (const p of [pcap, ethernet]) {
        assert.deepEqual(
          udpPayloads(p).map((d) => d.payload),
          messages,
          p,
        );
      }
      const bad = tool('tshark', [
        '-r',
        pcap,
        '-n',
        '-o',
        'ip.check_checksum:TRUE',
        '-o',
        'udp.check_checksum:TRUE',
        '-Y',
        '_ws.malformed || _ws.expert.severity>=error',
      ]);
      assert.equal(bad.trim(), '', 'no malformed or error packets');
      const msgs = cflowMessages(pcap);
      assert.equal(msgs.length, messages.length);
      for (const m of msgs) {
        assert.equal(m.version, 10);
        assert.equal(m.observationDomainId, DOMAIN);
        assert.equal(m.errors, 0);
        assert.equal(m.missingTemplates, 0);
      }
      const flows = msgs.flatMap((m) =>
        m.sets.flatMap((s) => (s.setId >= 256 ? (s.flows ?? []).map((flow) => ({ id: s.setId, flow })) : [])),
      );
      // tshark names the RFC 5610 records' fields; they must describe our elements.
      const typeFlows = flows.filter((f) => f.id === 65000).map((f) => f.flow);
      const shown = (flow: PdmlField[], name: string) =>
        flow.filter((f) => f.name === name).map((f) => f.show);
      assert.deepEqual(
        typeFlows.map((f) => shown(f, 'cflow.information_element_name')[0]),
        [...ENTERPRISE.values()].map((e) => e.name),
      );
      assert.deepEqual(
        typeFlows.map((f) => shown(f, 'cflow.information_element_data_type')[0]),
        [...ENTERPRISE.values()].map((e) => String(e.type)),
      );

      const data = flows.filter((f) => f.id !== 65000);
      assert.deepEqual(
        data.map((f) => f.id),
        records.map((r) => r.templateId),
      );
      data.forEach(({ flow }, i) => {
        const r = records[i]!.record;
        const where = `record ${i}`;
        if (records[i]!.templateId === EXPORTER_OPTIONS) {
          assert.deepEqual(shown(flow, 'cflow.mp_id'), [String(r['meteringProcessId'])], where);
          assert.deepEqual(shown(flow, 'cflow.packetsexp'), [String(r['exportedMessageTotalCount'])], where);
          assert.deepEqual(shown(flow, 'cflow.flowsexp'), [String(r['exportedFlowRecordTotalCount'])], where);
          assert.deepEqual(
            shown(flow, 'cflow.sys_init_time').map(tsharkNs),
            [BigInt(r['systemInitTimeMilliseconds'] as number) * 1000000n],
            where,
          );
          return;
        }
        const v6 = 'sourceIPv6Address' in r;
        assert.deepEqual(shown(flow, 'cflow.flow_id'), [String(r['flowId'])], `${where} flowId`);
        assert.deepEqual(
          shown(flow, v6 ? 'cflow.srcaddrv6' : 'cflow.srcaddr'),
          [r[v6 ? 'sourceIPv6Address' : 'sourceIPv4Address']],
          where,
        );
        assert.deepEqual(
          shown(flow, v6 ? 'cflow.dstaddrv6' : 'cflow.dstaddr'),
          [r[v6 ? 'destinationIPv6Address' : 'destinationIPv4Address']],
          where,
        );
        assert.deepEqual(shown(flow, 'cflow.srcport'), [String(r['sourceTransportPort'])], where);
        assert.deepEqual(shown(flow, 'cflow.dstport'), [String(r['destinationTransportPort'])], where);
        assert.deepEqual(shown(flow, 'cflow.protocol'), [String(r['protocolIdentifier'])], where);
        assert.deepEqual(shown(flow, 'cflow.octets'), [String(r['octetDeltaCount'])], where);
        assert.deepEqual(shown(flow, 'cflow.packets'), [String(r['packetDeltaCount'])], where);
        assert.deepEqual(shown(flow, 'cflow.flow_end_reason'), [String(r['flowEndReason'])], where);
        assert.deepEqual(shown(flow, 'cflow.appl_name'), [r['applicationName']], where);
        assert.deepEqual(shown(flow, 'cflow.srcmac'), [r['sourceMacAddress']], where);
        // tshark prints 15 significant digits; the bytes must be the float64 itself.
        const float = Buffer.alloc(8);
        float.writeDoubleBE(r['samplingProbability'] as number);
        assert.deepEqual(
          flow.filter((f) => f.name === 'cflow.sampling_probability').map((f) => f.value),
          [float.toString('hex')],
          where,
        );
        // tshark 4.0 shows any non-zero boolean as true; the byte itself must be RFC 7011's 1 or 2.
        assert.deepEqual(
          flow.filter((f) => f.name === 'cflow.data_records_reliability').map((f) => f.value),
          [r['dataRecordsReliability'] ? '01' : '02'],
          where,
        );
        // Start: milliseconds then microseconds; end: milliseconds then nanoseconds. tshark
        // converts NTP fractions through a double, so allow it a few nanoseconds.
        const near = (got: bigint[], want: bigint[]) =>
          got.length === want.length &&
          got.every((g, k) => (g > want[k]! ? g - want[k]! : want[k]! - g) <= 5n);
        const starts = shown(flow, 'cflow.abstimestart').map(tsharkNs);
        const ends = shown(flow, 'cflow.abstimeend').map(tsharkNs);
        const wantStarts = [
          BigInt(r['flowStartMilliseconds'] as number) * 1000000n,
          BigInt(r['flowStartMicroseconds'] as number) * 1000n,
        ];
        const wantEnds = [
          BigInt(r['flowEndMilliseconds'] as number) * 1000000n,
          r['flowEndNanoseconds'] as bigint,
        ];
        assert.ok(near(starts, wantStarts), `${where}: start times ${starts} vs ${wantStarts}`);
        assert.ok(near(ends, wantEnds), `${where}: end times ${ends} vs ${wantEnds}`);
        // Enterprise fields tshark cannot name: their bytes, in template order.
        assert.deepEqual(
          flow.filter((f) => f.name === 'cflow.enterprise_private_entry').map((f) => f.show),
          [...ENTERPRISE.values()].map((e) => beHex(r[e.name] as number, defaultLength(e.type))),
          `${where}: enterprise fields`,
        );
      });
    });
  });

  it('nfcapd collects our messages over UDP and nfdump shows the same addresses, ports, times, packets and bytes', async (t) => {
    if (!requireTools(t, 'nfcapd', 'nfdump')) return;
    const { messages, records } = exportProfiles();
    await withTmp(async (dir) => {
      const port = await freeUdpPort();
      const nfcapd = spawn('nfcapd', ['-w', dir, '-p', String(port), '-b', '127.0.0.1', '-v'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let log = '';
      nfcapd.stdout!.on('data', (d) => {
        log += d;
      });
      nfcapd.stderr!.on('data', (d) => {
        log += d;
      });
      try {
        await waitFor(
          () => /Startup nfcapd/.test(log),
          5000,
          () => `nfcapd did not start: ${log}`,
        );
        await sendUdp(messages, port);
        await waitFor(
          () => /New ipfix exporter/.test(log),
          5000,
          () => `nfcapd saw no IPFIX: ${log}`,
        );
        // nfcapd reads its socket in a tight loop: the rest of the datagrams follow at once.
        await new Promise((r) => setTimeout(r, 200));
        await stop(nfcapd);
      } finally {
        if (nfcapd.exitCode === null && nfcapd.signalCode === null) nfcapd.kill('SIGKILL');
      }
      const flows = records.filter((r) => r.templateId !== EXPORTER_OPTIONS).map((r) => r.record);
      const summary =
        /Flows: (\d+), Packets: (\d+), Bytes: (\d+), Sequence Errors: (\d+), Bad Packets: (\d+)/.exec(log);
      assert.ok(summary, `nfcapd statistics: ${log}`);
      assert.deepEqual(summary.slice(1).map(Number), [
        flows.length,
        flows.reduce((n, r) => n + (r['packetDeltaCount'] as number), 0),
        flows.reduce((n, r) => n + (r['octetDeltaCount'] as number), 0),
        0,
        0,
      ]);
      const files = readdirSync(dir).filter((f) => /^nfcapd\.\d{12}$/.test(f));
      assert.equal(files.length, 1, `nfcapd files: ${readdirSync(dir)}`);
      const got = JSON.parse(tool('nfdump', ['-r', join(dir, files[0]!), '-o', 'json'])) as Record<
        string,
        unknown
      >[];
      assert.equal(got.length, flows.length);
      got.forEach((g, i) => {
        const r = flows[i]!;
        const v6 = 'sourceIPv6Address' in r;
        assert.deepEqual(
          {
            src: g[v6 ? 'src6_addr' : 'src4_addr'],
            dst: g[v6 ? 'dst6_addr' : 'dst4_addr'],
            srcPort: g['src_port'],
            dstPort: g['dst_port'],
            proto: g['proto'],
            packets: g['in_packets'],
            bytes: g['in_bytes'],
            first: g['first'],
            last: g['last'],
            mac: g['in_src_mac'],
          },
          {
            src: r[v6 ? 'sourceIPv6Address' : 'sourceIPv4Address'],
            dst: r[v6 ? 'destinationIPv6Address' : 'destinationIPv4Address'],
            srcPort: r['sourceTransportPort'],
            dstPort: r['destinationTransportPort'],
            proto: r['protocolIdentifier'],
            packets: r['packetDeltaCount'],
            bytes: r['octetDeltaCount'],
            first: new Date(r['flowStartMilliseconds'] as number).toISOString().slice(0, 23),
            last: new Date(r['flowEndMilliseconds'] as number).toISOString().slice(0, 23),
            mac: r['sourceMacAddress'],
          },
          `flow ${i}`,
        );
      });
    });
  });
});

/** A UDP port free on loopback right now. */
async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  const port = s.address().port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

async function sendUdp(messages: Buffer[], port: number): Promise<void> {
  const s = dgram.createSocket('udp4');
  try {
    for (const m of messages) {
      await new Promise<void>((resolve, reject) =>
        s.send(m, port, '127.0.0.1', (err) => (err ? reject(err) : resolve())),
      );
    }
  } finally {
    s.close();
  }
}

async function waitFor(cond: () => boolean, ms: number, why: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(why());
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** SIGTERM, which makes nfcapd flush and close its file, then wait for the exit. */
async function stop(p: ChildProcess): Promise<void> {
  const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
  p.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), 5000);
  });
  try {
    assert.notEqual(await Promise.race([exited, timeout]), 'timeout', 'nfcapd did not exit on SIGTERM');
  } finally {
    clearTimeout(timer);
  }
}
