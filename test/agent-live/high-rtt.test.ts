/**
 * RTT as the agent measures it, on a path with a real 100 ms delay (demo/delay-path.ts: a TUN
 * device in the client namespace holds every packet to one destination address; no netem here):
 * the connection's profile carries the kernel's smoothed RTT (what TCP_INFO reports to the
 * client), and a connection to the same server over the direct link stays well under it. This is
 * also the high-RTT destination `make demo` shows.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { addDelayedDestination } from '../../demo/delay-path.js';
import { createNetnsPair } from '../helpers/netns.js';
import { requireTools } from '../helpers/tools.js';
import { connectionProfiles, liveStack, num, type Peer, requireLive, startPeer } from './live-harness.js';

const DELAY_MS = 100;

describe('kpiflow agent --source live, RTT on a delayed path', () => {
  const stack = liveStack('rtt');

  it(`a destination behind a ${DELAY_MS} ms delay: the profile's RTT is the kernel's srtt, the direct path's is far lower`, async (t) => {
    if (!requireLive(t)) return;
    if (!requireTools(t, 'python3')) return;
    const pair = createNetnsPair({ uniqueAddresses: true });
    const peers: Peer[] = [];
    const far = '192.0.2.200';
    const delayed = await addDelayedDestination(pair.a, pair.b, far, DELAY_MS);
    try {
      const results: Record<string, { port: number; rtt: number }> = {};
      for (const [name, addr, port] of [
        ['delayed', far, 5101],
        ['direct', pair.b.ipv4, 5102],
      ] as const) {
        const srv = startPeer(pair.b, ['server', addr, port, 2000, '--expect', 200_000]);
        peers.push(srv);
        await srv.phase('listening');
        const cli = startPeer(pair.a, [
          'client',
          addr,
          port,
          200_000,
          2000,
          '--chunk',
          20_000,
          '--interval',
          50,
        ]);
        peers.push(cli);
        const done = await cli.phase('done', 60_000);
        cli.release();
        await cli.phase('closed');
        results[name] = { port: Number(done['local_port']), rtt: Number(done['rtt']) };
      }
      const kernelRtt = results['delayed']!.rtt;
      assert.ok(
        kernelRtt >= DELAY_MS * 1000,
        `kernel srtt ${kernelRtt} us includes the ${DELAY_MS} ms delay`,
      );
      const prof = await connectionProfiles(stack().collector, pair.a.ipv4, results['delayed']!.port);
      const last = prof.at(-1)!;
      assert.equal(last['destinationAddress'], far);
      const rtt = num(last, 'meanLatencyMicroseconds');
      // The agent reads srtt when the connection closes, the peer read it just before: the
      // closing exchange can move it a little, never by much on a fixed delay.
      assert.ok(
        Math.abs(rtt - kernelRtt) <= kernelRtt * 0.05,
        `profile RTT ${rtt} us vs TCP_INFO ${kernelRtt} us`,
      );
      assert.equal(num(last, 'meanLatencyMilliseconds'), Math.round(rtt / 1000));
      const direct = await connectionProfiles(stack().collector, pair.a.ipv4, results['direct']!.port);
      const drtt = num(direct.at(-1)!, 'meanLatencyMicroseconds');
      assert.ok(drtt < rtt / 10, `direct path RTT ${drtt} us well under the delayed ${rtt} us`);
    } finally {
      for (const p of peers) p.kill();
      delayed.close();
      pair.close();
    }
  });
});
