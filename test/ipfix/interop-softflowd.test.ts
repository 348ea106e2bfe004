/**
 * softflowd (a third-party exporter) reads a TCP capture from shared/fixtures/tcp and exports
 * IPFIX over UDP to a socket this test opens on loopback. Our IpfixDecoder decodes what arrives;
 * tshark independently dissects the same datagrams (written to a pcap). Both must see the same
 * records with the same values, softflowd's own count of exported records must agree, and the
 * flows must be the capture's TCP conversations as tshark reports them.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { IpfixDecoder, type IpfixRecord, type IpfixValue } from '../../ipfix/index.js';
import { cflowMessages, type PdmlField, tool, writePcap } from '../helpers/pcap.js';
import { runSoftflowd } from '../helpers/softflowd.js';
import { FIXTURES, requireTools } from '../helpers/tools.js';

/** The capture's TCP packets per direction ("src:port>dst:port"), as tshark counts them. */
function captureDirections(capture: string): Map<string, { packets: number; octets: number }> {
  const out = tool('tshark', [
    '-r',
    capture,
    '-n',
    '-Y',
    'tcp',
    '-T',
    'fields',
    '-E',
    'occurrence=f',
    '-e',
    'ip.src',
    '-e',
    'tcp.srcport',
    '-e',
    'ip.dst',
    '-e',
    'tcp.dstport',
    '-e',
    'ip.len',
  ]);
  const dirs = new Map<string, { packets: number; octets: number }>();
  for (const line of out.trim().split('\n')) {
    const [src, sport, dst, dport, len] = line.split('\t');
    const k = `${src}:${sport}>${dst}:${dport}`;
    const d = dirs.get(k) ?? { packets: 0, octets: 0 };
    d.packets++;
    d.octets += Number(len);
    dirs.set(k, d);
  }
  return dirs;
}

/** The capture's TCP conversations from `tshark -z conv,tcp`, as sorted "a:port <-> b:port" pairs. */
function captureConversations(capture: string): string[] {
  const out = tool('tshark', ['-r', capture, '-n', '-q', '-z', 'conv,tcp']);
  const pairs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /^(\S+:\d+)\s+<->\s+(\S+:\d+)\s/.exec(line);
    if (m) pairs.push([m[1]!, m[2]!].sort().join(' <-> '));
  }
  return pairs.sort();
}

/** Our record fields checked against tshark: IPFIX element name -> cflow field. */
const CHECKED: [string, string][] = [
  ['sourceIPv4Address', 'cflow.srcaddr'],
  ['destinationIPv4Address', 'cflow.dstaddr'],
  ['sourceTransportPort', 'cflow.srcport'],
  ['destinationTransportPort', 'cflow.dstport'],
  ['protocolIdentifier', 'cflow.protocol'],
  ['octetDeltaCount', 'cflow.octets'],
  ['packetDeltaCount', 'cflow.packets'],
  ['ipVersion', 'cflow.ip_version'],
  ['interfaceName', 'cflow.if_name'],
];

function show(flow: PdmlField[], name: string): string[] {
  return flow.filter((f) => f.name === name).map((f) => f.show);
}

/** tshark shows sysUpTime fields as seconds with 9 decimals. */
function upTimeMs(text: string): number {
  const [s, frac] = text.split('.');
  return Number(s) * 1000 + Number((frac ?? '').slice(0, 3).padEnd(3, '0'));
}

const CAPTURES = ['tcp/tcpdump/mptcp-v0.pcap', 'tcp/zeek/tcp-fast-open.pcap'];

