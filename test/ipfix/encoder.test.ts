/**
 * The encoder: message size bound, sequence numbers, template announcement and refresh,
 * RFC 5610 announcements, withdrawal, and value errors that leave the message intact.
 * Header fields are read straight from the bytes (RFC 7011 3.1 layout), not through our decoder.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IpfixDecoder, IpfixEncoder, IpfixError } from '../../ipfix/index.js';

/** Set ids of a message, walked by hand. */
function setIds(msg: Buffer): number[] {
  const ids: number[] = [];
  for (let o = 16; o < msg.length; o += msg.readUInt16BE(o + 2)) ids.push(msg.readUInt16BE(o));
  return ids;
}

const PROFILE = [
  'sourceIPv4Address',
  'destinationIPv4Address',
  'sourceTransportPort',
  'destinationTransportPort',
  'flowStartMilliseconds',
  'transferredOctetTotalCount',
  'stallCount',
];

function profile(i: number) {
  return {
    sourceIPv4Address: '192.0.2.1',
    destinationIPv4Address: '198.51.100.2',
    sourceTransportPort: 1024 + i,
    destinationTransportPort: 443,
    flowStartMilliseconds: 1_700_000_000_000 + i,
    transferredOctetTotalCount: i * 1000,
    stallCount: i % 3,
  };
}

