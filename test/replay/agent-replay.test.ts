/**
 * End to end: the Agent (connection table, FSM, profile builder, exporter) fed by a pcap source,
 * exporting IPFIX to a file, read back with the codec. Profile times are the capture's own times
 * (tshark's frame.time_epoch), counters add up to what the capture shows, the life-cycle matches
 * how the connection ended, and KPIs a capture cannot know are left out of the template.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Agent } from '../../agent/index.js';
import { captureBootId, openPcapSource, replayClock } from '../../agent/pcap/index.js';
import { IpfixDecoder, type IpfixRecord, MessageFramer } from '../../ipfix/index.js';
import { tool } from '../helpers/pcap.js';
import { FIXTURES, requireTools } from '../helpers/tools.js';
import { conversation, LINK, pcapFile } from './capture-writer.js';

const dir = mkdtempSync(join(tmpdir(), 'kf-pcap-agent-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function readProfiles(file: string): IpfixRecord[] {
  const dec = new IpfixDecoder();
  const out: IpfixRecord[] = [];
  for (const m of new MessageFramer().push(readFileSync(file))) {
    const res = dec.decode('f', m.bytes, 'file');
    assert.deepEqual(res.errors, []);
    for (const d of res.dataSets)
      if (d.templateId === 47561 || d.templateId === 47564) out.push(...d.records);
  }
  return out;
}

async function runAgent(capture: string, localNet?: string): Promise<IpfixRecord[]> {
  const out = join(dir, `${Math.random().toString(36).slice(2)}.ipfix`);
  const source = openPcapSource(capture, localNet ? { localNet } : {});
  const agent = await Agent.start({
    source,
    export: { target: `file:${out}` },
    clock: replayClock,
    bootId: captureBootId(capture),
    tickMs: 0,
  });
  const end = await agent.done;
  assert.equal(end.reason, 'source-ended', String(end.error));
  return readProfiles(out);
}

const sum = (ps: IpfixRecord[], k: string) => ps.reduce((a, p) => a + Number(p[k] ?? 0), 0);

describe('the agent builds profiles from a pcap replay as from the live probes', () => {
  it('a synthetic connection: handshake and FIN profiles, capture times, bytes without SYN/FIN, client view', async () => {
    const file = join(dir, 'conv.pcap');
    writeFileSync(file, pcapFile(conversation({ t0: 1_700_000_000.25 }), { linkType: LINK.raw }));
    const ps = await runAgent(file);
    assert.deepEqual(
      ps.map((p) => [p['flowStartReason'], p['flowEndReason']]),
      [
        [1, 2],
        [2, 4],
      ],
    );
    // The SYN left at .250, the SYN-ACK came at .260; the server's FIN reached the client (TIME_WAIT) at .360.
    assert.equal(ps[0]!['flowStartMilliseconds'], 1_700_000_000_250);
    assert.equal(ps[0]!['flowEndMilliseconds'], 1_700_000_000_260);
    assert.equal(ps[0]!['timeToEstablishMilliseconds'], 10);
    assert.equal(ps[1]!['flowEndMilliseconds'], 1_700_000_000_360);
    assert.equal(sum(ps, 'transferredOctetTotalCount'), 300);
    assert.equal(sum(ps, 'receivedOctetTotalCount'), 50);
    assert.equal(sum(ps, 'retransmittedPacketTotalCount'), 2);
    assert.equal(sum(ps, 'droppedOctetTotalCount'), 200);
    assert.equal(ps[0]!['sourceTransportPort'], 40000);
    assert.equal(ps[0]!['flowId'], ps[1]!['flowId']);
    // A capture cannot know reord_seen: the KPI is left out, not sent as 0.
    assert.ok(!('reorderSeenCount' in ps[0]!));
  });

  it('the same connection seen from the server (--local-net): out-of-order arrival, its distance, a duplicate', async () => {
    const file = join(dir, 'conv-server.pcap');
    writeFileSync(file, pcapFile(conversation({ t0: 1_700_000_000.25 }), { linkType: LINK.raw }));
    const ps = await runAgent(file, '192.0.2.2/32');
    assert.equal(ps[0]!['sourceTransportPort'], 80);
    assert.equal(sum(ps, 'reorderingPacketCount'), 1);
    assert.equal(sum(ps, 'duplicatePacketTotalCount'), 1);
    assert.equal(sum(ps, 'duplicateOctetTotalCount'), 100);
    assert.equal(sum(ps, 'receivedOctetTotalCount'), 300);
    assert.equal(sum(ps, 'transferredOctetTotalCount'), 50);
    assert.equal(ps.at(-1)!['meanReorderingDistance'], 100);
    // Passive side: the handshake window runs from the SYN received to the ACK of the SYN-ACK.
    assert.equal(ps[0]!['timeToEstablishMilliseconds'], 20);
    assert.equal(ps.at(-1)!['flowEndReason'], 4);
  });

  it('comp008 (third-party, 993 s, resets): profile times are tshark frame times, counters add up', async (t) => {
    if (!requireTools(t, 'tshark')) return;
    const file = `${FIXTURES}tcp/zeek-tcprs/comp008.pcap`;
    const ps = await runAgent(file);
    const times = tool('tshark', [
      '-r',
      file,
      '-T',
      'fields',
      '-e',
      'frame.time_epoch',
      '-e',
      'tcp.flags.syn',
      '-e',
      'tcp.flags.ack',
    ])
      .trim()
      .split('\n')
      .map((l) => l.split('\t'));
    const synMs = Math.floor(Number(times.find((r) => r[1] === '1' && r[2] === '0')![0]) * 1000);
    assert.equal(ps[0]!['flowStartMilliseconds'], synMs);
    // Profiles tile the connection's life: each starts where the previous one ended.
    for (let i = 1; i < ps.length; i++)
      assert.equal(ps[i]!['flowStartMilliseconds'], ps[i - 1]!['flowEndMilliseconds']);
    // The active timeout (60 s) over a 993 s connection: periodic ESTABLISHED → ESTABLISHED profiles.
    assert.ok(ps.length >= 10, `${ps.length} profiles`);
    // tshark: the client retransmitted 6 segments (3 retransmission + 3 out_of_order flags).
    assert.equal(sum(ps, 'retransmittedPacketTotalCount'), 6);
    const ends = ps.map((p) => p['flowEndReason']);
    assert.equal(ends[0], 2);
    assert.equal(ends.at(-1), 5, 'ended by a reset: BROKEN');
  });
});
