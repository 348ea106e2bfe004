/**
 * The decoder state machine: template lifetime, data before templates, withdrawal, sequence
 * numbers, caps, RFC 5610 learning and malformed input. Messages are built by hand.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IpfixDecoder } from '../../ipfix/index.js';
import { hex, message, set } from '../helpers/bytes.js';

/** Template 256: sourceIPv4Address, packetDeltaCount (4 bytes). */
const TEMPLATE_256 = set(2, hex('0100 0002 | 0008 0004 | 0002 0004'));
function data256(...records: [string, number][]): Buffer {
  const body = Buffer.alloc(records.length * 8);
  records.forEach(([ip, n], i) => {
    ip.split('.').forEach((x, j) => {
      body.writeUInt8(Number(x), i * 8 + j);
    });
    body.writeUInt32BE(n, i * 8 + 4);
  });
  return set(256, body);
}

function clock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

describe('IpfixDecoder templates', () => {
  it('expires UDP templates after their lifetime, holds later data, and drops it after the pending timeout', () => {
    const c = clock();
    const dec = new IpfixDecoder({ clock: c.now, templateLifetimeMs: 10_000, pendingTimeoutMs: 5_000 });
    let res = dec.decode('exp', message(Buffer.concat([TEMPLATE_256, data256(['192.0.2.1', 1])])), 'udp');
    assert.equal(res.dataSets[0]!.records.length, 1);
    c.advance(10_001);
    res = dec.decode('exp', message(data256(['192.0.2.2', 2]), { sequence: 1 }), 'udp');
    assert.equal(res.dataSets.length, 0, 'template expired: data must wait');
    assert.equal(dec.stats.templatesExpired, 1);
    assert.equal(dec.sessions()[0]!.domains[0]!.stats.pendingSets, 1);
    c.advance(5_001);
    const ex = dec.expire();
    assert.equal(ex.dropped.length, 1);
    assert.deepEqual(
      ex.errors.map((e) => e.code),
      ['IPFIX_ERR_NO_TEMPLATE'],
    );
    assert.equal(dec.stats.errors.IPFIX_ERR_NO_TEMPLATE, 1);
    assert.equal(dec.stats.droppedSets, 1);
  });

  it('never expires templates of stream sessions', () => {
    const c = clock();
    const dec = new IpfixDecoder({ clock: c.now, templateLifetimeMs: 1_000 });
    dec.decode('tcp', message(TEMPLATE_256), 'tcp');
    c.advance(60_000);
    const res = dec.decode('tcp', message(data256(['192.0.2.3', 3])), 'tcp');
    assert.equal(res.dataSets[0]!.records[0]!['sourceIPv4Address'], '192.0.2.3');
  });

  it('decodes data that arrived before its template once the template comes, in order', () => {
    const dec = new IpfixDecoder();
    let res = dec.decode('late', message(data256(['192.0.2.4', 4], ['192.0.2.5', 5])), 'udp');
    assert.equal(res.dataSets.length, 0);
    res = dec.decode('late', message(data256(['192.0.2.6', 6])), 'udp');
    assert.equal(res.dataSets.length, 0);
    res = dec.decode('late', message(TEMPLATE_256), 'udp');
    assert.deepEqual(
      res.dataSets.map((d) => [d.delayed, d.records.map((r) => r['packetDeltaCount'])]),
      [
        [true, [4, 5]],
        [true, [6]],
      ],
    );
    assert.equal(dec.stats.delayedSets, 2);
  });

  it('decodes a data set that precedes its template within the same message', () => {
    const dec = new IpfixDecoder();
    const res = dec.decode('same', message(Buffer.concat([data256(['192.0.2.7', 7]), TEMPLATE_256])), 'udp');
    assert.equal(res.dataSets.length, 1);
    assert.equal(res.dataSets[0]!.delayed, false);
    assert.deepEqual(res.errors, []);
  });

  it('drops the oldest waiting sets past the pending limit and counts them', () => {
    const dec = new IpfixDecoder({ maxPendingSets: 2 });
    const res = dec.decode(
      'limit',
      message(
        Buffer.concat([data256(['192.0.2.1', 1]), data256(['192.0.2.2', 2]), data256(['192.0.2.3', 3])]),
      ),
      'udp',
    );
    assert.equal(res.dropped.length, 1);
    assert.equal(res.errors[0]!.code, 'IPFIX_ERR_NO_TEMPLATE');
    const late = dec.decode('limit', message(TEMPLATE_256), 'udp');
    assert.deepEqual(
      late.dataSets.map((d) => d.records[0]!['packetDeltaCount']),
      [2, 3],
    );
  });

  it('withdraws one template, then all templates of a domain', () => {
    const dec = new IpfixDecoder();
    const t257 = set(2, hex('0101 0001 | 0008 0004'));
    dec.decode('wd', message(Buffer.concat([TEMPLATE_256, t257])), 'tcp');
    assert.deepEqual(dec.sessions()[0]!.domains[0]!.templateIds.sort(), [256, 257]);
    dec.decode('wd', message(set(2, hex('0100 0000'))), 'tcp');
    assert.deepEqual(dec.sessions()[0]!.domains[0]!.templateIds, [257]);
    const res = dec.decode('wd', message(data256(['192.0.2.1', 1])), 'tcp');
    assert.equal(res.dataSets.length, 0, 'withdrawn template no longer decodes');
    dec.decode('wd', message(set(2, hex('0002 0000'))), 'tcp');
    assert.deepEqual(dec.sessions()[0]!.domains[0]!.templateIds, []);
    assert.equal(dec.stats.templatesWithdrawn, 2);
  });

  it('keeps templates apart per session and per observation domain', () => {
    const dec = new IpfixDecoder();
    dec.decode('a', message(TEMPLATE_256, { domain: 1 }), 'udp');
    assert.equal(
      dec.decode('b', message(data256(['192.0.2.1', 1]), { domain: 1 }), 'udp').dataSets.length,
      0,
    );
    assert.equal(
      dec.decode('a', message(data256(['192.0.2.1', 1]), { domain: 2 }), 'udp').dataSets.length,
      0,
    );
    assert.equal(
      dec.decode('a', message(data256(['192.0.2.1', 1]), { domain: 1 }), 'udp').dataSets.length,
      1,
    );
  });

  it('replaces a redefined template and counts the replacement', () => {
    const dec = new IpfixDecoder();
    dec.decode('re', message(TEMPLATE_256), 'udp');
    dec.decode('re', message(TEMPLATE_256), 'udp');
    assert.equal(dec.stats.templatesReplaced, 0, 'same definition is a refresh');
    const res = dec.decode(
      're',
      message(Buffer.concat([set(2, hex('0100 0001 | 0004 0001')), set(256, hex('06'))])),
      'udp',
    );
    assert.equal(dec.stats.templatesReplaced, 1);
    assert.deepEqual(res.dataSets[0]!.records, [{ protocolIdentifier: 6 }]);
  });
});

