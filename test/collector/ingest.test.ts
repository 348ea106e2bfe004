/**
 * Ingest: profiles our encoder writes (Flowcorder template 47561, PEN 65534 elements) reach the
 * profile store with every field intact; other templates become flows, losslessly; exporter
 * accounting counts records, lost records and decode errors.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { Ingest } from '../../collector/ingest.js';
import { SqliteStore } from '../../collector/store/sqlite-store.js';
import { IpfixEncoder } from '../../ipfix/index.js';

const log = pino({ level: 'silent' });

const PROFILE_FIELDS = [
  'flowId',
  'sourceIPv6Address',
  'destinationIPv6Address',
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
  'meanLatencyMicroseconds',
  'latencyJitterMicroseconds',
  'duplicatePacketTotalCount',
  'duplicateOctetTotalCount',
  'stallCount',
  'reorderingPacketCount',
  'reorderingOctetCount',
  'meanReorderingDistance',
  'varReorderingDistance',
  'timeToEstablishMilliseconds',
  'synRetransmissionCount',
  'dsackCount',
  'interfaceName',
];

function profile(i: number) {
  const v4 = i % 2 === 0;
  return {
    flowId: 5000 + i,
    sourceIPv6Address: v4 ? '::ffff:192.0.2.1' : '2001:db8::1',
    destinationIPv6Address: v4 ? `::ffff:198.51.100.${i % 200}` : `2001:db8::${i.toString(16)}`,
    sourceTransportPort: 33000 + i,
    destinationTransportPort: 443,
    ipVersion: v4 ? 4 : 6,
    flowStartMilliseconds: 1_760_000_000_000 + i * 10,
    flowEndMilliseconds: 1_760_000_000_000 + i * 10 + 7,
    flowStartReason: 1,
    flowEndReason: 2,
    transferredOctetTotalCount: 2 ** 40 + i,
    receivedOctetTotalCount: i * 3,
    retransmittedPacketTotalCount: i % 9,
    meanLatencyMilliseconds: 12,
    meanLatencyMicroseconds: 12_345 + i,
    latencyJitterMicroseconds: 800 + i,
    duplicatePacketTotalCount: i % 2,
    duplicateOctetTotalCount: (i % 2) * 1448,
    stallCount: i % 4 === 0 ? 1 : 0,
    reorderingPacketCount: i % 3,
    reorderingOctetCount: (i % 3) * 1448,
    meanReorderingDistance: 2,
    varReorderingDistance: 1,
    timeToEstablishMilliseconds: 1000 + i,
    synRetransmissionCount: 1,
    dsackCount: 0,
    interfaceName: `veth${i}`,
  };
}

describe('Ingest', () => {
  it('stores every field of profiles encoded by our codec, through the decoder and the store', async () => {
    const store = new SqliteStore({ path: ':memory:' });
    const ingest = new Ingest({ store, log, batchSize: 1000 });
    const enc = new IpfixEncoder({ observationDomainId: 3 });
    enc.defineTemplate(47561, PROFILE_FIELDS);
    const sent = Array.from({ length: 250 }, (_, i) => profile(i));
    for (const p of sent) enc.add(47561, p);
    for (const m of enc.flush())
      ingest.message('udp:192.0.2.1:50000', 'udp', m, { address: '192.0.2.1', port: 50000 });
    await ingest.close();
    const rows = (await store.profiles({}, { limit: 1000, order: 'asc' })).items;
    assert.equal(rows.length, 250);
    for (const [i, p] of sent.entries()) {
      const r = rows[i]!;
      assert.equal(r.sourceAddress, p.sourceIPv6Address.replace('::ffff:', ''));
      assert.equal(r.destinationAddress, p.destinationIPv6Address.replace('::ffff:', ''));
      for (const [k, v] of Object.entries(p)) {
        if (k.endsWith('IPv6Address') || k === 'interfaceName') continue;
        assert.equal(r[k], v, `profile ${i} ${k}`);
      }
      assert.deepEqual(JSON.parse(r.extra as string), { interfaceName: p.interfaceName });
      assert.equal(r.templateId, 47561);
      assert.equal(r.observationDomainId, 3);
      assert.equal(r.exporter, 'udp:192.0.2.1:50000');
    }
    assert.equal(ingest.counters.profilesStored, 250);
    const [e] = await store.exporters();
    // The exporter also sent its RFC 5610 type records: data records of template 65000.
    assert.equal(e!.profiles, 250);
    assert.equal(e!.lostRecords, 0);
    assert.ok(e!.templateIds.includes(47561));
  });

  it('stores other templates as flows with all fields, counts lost records and decode errors per exporter', async () => {
    const store = new SqliteStore({ path: ':memory:' });
    const ingest = new Ingest({ store, log, batchSize: 1000 });
    const enc = new IpfixEncoder({ observationDomainId: 0, maxMessageSize: 200, typeRecords: false });
    enc.defineTemplate(256, [
      'sourceIPv4Address',
      'destinationIPv4Address',
      'protocolIdentifier',
      'sourceTransportPort',
      'destinationTransportPort',
      'octetDeltaCount',
      'packetDeltaCount',
      'flowStartSeconds',
      'flowEndSeconds',
      'tcpControlBits',
    ]);
    for (let i = 0; i < 60; i++) {
      enc.add(256, {
        sourceIPv4Address: '192.0.2.10',
        destinationIPv4Address: '203.0.113.3',
        protocolIdentifier: 6,
        sourceTransportPort: 2000 + i,
        destinationTransportPort: 22,
        octetDeltaCount: 100 * i,
        packetDeltaCount: i,
        flowStartSeconds: 1_760_000_000 + i,
        flowEndSeconds: 1_760_000_001 + i,
        tcpControlBits: 0x1b,
      });
    }
    const msgs = enc.flush();
    // Every message holds whole records: count what the skipped message carried, from its bytes.
    const recordsIn = (m: Buffer) => {
      let n = 0;
      for (let o = 16; o < m.length; o += m.readUInt16BE(o + 2))
        if (m.readUInt16BE(o) === 256) n += (m.readUInt16BE(o + 2) - 4) / 39;
      return n;
    };
    const skipped = msgs[3]!;
    for (const m of msgs)
      if (m !== skipped)
        ingest.message('udp:192.0.2.10:9995', 'udp', m, { address: '192.0.2.10', port: 9995 });
    ingest.message('udp:192.0.2.10:9995', 'udp', Buffer.from('000a0010', 'hex'), {
      address: '192.0.2.10',
      port: 9995,
    });
    await ingest.close();
    const flows = (await store.flows({}, { limit: 1000, order: 'asc' })).items;
    assert.equal(flows.length, 60 - recordsIn(skipped));
    const f = flows[0]!;
    assert.equal(f.flowStartMilliseconds, 1_760_000_000_000);
    assert.equal(f.octetDeltaCount, 0);
    assert.equal(f.protocolIdentifier, 6);
    assert.deepEqual(JSON.parse(f.fields).tcpControlBits, 0x1b);
    const [e] = await store.exporters();
    assert.equal(e!.lostRecords, recordsIn(skipped));
    assert.equal(e!.decodeErrors, 1);
    assert.equal(e!.flows, flows.length);
    assert.equal(ingest.counters.dropped.decode_error, 1);
  });
});
