/**
 * The real probes in this kernel, observing client and server in two test namespaces from the
 * host namespace. Ground truth is the kernel's own TCP_INFO, read by the peers themselves.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ProbeEvent } from '../../agent/probe-event.js';
import { EVENT_KIND } from '../../agent/probe-event.js';
import { type LiveProbes, startLiveProbes } from '../../agent/probe-loader.js';
import {
  createNetnsPair,
  type NetnsHost,
  type NetnsPair,
  requireRoot,
  rootUnavailableReason,
} from '../helpers/netns.js';
import { EventLog, startPeer } from './live-peers.js';

const TCP_ESTABLISHED = 1;
const TCP_SYN_SENT = 2;
const TCP_FIN_WAIT1 = 4;
const TCP_FIN_WAIT2 = 5;
const TCP_CLOSE = 7;
const TCP_LAST_ACK = 9;

/**
 * The close of a socket: its state change to CLOSE, the probes' last event of it (the destroy
 * that follows is sent only when the close was lost).
 */
const isClose = (e: ProbeEvent) => e.kind === EVENT_KIND.state && e.arg1 === TCP_CLOSE;

/**
 * Events of one socket, by its cookie, found from namespace and local port (the first state
 * event of an active open comes before the port is chosen, so the port alone misses it).
 */
function ofSocket(log: EventLog, host: NetnsHost, port: number): ProbeEvent[] {
  const any = log.events.find((e) => e.netns === host.inode && e.localPort === port);
  return any ? log.filter((e) => e.cookie === any.cookie) : [];
}

