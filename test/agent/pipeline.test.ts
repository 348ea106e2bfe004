/**
 * Connection table + FSM + profile builder on synthetic event sequences: the handshake profile,
 * counters as deltas whose sums equal the simulated socket's final totals (also for random
 * life-cycles, with fast-check), windows that tile the connection's life, RTT mean and jitter,
 * adoption of connections open before the agent, counter wrap-around, eviction, DESYNC after lost
 * events, and KPIs left out when the kernel lacks their counter.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  addressBytes,
  ConnectionTable,
  type ProbeEvent,
  type Profile,
  ProfileBuilder,
  type ProfileWindow,
  parseSpoolLine,
  STATE,
  spoolLine,
  TCP_STATE,
  type TcpCounters,
  tcpProfileFields,
} from '../../agent/index.js';
import { SyntheticSocket } from '../helpers/synthetic-events.js';

/** Wall minus monotonic clock used by these tests: monotonic 0 is 2025-01-01T00:00:00Z. */
const OFFSET_NS = 1_735_689_600_000n * 1_000_000n;

interface Harness {
  table: ConnectionTable;
  builder: ProfileBuilder;
  profiles: Profile[];
  windows: ProfileWindow[];
  feed: (...batches: ProbeEvent[][]) => void;
}

function harness(
  options: { max?: number; activeTimeoutMs?: number; missing?: (keyof TcpCounters)[] } = {},
): Harness {
  const builder = new ProfileBuilder({ clockOffsetNs: OFFSET_NS, missing: options.missing ?? [] });
  const profiles: Profile[] = [];
  const windows: ProfileWindow[] = [];
  const table = new ConnectionTable({
    maxConnections: options.max ?? 1000,
    activeTimeoutNs: BigInt(options.activeTimeoutMs ?? 60_000) * 1_000_000n,
    flowId: (c) => 1_000_000n + c,
    onWindow: (w) => {
      windows.push(w);
      profiles.push(builder.build(w));
    },
  });
  return {
    table,
    builder,
    profiles,
    windows,
    feed: (...batches) => {
      for (const b of batches) for (const e of b) table.apply(e);
    },
  };
}

const wall = (tsNs: bigint) => Number((tsNs + OFFSET_NS) / 1_000_000n);

/** KPI element → the simulated socket's total it must add up to. */
const TOTALS: [string, (s: SyntheticSocket) => number][] = [
  // Application payload: the kernel's counters also hold the SYN and FINs (sequence space).
  ['transferredOctetTotalCount', (s) => s.appSent],
  ['receivedOctetTotalCount', (s) => s.appReceived],
  ['droppedOctetTotalCount', (s) => s.counters.bytesRetrans],
  ['retransmittedPacketTotalCount', (s) => s.counters.totalRetrans],
  ['reorderingPacketCount', (s) => s.counters.rcvOoopack],
  ['dsackCount', (s) => s.counters.dsackDups],
  ['reorderSeenCount', (s) => s.counters.reordSeen],
  ['rtoRecoveryCount', (s) => s.counters.totalRtoRecoveries],
  ['duplicatePacketTotalCount', (s) => s.ancillary.dupPackets],
  ['duplicateOctetTotalCount', (s) => s.ancillary.dupOctets],
  ['checksumErrorCount', (s) => s.ancillary.badChecksums],
  ['synRetransmissionCount', (s) => s.ancillary.synRetrans],
  // SYN timeouts are the handshake's stalls; the simulated probes count later stalls only.
  ['stallCount', (s) => s.ancillary.stalls + s.ancillary.synRetrans],
];

function sum(profiles: Profile[], field: string): number {
  return profiles.reduce((n, p) => n + (p.record[field] as number), 0);
}

