/**
 * The event decoder on canned bytes: golden bytes decode to the whole expected object, encode
 * and decode are inverses (fast-check), batches skip what cannot be an event without throwing.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { EVENT_KIND, type EventKind, type ProbeEvent, type TcpCounters } from '../../agent/probe-event.js';
import {
  decodeProbeEvent,
  decodeProbeEvents,
  encodeProbeEvent,
  PROBE_COUNTERS,
  PROBE_EVENT_LAYOUT,
  PROBE_EVENT_SIZE,
} from '../../agent/probe-event-decoder.js';

function sample(over: Partial<ProbeEvent> = {}): ProbeEvent {
  const counters = Object.fromEntries(
    PROBE_COUNTERS.map((c, i) => [c.name, 1000 + i]),
  ) as unknown as TcpCounters;
  return {
    kind: EVENT_KIND.rto,
    tsNs: 123456789012345n,
    cookie: 0xfedcba9876543210n,
    netns: 4026532000,
    ipVersion: 6,
    localAddress: '2001:db8::1',
    remoteAddress: '2001:db8:0:1::2',
    localPort: 40000,
    remotePort: 443,
    tcpState: 1,
    caState: 4,
    mptcpSubflow: true,
    arg0: 3,
    arg1: 17,
    counters: { ...counters, bytesAcked: 2 ** 40 + 5 },
    ancillary: {
      synNs: 99n,
      synRetrans: 1,
      dupPackets: 2,
      dupOctets: 2 ** 33,
      badChecksums: 4,
      stalls: 5,
      ofoDistCount: 6,
      ofoDistSum: 2 ** 35 + 7,
      ofoDistSumSq: 2 ** 50 + 8,
    },
    missing: ['totalRto', 'totalRtoRecoveries'],
    mptcp: { token: 0xdeadbeef, key: 2n ** 63n + 5n, pathIndex: 2, fastclose: false },
    ...over,
  };
}

describe('probe event decoder', () => {
  it('decodes golden bytes written field by field at the C offsets into the whole event', () => {
    const b = Buffer.alloc(PROBE_EVENT_SIZE);
    const L = PROBE_EVENT_LAYOUT;
    b.writeBigUInt64LE(5n, L.ts_ns.offset);
    b.writeBigUInt64LE(7n, L.cookie.offset);
    Buffer.from([192, 0, 2, 1]).copy(b, L.saddr.offset);
    Buffer.from([198, 51, 100, 7]).copy(b, L.daddr.offset);
    b.writeUInt32LE(4026531840, L.netns.offset);
    b.writeUInt16LE(5001, L.sport.offset);
    b.writeUInt16LE(80, L.dport.offset);
    b[L.kind.offset] = 13;
    b[L.ip_version.offset] = 4;
    b[L.tcp_state.offset] = 7;
    b[L.ca_state.offset] = 0;
    b.writeUInt32LE(1 << 14, L.missing.offset);
    b.writeUInt32LE(0xffffffff, L.arg0.offset);
    b.writeBigUInt64LE(2n ** 52n + 1n, L['counters.bytes_acked'].offset);
    b.writeBigUInt64LE(300n, L['counters.bytes_received'].offset);
    b.writeUInt32LE(12345, L['counters.srtt_us'].offset);
    b.writeUInt32LE(9, L['counters.unacked_bytes'].offset);
    b.writeBigUInt64LE(77n, L['anc.syn_ns'].offset);
    b.writeUInt32LE(2, L['anc.stalls'].offset);
    b.writeUInt32LE(3, L['anc.ofo_dist_count'].offset);
    b.writeBigUInt64LE(4000n, L['anc.ofo_dist_sum'].offset);
    b.writeBigUInt64LE(2n ** 40n, L['anc.ofo_dist_sumsq'].offset);
    const zero = Object.fromEntries(PROBE_COUNTERS.map((c) => [c.name, 0])) as unknown as TcpCounters;
    assert.deepEqual(decodeProbeEvent(new DataView(b.buffer, b.byteOffset, b.length), 0), {
      kind: EVENT_KIND.destroy,
      tsNs: 5n,
      cookie: 7n,
      netns: 4026531840,
      ipVersion: 4,
      localAddress: '192.0.2.1',
      remoteAddress: '198.51.100.7',
      localPort: 5001,
      remotePort: 80,
      tcpState: 7,
      caState: 0,
      mptcpSubflow: false,
      arg0: 0xffffffff,
      arg1: 0,
      counters: { ...zero, bytesAcked: 2 ** 52 + 1, bytesReceived: 300, srttUs: 12345, unackedBytes: 9 },
      ancillary: {
        synNs: 77n,
        synRetrans: 0,
        dupPackets: 0,
        dupOctets: 0,
        badChecksums: 0,
        stalls: 2,
        ofoDistCount: 3,
        ofoDistSum: 4000,
        ofoDistSumSq: 2 ** 40,
      },
      missing: ['totalRto'],
    });
  });

  it('decodes the MPTCP fields of a subflow and of a connection event, and none for plain TCP', () => {
    const L = PROBE_EVENT_LAYOUT;
    const b = encodeProbeEvent(sample({ mptcpSubflow: false, mptcp: undefined }));
    assert.equal(decodeProbeEvent(new DataView(b.buffer, b.byteOffset, b.length), 0)!.mptcp, undefined);
    const m = encodeProbeEvent(
      sample({
        kind: EVENT_KIND.mptcp,
        mptcpSubflow: false,
        mptcp: { token: 7, key: 9n, pathIndex: 3, fastclose: true },
      }),
    );
    assert.equal(m[L.flags.offset], 2 | 4);
    assert.equal(m[L.path_index.offset], 3);
    assert.equal(m.readUInt32LE(L.mptcp_token.offset), 7);
    assert.equal(m.readBigUInt64LE(L.mptcp_key.offset), 9n);
    assert.deepEqual(decodeProbeEvent(new DataView(m.buffer, m.byteOffset, m.length), 0)!.mptcp, {
      token: 7,
      key: 9n,
      pathIndex: 3,
      fastclose: true,
    });
  });

  it('writes IPv6 addresses as RFC 5952 text', () => {
    const cases = [
      '::',
      '::1',
      '2001:db8::1',
      '2001:db8:0:1:1:1:1:1',
      '2001:0:0:1::1',
      'fe80::',
      '1:2:3:4:5:6:7:8',
    ];
    for (const a of cases) {
      const ev = decodeProbeEvent(new DataView(encodeProbeEvent(sample({ localAddress: a })).buffer), 0)!;
      assert.equal(ev.localAddress, a);
    }
  });

  it('decodes a batch of events back to back, skipping unknown kinds and counting trailing bytes', () => {
    const good = encodeProbeEvent(sample());
    const unknown = encodeProbeEvent(sample());
    unknown[PROBE_EVENT_LAYOUT.kind.offset] = 6; // reserved: no such kind yet
    const badVersion = encodeProbeEvent(sample());
    badVersion[PROBE_EVENT_LAYOUT.ip_version.offset] = 5;
    const batch = Buffer.concat([good, unknown, good, badVersion, Buffer.alloc(10)]);
    const r = decodeProbeEvents(batch.subarray(0));
    assert.equal(r.events.length, 2);
    assert.equal(r.malformed, 2);
    assert.equal(r.trailingBytes, 10);
    assert.deepEqual(r.events[1], sample());
    assert.deepEqual(decodeProbeEvents(new Uint8Array(0)), { events: [], malformed: 0, trailingBytes: 0 });
  });

  it('decodes from a view at any byte offset of a larger buffer (as batches from the addon are)', () => {
    const big = Buffer.alloc(7 + PROBE_EVENT_SIZE * 2);
    encodeProbeEvent(sample()).copy(big, 7);
    encodeProbeEvent(sample({ kind: EVENT_KIND.snapshot })).copy(big, 7 + PROBE_EVENT_SIZE);
    const r = decodeProbeEvents(big.subarray(7));
    assert.deepEqual(
      r.events.map((e) => e.kind),
      [EVENT_KIND.rto, EVENT_KIND.snapshot],
    );
  });

  it('round-trips any event through encode and decode', () => {
    const u32 = fc.integer({ min: 0, max: 2 ** 32 - 1 });
    const u53 = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
    const kinds = Object.values(EVENT_KIND) as EventKind[];
    const v4 = fc.ipV4();
    const v6 = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 });
    const counters = fc.record(
      Object.fromEntries(
        PROBE_COUNTERS.map((c) => [c.name, PROBE_EVENT_LAYOUT[c.field].size === 8 ? u53 : u32]),
      ) as Record<keyof TcpCounters, fc.Arbitrary<number>>,
    );
    fc.assert(
      fc.property(
        fc.constantFrom(...kinds),
        fc.boolean(),
        v4,
        v6,
        counters,
        fc.subarray(PROBE_COUNTERS.map((c) => c.name)),
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
        (kind, isV4, a4, g6, cnt, missing, cookie) => {
          // Canonical text of random groups, through the decoder's own formatter.
          const raw = encodeProbeEvent(
            sample({ ipVersion: 6, localAddress: g6.map((g) => g.toString(16)).join(':') }),
          );
          const a6 = decodeProbeEvent(new DataView(raw.buffer, raw.byteOffset), 0)!.localAddress;
          const ev = sample({
            kind,
            cookie,
            ipVersion: isV4 ? 4 : 6,
            localAddress: isV4 ? a4 : a6,
            remoteAddress: isV4 ? a4 : a6,
            counters: { ...cnt },
            missing: PROBE_COUNTERS.map((c) => c.name).filter((n) => missing.includes(n)),
          });
          const b = encodeProbeEvent(ev);
          assert.deepEqual(decodeProbeEvent(new DataView(b.buffer, b.byteOffset, b.length), 0), ev);
        },
      ),
      { numRuns: 500 },
    );
  });
});