describe('IpfixEncoder', () => {
  it('keeps every message within the maximum size and numbers them by records sent before', () => {
    const enc = new IpfixEncoder({ maxMessageSize: 512, observationDomainId: 42, typeRecords: false });
    enc.defineTemplate(300, PROFILE);
    for (let i = 0; i < 1000; i++) enc.add(300, profile(i));
    const msgs = enc.flush();
    assert.ok(msgs.length > 10);
    let before = 0;
    for (const m of msgs) {
      assert.ok(m.length <= 512, `message of ${m.length} bytes`);
      assert.equal(m.readUInt16BE(0), 10);
      assert.equal(m.readUInt16BE(2), m.length);
      assert.equal(m.readUInt32BE(8), before, 'sequence number counts data records of earlier messages');
      assert.equal(m.readUInt32BE(12), 42);
      let records = 0;
      for (let o = 16; o < m.length; o += m.readUInt16BE(o + 2)) {
        if (m.readUInt16BE(o) === 300) records += (m.readUInt16BE(o + 2) - 4) / 30;
      }
      before += records;
    }
    assert.equal(before, 1000);
    // Template first, once.
    assert.deepEqual(setIds(msgs[0]!).slice(0, 2), [2, 300]);
    assert.ok(msgs.slice(1).every((m) => !setIds(m).includes(2)));
  });

  it('announces enterprise elements with RFC 5610 type records before the template that uses them', () => {
    const enc = new IpfixEncoder();
    enc.defineTemplate(300, PROFILE);
    enc.add(300, profile(1));
    const [m] = enc.flush();
    assert.deepEqual(setIds(m!), [3, 65000, 2, 300]);
    const dec = new IpfixDecoder();
    const res = dec.decode('x', m!, 'udp');
    const typeRecords = res.dataSets.find((d) => d.templateId === 65000)!.records;
    assert.deepEqual(
      typeRecords.map((r) => [
        r['privateEnterpriseNumber'],
        r['informationElementId'],
        r['informationElementName'],
      ]),
      [
        [65534, 2, 'transferredOctetTotalCount'],
        [65534, 8, 'stallCount'],
      ],
    );
  });

  it('resends templates and type records when the refresh interval has passed', () => {
    let now = 0;
    const enc = new IpfixEncoder({ templateRefreshMs: 60_000, clock: () => now });
    enc.defineTemplate(300, PROFILE);
    enc.add(300, profile(1));
    enc.flush();
    now = 30_000;
    enc.add(300, profile(2));
    assert.deepEqual(setIds(enc.flush()[0]!), [300]);
    now = 61_000;
    enc.add(300, profile(3));
    assert.deepEqual(setIds(enc.flush()[0]!), [3, 65000, 2, 300]);
  });

  it('writes export time from its clock in seconds', () => {
    const enc = new IpfixEncoder({ clock: () => 1_700_000_123_456 });
    enc.defineTemplate(300, PROFILE);
    enc.add(300, profile(1));
    assert.equal(enc.flush()[0]!.readUInt32BE(4), 1_700_000_123);
  });

  it('rejects a value that does not fit and leaves the message decodable', () => {
    const enc = new IpfixEncoder({ typeRecords: false });
    enc.defineTemplate(300, PROFILE);
    enc.add(300, profile(1));
    assert.throws(
      () => enc.add(300, { ...profile(2), sourceTransportPort: 70000 }),
      (e: unknown) => e instanceof IpfixError && e.code === 'IPFIX_ERR_VALUE',
    );
    assert.throws(
      () => enc.add(300, { ...profile(2), sourceIPv4Address: '300.1.1.1' }),
      (e: unknown) => e instanceof IpfixError && e.code === 'IPFIX_ERR_VALUE',
    );
    enc.add(300, profile(3));
    const msgs = enc.flush();
    const res = new IpfixDecoder().decode('v', msgs[0]!, 'udp');
    assert.deepEqual(res.errors, []);
    assert.deepEqual(
      res.dataSets[0]!.records.map((r) => r['sourceTransportPort']),
      [1025, 1027],
    );
    assert.equal(msgs[0]!.readUInt32BE(8), 0);
  });

  it('takes addresses as wire bytes as well as text, and refuses bytes of the wrong length', () => {
    const enc = new IpfixEncoder({ typeRecords: false });
    enc.defineTemplate(301, ['sourceIPv6Address', 'destinationIPv6Address', 'sourceIPv4Address']);
    const mapped = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]);
    enc.add(301, {
      sourceIPv6Address: mapped,
      destinationIPv6Address: '2001:db8::2',
      sourceIPv4Address: new Uint8Array([198, 51, 100, 7]),
    });
    assert.throws(
      () => enc.add(301, { sourceIPv6Address: new Uint8Array(4) }),
      (e: unknown) => e instanceof IpfixError && e.code === 'IPFIX_ERR_VALUE',
    );
    const res = new IpfixDecoder().decode('b', enc.flush()[0]!, 'udp');
    assert.deepEqual(res.errors, []);
    assert.deepEqual(res.dataSets[0]!.records, [
      {
        sourceIPv6Address: '::ffff:192.0.2.1',
        destinationIPv6Address: '2001:db8::2',
        sourceIPv4Address: '198.51.100.7',
      },
    ]);
  });

  it('refuses unknown element names, bad lengths, reserved ids and oversized records with clear errors', () => {
    const enc = new IpfixEncoder({ maxMessageSize: 128 });
    const code = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as IpfixError).code;
      }
      return 'no error';
    };
    assert.equal(
      code(() => enc.defineTemplate(300, ['noSuchElement'])),
      'IPFIX_ERR_UNKNOWN_ELEMENT',
    );
    assert.equal(
      code(() => enc.defineTemplate(300, [{ name: 'sourceIPv4Address', length: 3 }])),
      'IPFIX_ERR_BAD_TEMPLATE_DEFINITION',
    );
    assert.equal(
      code(() => enc.defineTemplate(255, ['sourceIPv4Address'])),
      'IPFIX_ERR_BAD_TEMPLATE_DEFINITION',
    );
    assert.equal(
      code(() => enc.add(301, {})),
      'IPFIX_ERR_BAD_TEMPLATE_DEFINITION',
    );
    enc.defineTemplate(301, ['interfaceName']);
    assert.equal(
      code(() => enc.add(301, { interfaceName: 'x'.repeat(200) })),
      'IPFIX_ERR_RECORD_TOO_LARGE',
    );
  });

  it('withdraws a template on the wire', () => {
    const enc = new IpfixEncoder({ typeRecords: false });
    enc.defineTemplate(300, PROFILE);
    enc.add(300, profile(1));
    enc.withdrawTemplate(300);
    const [m] = enc.flush();
    const dec = new IpfixDecoder();
    const res = dec.decode('w', m!, 'tcp');
    assert.deepEqual(
      res.templates.map((t) => t.kind),
      ['template', 'withdrawal'],
    );
    assert.deepEqual(dec.sessions()[0]!.domains[0]!.templateIds, []);
  });

  it('encodes reduced-size fields and fills missing values with zeros', () => {
    const enc = new IpfixEncoder({ typeRecords: false });
    enc.defineTemplate(310, [{ name: 'octetDeltaCount', length: 4 }, 'protocolIdentifier', 'interfaceName']);
    enc.add(310, { octetDeltaCount: 123456 });
    const [m] = enc.flush();
    // Template: 4 + 3 * 4 = 16 bytes in a 20-byte set; data set: 4 + 4 + 1 + 1.
    assert.equal(m!.length, 16 + 20 + 10);
    assert.equal(m!.readUInt16BE(16 + 20 + 4 - 4 + 2), 10);
    assert.equal(m!.readUInt32BE(16 + 20 + 4), 123456);
    const res = new IpfixDecoder().decode('r', m!, 'udp');
    assert.deepEqual(res.dataSets[0]!.records, [
      { octetDeltaCount: 123456, protocolIdentifier: 0, interfaceName: '' },
    ]);
  });
});