describe('live probes', { concurrency: false }, () => {
  let pair: NetnsPair | null = null;
  let probes: LiveProbes | null = null;
  let log: EventLog | null = null;

  before(() => {
    if (rootUnavailableReason() !== null) return;
    pair = createNetnsPair();
    probes = startLiveProbes();
    log = new EventLog(probes);
  });

  after(() => {
    log?.close();
    probes?.close();
    pair?.close();
  });

  for (const version of [4, 6] as const) {
    it(`reports connect, established and the state changes the agent uses of an IPv${version} connection, with exact byte counters`, async (t) => {
      if (!requireRoot(t)) return;
      const { a, b } = pair!;
      const server = b;
      const client = a;
      const saddr = version === 4 ? server.ipv4 : server.ipv6;
      const caddr = version === 4 ? client.ipv4 : client.ipv6;
      const port = 5000 + version;
      const srv = startPeer(server, ['server', saddr, port, 200_000, 100_000]);
      let cli: ReturnType<typeof startPeer> | null = null;
      try {
        await srv.phase('listening');
        cli = startPeer(client, ['client', saddr, port, 200_000, 100_000]);
        const done = await cli.phase('done');
        // Let the delayed ACK and every event of the transfer land before closing.
        await new Promise((r) => setTimeout(r, 300));
        cli.release();
        await cli.phase('closed');
        const sdone = await srv.phase('done');
        const cport = Number(done['local_port']);
        const sport = Number(sdone['local_port']);
        await log!.waitFor((e) => isClose(e) && e.netns === client.inode && e.localPort === cport);
        await log!.waitFor((e) => isClose(e) && e.netns === server.inode && e.localPort === sport);

        const cev = ofSocket(log!, client, cport);
        const sev = ofSocket(log!, server, sport);
        const kinds = (evs: ProbeEvent[]) => new Set(evs.map((e) => e.kind));
        for (const k of [EVENT_KIND.connect, EVENT_KIND.activeEstablished, EVENT_KIND.state]) {
          assert.ok(kinds(cev).has(k), `client lacks event kind ${k}`);
        }
        for (const k of [EVENT_KIND.passiveEstablished, EVENT_KIND.state]) {
          assert.ok(kinds(sev).has(k), `server lacks event kind ${k}`);
        }
        // The close was reported, so the destroy was not sent.
        assert.ok(!kinds(cev).has(EVENT_KIND.destroy) && !kinds(sev).has(EVENT_KIND.destroy));
        // One cookie per connection end, the same on every event of it.
        assert.equal(new Set(cev.map((e) => e.cookie)).size, 1);
        assert.equal(new Set(sev.map((e) => e.cookie)).size, 1);
        assert.notEqual(cev[0]!.cookie, sev[0]!.cookie);
        for (const e of cev) {
          assert.equal(e.ipVersion, version);
          assert.equal(e.localAddress, caddr);
          assert.equal(e.remoteAddress, saddr);
          assert.equal(e.remotePort, port);
          assert.equal(e.netns, client.inode);
          assert.equal(e.mptcpSubflow, false);
          assert.deepEqual(e.missing, []);
        }
        for (const e of sev) {
          assert.equal(e.localAddress, saddr);
          assert.equal(e.remoteAddress, caddr);
          assert.equal(e.localPort, port);
          assert.equal(e.remotePort, cport);
        }
        // Only the state changes the agent uses are sent: FIN_WAIT2 and the close; the others
        // (SYN_SENT, ESTABLISHED, FIN_WAIT1, CLOSE_WAIT, LAST_ACK) are counted in kf_stats.
        const cstates = cev.filter((e) => e.kind === EVENT_KIND.state).map((e) => `${e.arg0}>${e.arg1}`);
        assert.deepEqual(cstates, [`${TCP_FIN_WAIT1}>${TCP_FIN_WAIT2}`, `${TCP_FIN_WAIT2}>${TCP_CLOSE}`]);
        const sstates = sev.filter((e) => e.kind === EVENT_KIND.state).map((e) => `${e.arg0}>${e.arg1}`);
        assert.deepEqual(sstates, [`${TCP_LAST_ACK}>${TCP_CLOSE}`]);
        assert.ok(probes!.stats().quietStates >= 5n, 'the other state changes were counted');
        assert.ok(probes!.stats().quietDestroys >= 2n, 'and the destroys');

        // Counters when our FIN was acked equal the client's TCP_INFO taken before closing, plus
        // that FIN's sequence number.
        const fw2 = cev.find((e) => e.kind === EVENT_KIND.state && e.arg1 === TCP_FIN_WAIT2)!;
        assert.equal(fw2.counters.bytesAcked, Number(done['bytes_acked']) + 1);
        assert.equal(fw2.counters.bytesReceived, done['bytes_received']);
        assert.equal(fw2.counters.totalRetrans, done['total_retrans']);
        assert.equal(fw2.counters.dataSegsOut, done['data_segs_out']);
        assert.equal(fw2.counters.unackedBytes, 0);
        assert.ok(fw2.counters.srttUs > 0);
        // The close is the last event, and the FINs each took one sequence number more.
        const cdestroy = cev.at(-1)!;
        assert.ok(isClose(cdestroy));
        assert.equal(cdestroy.counters.bytesAcked, Number(done['bytes_acked']) + 1);
        assert.equal(cdestroy.counters.bytesReceived, Number(done['bytes_received']) + 1);
        const sdestroy = sev.at(-1)!;
        assert.ok(isClose(sdestroy));
        assert.equal(sdestroy.counters.bytesReceived, sdone['bytes_received']);
        assert.equal(sdestroy.counters.bytesAcked, Number(sdone['bytes_acked']) + 1);
        // Application bytes: bytes_acked counts our SYN and FIN too, bytes_received the peer's FIN.
        assert.equal(cdestroy.counters.bytesAcked, 200_000 + 2);
        assert.equal(cdestroy.counters.bytesReceived, 100_000 + 1);
        // Handshake timing from the probes' own state.
        const est = cev.find((e) => e.kind === EVENT_KIND.activeEstablished)!;
        assert.ok(est.ancillary.synNs > 0n && est.ancillary.synNs <= est.tsNs);
        // No loss is made here, but a loaded machine can still lose or delay a SYN: the kernel's
        // retransmission count (which includes SYN retransmissions) bounds what the probes saw.
        assert.ok(
          est.ancillary.synRetrans <= Number(done['total_retrans']),
          `${est.ancillary.synRetrans} SYN retransmissions, kernel total_retrans ${done['total_retrans']}`,
        );
        const pest = sev.find((e) => e.kind === EVENT_KIND.passiveEstablished)!;
        assert.ok(
          pest.ancillary.synNs > 0n && pest.ancillary.synNs <= pest.tsNs,
          'passive SYN time recorded',
        );
      } finally {
        cli?.kill();
        srv.kill();
      }
    });
  }

  it('reports an RTO with data pending (1.5 s blackhole) as an rto event and a stall', async (t) => {
    if (!requireRoot(t)) return;
    const { a: client, b: server } = pair!;
    const port = 5010;
    const total = 3 << 20;
    const srv = startPeer(server, ['server', server.ipv4, port, total, 1]);
    let cli: ReturnType<typeof startPeer> | null = null;
    try {
      await srv.phase('listening');
      cli = startPeer(client, ['client', server.ipv4, port, total, 1, 32768, 20]);
      const connected = await cli.phase('connected');
      const cport = Number(connected['local_port']);
      await new Promise((r) => setTimeout(r, 300));
      // Drop everything the client sends: its segments wait, the retransmission timer fires.
      server.exec(
        'nft',
        ['-f', '-'],
        `table inet kfbh {\n chain in {\n  type filter hook input priority 0;\n  tcp dport ${port} drop\n }\n}\n`,
      );
      await new Promise((r) => setTimeout(r, 1500));
      server.exec('nft', ['delete', 'table', 'inet', 'kfbh']);
      const done = await cli.phase('done', 60000);
      cli.release();
      await cli.phase('closed');
      await log!.waitFor((e) => isClose(e) && e.netns === client.inode && e.localPort === cport);
      const evs = ofSocket(log!, client, cport);
      const rtos = evs.filter((e) => e.kind === EVENT_KIND.rto);
      assert.ok(rtos.length >= 1, 'at least one rto event');
      assert.equal(rtos[0]!.tcpState, TCP_ESTABLISHED);
      assert.ok(rtos[0]!.counters.unackedBytes > 0, 'data was pending when the RTO fired');
      assert.ok(rtos[0]!.arg1 > 0, 'packets in flight');
      const last = evs.at(-1)!;
      assert.ok(last.ancillary.stalls >= 1);
      assert.equal(last.ancillary.stalls, rtos.length);
      assert.ok(last.counters.totalRto >= rtos.length);
      assert.equal(last.counters.totalRetrans, done['total_retrans']);
      assert.ok(last.counters.totalRetrans > 0);
      // Recovery: the congestion state went to Loss and back to Open.
      const cong = evs.filter((e) => e.kind === EVENT_KIND.congState).map((e) => `${e.arg0}>${e.arg1}`);
      assert.ok(
        cong.some((c) => c.endsWith('>4')),
        `Loss entered: ${cong.join(' ')}`,
      );
      assert.ok(
        cong.some((c) => c.endsWith('>0')),
        `Open again: ${cong.join(' ')}`,
      );
    } finally {
      cli?.kill();
      srv.kill();
      spawnQuiet(server, ['nft', 'delete', 'table', 'inet', 'kfbh']);
    }
  });

  it('counts a retransmitted SYN and times the handshake from the first SYN', async (t) => {
    if (!requireRoot(t)) return;
    const { a: client, b: server } = pair!;
    const port = 5030;
    const srv = startPeer(server, ['server', server.ipv4, port, 1000, 1000]);
    let cli: ReturnType<typeof startPeer> | null = null;
    try {
      await srv.phase('listening');
      // The first SYN is lost; the retransmission a second later gets through. The rule goes
      // once it has dropped a packet (its counter says so), not after a fixed time: a client slow
      // to start under load would otherwise send its first SYN after the rule was gone.
      server.exec(
        'nft',
        ['-f', '-'],
        `table inet kfsyn {\n chain in {\n  type filter hook input priority 0;\n  tcp dport ${port} counter drop\n }\n}\n`,
      );
      cli = startPeer(client, ['client', server.ipv4, port, 1000, 1000]);
      for (
        let i = 0;
        !/counter packets [1-9]/.test(server.exec('nft', ['list', 'table', 'inet', 'kfsyn']));
        i++
      ) {
        assert.ok(i < 400, 'the first SYN reached the drop rule within 20 s');
        await new Promise((r) => setTimeout(r, 50));
      }
      server.exec('nft', ['delete', 'table', 'inet', 'kfsyn']);
      const done = await cli.phase('done');
      cli.release();
      await cli.phase('closed');
      const cport = Number(done['local_port']);
      await log!.waitFor((e) => isClose(e) && e.netns === client.inode && e.localPort === cport);
      const evs = ofSocket(log!, client, cport);
      const est = evs.find((e) => e.kind === EVENT_KIND.activeEstablished)!;
      assert.equal(est.ancillary.synRetrans, 1);
      assert.ok(
        est.tsNs - est.ancillary.synNs >= 900_000_000n,
        `handshake took ${est.tsNs - est.ancillary.synNs} ns`,
      );
      const rto = evs.find((e) => e.kind === EVENT_KIND.rto)!;
      assert.equal(rto.tcpState, TCP_SYN_SENT);
      assert.equal(est.ancillary.stalls, 0, 'a SYN timeout is not a data stall');
    } finally {
      cli?.kill();
      srv.kill();
      spawnQuiet(server, ['nft', 'delete', 'table', 'inet', 'kfsyn']);
    }
  });

  it('reports data received twice (ACKs lost, the sender resent) as duplicates, as many as the kernel counts', async (t) => {
    if (!requireRoot(t)) return;
    // A pair of its own: TcpExtDelayedACKLost counts for the whole namespace, so it is this
    // connection's count only where no earlier test's socket can still receive anything.
    const own = createNetnsPair();
    const { a: client, b: server } = own;
    const port = 5040;
    const total = 2 << 20;
    // Every duplicate then gets its duplicate ACK, and TcpExtDelayedACKLost counts each one.
    server.exec('sysctl', ['-qw', 'net.ipv4.tcp_invalid_ratelimit=0']);
    const before = nstat(server, 'TcpExtDelayedACKLost');
    const WHY = [
      'TcpExtBeyondWindow',
      'TcpExtPAWSEstab',
      'TcpExtTCPACKSkippedSeq',
      'TcpExtTCPZeroWindowDrop',
    ];
    const whyBefore = WHY.map((n) => nstat(server, n));
    const srv = startPeer(server, ['server', server.ipv4, port, total, 1]);
    let cli: ReturnType<typeof startPeer> | null = null;
    try {
      await srv.phase('listening');
      cli = startPeer(client, ['client', server.ipv4, port, total, 1, 32768, 20]);
      await cli.phase('connected');
      await new Promise((r) => setTimeout(r, 300));
      // Drop what the server sends: data arrives, its ACKs do not, the client resends.
      client.exec(
        'nft',
        ['-f', '-'],
        `table inet kfack {\n chain in {\n  type filter hook input priority 0;\n  tcp sport ${port} drop\n }\n}\n`,
      );
      await new Promise((r) => setTimeout(r, 1500));
      client.exec('nft', ['delete', 'table', 'inet', 'kfack']);
      await cli.phase('done', 60000);
      cli.release();
      const sdone = await srv.phase('done', 60000);
      const sport = Number(sdone['local_port']);
      await log!.waitFor((e) => isClose(e) && e.netns === server.inode && e.localPort === sport);
      const evs = ofSocket(log!, server, sport);
      const dups = evs.filter((e) => e.kind === EVENT_KIND.duplicate);
      const last = evs.at(-1)!;
      assert.ok(dups.length > 0, 'duplicate events');
      assert.equal(last.ancillary.dupPackets, dups.length);
      assert.equal(
        last.ancillary.dupOctets,
        dups.reduce((n, e) => n + e.arg0, 0),
      );
      const why = WHY.map((n, i) => `${n} +${nstat(server, n) - whyBefore[i]!}`).join(', ');
      assert.equal(last.ancillary.dupPackets, nstat(server, 'TcpExtDelayedACKLost') - before, why);
    } finally {
      cli?.kill();
      srv.kill();
      spawnQuiet(client, ['nft', 'delete', 'table', 'inet', 'kfack']);
      own.close();
    }
  });

  it('flags the subflows of an MPTCP connection and follows each of their events with one of its meta socket', async (t) => {
    if (!requireRoot(t)) return;
    const { a: client, b: server } = pair!;
    const port = 5050;
    const srv = startPeer(server, ['mptcp-server', server.ipv4, port, 50_000, 100_000]);
    let cli: ReturnType<typeof startPeer> | null = null;
    try {
      await srv.phase('listening');
      cli = startPeer(client, ['mptcp-client', server.ipv4, port, 50_000, 100_000]);
      const done = await cli.phase('done');
      cli.release();
      await cli.phase('closed');
      await srv.phase('done');
      const cport = Number(done['local_port']);
      await log!.waitFor((e) => isClose(e) && e.netns === client.inode && e.localPort === cport);
      const evs = ofSocket(log!, client, cport);
      assert.ok(evs.some((e) => e.kind === EVENT_KIND.connect));
      assert.ok(evs.some((e) => e.kind === EVENT_KIND.activeEstablished));
      const subflows = evs.filter((e) => e.kind !== EVENT_KIND.mptcp);
      assert.ok(subflows.every((e) => e.mptcpSubflow && e.mptcp!.pathIndex === 1));
      // Every event of this port pair is a subflow's or its connection's (meta socket).
      const pairEvents = log!.filter(
        (e) =>
          (e.netns === client.inode && e.remotePort === port) ||
          (e.netns === server.inode && e.localPort === port),
      );
      assert.ok(
        pairEvents.length > 0 && pairEvents.every((e) => e.mptcpSubflow || e.kind === EVENT_KIND.mptcp),
      );
      assert.ok(subflows.at(-1)!.counters.bytesReceived >= 100_000);
      // The connection's events: its key ties them to the subflow; its bytes are the data level's.
      const key = subflows.at(-1)!.mptcp!.key;
      assert.notEqual(key, 0n);
      const metas = log!.filter(
        (e) => e.kind === EVENT_KIND.mptcp && e.netns === client.inode && e.cookie === key,
      );
      assert.ok(metas.length > 0);
      assert.equal(metas.at(-1)!.counters.bytesReceived, 100_000);
    } finally {
      cli?.kill();
      srv.kill();
    }
  });

  it('snapshots, with the iterator, a connection opened before the probes were loaded', async (t) => {
    if (!requireRoot(t)) return;
    const { a: client, b: server } = pair!;
    const port = 5020;
    const srv = startPeer(server, ['server', server.ipv6, port, 10_000, 0]);
    let cli: ReturnType<typeof startPeer> | null = null;
    let late: LiveProbes | null = null;
    try {
      await srv.phase('listening');
      cli = startPeer(client, ['client', server.ipv6, port, 10_000, 0]);
      const done = await cli.phase('done');
      late = startLiveProbes();
      const snaps = late.snapshot([
        { inode: client.inode, path: client.path },
        { inode: server.inode, path: server.path },
      ]);
      const mine = snaps.find((e) => e.netns === client.inode && e.localPort === done['local_port']);
      assert.ok(mine, `snapshot of the client among ${snaps.length}`);
      assert.equal(mine.kind, EVENT_KIND.snapshot);
      assert.equal(mine.tcpState, TCP_ESTABLISHED);
      assert.equal(mine.arg0, TCP_ESTABLISHED);
      assert.equal(mine.remoteAddress, server.ipv6);
      assert.equal(mine.counters.bytesAcked, done['bytes_acked']);
      const peer = snaps.find((e) => e.netns === server.inode && e.remotePort === done['local_port']);
      assert.ok(peer, 'the server side too');
      assert.equal(peer.counters.bytesReceived, 10_000);
      // Only this namespace pair's sockets: no listener is reported.
      assert.ok(snaps.every((e) => e.tcpState !== 10));
    } finally {
      late?.close();
      cli?.kill();
      srv.kill();
    }
  });

  it('counts events lost when the ring buffer is full, and the count is readable', async (t) => {
    if (!requireRoot(t)) return;
    const { a } = pair!;
    // One page of ring (about 16 events), nobody consuming, then 20 loopback connections.
    const small = startLiveProbes({ ringBytes: 4096, netns: a.inode });
    // The namespace filter: probes for the other namespace see none of it.
    const other = startLiveProbes({ ringBytes: 4096, netns: pair!.b.inode });
    try {
      assert.equal(small.lostEvents(), 0n);
      a.exec('python3', [
        '-c',
        'import socket\nl=socket.socket(); l.bind(("127.0.0.1",0)); l.listen(64)\nfor i in range(20):\n c=socket.create_connection(l.getsockname()); s,_=l.accept(); c.close(); s.close()\n',
      ]);
      const stats = small.stats();
      assert.ok(stats.lost > 0n, `lost ${stats.lost}`);
      assert.ok(stats.events > 0n);
      assert.equal(small.lostEvents(), stats.lost);
      assert.deepEqual(other.stats(), {
        events: 0n,
        lost: 0n,
        badChecksumsHost: 0n,
        noStorage: 0n,
        quietStates: 0n,
        quietDestroys: 0n,
      });
    } finally {
      other.close();
      small.close();
    }
  });
});

