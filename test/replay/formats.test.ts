/**
 * File formats and link layers the fixtures lack, built byte by byte in the test: pcap in both
 * byte orders with µs and ns times, pcapng (several interfaces with their own link types and
 * timestamp resolutions, simple packet blocks), Ethernet with 802.1Q and QinQ tags, Linux cooked
 * SLL and SLL2, raw IPv4/IPv6 (101, 228, 229), IPv4 options, IPv6 extension headers, snaplen-cut
 * packets. tshark reads each file too: the same connections, counts and flags (never our own
 * output as the reference).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { requireTools } from '../helpers/tools.js';
import { conversation, frame, LINK, pcapFile, pcapngFile, udpPacket } from './capture-writer.js';
import { replay } from './replay-helpers.js';
import { assertAgreesWithTshark } from './tshark-reference.js';

const dir = mkdtempSync(join(tmpdir(), 'kf-pcap-formats-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, bytes: Buffer): string {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}

const T0 = 1_700_000_000.25;

describe('pcap replay reads every format and link layer it claims, as tshark does', () => {
  const cases: [string, () => Buffer][] = [
    [
      'pcap little-endian µs, Ethernet',
      () =>
        pcapFile(
          conversation().map((r) => ({ ...r, data: frame(r.data, 'ethernet') })),
          { linkType: LINK.ethernet },
        ),
    ],
    [
      'pcap big-endian ns, Ethernet',
      () =>
        pcapFile(
          conversation().map((r) => ({ ...r, data: frame(r.data, 'ethernet') })),
          { linkType: LINK.ethernet, bigEndian: true, nanos: true },
        ),
    ],
    [
      'pcap, Ethernet with an 802.1Q tag',
      () =>
        pcapFile(
          conversation().map((r) => ({ ...r, data: frame(r.data, 'ethernet', [100]) })),
          { linkType: LINK.ethernet },
        ),
    ],
    [
      'pcap, Ethernet with QinQ (802.1ad + 802.1Q)',
      () =>
        pcapFile(
          conversation().map((r) => ({ ...r, data: frame(r.data, 'ethernet', [200, 100]) })),
          { linkType: LINK.ethernet },
        ),
    ],
    [
      'pcap, Linux cooked SLL',
      () =>
        pcapFile(
          conversation().map((r) => ({ ...r, data: frame(r.data, 'sll') })),
          { linkType: LINK.sll },
        ),
    ],
    [
      'pcap, Linux cooked SLL2, IPv6',
      () =>
        pcapFile(
          conversation({ v6: true }).map((r) => ({ ...r, data: frame(r.data, 'sll2') })),
          { linkType: LINK.sll2 },
        ),
    ],
    [
      'pcap, raw IP (101), IPv4 with options',
      () => pcapFile(conversation({ ipOptions: true }), { linkType: LINK.raw }),
    ],
    ['pcap, raw IPv4 (228)', () => pcapFile(conversation(), { linkType: LINK.ipv4 })],
    [
      'pcap, raw IPv6 (229) with a hop-by-hop header',
      () => pcapFile(conversation({ v6: true, ipOptions: true }), { linkType: LINK.ipv6 }),
    ],
    [
      'pcap, snaplen 80: every payload cut',
      () =>
        pcapFile(
          conversation().map((r) => ({ ...r, data: frame(r.data, 'ethernet') })),
          { linkType: LINK.ethernet, snaplen: 80 },
        ),
    ],
    [
      'pcapng, two interfaces (Ethernet µs with a VLAN tag, SLL2 ns)',
      () => {
        const a = conversation({ t0: T0 });
        const b = conversation({ t0: T0 + 0.001, v6: true });
        const pk = [
          ...a.map((r) => ({ iface: 0, t: r.t, data: frame(r.data, 'ethernet', [7]) })),
          ...b.map((r) => ({ iface: 1, t: r.t, data: frame(r.data, 'sll2') })),
        ].sort((x, y) => x.t - y.t);
        return pcapngFile([{ linkType: LINK.ethernet }, { linkType: LINK.sll2, tsresol: 9 }], pk);
      },
    ],
  ];
  for (const [name, build] of cases) {
    it(`${name}: the same connections, bytes, retransmissions, duplicates and out-of-order as tshark`, async (t) => {
      if (!requireTools(t, 'tshark')) return;
      const file = write(`${name.replace(/[^a-z0-9]+/gi, '-')}.cap`, build());
      const r = await replay(file);
      assert.equal(r.error, null);
      assert.equal(r.source.stats.tcp, r.source.stats.packets, 'every packet decoded as TCP');
      const rows = assertAgreesWithTshark(name, file, r);
      assert.ok(rows.length >= 2);
      // The conversation's own facts, independent of tshark: one retransmission and one
      // duplicate from the client, one out-of-order arrival at the server.
      for (const s of r.summaries) {
        assert.equal(s.clientToServer.retransSegs, 2);
        assert.equal(s.clientToServer.dupDataPkts, 1);
        assert.equal(s.clientToServer.oooPkts, 1);
        assert.equal(s.clientToServer.oooDistSum, 100);
        assert.equal(s.end, 'fin');
      }
    });
  }

  it('gives events the capture times to the nanosecond (ns pcap, pcapng tsresol 9)', async () => {
    const recs = conversation({ t0: 1_700_000_000 });
    recs[0]!.t = 1_700_000_000.123457;
    const bytes = pcapFile(recs, { linkType: LINK.raw, nanos: true });
    // A double cannot hold this time to the nanosecond: set the first record's fields exactly.
    bytes.writeUInt32LE(1_700_000_000, 24);
    bytes.writeUInt32LE(123_456_789, 28);
    const f1 = write('ns.pcap', bytes);
    const r1 = await replay(f1);
    assert.equal(r1.events[0]!.tsNs, 1_700_000_000_123_456_789n);
    const f2 = write(
      'ns.pcapng',
      pcapngFile(
        [{ linkType: LINK.raw, tsresol: 9 }],
        recs.map((r) => ({ iface: 0, t: r.t, data: r.data })),
      ),
    );
    const r2 = await replay(f2);
    // The writer converts through µs: the ns digits below are the µs value's.
    assert.equal(r2.events[0]!.tsNs, 1_700_000_000_123_457_000n);
    assert.equal(r2.source.stats.format, 'pcapng');
  });

  it('counts non-TCP packets (one in a simple packet block), non-first fragments and unknown pcapng link types as skips', async () => {
    const recs = conversation();
    const frag = { t: T0 + 1, data: Buffer.from(recs[3]!.data) };
    frag.data.writeUInt16BE(185, 6); // fragment offset 185 * 8 bytes
    const f = write(
      'mixed.pcapng',
      pcapngFile(
        [{ linkType: LINK.raw }, { linkType: 147 }],
        [
          ...recs.map((r) => ({ iface: 0, t: r.t, data: r.data })),
          { iface: 0, t: T0 + 1, data: udpPacket() },
          { iface: 0, t: T0 + 1, data: udpPacket(), simple: true },
          { iface: 0, t: T0 + 1, data: frag.data },
          { iface: 1, t: T0 + 1, data: Buffer.from('not a packet') },
        ],
      ),
    );
    const r = await replay(f);
    assert.equal(r.error, null);
    assert.deepEqual(r.source.stats.skipped, {
      linkType: 1,
      notIp: 0,
      notTcp: 2,
      fragment: 1,
      truncated: 0,
      malformed: 0,
    });
    assert.equal(r.source.stats.tcp, recs.length);
  });
});
