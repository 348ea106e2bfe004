/**
 * The proof of issue 4, part two: the agent under many connections at once, and with
 * connections it did not see start. One test runs the agent in-process (Agent + openLiveSource,
 * so it can read the agent's own counters), the other runs `kpiflow agent`; both export to a
 * real `kpiflow collect` and read the profiles back through its API. The two tests run at the
 * same time, each with its own namespace pair, addresses and agent.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Agent, openLiveSource } from '../../agent/index.js';
import { withCollector } from '../helpers/collector-process.js';
import { createNetnsPair, type NetnsPair } from '../helpers/netns.js';
import {
  AgentProcess,
  type ApiProfile,
  connectionProfiles,
  num,
  type Peer,
  profilesFrom,
  requireLive,
  startPeer,
  sum,
  transitions,
} from './live-harness.js';
import { LIVE_SCENARIOS } from './scenarios.js';

/** Runs `fn` with a fresh namespace pair and the peers it starts, all removed afterwards. */
async function scenario(fn: (pair: NetnsPair, peers: Peer[]) => Promise<void>): Promise<void> {
  const pair = createNetnsPair({ uniqueAddresses: true });
  const peers: Peer[] = [];
  try {
    await fn(pair, peers);
  } finally {
    for (const p of peers) p.kill();
    pair.close();
  }
}

/** Profiles grouped by a port field. */
function byPort(profiles: readonly ApiProfile[], field: string): Map<number, ApiProfile[]> {
  const m = new Map<number, ApiProfile[]>();
  for (const p of profiles) {
    const port = num(p, field);
    const list = m.get(port) ?? [];
    if (list.length === 0) m.set(port, list);
    list.push(p);
  }
  // The handshake and the next window can start in the same millisecond: the row id breaks ties.
  for (const list of m.values())
    list.sort((x, y) => x.flowStartMilliseconds - y.flowStartMilliseconds || num(x, 'id') - num(y, 'id'));
  return m;
}

