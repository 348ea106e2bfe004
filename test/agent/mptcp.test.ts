/**
 * MPTCP through the agent on synthetic events (no privileges): subflow events followed by
 * their connection's `mptcp` events, as the probes send them, become subflow profiles (47564,
 * pathIndex) and connection profiles (47563) under one flowId derived from the connection's
 * key; the connection's life-cycle (established with its initial subflow, UPDATE on a
 * head-of-line stall, back on recovery, ended with its last subflow: FINISHED, BROKEN on
 * MP_FASTCLOSE, UNREACHABLE, DESYNC), its KPIs, and a source of subflows only (the pcap replay).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  Agent,
  addressBytes,
  EVENT_KIND,
  type Exporter,
  MemorySource,
  type MptcpIdentity,
  mptcpFlowIdOf,
  mptcpUnmeasuredFields,
  type ProbeEvent,
  type Profile,
  profileTemplates,
  STATE,
  TCP_STATE,
  type TcpCounters,
  ZERO_ANCILLARY,
  ZERO_COUNTERS,
} from '../../agent/index.js';

const BOOT = 'mptcp-test-boot';
const KEY = 0xfeedn;
const META = 47563;
const SUBFLOW = 47564;

interface Run {
  agent: Agent;
  source: MemorySource;
  profiles: Profile[];
}

async function run(mptcpUnmeasured: string[] = []): Promise<Run> {
  // A source whose kernel could not load some MPTCP probes says so, as the live source does.
  const source = Object.assign(new MemorySource(), { mptcpUnmeasured });
  const profiles: Profile[] = [];
  const exporter = {
    send: (p: Profile) => profiles.push(p),
    stats: { exportedRecords: 0 },
    droppedTotal: 0,
  } as unknown as Exporter;
  const agent = await Agent.start({ source, exporter, bootId: BOOT, tickMs: 0 });
  return { agent, source, profiles };
}

let now = 1_000_000_000n;

/** One subflow event (cookie 1: path 1, cookie 2: path 2). */
function sub(
  cookie: bigint,
  kind: number,
  over: { counters?: Partial<TcpCounters>; stalls?: number; key?: bigint } & Omit<
    Partial<ProbeEvent>,
    'counters'
  > = {},
): ProbeEvent {
  now += 1_000_000n;
  const mptcp: MptcpIdentity = {
    token: 7,
    key: over.key ?? KEY,
    pathIndex: Number(cookie),
    fastclose: false,
  };
  return {
    kind: kind as ProbeEvent['kind'],
    tsNs: now,
    cookie,
    netns: 1,
    ipVersion: 4,
    localAddress: cookie === 1n ? '192.0.2.1' : '198.51.100.1',
    remoteAddress: cookie === 1n ? '192.0.2.2' : '198.51.100.2',
    localPort: 40000 + Number(cookie),
    remotePort: 443,
    tcpState: TCP_STATE.ESTABLISHED,
    caState: 0,
    mptcpSubflow: true,
    arg0: 0,
    arg1: 0,
    ...over,
    counters: { ...ZERO_COUNTERS, ...over.counters },
    ancillary: { ...ZERO_ANCILLARY, stalls: over.stalls ?? 0 },
    missing: [],
    mptcp,
  };
}