describe('softflowd exports IPFIX that we decode like tshark', () => {
  for (const name of CAPTURES) {
    it(`${name}: softflowd's records decode to the same values as tshark shows, one per direction of each TCP conversation`, async (t) => {
      if (!requireTools(t, 'softflowd', 'softflowctl', 'tshark')) return;
      const capture = join(FIXTURES, name);
      const dir = mkdtempSync(join(tmpdir(), 'kpiflow-softflowd-'));
      try {
        const run = await runSoftflowd(capture, dir);
        assert.equal(run.datagrams.length, run.exportedPackets, 'datagrams received vs softflowd');

        // Our decoder, one UDP session per exporter port.
        const dec = new IpfixDecoder();
        const records: { templateId: number; record: IpfixRecord }[] = [];
        for (const d of run.datagrams) {
          const res = dec.decode(`127.0.0.1|${d.port}`, d.payload, 'udp');
          assert.deepEqual(res.errors, []);
          for (const ds of res.dataSets)
            for (const record of ds.records) records.push({ templateId: ds.templateId, record });
        }
        for (const s of dec.sessions()) assert.deepEqual(dec.closeSession(s.key).errors, []);

        // tshark on the same datagrams.
        const pcap = join(dir, 'export.pcap');
        writePcap(
          pcap,
          run.datagrams.map((d) => ({ payload: d.payload, srcAddr: '127.0.0.1', srcPort: d.port })),
        );
        const messages = cflowMessages(pcap);
        assert.equal(messages.length, run.datagrams.length);
        assert.ok(
          messages.every((m) => m.version === 10 && m.errors === 0),
          'tshark finds no error',
        );
        const flows = messages.flatMap((m) =>
          m.sets.flatMap((s) =>
            s.setId >= 256 ? (s.flows ?? []).map((flow) => ({ id: s.setId, flow })) : [],
          ),
        );
        const flowRecords = records.filter((r) => 'sourceIPv4Address' in r.record);
        assert.equal(records.length, flows.length, 'records: ours vs tshark');
        assert.equal(flowRecords.length, run.exportedRecords, 'flow records: ours vs softflowd');
        assert.ok(flowRecords.length >= 2);

        let compared = 0;
        records.forEach((r, i) => {
          const f = flows[i]!;
          assert.equal(r.templateId, f.id, `record ${i}: template`);
          for (const [ours, theirs] of CHECKED) {
            if (!(ours in r.record)) continue;
            assert.deepEqual(show(f.flow, theirs), [String(r.record[ours])], `record ${i}: ${ours}`);
            compared++;
          }
          if ('flowStartSysUpTime' in r.record) {
            assert.deepEqual(
              show(f.flow, 'cflow.timestart').map(upTimeMs),
              [r.record['flowStartSysUpTime'] as number],
              `record ${i}: flowStartSysUpTime`,
            );
            assert.deepEqual(
              show(f.flow, 'cflow.timeend').map(upTimeMs),
              [r.record['flowEndSysUpTime'] as number],
              `record ${i}: flowEndSysUpTime`,
            );
          }
        });
        assert.ok(compared >= flowRecords.length * 7, `compared only ${compared} values`);

        // The flows are the capture's TCP conversations, one record per direction, with the
        // packets and IP octets tshark counts in the capture.
        const key = (r: IpfixRecord, a: string, b: string) =>
          `${r[`${a}IPv4Address`]}:${r[`${a}TransportPort`]}${b}`;
        const pair = (r: IpfixRecord) =>
          [key(r, 'source', ''), key(r, 'destination', '')].sort().join(' <-> ');
        assert.deepEqual(
          [...new Set(flowRecords.map((r) => pair(r.record)))].sort(),
          captureConversations(capture),
          'conversations vs tshark -z conv,tcp',
        );
        const directions = captureDirections(capture);
        const ours = new Map<string, { packets: IpfixValue; octets: IpfixValue }>(
          flowRecords.map((r) => [
            `${key(r.record, 'source', '>')}${key(r.record, 'destination', '')}`,
            { packets: r.record['packetDeltaCount']!, octets: r.record['octetDeltaCount']! },
          ]),
        );
        assert.deepEqual(
          [...ours].sort(),
          [...directions].sort(),
          'packets and octets per direction vs the capture',
        );
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
