/**
 * Golden bytes written by hand from RFC 7011/7012/6313 layouts (not by our encoder), decoded
 * and compared against the whole expected result.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DataType, ElementRegistry, IpfixDecoder } from '../../ipfix/index.js';
import { hex, message, set } from '../helpers/bytes.js';

describe('golden messages', () => {
  it('decodes a template set and a data set with an enterprise field, a variable-length string and padding', () => {
    const bytes = hex(`
      000a 005f 5f5e1000 00000000 00000001
      0002 0024 | 0100 0006 | 0008 0004 | 000c 0004 | 0001 0004 | 0004 0001 | 8008 0002 0000fffe | 0052 ffff
      0100 002b
        c0000201 c6336401 000003e8 06 0003 04 65746830
        c0000202 cb007101 ffffffff 11 0000 00
        000000`);
    const dec = new IpfixDecoder();
    const res = dec.decode('golden', bytes, 'udp');
    assert.deepEqual(res.errors, []);
    assert.deepEqual(res.header, {
      version: 10,
      length: 95,
      exportTime: 1600000000,
      sequenceNumber: 0,
      observationDomainId: 1,
    });
    assert.equal(res.templates.length, 1);
    assert.equal(res.dataSets.length, 1);
    const ds = res.dataSets[0]!;
    assert.equal(ds.templateId, 256);
    assert.equal(ds.delayed, false);
    assert.deepEqual(ds.records, [
      {
        sourceIPv4Address: '192.0.2.1',
        destinationIPv4Address: '198.51.100.1',
        octetDeltaCount: 1000,
        protocolIdentifier: 6,
        stallCount: 3,
        interfaceName: 'eth0',
      },
      {
        sourceIPv4Address: '192.0.2.2',
        destinationIPv4Address: '203.0.113.1',
        octetDeltaCount: 4294967295,
        protocolIdentifier: 17,
        stallCount: 0,
        interfaceName: '',
      },
    ]);
    assert.deepEqual(
      ds.template.fields.map((f) => [f.pen, f.id, f.length, f.element.name]),
      [
        [0, 8, 4, 'sourceIPv4Address'],
        [0, 12, 4, 'destinationIPv4Address'],
        [0, 1, 4, 'octetDeltaCount'],
        [0, 4, 1, 'protocolIdentifier'],
        [65534, 8, 2, 'stallCount'],
        [0, 82, 65535, 'interfaceName'],
      ],
    );
  });

  it('decodes every RFC 7012 abstract type, reduced-size encodings included', () => {
    const reg = ElementRegistry.standard();
    // RFC 5612 documentation PEN 32473 for the types IANA has no element of.
    const extra: [number, string, number][] = [
      [1, 'testSigned8', DataType.signed8],
      [2, 'testSigned16', DataType.signed16],
      [3, 'testSigned64', DataType.signed64],
      [4, 'testFloat32', DataType.float32],
    ];
    for (const [id, name, type] of extra) reg.add({ pen: 32473, id, name, type, semantics: 0, units: 0 });
    const fields = hex(`
      0004 0001   0007 0002   000a 0004   0055 0008
      01b2 0004
      8001 0001 00007ed9   8002 0002 00007ed9   8003 0008 00007ed9   8003 0003 00007ed9   8004 0004 00007ed9
      0137 0008   0140 0004   0114 0001   014d 0001   0038 0006   0053 0008   0139 0003
      0096 0004   0098 0008   009a 0008   009c 0008
      0008 0004   001b 0010   0002 0002`);
    const tpl = Buffer.concat([hex('0101 0018'), fields]);
    const data = hex(`
      06   0050   00000007   0020000000000001
      fffffffe
      ff   8000   fffffffffffffffe   fffffe   3fc00000
      3fe0000000000000   3f800000   01   02   0a1b2c3d4e5f   6c6f000000000000   abcdef
      5f5e1000   00000174876e8000   e3088e80 80000000   e3088e80 40000000
      c0000201   20010db8000000000000000000000001   0b6b`);
    const bytes = message(Buffer.concat([set(2, tpl), set(257, data)]));
    const dec = new IpfixDecoder({ registry: reg });
    const res = dec.decode('types', bytes, 'file');
    assert.deepEqual(res.errors, []);
    const rec = res.dataSets[0]!.records[0]!;
    assert.deepEqual(rec, {
      protocolIdentifier: 6,
      sourceTransportPort: 80,
      ingressInterface: 7,
      octetTotalCount: 9007199254740993n,
      mibObjectValueInteger: -2,
      testSigned8: -1,
      testSigned16: -32768,
      testSigned64: [-2, -2],
      testFloat32: 1.5,
      samplingProbability: 0.5,
      absoluteError: 1,
      dataRecordsReliability: true,
      hashDigestOutput: false,
      sourceMacAddress: '0a:1b:2c:3d:4e:5f',
      interfaceDescription: 'lo',
      ipHeaderPacketSection: new Uint8Array([0xab, 0xcd, 0xef]),
      flowStartSeconds: 1600000000,
      flowStartMilliseconds: 1600000000000,
      flowStartMicroseconds: 1600000000500000,
      flowStartNanoseconds: 1600000000250000000n,
      sourceIPv4Address: '192.0.2.1',
      sourceIPv6Address: '2001:db8::1',
      packetDeltaCount: 2923,
    });
  });

  it('reads 3-byte variable lengths and keeps a record whole around RFC 6313 lists', () => {
    const long = 'x'.repeat(300);
    const tpl = hex('0102 0005 | 0052 ffff | 0123 ffff | 0124 ffff | 0125 ffff | 0007 0002');
    const basicList = hex('03 | 0008 0004 | c0000201 c0000202'); // allOf, sourceIPv4Address x2
    const stl = hex('01 | 0101 | 0102030405');
    const stml = hex('04 | 0101 0007 aabbcc | 0102 0005 dd');
    const data = Buffer.concat([
      hex('ff 012c'),
      Buffer.from(long),
      Buffer.from([basicList.length]),
      basicList,
      Buffer.from([stl.length]),
      stl,
      Buffer.from([stml.length]),
      stml,
      hex('01bb'),
    ]);
    const res = new IpfixDecoder().decode(
      'lists',
      message(Buffer.concat([set(2, tpl), set(258, data)])),
      'file',
    );
    assert.deepEqual(res.errors, []);
    assert.deepEqual(res.dataSets[0]!.records, [
      {
        interfaceName: long,
        basicList: { semantic: 3, pen: 0, id: 8, values: ['192.0.2.1', '192.0.2.2'] },
        subTemplateList: { semantic: 1, templateId: 257, bytes: new Uint8Array([1, 2, 3, 4, 5]) },
        subTemplateMultiList: {
          semantic: 4,
          blocks: [
            { templateId: 257, bytes: new Uint8Array([0xaa, 0xbb, 0xcc]) },
            { templateId: 258, bytes: new Uint8Array([0xdd]) },
          ],
        },
        sourceTransportPort: 443,
      },
    ]);
  });

  it('decodes an options template and its scoped data record', () => {
    // Options template 300: scope observationDomainId(149), then exportedMessageTotalCount(41).
    const tpl = hex('012c 0002 0001 | 0095 0004 | 0029 0008');
    const data = hex('00000007 0000000000000064');
    const res = new IpfixDecoder().decode(
      'opts',
      message(Buffer.concat([set(3, tpl), set(300, data)])),
      'file',
    );
    assert.deepEqual(res.errors, []);
    const ds = res.dataSets[0]!;
    assert.equal(ds.template.isOptions, true);
    assert.equal(ds.template.scopeFieldCount, 1);
    assert.deepEqual(ds.records, [{ observationDomainId: 7, exportedMessageTotalCount: 100 }]);
  });
});
