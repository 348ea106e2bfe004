/**
 * `kpiflow agent --per-packet`: the opt-in per-packet probe measures the out-of-order distance.
 * With random loss on the receiver's input, segments behind each lost one arrive beyond rcv_nxt:
 * the receiver's profiles then carry a mean distance > 0, and the out-of-order segment count
 * still equals the kernel's tcpi_rcv_ooopack. (Without the flag the fields are absent: see
 * impairments.test.ts.)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createNetnsPair } from '../helpers/netns.js';
import {
  connectionProfiles,
  liveStack,
  nftAdd,
  nftDelete,
  type Peer,
  requireLive,
  startPeer,
  sum,
} from './live-harness.js';

describe('kpiflow agent --per-packet', () => {
  // A busy host (benchmarks running alongside) can fill the default 4 MiB ring in a second.
  const stack = liveStack('perpacket', ['--per-packet', '--ring-size', '64M']);

  it('loss on the receiver’s input: the receiver’s profiles carry an out-of-order distance > 0', async (t) => {
    if (!requireLive(t)) return;
    const pair = createNetnsPair({ uniqueAddresses: true });
    const peers: Peer[] = [];
    try {
      const { a: client, b: server } = pair;
      const port = 5101;
      const total = 8 << 20;
      const srv = startPeer(server, ['server', server.ipv4, port, 1, '--expect', total]);
      peers.push(srv);
      await srv.phase('listening');
      nftAdd(server, 'kfpp', 'input', `tcp dport ${port} numgen random mod 100 < 3 drop`);
      const cli = startPeer(client, ['client', server.ipv4, port, total, 1]);
      peers.push(cli);
      await cli.phase('done', 60_000);
      nftDelete(server, 'kfpp');
      cli.release();
      await cli.phase('closed');
      const sdone = await srv.phase('done');
      const ooo = Number(sdone['rcv_ooopack']);
      assert.ok(ooo > 0, 'the kernel saw segments out of order');
      const sprof = await connectionProfiles(stack().collector, server.ipv4, port);
      assert.equal(sum(sprof, 'reorderingPacketCount'), ooo);
      for (const p of sprof) {
        assert.equal(typeof p['meanReorderingDistance'], 'number', 'present in per-packet mode');
        assert.equal(typeof p['varReorderingDistance'], 'number');
      }
      // Distances are bytes beyond rcv_nxt: at least one segment's worth where segments came early.
      const withOoo = sprof.filter((p) => Number(p['reorderingPacketCount']) > 0);
      assert.ok(withOoo.length > 0);
      for (const p of withOoo) assert.ok(Number(p['meanReorderingDistance']) > 0, JSON.stringify(p));
    } finally {
      for (const p of peers) p.kill();
      pair.close();
    }
  });
});