describe('IpfixDecoder sequence numbers', () => {
  it('counts records lost from sequence gaps per exporter and domain', () => {
    const dec = new IpfixDecoder();
    dec.decode(
      'seq',
      message(Buffer.concat([TEMPLATE_256, data256(['192.0.2.1', 1], ['192.0.2.1', 2])]), { sequence: 100 }),
      'udp',
    );
    dec.decode('seq', message(data256(['192.0.2.1', 3]), { sequence: 102 }), 'udp'); // in order
    dec.decode('seq', message(data256(['192.0.2.1', 4]), { sequence: 110 }), 'udp'); // 7 lost
    dec.decode('seq', message(data256(['192.0.2.1', 5]), { sequence: 105 }), 'udp'); // late: out of sequence
    const d = dec.sessions()[0]!.domains[0]!.stats;
    assert.equal(d.lostRecords, 7);
    assert.equal(d.outOfSequence, 1);
    assert.equal(dec.stats.lostRecords, 7);
  });

  it('handles sequence number wrap-around at 2^32', () => {
    const dec = new IpfixDecoder();
    dec.decode(
      'wrap',
      message(Buffer.concat([TEMPLATE_256, data256(['192.0.2.1', 1], ['192.0.2.1', 2])]), {
        sequence: 0xffffffff,
      }),
      'udp',
    );
    dec.decode('wrap', message(data256(['192.0.2.1', 3]), { sequence: 1 }), 'udp');
    assert.equal(dec.sessions()[0]!.domains[0]!.stats.lostRecords, 0);
    dec.decode('wrap', message(data256(['192.0.2.1', 3]), { sequence: 5 }), 'udp');
    assert.equal(dec.sessions()[0]!.domains[0]!.stats.lostRecords, 3);
  });
});