/** The connection's event that follows subflow event `s`. */
function meta(
  s: ProbeEvent,
  c: {
    acked?: number;
    sent?: number;
    received?: number;
    retrans?: number;
    rcvBuf?: number;
    hol?: number;
    /** Segments reinjected (the probes' count, in data_segs_out). */
    reinjected?: number;
    /** Data queued out of order at connection level (the probes' count, in rcv_ooopack). */
    ofo?: number;
    state?: number;
    alive?: number;
    fastclose?: boolean;
  } = {},
): ProbeEvent {
  return {
    ...s,
    kind: EVENT_KIND.mptcp,
    cookie: KEY,
    localAddress: '192.0.2.1',
    remoteAddress: '192.0.2.2',
    localPort: 40001,
    tcpState: c.state ?? TCP_STATE.ESTABLISHED,
    mptcpSubflow: false,
    arg0: s.kind,
    arg1: c.alive ?? 1,
    counters: {
      ...ZERO_COUNTERS,
      bytesAcked: c.acked ?? 0,
      bytesSent: c.sent ?? 0,
      bytesReceived: c.received ?? 0,
      bytesRetrans: c.retrans ?? 0,
      segsIn: c.rcvBuf ?? 131072,
      dataSegsOut: c.reinjected ?? 0,
      rcvOoopack: c.ofo ?? 0,
    },
    ancillary: { ...ZERO_ANCILLARY, stalls: c.hol ?? 0 },
    mptcp: { ...s.mptcp!, fastclose: c.fastclose ?? false },
  };
}

/** A subflow event and its connection's, as the probes send them. */
function both(s: ProbeEvent, c: Parameters<typeof meta>[1] = {}): ProbeEvent[] {
  return [s, meta(s, c)];
}

const close = (cookie: bigint, from: number, over: Parameters<typeof sub>[2] = {}) =>
  sub(cookie, EVENT_KIND.state, { arg0: from, arg1: TCP_STATE.CLOSE, tcpState: TCP_STATE.CLOSE, ...over });

const transitionsOf = (ps: Profile[]) =>
  ps.map((p) => `${p.record['flowStartReason']}>${p.record['flowEndReason']}`);
const total = (ps: Profile[], k: string) => ps.reduce((n, p) => n + Number(p.record[k]), 0);