describe('probes loaded after the connection', () => {
  it('sees RTOs of a connection opened before the probes, once the iterator has snapshotted it', async (t) => {
    if (!requireRoot(t)) return;
    const pair = createNetnsPair();
    const { a: client, b: server } = pair;
    const port = 5060;
    const total = 3 << 20;
    const srv = startPeer(server, ['server', server.ipv4, port, total, 1]);
    let cli: ReturnType<typeof startPeer> | null = null;
    let late: LiveProbes | null = null;
    let lateLog: EventLog | null = null;
    try {
      await srv.phase('listening');
      cli = startPeer(client, ['client', server.ipv4, port, total, 1, 32768, 20]);
      const cport = Number((await cli.phase('connected'))['local_port']);
      // Loaded after the handshake, with no other kpiflow probes in this file loaded: sockops
      // never saw this socket, so only the iterator can have turned its RTO callback on.
      late = startLiveProbes({ netns: client.inode });
      lateLog = new EventLog(late);
      const snap = late.snapshot([{ inode: client.inode, path: client.path }]);
      assert.ok(snap.some((e) => e.localPort === cport));
      server.exec(
        'nft',
        ['-f', '-'],
        `table inet kfbh2 {\n chain in {\n  type filter hook input priority 0;\n  tcp dport ${port} drop\n }\n}\n`,
      );
      await new Promise((r) => setTimeout(r, 1500));
      server.exec('nft', ['delete', 'table', 'inet', 'kfbh2']);
      await cli.phase('done', 60000);
      const rto = await lateLog.waitFor((e) => e.kind === EVENT_KIND.rto && e.localPort === cport);
      assert.ok(rto.ancillary.stalls >= 1);
    } finally {
      lateLog?.close();
      late?.close();
      cli?.kill();
      srv.kill();
      pair.close();
    }
  });
});

/** A counter of the namespace's TCP MIB (nstat, absolute value). */
function nstat(host: NetnsHost, name: string): number {
  const m = new RegExp(`^${name}\\s+(\\d+)`, 'm').exec(host.exec('nstat', ['-asz', name]));
  return m ? Number(m[1]) : 0;
}

function spawnQuiet(host: NetnsHost, cmd: string[]): void {
  try {
    host.exec(cmd[0]!, cmd.slice(1));
  } catch {
    // Already gone.
  }
}