describe('the live agent with many connections, and with connections older than itself', {
  concurrency: false,
}, () => {
  it('1000 concurrent short connections: every one has its handshake and end profile at both ends, no events lost, no DESYNC', async (t) => {
    if (!requireLive(t)) return;
    const n = 1000;
    await withCollector({}, async (collector) => {
      const source = await openLiveSource({ loaderOptions: { ringBytes: 64 << 20 } });
      const agent = await Agent.start({
        source,
        export: { target: `tcp://127.0.0.1:${collector.tcp.port}`, flushIntervalMs: 50 },
      });
      try {
        await scenario(async ({ a: client, b: server }, peers) => {
          const port = 5007;
          const srv = startPeer(server, ['many-server', server.ipv4, port, n]);
          peers.push(srv);
          await srv.phase('listening');
          const cli = startPeer(client, ['many-client', server.ipv4, port, n]);
          peers.push(cli);
          const ports = (await cli.phase('connecting'))['ports'] as number[];
          const done = await cli.phase('done', 60_000);
          // The kernel's word: every connection went through and got its 100-byte reply.
          assert.deepEqual([done['done'], done['replies'], done['errors']], [n, n, 0]);
          await srv.phase('done', 30_000);
          const ended = (ps: ApiProfile[]) => ps.filter((p) => p.endState !== 'ESTABLISHED').length;
          await collector.until(
            `${n} end profiles at each end`,
            async () =>
              ended(await profilesFrom(collector, client.ipv4)) >= n &&
              ended(await profilesFrom(collector, server.ipv4)) >= n,
            30_000,
          );
          const cside = byPort(await profilesFrom(collector, client.ipv4), 'sourceTransportPort');
          const sside = byPort(await profilesFrom(collector, server.ipv4), 'destinationTransportPort');
          assert.equal(new Set(ports).size, n);
          const bad: string[] = [];
          for (const p of ports) {
            for (const [side, m] of [
              ['client', cside],
              ['server', sside],
            ] as const) {
              const ps = m.get(p) ?? [];
              const tr = transitions(ps).join(' ');
              if (
                tr !== 'NEW>ESTABLISHED ESTABLISHED>FINISHED' ||
                sum(ps, 'transferredOctetTotalCount') !== 100 ||
                sum(ps, 'receivedOctetTotalCount') !== 100
              )
                bad.push(`${side} of client port ${p}: ${tr}`);
            }
          }
          assert.deepEqual(bad.slice(0, 10), [], `${bad.length} connections with a wrong history`);
          assert.equal(cside.size, n, 'no other connection from the client address');
          assert.equal(sside.size, n);
          assert.equal(agent.stats.lostEvents, 0, 'the ring buffer never overflowed');
          assert.equal(agent.stats.profilesByEnd[7], 0, 'no DESYNC profile');
        });
      } finally {
        await agent.close();
      }
    });
  });

  it('a connection open before the agent started is reported, and a 2 s active timeout gives periodic ESTABLISHED>ESTABLISHED profiles adding up to the kernel’s totals', async (t) => {
    if (!requireLive(t)) return;
    await withCollector({}, async (collector) => {
      let agent: AgentProcess | null = null;
      try {
        await scenario(async (pair, peers) => {
          const sc = LIVE_SCENARIOS['adopted-active-timeout']!;
          // The connection is open and idle before the agent starts.
          const pre = await sc.before!(pair, peers);
          agent = await AgentProcess.start([
            '--export',
            `tcp://127.0.0.1:${collector.tcp.port}`,
            '--flush-interval',
            '50ms',
            // A busy host (benchmarks running alongside) can fill the default 4 MiB ring in a second.
            '--ring-size',
            '64M',
            ...(sc.args ?? []),
          ]);
          // 'agent started' comes after the start-up scan that adopted the connection.
          const f = await sc.run(pair, peers, pre);
          const send = Number(f['send']);
          const prof = await connectionProfiles(collector, pair.a.ipv4, Number(f['clientPort']));
          const tr = transitions(prof);
          assert.equal(prof[0]!.startState, 'ESTABLISHED', 'adopted: no handshake profile');
          assert.ok(!tr.some((x) => x.startsWith('NEW')), tr.join(' '));
          assert.equal(tr.at(-1), 'ESTABLISHED>FINISHED');
          const periodic = prof.filter((p) => p.startState === 'ESTABLISHED' && p.endState === 'ESTABLISHED');
          assert.ok(periodic.length >= 2, `periodic profiles: ${tr.join(' ')}`);
          for (const p of periodic) {
            // Closed by the first iterator scan at or past 2 s; scans come every 500 ms (a
            // quarter of the timeout), so 2.5 s, plus up to 500 ms for a loaded 2-core VM.
            const ms = p.flowEndMilliseconds - p.flowStartMilliseconds;
            assert.ok(ms >= 2000 && ms <= 3000, `window of ${ms} ms`);
          }
          // Since adoption: exactly what the kernel counted between the two TCP_INFO readings,
          // which is what the application sent after the gate.
          const acked = Number(f['bytesAckedAtEnd']) - Number(f['bytesAckedAtGate']);
          assert.equal(acked, send);
          assert.equal(sum(prof, 'transferredOctetTotalCount'), send);
          assert.equal(sum(prof, 'receivedOctetTotalCount'), 1);
          assert.equal(
            sum(prof, 'retransmittedPacketTotalCount'),
            Number(f['totalRetransAtEnd']) - Number(f['totalRetransAtGate']),
          );
          const sprof = await connectionProfiles(collector, pair.b.ipv4, Number(f['serverPort']));
          assert.equal(sprof[0]!.startState, 'ESTABLISHED');
          assert.equal(sum(sprof, 'receivedOctetTotalCount'), send);
          const m = await agent.metrics();
          assert.ok(m.get('kpiflow_agent_connections_total', { how: 'adopted' }) >= 2);
          assert.equal(m.get('kpiflow_agent_lost_events_total'), 0);
        });
        assert.equal(await agent!.stop(), 0);
      } finally {
        await (agent as AgentProcess | null)?.kill();
      }
    });
  });
});
