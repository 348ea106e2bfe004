/**
 * The proof of issue 4, part one: `kpiflow agent --source live` (the real command, a child
 * process in the host namespace) observes client and server in test namespaces whose links are
 * impaired with nftables, and exports to a real `kpiflow collect` over TCP; each test reads the
 * connection's profiles back through the collector's API and compares them with the kernel's
 * own view (TCP_INFO taken by the peers, the namespace's SNMP counters, the errors the
 * applications got) and with the bytes the applications really moved.
 *
 * One agent and one collector serve every test of this file, and the tests run at the same time:
 * each has its own namespace pair with addresses no other pair has, and reads only the profiles
 * of its own addresses and ports.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createNetnsPair, type NetnsPair } from '../helpers/netns.js';
import {
  type ApiProfile,
  connectionProfiles,
  liveStack,
  num,
  type Peer,
  requireLive,
  sum,
  transitions,
} from './live-harness.js';
import { LIVE_SCENARIOS } from './scenarios.js';

describe('kpiflow agent --source live, impaired links, profiles read back from kpiflow collect', {
  concurrency: true,
}, () => {
  // A busy host (benchmarks running alongside) can fill the default 4 MiB ring in a second.
  const stack = liveStack('live', ['--ring-size', '64M']);

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

  it('first SYN dropped: the handshake profile shows one stall and a time to establish of at least 1 s', async (t) => {
    if (!requireLive(t)) return;
    await scenario(async (pair, peers) => {
      const f = await LIVE_SCENARIOS['syn-drop']!.run(pair, peers, {});
      const profiles = await connectionProfiles(stack().collector, pair.a.ipv4, Number(f['clientPort']));
      assert.deepEqual(transitions(profiles), ['NEW>ESTABLISHED', 'ESTABLISHED>FINISHED']);
      const hs = profiles[0]!;
      // Kernel's word: one retransmission (the SYN) by the time connect() returned.
      assert.equal(f['totalRetrans'], 1);
      assert.equal(num(hs, 'synRetransmissionCount'), 1);
      assert.equal(num(hs, 'stallCount'), 1, 'the SYN timeout is the handshake stall');
      assert.equal(num(hs, 'retransmittedPacketTotalCount'), 1);
      // The SYN is retransmitted after the initial RTO (1 s, RFC 6298) and answered at once
      // over veth; past 3 s a second retransmission would have been needed, which the kernel
      // did not make (total_retrans 1). Rounded to ms, hence >= 1000 - 1.
      const tte = num(hs, 'timeToEstablishMilliseconds');
      assert.ok(tte >= 999 && tte < 3000, `time to establish ${tte} ms`);
      assert.equal(hs['endState'], 'ESTABLISHED');
      assert.equal(sum(profiles, 'transferredOctetTotalCount'), f['bytes']);
      assert.equal(sum(profiles, 'receivedOctetTotalCount'), f['bytes']);
    });
  });

  it('1.5 s blackhole mid-transfer: ESTABLISHED>UPDATE with a stall, UPDATE>ESTABLISHED, FINISHED; bytes add up to what the applications moved', async (t) => {
    if (!requireLive(t)) return;
    await scenario(async (pair, peers) => {
      const f = await LIVE_SCENARIOS['blackhole']!.run(pair, peers, {});
      const cport = Number(f['clientPort']);
      const cprof = await connectionProfiles(stack().collector, pair.a.ipv4, cport);
      assert.deepEqual(transitions(cprof), [
        'NEW>ESTABLISHED',
        'ESTABLISHED>UPDATE',
        'UPDATE>ESTABLISHED',
        'ESTABLISHED>FINISHED',
      ]);
      assert.ok(num(cprof[1]!, 'stallCount') >= 1, 'the RTO that opened UPDATE is a stall');
      // Every RTO of this connection had data pending: the stalls are the kernel's RTOs.
      assert.equal(sum(cprof, 'stallCount'), f['totalRto']);
      assert.equal(sum(cprof, 'retransmittedPacketTotalCount'), f['totalRetrans']);
      assert.ok(num(cprof[2]!, 'rtoRecoveryCount') >= 1, 'recovered from the RTO');
      // Application bytes, exactly: the kernel also counts the SYN and FINs in sequence space,
      // the profiles do not (docs/agent.md).
      assert.equal(f['sent'], f['total']);
      assert.equal(f['received'], f['reply']);
      assert.equal(sum(cprof, 'transferredOctetTotalCount'), f['total']);
      assert.equal(sum(cprof, 'receivedOctetTotalCount'), f['reply']);
      const sprof = await connectionProfiles(stack().collector, pair.b.ipv4, Number(f['serverPort']));
      assert.equal(sprof[0]!.destinationTransportPort, cport);
      assert.equal(f['serverReceived'], f['total']);
      assert.equal(sum(sprof, 'transferredOctetTotalCount'), f['reply']);
      assert.equal(sum(sprof, 'receivedOctetTotalCount'), f['total']);
      assert.equal(sprof.at(-1)!.endState, 'FINISHED');
      // The windows tile the connection: each opens where the previous one closed.
      for (let i = 1; i < cprof.length; i++) {
        assert.equal(cprof[i]!.flowStartMilliseconds, cprof[i - 1]!.flowEndMilliseconds);
        assert.equal(cprof[i]!.startState, cprof[i - 1]!.endState);
      }
    });
  });

  it('2 % random loss on a bulk transfer: retransmissions in the profiles equal the sender’s tcpi_total_retrans', async (t) => {
    if (!requireLive(t)) return;
    await scenario(async (pair, peers) => {
      const f = await LIVE_SCENARIOS['loss']!.run(pair, peers, {});
      const prof = await connectionProfiles(stack().collector, pair.a.ipv4, Number(f['clientPort']));
      const retrans = Number(f['totalRetrans']);
      assert.ok(retrans > 0, 'the loss made the kernel retransmit');
      assert.equal(sum(prof, 'retransmittedPacketTotalCount'), retrans);
      assert.equal(sum(prof, 'droppedOctetTotalCount'), f['bytesRetrans']);
      assert.equal(sum(prof, 'transferredOctetTotalCount'), f['total']);
      assert.equal(prof.at(-1)!.endState, 'FINISHED');
    });
  });

  it('refused connection: one NEW>UNREACHABLE profile', async (t) => {
    if (!requireLive(t)) return;
    await scenario(async (pair, peers) => {
      const f = await LIVE_SCENARIOS['refused']!.run(pair, peers, {});
      assert.equal(f['error'], 'ECONNREFUSED', 'the kernel refused it (reset in SYN_SENT)');
      const prof = await connectionProfiles(stack().collector, pair.a.ipv4, Number(f['clientPort']));
      assert.deepEqual(transitions(prof), ['NEW>UNREACHABLE']);
      assert.equal(num(prof[0]!, 'transferredOctetTotalCount'), 0);
      assert.equal(num(prof[0]!, 'timeToEstablishMilliseconds'), 0);
      assert.equal(prof[0]!.destinationTransportPort, f['serverPort']);
    });
  });

  it('reset mid-transfer (SO_LINGER 0 close): both ends ESTABLISHED>BROKEN, over IPv6', async (t) => {
    if (!requireLive(t)) return;
    await scenario(async (pair, peers) => {
      const f = await LIVE_SCENARIOS['reset']!.run(pair, peers, {});
      assert.equal(f['serverError'], 'ECONNRESET', 'the server’s kernel got the reset');
      const cprof = await connectionProfiles(stack().collector, pair.a.ipv6, Number(f['clientPort']));
      assert.deepEqual(transitions(cprof), ['NEW>ESTABLISHED', 'ESTABLISHED>BROKEN']);
      assert.equal(cprof[0]!['ipVersion'], 6);
      const sprof = await connectionProfiles(stack().collector, pair.b.ipv6, Number(f['serverPort']));
      assert.deepEqual(transitions(sprof), ['NEW>ESTABLISHED', 'ESTABLISHED>BROKEN']);
    });
  });

  it('loss on the receiver’s input (every 20th packet): out-of-order segments in the profiles equal tcpi_rcv_ooopack, over IPv6', async (t) => {
    if (!requireLive(t)) return;
    await scenario(async (pair, peers) => {
      const f = await LIVE_SCENARIOS['ooo']!.run(pair, peers, {});
      // The server read TCP_INFO after EOF: nothing arrives out of order after that.
      const ooo = Number(f['serverRcvOoopack']);
      assert.ok(ooo > 0, 'segments after each lost one arrived out of order');
      const sprof = await connectionProfiles(stack().collector, pair.b.ipv6, Number(f['serverPort']));
      assert.equal(sum(sprof, 'reorderingPacketCount'), ooo);
      assert.equal(sum(sprof, 'receivedOctetTotalCount'), f['total']);
      // Without the per-packet mode the distance is not measured: absent, never 0.
      for (const p of sprof) {
        assert.equal(p['meanReorderingDistance'], undefined);
        assert.equal(p['varReorderingDistance'], undefined);
      }
    });
  });

  it('ACKs dropped, the sender resends data already received: duplicates at the receiver equal TcpExtDelayedACKLost', async (t) => {
    if (!requireLive(t)) return;
    await scenario(async (pair, peers) => {
      const f = await LIVE_SCENARIOS['dup-acks']!.run(pair, peers, {});
      const sprof = await connectionProfiles(stack().collector, pair.b.ipv4, Number(f['serverPort']));
      const dups = sum(sprof, 'duplicatePacketTotalCount');
      assert.ok(dups > 0, 'the receiver got data it had already acknowledged');
      assert.equal(dups, f['delayedAckLost']);
      assert.ok(sum(sprof, 'duplicateOctetTotalCount') >= dups, 'each duplicate carried payload');
      const byState = sprof.filter((p: ApiProfile) => num(p, 'duplicatePacketTotalCount') > 0);
      assert.ok(byState.length > 0);
    });
  });
});