/** Checks that the profiles of one connection tile its life and add up to the socket's totals. */
function checkConnection(profiles: Profile[], sock: SyntheticSocket, firstStartNs: bigint): void {
  assert.ok(profiles.length > 0);
  const flowIds = new Set(profiles.map((p) => p.record['flowId']));
  assert.equal(flowIds.size, 1, 'one flowId per connection');
  assert.equal(
    profiles[0]!.record['flowStartMilliseconds'],
    wall(firstStartNs),
    'first window starts at the SYN',
  );
  for (let i = 1; i < profiles.length; i++) {
    const a = profiles[i - 1]!.record;
    const b = profiles[i]!.record;
    assert.equal(
      b['flowStartReason'],
      a['flowEndReason'],
      `profile ${i}: opened by the state that closed ${i - 1}`,
    );
    assert.equal(b['flowStartMilliseconds'], a['flowEndMilliseconds'], `profile ${i}: no gap, no overlap`);
  }
  for (const [field, total] of TOTALS) assert.equal(sum(profiles, field), total(sock), `${field} adds up`);
}

/** The wire bytes of a v4-mapped IPv6 address. */
const v4mapped = (...v4: number[]) => Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...v4]);

describe('profiles of one connection', () => {
  it('handshake with two SYN timeouts: time to establish, SYN retransmissions as stalls', () => {
    const h = harness();
    const s = new SyntheticSocket({ cookie: 7n });
    const t0 = s.tsNs;
    h.feed(s.connect(), s.synTimeout(1000), s.synTimeout(2000), s.establish(25));
    assert.equal(h.profiles.length, 1);
    const r = h.profiles[0]!.record;
    assert.equal(h.profiles[0]!.templateId, 47561);
    assert.equal(r['flowStartReason'], STATE.NEW);
    assert.equal(r['flowEndReason'], STATE.ESTABLISHED);
    assert.equal(r['timeToEstablishMilliseconds'], 3025);
    assert.equal(r['stallCount'], 2);
    assert.equal(r['synRetransmissionCount'], 2);
    assert.equal(r['retransmittedPacketTotalCount'], 2);
    assert.equal(r['flowStartMilliseconds'], wall(t0));
    assert.equal(r['flowEndMilliseconds'], wall(t0) + 3025);
    assert.equal(r['meanLatencyMicroseconds'], 25_000);
    assert.equal(r['meanLatencyMilliseconds'], 25);
    // Addresses go to the encoder as wire bytes: IPv4 v4-mapped.
    assert.deepEqual(r['sourceIPv6Address'], v4mapped(192, 0, 2, 1));
    assert.deepEqual(r['destinationIPv6Address'], v4mapped(198, 51, 100, 2));
    assert.equal(r['ipVersion'], 4);
    assert.equal(r['destinationTransportPort'], 443);
    assert.equal(r['flowId'], 1_000_007n);
  });

  it('accepting side: the handshake profile starts at the SYN the probes saw', () => {
    const h = harness();
    const s = new SyntheticSocket({ cookie: 8n, ipVersion: 6, localPort: 443, remotePort: 51000 });
    h.feed(s.accept(40, 20));
    const r = h.profiles[0]!.record;
    assert.equal(r['timeToEstablishMilliseconds'], 40);
    assert.equal(r['flowEndMilliseconds'] as number, (r['flowStartMilliseconds'] as number) + 40);
    assert.deepEqual(
      r['sourceIPv6Address'],
      Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
    );
    assert.equal(r['ipVersion'], 6);
    assert.equal(r['sourceTransportPort'], 443);
  });

  it('a full life: handshake, stall, recovery, FIN close; windows tile it and add up to the totals', () => {
    const h = harness();
    const s = new SyntheticSocket({ cookie: 9n });
    const t0 = s.tsNs;
    h.feed(s.connect(), s.establish(10));
    s.transfer(500, 1_000_000, 20_000).rtt(12, 3).losses(4, 5792, 1, 2, 3);
    h.feed(s.duplicate(1448), s.badChecksum());
    s.transfer(500, 500_000, 0).rtt(30, 10);
    h.feed(s.rto(8000));
    s.wait(200).rtt(200, 100);
    h.feed(s.rto(8000)); // a second RTO while lossy: still UPDATE, no profile
    s.wait(400);
    h.feed(s.recover());
    s.transfer(1000, 64_000, 1_000_000).rtt(11, 2);
    h.feed(s.closeActive(), s.destroy());
    const states = h.profiles.map((p) => [p.record['flowStartReason'], p.record['flowEndReason']]);
    assert.deepEqual(states, [
      [STATE.NEW, STATE.ESTABLISHED],
      [STATE.ESTABLISHED, STATE.UPDATE],
      [STATE.UPDATE, STATE.ESTABLISHED],
      [STATE.ESTABLISHED, STATE.FINISHED],
    ]);
    checkConnection(h.profiles, s, t0);
    const [, lossy, recovery] = h.profiles.map((p) => p.record);
    assert.equal(lossy!['stallCount'], 1, 'the stall that opened UPDATE');
    assert.equal(recovery!['stallCount'], 1, 'the second RTO while lossy');
    assert.equal(recovery!['rtoRecoveryCount'], 1);
    assert.equal(lossy!['duplicatePacketTotalCount'], 1);
    assert.equal(lossy!['duplicateOctetTotalCount'], 1448);
    assert.equal(lossy!['checksumErrorCount'], 1);
    assert.equal(h.table.size, 0, 'removed on destroy');
    assert.equal(h.table.stats.removed, 1);
  });

  it('bytes are application payload: the SYN and FINs the kernel counts in sequence space are taken out', () => {
    const h = harness();
    // Active opener, closes first, peer's FIN taken by this socket.
    const a = new SyntheticSocket({ cookie: 30n });
    h.feed(a.connect(), a.establish(5), a.transfer(10, 1000, 2000).closeActive(), a.destroy());
    // Active opener whose orphaned socket went to time-wait before the peer's FIN.
    const b = new SyntheticSocket({ cookie: 31n });
    h.feed(b.connect(), b.establish(5), b.transfer(10, 3000, 4000).closeActiveToTimeWait(), b.destroy());
    // Accepting side, closes second.
    const c = new SyntheticSocket({ cookie: 32n });
    h.feed(c.accept(5, 5), c.transfer(10, 5000, 6000).closePassive(), c.destroy());
    const byFlow = (cookie: bigint, f: string) =>
      sum(
        h.profiles.filter((p) => p.record['flowId'] === 1_000_000n + cookie),
        f,
      );
    assert.equal(a.counters.bytesAcked, 1002, 'the kernel counts SYN and FIN');
    assert.equal(a.counters.bytesReceived, 2001, 'and the peer’s FIN');
    assert.deepEqual(
      [30n, 31n, 32n].map((k) => [
        byFlow(k, 'transferredOctetTotalCount'),
        byFlow(k, 'receivedOctetTotalCount'),
      ]),
      [
        [1000, 2000],
        [3000, 4000],
        [5000, 6000],
      ],
    );
    assert.equal(h.profiles[0]!.record['transferredOctetTotalCount'], 0, 'the handshake moved no payload');
    assert.equal(h.builder.stats.negativeDeltas, 0);
  });

  it('out-of-order distance: mean and variance per window with the per-packet mode, absent without it', () => {
    const withPp = new ProfileBuilder({ clockOffsetNs: OFFSET_NS, reorderingDistance: true });
    const profiles: Profile[] = [];
    const table = new ConnectionTable({
      activeTimeoutNs: 60_000_000_000n,
      flowId: (c) => c,
      onWindow: (w) => profiles.push(withPp.build(w)),
    });
    const s = new SyntheticSocket({ cookie: 40n });
    for (const e of [...s.connect(), ...s.establish(5)]) table.apply(e);
    s.transfer(10, 0, 100_000).outOfOrder(1448, 2896, 4344);
    for (const e of [...s.rto(100), ...s.recover()]) table.apply(e);
    s.outOfOrder(1000);
    for (const e of [...s.closeActive(), ...s.destroy()]) table.apply(e);
    assert.ok(withPp.fields.includes('meanReorderingDistance'));
    assert.ok(withPp.fields.includes('varReorderingDistance'));
    const r = profiles.map((p) => [
      p.record['reorderingPacketCount'],
      p.record['meanReorderingDistance'],
      p.record['varReorderingDistance'],
    ]);
    // 1448, 2896, 4344: mean 2896, population variance (1448² + 0 + 1448²) / 3.
    assert.deepEqual(r, [
      [0, 0, 0],
      [3, 2896, Math.round((2 * 1448 * 1448) / 3)],
      [0, 0, 0],
      [1, 1000, 0],
    ]);
    for (const p of profiles) assert.deepEqual(Object.keys(p.record), withPp.fields);
    const h = harness();
    const t = new SyntheticSocket({ cookie: 41n });
    h.feed(t.connect(), t.establish(5), t.transfer(10, 0, 10).outOfOrder(500).closeActive());
    assert.ok(!h.builder.fields.includes('meanReorderingDistance'));
    for (const p of h.profiles) {
      assert.equal(p.record['meanReorderingDistance'], undefined);
      assert.equal(p.record['varReorderingDistance'], undefined);
    }
  });

  it('RTT: mean of the srtt samples of the window’s events, jitter the mean of their mdev', () => {
    const h = harness();
    const s = new SyntheticSocket({ cookie: 10n });
    h.feed(s.connect(), s.establish(10));
    s.rtt(10, 1);
    h.feed(s.duplicate(100));
    s.rtt(20, 5);
    h.feed(s.duplicate(100));
    s.rtt(60, 30);
    h.feed(s.resetByPeer());
    const r = h.profiles[1]!.record;
    assert.equal(r['flowEndReason'], STATE.BROKEN);
    // Samples: 10 ms (mdev 5) from the sockops callback that follows the state change opening
    // the window, 10, 20 and 60 ms from the two duplicates and the reset; the CLOSE after the
    // reset belongs to no window.
    assert.equal(r['meanLatencyMicroseconds'], (10_000 + 10_000 + 20_000 + 60_000) / 4);
    assert.equal(r['latencyJitterMicroseconds'], (5000 + 1000 + 5000 + 30_000) / 4);
    assert.equal(r['meanLatencyMilliseconds'], 25);
  });

  it('never established: refused (reset in SYN_SENT) and timed out are UNREACHABLE', () => {
    const h = harness();
    const refused = new SyntheticSocket({ cookie: 11n });
    const timedOut = new SyntheticSocket({ cookie: 12n });
    h.feed(refused.connect(), refused.wait(1).resetByPeer(), refused.destroy());
    h.feed(timedOut.connect());
    for (let i = 0; i < 6; i++) h.feed(timedOut.synTimeout(1000 * 2 ** i));
    h.feed(timedOut.wait(64_000).giveUp(), timedOut.destroy());
    assert.deepEqual(
      h.profiles.map((p) => [p.record['flowStartReason'], p.record['flowEndReason'], p.record['stallCount']]),
      [
        [STATE.NEW, STATE.UNREACHABLE, 0],
        [STATE.NEW, STATE.UNREACHABLE, 6],
      ],
    );
    assert.equal(h.profiles[1]!.record['timeToEstablishMilliseconds'], 0, 'no time to establish');
    assert.equal(h.table.size, 0);
  });

  it('reset sent or received after the handshake is BROKEN; later events are ignored until destroy', () => {
    const h = harness();
    const a = new SyntheticSocket({ cookie: 13n });
    h.feed(a.connect(), a.establish(5), a.transfer(10, 100, 100).resetLocal());
    h.feed(a.duplicate(10), a.snapshot(), a.destroy());
    assert.deepEqual(
      h.profiles.map((p) => p.record['flowEndReason']),
      [STATE.ESTABLISHED, STATE.BROKEN],
    );
    const b = new SyntheticSocket({ cookie: 14n });
    h.feed(b.connect(), b.establish(5), b.closePassive(), b.destroy());
    assert.equal(h.profiles.at(-1)!.record['flowEndReason'], STATE.FINISHED);
  });

  it('a destroy with no close seen ends the connection by what was seen: FIN states or not', () => {
    const h = harness();
    const a = new SyntheticSocket({ cookie: 15n });
    h.feed(a.connect(), a.establish(5), a.destroy());
    const b = new SyntheticSocket({ cookie: 16n });
    h.feed(b.connect(), b.destroy());
    assert.deepEqual(
      h.profiles.map((p) => p.record['flowEndReason']),
      [STATE.ESTABLISHED, STATE.BROKEN, STATE.UNREACHABLE],
    );
  });
});