describe('MPTCP connections and subflows through the agent', () => {
  it('two subflows, a head-of-line stall with reinjection, an orderly end: connection and subflow profiles under one flowId', async () => {
    const { agent, source, profiles } = await run();
    const flowId = mptcpFlowIdOf(BOOT, KEY);
    // Path 1 connects before the kernel chose the key: no connection event yet.
    source.push(sub(1n, EVENT_KIND.connect, { key: 0n, tcpState: TCP_STATE.SYN_SENT }));
    source.push(...both(sub(1n, EVENT_KIND.activeEstablished, { counters: { bytesAcked: 1 } })));
    source.push(...both(sub(2n, EVENT_KIND.connect, { tcpState: TCP_STATE.SYN_SENT }), { alive: 1 }));
    source.push(
      ...both(sub(2n, EVENT_KIND.activeEstablished, { counters: { bytesAcked: 1 } }), { alive: 2 }),
    );
    // Path 1 stalls while the connection has data unacknowledged; the data is reinjected.
    const rto = { counters: { bytesAcked: 5001, totalRetrans: 1, unackedBytes: 3000 }, stalls: 1 };
    source.push(
      ...both(sub(1n, EVENT_KIND.rto, rto), {
        acked: 9000,
        sent: 12000,
        retrans: 3000,
        hol: 1,
        reinjected: 2,
        ofo: 4,
        alive: 2,
      }),
    );
    const open = { counters: { bytesAcked: 8001, totalRetrans: 1 }, stalls: 1, arg0: 4, arg1: 0, caState: 0 };
    source.push(
      ...both(sub(1n, EVENT_KIND.congState, open), {
        acked: 12000,
        sent: 12000,
        retrans: 3000,
        hol: 1,
        reinjected: 2,
        ofo: 5,
        alive: 2,
      }),
    );
    // DATA_FIN exchanged (the meta socket in FIN_WAIT2, its DATA_FIN acked: +1), then both
    // subflows exchange FINs and close.
    const end = {
      acked: 12001,
      sent: 12000,
      received: 500,
      retrans: 3000,
      hol: 1,
      reinjected: 2,
      ofo: 5,
      state: TCP_STATE.FIN_WAIT2,
    };
    const fw2 = (cookie: bigint, counters: Partial<TcpCounters>, stalls = 0) =>
      sub(cookie, EVENT_KIND.state, {
        arg0: TCP_STATE.FIN_WAIT1,
        arg1: TCP_STATE.FIN_WAIT2,
        tcpState: TCP_STATE.FIN_WAIT2,
        counters,
        stalls,
      });
    source.push(...both(fw2(2n, { bytesAcked: 4002 }), end));
    source.push(...both(fw2(1n, { bytesAcked: 8002, bytesReceived: 500, totalRetrans: 1 }, 1), end));
    source.push(...both(close(2n, TCP_STATE.FIN_WAIT2, { counters: { bytesAcked: 4002 } }), end));
    source.push(
      ...both(
        close(1n, TCP_STATE.FIN_WAIT2, {
          counters: { bytesAcked: 8002, bytesReceived: 501, totalRetrans: 1 },
          stalls: 1,
        }),
        {
          ...end,
          state: TCP_STATE.CLOSE,
        },
      ),
    );
    const metas = profiles.filter((p) => p.templateId === META);
    const subs = profiles.filter((p) => p.templateId === SUBFLOW);
    assert.equal(profiles.filter((p) => p.templateId === 47561).length, 0);
    assert.ok(
      profiles.every((p) => p.record['flowId'] === flowId),
      'one flowId for all',
    );
    assert.deepEqual(transitionsOf(metas), ['1>2', '2>3', '3>2', '2>4']);
    assert.deepEqual(
      metas.map((p) => p.record['subflowCount']),
      [1, 2, 2, 2],
    );
    assert.equal(total(metas, 'transferredOctetTotalCount'), 12000, 'without the DATA_FIN');
    assert.equal(total(metas, 'receivedOctetTotalCount'), 500);
    assert.equal(total(metas, 'reinjectionOctetOut'), 3000);
    // The probes' per-connection counts: reinjected segments and out-of-order data, as deltas.
    assert.equal(total(metas, 'reinjectionPacketOut'), 2);
    assert.deepEqual(
      metas.map((p) => p.record['reorderingPacketCount']),
      [0, 4, 1, 0],
    );
    assert.equal(total(metas, 'headOfLineStallCount'), 1);
    assert.equal(metas[1]!.record['headOfLineStallCount'], 1, 'the stall opened UPDATE');
    assert.equal(total(metas, 'retransmittedPacketTotalCount'), 1);
    assert.equal(total(metas, 'stallCount'), 1);
    assert.equal(metas[0]!.record['rcvBufOctetCount'], 131072);
    assert.deepEqual([...new Set(subs.map((p) => p.record['pathIndex']))].sort(), [1, 2]);
    assert.equal(total(subs, 'transferredOctetTotalCount'), 12000);
    assert.ok(subs.every((p) => 'pathIndex' in p.record));
    assert.equal(agent.mptcp.size, 0, 'the connection ended with its last subflow');
    await agent.close();
  });

  it('MP_FASTCLOSE ends the connection BROKEN; a connection that never established is UNREACHABLE', async () => {
    const a = await run();
    a.source.push(...both(sub(1n, EVENT_KIND.activeEstablished)));
    a.source.push(
      ...both(sub(1n, EVENT_KIND.resetReceived)),
      ...both(close(1n, TCP_STATE.ESTABLISHED), { state: TCP_STATE.CLOSE, fastclose: true }),
    );
    assert.deepEqual(transitionsOf(a.profiles.filter((p) => p.templateId === META)), ['1>2', '2>5']);
    await a.agent.close();
    const b = await run();
    b.source.push(
      ...both(sub(1n, EVENT_KIND.connect, { tcpState: TCP_STATE.SYN_SENT }), { state: TCP_STATE.SYN_SENT }),
    );
    b.source.push(...both(close(1n, TCP_STATE.SYN_SENT), { state: TCP_STATE.CLOSE }));
    assert.deepEqual(transitionsOf(b.profiles.filter((p) => p.templateId === META)), ['1>6']);
    await b.agent.close();
  });

  it('connection events read before or while the kernel copies the initial subflow’s ends to the connection (::, ports set or not) leave every profile’s addresses the kernel’s', async () => {
    const ends = {
      ipVersion: 6 as const,
      localAddress: '2001:db8:4d50:5b::1',
      remoteAddress: '2001:db8:4d50:5b::2',
    };
    const want = Buffer.from(addressBytes(ends.localAddress, 6)).toString('hex');
    const wantPeer = Buffer.from(addressBytes(ends.remoteAddress, 6)).toString('hex');
    // What the connection event can read: nothing copied yet, then the source still unset while
    // the ports are (the copy runs on another CPU), then the destination still unset.
    const reads = [
      { localAddress: '::', remoteAddress: '::', localPort: 0, remotePort: 0 },
      { localAddress: '::', remoteAddress: ends.remoteAddress, localPort: 40001, remotePort: 443 },
      { localAddress: ends.localAddress, remoteAddress: '::', localPort: 40001, remotePort: 443 },
    ];
    for (const read of reads) {
      const { agent, source, profiles } = await run();
      source.push(sub(1n, EVENT_KIND.connect, { key: 0n, tcpState: TCP_STATE.SYN_SENT, ...ends }));
      const est = sub(1n, EVENT_KIND.activeEstablished, { counters: { bytesAcked: 1 }, ...ends });
      source.push(est, { ...meta(est, { state: TCP_STATE.ESTABLISHED }), ...ends, ...read });
      const fin = close(1n, TCP_STATE.ESTABLISHED, { ...ends });
      source.push(fin, { ...meta(fin, { state: TCP_STATE.CLOSE }), ...ends });
      assert.equal(profiles.filter((p) => p.templateId === META).length, 2, JSON.stringify(read));
      for (const p of profiles) {
        const what = `${p.templateId} ${transitionsOf([p])} after a read of ${JSON.stringify(read)}`;
        assert.equal(Buffer.from(p.record['sourceIPv6Address'] as Uint8Array).toString('hex'), want, what);
        assert.equal(
          Buffer.from(p.record['destinationIPv6Address'] as Uint8Array).toString('hex'),
          wantPeer,
          what,
        );
        assert.equal(p.record['sourceTransportPort'], 40001, what);
      }
      await agent.close();
    }
  });

  it('MPTCP fields whose probes did not load are left out of the connection profiles, never sent as 0', async () => {
    assert.deepEqual(
      mptcpUnmeasuredFields([
        { kpi: 'mptcpOutOfOrder' },
        { kpi: 'ofoDistance' },
        { kpi: 'mptcpReinjectedSegments' },
      ]),
      ['reorderingPacketCount', 'reinjectionPacketOut'],
    );
    const gone = ['reinjectionPacketOut', 'reorderingPacketCount'];
    const meta = profileTemplates([], { mptcpUnmeasured: gone }).find((t) => t.id === META)!;
    for (const f of gone) assert.ok(!meta.fields.includes(f), `${f} not in template 47563`);
    assert.ok(meta.fields.includes('reinjectionOctetOut'));
    const a = await run(gone);
    a.source.push(...both(sub(1n, EVENT_KIND.activeEstablished), { reinjected: 3, ofo: 2 }));
    a.source.push(
      ...both(close(1n, TCP_STATE.ESTABLISHED), { state: TCP_STATE.CLOSE, reinjected: 3, ofo: 2 }),
    );
    const metas = a.profiles.filter((p) => p.templateId === META);
    assert.ok(metas.length >= 2);
    for (const p of metas) {
      for (const f of gone) assert.equal(p.record[f], undefined, `${f} absent`);
      assert.equal(typeof p.record['subflowCount'], 'number');
      assert.deepEqual(Object.keys(p.record), meta.fields, 'the record holds exactly the template fields');
    }
    await a.agent.close();
  });

  it('a subflow removed while another goes on: its profiles end, the connection does not', async () => {
    const { agent, source, profiles } = await run();
    source.push(...both(sub(1n, EVENT_KIND.activeEstablished)));
    source.push(...both(sub(2n, EVENT_KIND.activeEstablished), { alive: 2 }));
    source.push(...both(close(2n, TCP_STATE.FIN_WAIT2), { alive: 1 }));
    assert.equal(profiles.filter((p) => p.templateId === META).length, 1, 'only the handshake');
    assert.equal(
      profiles.filter((p) => p.templateId === SUBFLOW && p.record['pathIndex'] === 2).at(-1)!.record[
        'flowEndReason'
      ],
      STATE.FINISHED,
    );
    await agent.close();
    // Stopping: the connection (still open) is flushed as DESYNC with both subflows in its window.
    const last = profiles.filter((p) => p.templateId === META).at(-1)!;
    assert.equal(last.record['flowEndReason'], STATE.DESYNC);
    assert.equal(last.record['subflowCount'], 2);
  });

  it('subflows without connection events (a capture) share the flowId and make no connection profile', async () => {
    const { agent, source, profiles } = await run();
    source.push(sub(1n, EVENT_KIND.activeEstablished), sub(2n, EVENT_KIND.activeEstablished));
    source.push(close(2n, TCP_STATE.FIN_WAIT2), close(1n, TCP_STATE.FIN_WAIT2));
    await agent.close();
    assert.equal(profiles.filter((p) => p.templateId === META).length, 0);
    assert.equal(profiles.filter((p) => p.templateId === SUBFLOW).length, 4);
    assert.equal(new Set(profiles.map((p) => p.record['flowId'])).size, 1);
    assert.equal(agent.mptcp.size, 0);
  });

  it('a connection picked up open (iterator snapshots) counts from its first event; its past stalls open no UPDATE', async () => {
    const { agent, source, profiles } = await run();
    const snap = { counters: { bytesAcked: 5001, totalRetrans: 4 }, stalls: 3 };
    source.push(
      ...both(sub(1n, EVENT_KIND.snapshot, snap), { acked: 5000, sent: 5000, hol: 3, retrans: 700 }),
    );
    source.push(
      ...both(sub(2n, EVENT_KIND.snapshot), { acked: 5000, sent: 5000, hol: 3, retrans: 700, alive: 2 }),
    );
    const fin = { counters: { bytesAcked: 9002, totalRetrans: 4 }, stalls: 3 };
    source.push(
      ...both(
        sub(1n, EVENT_KIND.state, {
          arg0: TCP_STATE.FIN_WAIT1,
          arg1: TCP_STATE.FIN_WAIT2,
          tcpState: TCP_STATE.FIN_WAIT2,
          ...fin,
        }),
        { acked: 9001, sent: 9000, hol: 3, retrans: 700, state: TCP_STATE.FIN_WAIT2 },
      ),
    );
    source.push(
      ...both(close(2n, TCP_STATE.ESTABLISHED), {
        acked: 9001,
        sent: 9000,
        hol: 3,
        retrans: 700,
        state: TCP_STATE.FIN_WAIT2,
      }),
    );
    source.push(
      ...both(close(1n, TCP_STATE.FIN_WAIT2, fin), {
        acked: 9001,
        sent: 9000,
        hol: 3,
        retrans: 700,
        state: TCP_STATE.CLOSE,
      }),
    );
    const metas = profiles.filter((p) => p.templateId === META);
    assert.deepEqual(transitionsOf(metas), ['2>4']);
    assert.equal(metas[0]!.record['transferredOctetTotalCount'], 4000);
    assert.equal(metas[0]!.record['headOfLineStallCount'], 0);
    assert.equal(metas[0]!.record['reinjectionOctetOut'], 0);
    assert.equal(metas[0]!.record['retransmittedPacketTotalCount'], 0);
    assert.equal(metas[0]!.record['subflowCount'], 2);
    await agent.close();
  });
});
