/**
 * The traffic and impairments of the live scenarios of issue 4, defined once: the live tests
 * (impairments.test.ts) run them under a running agent and check its profiles against the facts
 * each returns, and the golden recorder (test/replay/events-record-golden.ts) runs them under
 * `kpiflow agent --record` to make the replay fixtures.
 */
import type { NetnsPair } from '../helpers/netns.js';
import { nftAdd, nftDelete, type Peer, sleep, startPeer, tcpExt } from './live-harness.js';

/**
 * What a scenario does between the agent's start and stop. `run` returns the kernel's facts
 * (kept in the golden recording's scenario.json, and checked by the live tests).
 */
export type LiveScenario = {
  /** Extra `kpiflow agent` flags. */
  args?: string[];
  /** Runs before the agent starts (a connection older than the agent). */
  before?: (pair: NetnsPair, peers: Peer[]) => Promise<Record<string, unknown>>;
  run: (pair: NetnsPair, peers: Peer[], pre: Record<string, unknown>) => Promise<Record<string, unknown>>;
};

/** The live scenarios of issue 4, by the name of their golden recording. */
export const LIVE_SCENARIOS: Record<string, LiveScenario> = {
  'syn-drop': {
    async run({ a: client, b: server }, peers) {
      const port = 5001;
      const srv = startPeer(server, ['server', server.ipv4, port, 1000, '--expect', 1000]);
      peers.push(srv);
      await srv.phase('listening');
      nftAdd(
        server,
        'kfsyn',
        'input',
        `tcp dport ${port} tcp flags & (syn | ack) == syn numgen inc mod 1000000 == 0 drop`,
      );
      const cli = startPeer(client, ['client', server.ipv4, port, 1000, 1000]);
      peers.push(cli);
      const connected = await cli.phase('connected');
      await cli.phase('done');
      cli.release();
      await cli.phase('closed');
      return { clientPort: connected['local_port'], totalRetrans: connected['total_retrans'], bytes: 1000 };
    },
  },
  blackhole: {
    async run({ a: client, b: server }, peers) {
      const port = 5002;
      const total = 3 << 20;
      const srv = startPeer(server, ['server', server.ipv4, port, 100_000, '--expect', total]);
      peers.push(srv);
      await srv.phase('listening');
      const cli = startPeer(client, [
        'client',
        server.ipv4,
        port,
        total,
        100_000,
        '--chunk',
        32768,
        '--interval',
        20,
      ]);
      peers.push(cli);
      const connected = await cli.phase('connected');
      await sleep(300);
      nftAdd(server, 'kfbh', 'input', `tcp dport ${port} drop`);
      await sleep(1500);
      nftDelete(server, 'kfbh');
      const done = await cli.phase('done', 60_000);
      cli.release();
      await cli.phase('closed');
      const sdone = await srv.phase('done', 30_000);
      return {
        clientPort: connected['local_port'],
        serverPort: port,
        totalRto: done['total_rto'],
        totalRetrans: done['total_retrans'],
        total,
        reply: 100_000,
        sent: done['sent'],
        received: done['received'],
        serverReceived: sdone['received'],
      };
    },
  },
  loss: {
    async run({ a: client, b: server }, peers) {
      const port = 5003;
      const total = 8 << 20;
      const srv = startPeer(server, ['server', server.ipv4, port, 1, '--expect', total]);
      peers.push(srv);
      await srv.phase('listening');
      // One segment per packet: with GSO an 8 MiB transfer is only ~150 super-segments, and 2 %
      // of those at random is sometimes none at all.
      client.exec('ip', ['link', 'set', 'dev', client.dev, 'gso_max_segs', '1']);
      nftAdd(server, 'kfloss', 'input', `tcp dport ${port} numgen random mod 100 < 2 drop`);
      const cli = startPeer(client, ['client', server.ipv4, port, total, 1]);
      peers.push(cli);
      const connected = await cli.phase('connected');
      const done = await cli.phase('done', 60_000);
      nftDelete(server, 'kfloss');
      cli.release();
      await cli.phase('closed');
      return {
        clientPort: connected['local_port'],
        totalRetrans: done['total_retrans'],
        bytesRetrans: done['bytes_retrans'],
        total,
      };
    },
  },
  refused: {
    async run({ a: client, b: server }, peers) {
      const cli = startPeer(client, ['connect-refused', server.ipv4, 5999]);
      peers.push(cli);
      const done = await cli.phase('done');
      return { clientPort: done['local_port'], serverPort: 5999, error: done['error'] };
    },
  },
  reset: {
    async run({ a: client, b: server }, peers) {
      const port = 5004;
      const srv = startPeer(server, ['server', server.ipv6, port, 0, '--expect', 100 << 20]);
      peers.push(srv);
      await srv.phase('listening');
      const cli = startPeer(client, [
        'client',
        server.ipv6,
        port,
        100 << 20,
        0,
        '--chunk',
        65536,
        '--interval',
        5,
        '--abort-after',
        1 << 20,
      ]);
      peers.push(cli);
      const connected = await cli.phase('connected');
      await cli.phase('aborted');
      const sdone = await srv.phase('done');
      return { clientPort: connected['local_port'], serverPort: port, serverError: sdone['error'] };
    },
  },
  ooo: {
    async run({ a: client, b: server }, peers) {
      const port = 5005;
      const total = 8 << 20;
      const srv = startPeer(server, ['server', server.ipv6, port, 1, '--expect', total]);
      peers.push(srv);
      await srv.phase('listening');
      // Every 20th packet, not 1 % at random: veth hands over GSO aggregates (an 8 MiB transfer
      // may be only ~150 packets), and a random 1 % then sometimes drops nothing at all.
      nftAdd(server, 'kfrx', 'input', `tcp dport ${port} numgen inc mod 20 == 10 drop`);
      const cli = startPeer(client, ['client', server.ipv6, port, total, 1]);
      peers.push(cli);
      await cli.phase('done', 60_000);
      nftDelete(server, 'kfrx');
      cli.release();
      await cli.phase('closed');
      const sdone = await srv.phase('done');
      return { serverPort: port, serverRcvOoopack: sdone['rcv_ooopack'], total };
    },
  },
  'dup-acks': {
    async run({ a: client, b: server }, peers) {
      const port = 5006;
      const total = 2 << 20;
      server.exec('sysctl', ['-qw', 'net.ipv4.tcp_invalid_ratelimit=0']);
      const before = tcpExt(server, 'DelayedACKLost');
      const srv = startPeer(server, ['server', server.ipv4, port, 1, '--expect', total]);
      peers.push(srv);
      await srv.phase('listening');
      const cli = startPeer(client, [
        'client',
        server.ipv4,
        port,
        total,
        1,
        '--chunk',
        32768,
        '--interval',
        20,
      ]);
      peers.push(cli);
      await cli.phase('connected');
      await sleep(300);
      nftAdd(client, 'kfack', 'input', `tcp sport ${port} drop`);
      await sleep(1500);
      nftDelete(client, 'kfack');
      await cli.phase('done', 60_000);
      cli.release();
      await cli.phase('closed');
      await srv.phase('done');
      return { serverPort: port, delayedAckLost: tcpExt(server, 'DelayedACKLost') - before };
    },
  },
  'adopted-active-timeout': {
    args: ['--active-timeout', '2'],
    async before({ a: client, b: server }, peers) {
      const port = 5008;
      const gate = 100_000;
      const send = 65536 * 120;
      const srv = startPeer(server, ['server', server.ipv4, port, 1, '--expect', gate + send]);
      peers.push(srv);
      await srv.phase('listening');
      const cli = startPeer(client, [
        'client',
        server.ipv4,
        port,
        send,
        1,
        '--gate',
        gate,
        '--chunk',
        65536,
        '--interval',
        50,
      ]);
      peers.push(cli);
      const cport = Number((await cli.phase('connected'))['local_port']);
      // Established and idle, everything acknowledged: its counters stay as TCP_INFO says.
      const gated = await cli.phase('gated');
      return {
        clientPort: cport,
        serverPort: port,
        send,
        bytesAckedAtGate: gated['bytes_acked'],
        totalRetransAtGate: gated['total_retrans'],
      };
    },
    async run(_pair, peers, pre) {
      const [srv, cli] = peers as [Peer, Peer];
      cli.release();
      const done = await cli.phase('done', 60_000);
      cli.release();
      await cli.phase('closed');
      await srv.phase('done');
      return { ...pre, bytesAckedAtEnd: done['bytes_acked'], totalRetransAtEnd: done['total_retrans'] };
    },
  },
  'concurrent-1000': {
    // The live test's ring size: a burst of 1000 connections must not lose events.
    args: ['--ring-size', '64M'],
    async run({ a: client, b: server }, peers) {
      const n = 1000;
      const port = 5007;
      const srv = startPeer(server, ['many-server', server.ipv4, port, n]);
      peers.push(srv);
      await srv.phase('listening');
      const cli = startPeer(client, ['many-client', server.ipv4, port, n]);
      peers.push(cli);
      await cli.phase('connecting');
      const done = await cli.phase('done', 60_000);
      await srv.phase('done', 30_000);
      return { connections: done['done'], replies: done['replies'], errors: done['errors'] };
    },
  },
};