describe('connections the agent did not see start', () => {
  it('a snapshot of an unknown cookie starts in ESTABLISHED with that snapshot as baseline', () => {
    const h = harness();
    const s = new SyntheticSocket({
      cookie: 20n,
      tcpState: TCP_STATE.ESTABLISHED,
      counters: { bytesAcked: 5_000_000, bytesReceived: 7_000, totalRetrans: 40, srttUs: 9000 },
    });
    const found = s.tsNs;
    h.feed(s.snapshot());
    assert.equal(h.table.stats.adopted, 1);
    s.transfer(1000, 1000, 2000).losses(2, 100);
    h.feed(s.closeActive(), s.destroy());
    assert.equal(h.profiles.length, 1);
    const r = h.profiles[0]!.record;
    assert.equal(r['flowStartReason'], STATE.ESTABLISHED);
    assert.equal(r['flowEndReason'], STATE.FINISHED);
    assert.equal(r['flowStartMilliseconds'], wall(found));
    assert.equal(r['transferredOctetTotalCount'], 1000, 'only what happened since');
    assert.equal(r['receivedOctetTotalCount'], 2000);
    assert.equal(r['retransmittedPacketTotalCount'], 2);
  });

  it('other events of unknown cookies adopt too; closes, resets, destroys and listeners do not', () => {
    const h = harness();
    const listener = new SyntheticSocket({ cookie: 21n, tcpState: TCP_STATE.LISTEN });
    const gone = new SyntheticSocket({ cookie: 22n, tcpState: TCP_STATE.FIN_WAIT2 });
    h.feed(listener.snapshot(), gone.giveUp(), gone.destroy(), gone.resetByPeer());
    assert.equal(h.table.size, 0);
    assert.equal(h.table.stats.ignored, 5);
    const busy = new SyntheticSocket({ cookie: 23n, tcpState: TCP_STATE.ESTABLISHED });
    h.feed(busy.duplicate(100));
    assert.equal(h.table.size, 1);
    assert.equal(h.profiles.length, 0, 'the adopting event only sets the baseline');
  });

  it('counters that wrapped (u32 in the kernel) give the right delta', () => {
    const h = harness();
    const s = new SyntheticSocket({
      cookie: 24n,
      tcpState: TCP_STATE.ESTABLISHED,
      counters: { totalRetrans: 0xffff_fff0, rcvOoopack: 0xffff_ffff, totalRtoRecoveries: 0xfffe },
    });
    h.feed(s.snapshot());
    s.counters.totalRetrans = 0x10; // +32 through the wrap
    s.counters.rcvOoopack = 4; // +5
    s.counters.totalRtoRecoveries = 1; // +3 (u16)
    h.feed(s.closeActive());
    const r = h.profiles[0]!.record;
    assert.equal(r['retransmittedPacketTotalCount'], 32);
    assert.equal(r['reorderingPacketCount'], 5);
    assert.equal(r['rtoRecoveryCount'], 3);
    assert.equal(h.builder.stats.negativeDeltas, 0);
  });
});