describe('IpfixDecoder limits and malformed input', () => {
  it('refuses sessions, domains and templates past their caps, counting each', () => {
    const dec = new IpfixDecoder({ maxSessions: 2, maxDomainsPerSession: 1, maxTemplatesPerDomain: 1 });
    dec.decode('s1', message(TEMPLATE_256), 'udp');
    dec.decode('s2', message(TEMPLATE_256), 'udp');
    assert.equal(dec.decode('s3', message(TEMPLATE_256), 'udp').errors[0]!.code, 'IPFIX_ERR_SESSION_LIMIT');
    assert.equal(
      dec.decode('s1', message(TEMPLATE_256, { domain: 9 }), 'udp').errors[0]!.code,
      'IPFIX_ERR_DOMAIN_LIMIT',
    );
    assert.equal(
      dec.decode('s1', message(set(2, hex('0101 0001 | 0008 0004'))), 'udp').errors[0]!.code,
      'IPFIX_ERR_TEMPLATE_LIMIT',
    );
    assert.equal(dec.sessions().length, 2);
    assert.equal(dec.stats.errors.IPFIX_ERR_SESSION_LIMIT, 1);
    assert.equal(dec.stats.errors.IPFIX_ERR_DOMAIN_LIMIT, 1);
    assert.equal(dec.stats.errors.IPFIX_ERR_TEMPLATE_LIMIT, 1);
  });

  it('reports each kind of malformed message with its code and offset, and the session goes on', () => {
    const dec = new IpfixDecoder();
    const good = message(Buffer.concat([TEMPLATE_256, data256(['192.0.2.1', 1])]));
    const cases: [string, Buffer, string, number][] = [
      ['short', hex('000a 0008 00000000'), 'IPFIX_ERR_SHORT_MESSAGE', 0],
      ['netflow v9', Buffer.concat([hex('0009'), good.subarray(2)]), 'IPFIX_ERR_VERSION', 0],
      ['length field', Buffer.concat([good, hex('00')]), 'IPFIX_ERR_MESSAGE_LENGTH', 2],
      ['set length zero', message(hex('0100 0000 0000 0000')), 'IPFIX_ERR_SET_LENGTH', 18],
      ['set past end', message(hex('0100 0020 0000 0000')), 'IPFIX_ERR_SET_LENGTH', 18],
      ['reserved set id', message(set(1, hex('00000000'))), 'IPFIX_ERR_SET_ID', 16],
      ['template id 5', message(set(2, hex('0005 0001 0008 0004'))), 'IPFIX_ERR_TEMPLATE_ID', 20],
      ['field count too big', message(set(2, hex('0100 0009 0008 0004'))), 'IPFIX_ERR_TEMPLATE', 20],
      ['options scope 0', message(set(3, hex('0100 0001 0000 0008 0004'))), 'IPFIX_ERR_TEMPLATE', 20],
    ];
    for (const [what, bytes, code, offset] of cases) {
      const res = dec.decode('bad', bytes, 'udp');
      assert.equal(res.errors.length, 1, what);
      assert.equal(res.errors[0]!.code, code, what);
      assert.equal(res.errors[0]!.offset, offset, what);
      assert.match(res.errors[0]!.message, new RegExp(`at byte ${offset}`), what);
    }
    const after = dec.decode('bad', good, 'udp');
    assert.deepEqual(after.errors, []);
    assert.equal(after.dataSets[0]!.records.length, 1);
  });

  it('keeps the records before a variable-length field that runs past its set', () => {
    const dec = new IpfixDecoder();
    const tpl = set(2, hex('0102 0002 | 0004 0001 | 0052 ffff'));
    const res = dec.decode(
      'overrun',
      message(Buffer.concat([tpl, set(258, hex('06 02 6869 | 11 09 68'))])),
      'udp',
    );
    assert.deepEqual(res.dataSets[0]!.records, [{ protocolIdentifier: 6, interfaceName: 'hi' }]);
    assert.equal(res.errors[0]!.code, 'IPFIX_ERR_RECORD');
  });

  it('names unknown elements ie<pen>_<id> and keeps their bytes', () => {
    const dec = new IpfixDecoder();
    const tpl = set(2, hex('0103 0002 | 8123 0002 00007ed9 | 7fff 0001'));
    const res = dec.decode('unknown', message(Buffer.concat([tpl, set(259, hex('abcd ef'))])), 'udp');
    assert.deepEqual(res.dataSets[0]!.records, [
      { ie32473_291: new Uint8Array([0xab, 0xcd]), ie0_32767: new Uint8Array([0xef]) },
    ]);
  });
});

describe('IpfixDecoder RFC 5610', () => {
  it('learns names and types of enterprise elements from type records and decodes with them', () => {
    const dec = new IpfixDecoder();
    // Data template first: the element is unknown.
    const tpl = set(2, hex('0104 0001 | 8005 0004 00007ed9'));
    let res = dec.decode('5610', message(Buffer.concat([tpl, set(260, hex('00000102'))])), 'udp');
    assert.deepEqual(res.dataSets[0]!.records, [{ ie32473_5: new Uint8Array([0, 0, 1, 2]) }]);
    // Type record: PEN 32473 id 5 is unsigned32 "widgetCount", semantics totalCounter, units packets.
    const typeTpl = set(
      3,
      hex('0105 0006 0002 | 015a 0004 | 012f 0002 | 0153 0001 | 0158 0001 | 0159 0002 | 0155 ffff'),
    );
    const typeRec = set(261, Buffer.concat([hex('00007ed9 0005 03 02 0003 0b'), Buffer.from('widgetCount')]));
    res = dec.decode('5610', message(Buffer.concat([typeTpl, typeRec])), 'udp');
    assert.deepEqual(
      res.elements.map((e) => [e.pen, e.id, e.name, e.type, e.semantics, e.units]),
      [[32473, 5, 'widgetCount', 3, 2, 3]],
    );
    res = dec.decode('5610', message(set(260, hex('00000102'))), 'udp');
    assert.deepEqual(res.dataSets[0]!.records, [{ widgetCount: 258 }]);
    // Another exporter has not taught this element.
    res = dec.decode('other', message(Buffer.concat([tpl, set(260, hex('00000102'))])), 'udp');
    assert.deepEqual(Object.keys(res.dataSets[0]!.records[0]!), ['ie32473_5']);
  });
});