describe('active timeout, eviction, DESYNC', () => {
  it('an iterator snapshot past the active timeout closes an ESTABLISHED window into the next one', () => {
    const h = harness({ activeTimeoutMs: 2000 });
    const s = new SyntheticSocket({ cookie: 30n });
    const t0 = s.tsNs;
    h.feed(s.connect(), s.establish(10));
    h.feed(s.transfer(1500, 1000, 1000).snapshot()); // 1.5 s: not due
    assert.equal(h.profiles.length, 1);
    h.feed(s.transfer(600, 1000, 1000).snapshot()); // 2.1 s: due
    h.feed(s.transfer(2500, 1000, 1000).duplicate(5)); // any event of a due window closes it too
    h.feed(s.transfer(100, 7, 7).closeActive(), s.destroy());
    assert.deepEqual(
      h.profiles.map((p) => [p.record['flowStartReason'], p.record['flowEndReason']]),
      [
        [STATE.NEW, STATE.ESTABLISHED],
        [STATE.ESTABLISHED, STATE.ESTABLISHED],
        [STATE.ESTABLISHED, STATE.ESTABLISHED],
        [STATE.ESTABLISHED, STATE.FINISHED],
      ],
    );
    checkConnection(h.profiles, s, t0);
  });

  it('a full table evicts the least recently active connection with a DESYNC profile, counted', () => {
    const h = harness({ max: 3 });
    const socks = [1n, 2n, 3n, 4n].map((c) => new SyntheticSocket({ cookie: 40n + c }));
    for (const s of socks.slice(0, 3)) h.feed(s.connect(), s.establish(5));
    h.feed(socks[0]!.duplicate(10)); // 41 is active again: 42 is now the oldest
    h.feed(socks[3]!.connect());
    assert.equal(h.table.size, 3);
    assert.equal(h.table.stats.evicted, 1);
    assert.equal(h.table.get(42n), undefined);
    const last = h.profiles.at(-1)!.record;
    assert.equal(last['flowId'], 1_000_042n);
    assert.equal(last['flowEndReason'], STATE.DESYNC);
  });

  it('lost events: every open connection gets a DESYNC profile, then resumes; the sums still hold', () => {
    const h = harness();
    const a = new SyntheticSocket({ cookie: 50n });
    const b = new SyntheticSocket({ cookie: 51n });
    const done = new SyntheticSocket({ cookie: 52n });
    const ta = a.tsNs;
    h.feed(a.connect(), a.establish(5), b.connect(), done.connect(), done.establish(3), done.closeActive());
    a.transfer(100, 1000, 1000);
    h.feed(a.duplicate(1));
    const before = h.profiles.length;
    assert.equal(h.table.desyncAll(false), 2, 'a and b; the finished one is left alone');
    assert.equal(h.table.desyncAll(false), 0, 'no new event: no second DESYNC');
    const desync = h.profiles
      .slice(before)
      .map((p) => [p.record['flowId'], p.record['flowEndReason']])
      .sort((x, y) => Number((x[0] as bigint) - (y[0] as bigint)));
    assert.deepEqual(desync, [
      [1_000_050n, STATE.DESYNC],
      [1_000_051n, STATE.DESYNC],
    ]);
    // a goes on (its events were lost meanwhile, but snapshots carry full counters).
    a.transfer(100, 2000, 3000).losses(3, 300);
    h.feed(a.rto(100), a.recover(), a.closeActive(), a.destroy());
    const ofA = h.profiles.filter((p) => p.record['flowId'] === 1_000_050n);
    assert.deepEqual(
      ofA.map((p) => [p.record['flowStartReason'], p.record['flowEndReason']]),
      [
        [STATE.NEW, STATE.ESTABLISHED],
        [STATE.ESTABLISHED, STATE.DESYNC],
        [STATE.DESYNC, STATE.UPDATE],
        [STATE.UPDATE, STATE.ESTABLISHED],
        [STATE.ESTABLISHED, STATE.FINISHED],
      ],
    );
    checkConnection(ofA, a, ta);
    // b resumes from its TCP state (SYN_SENT: still a handshake).
    h.feed(b.establish(5));
    assert.deepEqual(
      [h.profiles.at(-1)!.record['flowStartReason'], h.profiles.at(-1)!.record['flowEndReason']],
      [STATE.DESYNC, STATE.ESTABLISHED],
    );
  });

  it('shutdown: DESYNC profiles for every open connection, and the table empties', () => {
    const h = harness();
    const a = new SyntheticSocket({ cookie: 60n });
    h.feed(a.connect(), a.establish(5), a.transfer(10, 10, 10).duplicate(1));
    assert.equal(h.table.desyncAll(true), 1);
    assert.equal(h.table.size, 0);
    const r = h.profiles.at(-1)!.record;
    assert.equal(r['flowEndReason'], STATE.DESYNC);
    assert.equal(r['transferredOctetTotalCount'], 10);
  });
});

describe('what the kernel cannot measure', () => {
  it('KPIs of missing counters are left out of the template and the records, not sent as zero', () => {
    const missing: (keyof TcpCounters)[] = ['rcvOoopack', 'dsackDups', 'mdevUs'];
    const fields = tcpProfileFields(missing);
    for (const gone of ['reorderingPacketCount', 'dsackCount', 'latencyJitterMicroseconds'])
      assert.ok(!fields.includes(gone), gone);
    assert.ok(fields.includes('meanLatencyMicroseconds'));
    const h = harness({ missing });
    const s = new SyntheticSocket({ cookie: 70n, missing });
    h.feed(s.connect(), s.establish(5), s.closeActive());
    for (const p of h.profiles) assert.deepEqual(Object.keys(p.record), fields);
  });
});

describe('random life-cycles (fast-check)', () => {
  type Op =
    | { op: 'transfer'; ms: number; sent: number; received: number }
    | { op: 'losses'; retrans: number; dsack: number; ooo: number }
    | { op: 'rto'; pending: number }
    | { op: 'recover' }
    | { op: 'dup'; bytes: number }
    | { op: 'csum' }
    | { op: 'snapshot'; ms: number }
    | { op: 'lost' };
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({
      op: fc.constant('transfer' as const),
      ms: fc.integer({ min: 0, max: 5000 }),
      sent: fc.integer({ min: 0, max: 10_000_000 }),
      received: fc.integer({ min: 0, max: 10_000_000 }),
    }),
    fc.record({
      op: fc.constant('losses' as const),
      retrans: fc.integer({ min: 0, max: 50 }),
      dsack: fc.integer({ min: 0, max: 5 }),
      ooo: fc.integer({ min: 0, max: 50 }),
    }),
    fc.record({ op: fc.constant('rto' as const), pending: fc.integer({ min: 0, max: 100_000 }) }),
    fc.constant({ op: 'recover' as const }),
    fc.record({ op: fc.constant('dup' as const), bytes: fc.integer({ min: 1, max: 1448 }) }),
    fc.constant({ op: 'csum' as const }),
    fc.record({ op: fc.constant('snapshot' as const), ms: fc.integer({ min: 0, max: 30_000 }) }),
    fc.constant({ op: 'lost' as const }),
  );

  it('profiles tile each connection and add up exactly to its totals, whatever happens', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 3 }),
        fc.array(op, { maxLength: 40 }),
        fc.constantFrom('fin', 'reset', 'passive'),
        (synRetries, ops, end) => {
          const h = harness({ activeTimeoutMs: 10_000 });
          const s = new SyntheticSocket({ cookie: 99n });
          const t0 = s.tsNs;
          h.feed(s.connect());
          for (let i = 0; i < synRetries; i++) h.feed(s.synTimeout(1000));
          h.feed(s.establish(20));
          for (const o of ops) {
            if (o.op === 'transfer') s.transfer(o.ms, o.sent, o.received);
            else if (o.op === 'losses') s.losses(o.retrans, o.retrans * 1448, o.dsack, 0, o.ooo);
            else if (o.op === 'rto') h.feed(s.wait(200).rto(o.pending));
            else if (o.op === 'recover') h.feed(s.recover());
            else if (o.op === 'dup') h.feed(s.duplicate(o.bytes));
            else if (o.op === 'csum') h.feed(s.badChecksum());
            else if (o.op === 'snapshot') h.feed(s.wait(o.ms).snapshot());
            else h.table.desyncAll(false);
          }
          h.feed(end === 'fin' ? s.closeActive() : end === 'passive' ? s.closePassive() : s.resetByPeer());
          h.feed(s.destroy());
          checkConnection(h.profiles, s, t0);
          assert.equal(h.table.size, 0);
          const lastEnd = h.profiles.at(-1)!.record['flowEndReason'];
          assert.equal(lastEnd, end === 'reset' ? STATE.BROKEN : STATE.FINISHED);
          assert.equal(h.builder.stats.negativeDeltas + h.builder.stats.saturated, 0);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('address bytes', () => {
  it('are the wire form of the text, made once per connection, and survive the spool', () => {
    assert.deepEqual(addressBytes('198.51.100.2', 4), v4mapped(198, 51, 100, 2));
    const v6 = addressBytes('2001:db8:1::2', 6);
    assert.equal(Buffer.from(v6).toString('hex'), '20010db8000100000000000000000002');
    assert.equal(Buffer.from(addressBytes('::', 6)).toString('hex'), '0'.repeat(32));
    assert.equal(Buffer.from(addressBytes('not an address', 4)).toString('hex'), '0'.repeat(32));
    const h = harness();
    const s = new SyntheticSocket({ cookie: 9n });
    h.feed(s.connect(), s.establish(5), s.closeActive());
    const [a, b] = h.profiles;
    assert.equal(a!.record['sourceIPv6Address'], b!.record['sourceIPv6Address'], 'the same bytes');
    const back = parseSpoolLine(spoolLine(b!));
    assert.deepEqual(back, b);
  });
});

describe('addresses the kernel had not set', () => {
  const ENDS = {
    4: { localAddress: '192.0.2.1', remoteAddress: '198.51.100.2' },
    6: { localAddress: '2001:db8:4d50:5b::1', remoteAddress: '2001:db8:4d50:5b::2' },
  } as const;
  const FIELD = { localAddress: 'sourceIPv6Address', remoteAddress: 'destinationIPv6Address' } as const;
  /** The events as read before the kernel set (or after it cleared) one address: unspecified. */
  const unset = (evs: ProbeEvent[], side: 'localAddress' | 'remoteAddress' = 'localAddress') =>
    evs.map((e) => ({ ...e, [side]: e.ipVersion === 6 ? '::' : '0.0.0.0' }));
  const hex = (v: unknown) => Buffer.from(v as Uint8Array).toString('hex');

  it('a first event with an unspecified address (ports set): every profile carries the address of the first event that has it', () => {
    for (const ipVersion of [4, 6] as const) {
      for (const side of ['localAddress', 'remoteAddress'] as const) {
        const h = harness();
        const s = new SyntheticSocket({ cookie: 30n, ipVersion, mptcpSubflow: true, ...ENDS[ipVersion] });
        h.feed(unset(s.connect(), side), s.establish(5), s.transfer(100, 5000, 700).closeActive());
        assert.ok(h.profiles.length >= 2);
        const want = hex(addressBytes(ENDS[ipVersion][side], ipVersion));
        for (const p of h.profiles)
          assert.equal(hex(p.record[FIELD[side]]), want, `IPv${ipVersion}, ${side} unset at the connect`);
      }
    }
  });

  it('events read after the kernel cleared the source (tcp_disconnect) never replace a known address', () => {
    const h = harness();
    const s = new SyntheticSocket({ cookie: 31n, ipVersion: 6, ...ENDS[6] });
    h.feed(s.connect(), s.establish(5), unset(s.rto(100)), unset(s.recover()), unset(s.closeActive()));
    assert.ok(h.profiles.length >= 3);
    const want = hex(addressBytes(ENDS[6].localAddress, 6));
    for (const p of h.profiles) assert.equal(hex(p.record['sourceIPv6Address']), want);
  });
});

describe('scans', () => {
  it('a complete scan drops the connections the kernel no longer has with a DESYNC profile, counted', () => {
    const h = harness();
    const kept = new SyntheticSocket({ cookie: 20n });
    const gone = new SyntheticSocket({ cookie: 21n });
    h.feed(kept.connect(), kept.establish(5), gone.connect(), gone.establish(5));
    const snap = kept.snapshot();
    // The scan began after both connections' latest events.
    const startNs = snap[0]!.tsNs + 1n;
    const netns = new Set([snap[0]!.netns]);
    // Another namespace's connections are not judged by this scan.
    assert.equal(h.table.dropVanished(new Set([1]), new Set(), startNs), 0);
    h.feed(snap);
    assert.equal(h.table.dropVanished(netns, new Set([20n]), startNs), 1);
    assert.equal(h.table.stats.vanished, 1);
    assert.equal(h.table.size, 1);
    assert.equal(h.profiles.at(-1)!.record['flowEndReason'], STATE.DESYNC);
    assert.equal(h.profiles.at(-1)!.record['flowId'], 1_000_021n);
  });

  it('a snapshot of a connection that closed while its scan was applied does not adopt it again', () => {
    const h = harness();
    const s = new SyntheticSocket({ cookie: 22n });
    h.feed(s.connect(), s.establish(5));
    const snap = s.snapshot();
    h.table.beginScan();
    h.feed(s.closeActive(), snap);
    h.table.endScan();
    assert.equal(h.table.size, 0);
    assert.deepEqual(
      h.profiles.map((p) => p.record['flowEndReason']),
      [STATE.ESTABLISHED, STATE.FINISHED],
    );
  });
});
