/**
 * MPTCP: subflows tied to their connection the way tshark's MPTCP analysis ties them
 * (mptcp.stream), and the tokens computed from MP_CAPABLE keys equal tshark's
 * mptcp.expected_token (RFC 6824 v0: SHA-1 of the key; RFC 8684 v1: SHA-256), on the MPTCP
 * captures among the shared fixtures (v0 with an MP_JOIN subflow, v1 ones).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { tool } from '../helpers/pcap.js';
import { FIXTURES, requireTools } from '../helpers/tools.js';
import { replay } from './replay-helpers.js';
import { connectionKey, endpoint } from './tshark-reference.js';

const FILES = [
  'mptcp-v0.pcap',
  'mptcp-v1.pcap',
  'mptcp-aa-v1.pcap',
  'mptcp-aa-echo.pcap',
  'mptcp-fclose.pcap',
];

describe('pcap replay ties MPTCP subflows to their connection as tshark does', () => {
  for (const name of FILES) {
    it(`${name}: the same subflow groups and tokens`, async (t) => {
      if (!requireTools(t, 'tshark')) return;
      const file = `${FIXTURES}tcp/tcpdump/${name}`;
      const out = tool('tshark', [
        '-r',
        file,
        '-n',
        '-Y',
        'mptcp',
        '-T',
        'fields',
        '-E',
        'separator=\t',
        '-e',
        'ip.src',
        '-e',
        'ipv6.src',
        '-e',
        'tcp.srcport',
        '-e',
        'ip.dst',
        '-e',
        'ipv6.dst',
        '-e',
        'tcp.dstport',
        '-e',
        'mptcp.stream',
        '-e',
        'mptcp.expected_token',
        '-e',
        'tcp.options.mptcp.subtype',
      ]);
      // tshark: connection key → MPTCP stream; stream → expected tokens.
      const streamOf = new Map<string, string>();
      const tokens = new Map<string, Set<number>>();
      for (const line of out.split('\n')) {
        if (!line) continue;
        const c = line.split('\t');
        const key = connectionKey(endpoint(c[0] || c[1]!, c[2]!), endpoint(c[3] || c[4]!, c[5]!));
        // Only connections whose handshake options (MP_CAPABLE 0, MP_JOIN 1) were captured can be
        // tied; packets picked up mid-stream (ADD_ADDR echoes alone) carry nothing to tie them by.
        if (c[6] && c[8]?.split(',').some((x) => x === '0' || x === '1')) streamOf.set(key, c[6]);
        if (c[6] && c[7])
          for (const tk of c[7].split(','))
            (tokens.get(c[6]) ?? tokens.set(c[6], new Set()).get(c[6])!).add(Number(tk));
      }
      const r = await replay(file);
      assert.equal(r.error, null);
      const metas = r.source.mptcpConnections();
      const ourGroup = new Map<string, number>();
      if (name === 'mptcp-v0.pcap') {
        // Two subflows of one connection, the second joined with MP_JOIN (its token found).
        assert.equal(metas.length, 1);
        assert.deepEqual(
          metas[0]!.subflows.map((f) => f.join),
          [false, true],
        );
        assert.equal(r.source.stats.analyzer?.mptcpJoinUnknownToken, 0);
      }
      for (const s of r.summaries) {
        if (s.mptcpConnection < 0) continue;
        ourGroup.set(
          connectionKey(endpoint(s.clientAddress, s.clientPort), endpoint(s.serverAddress, s.serverPort)),
          s.mptcpConnection,
        );
      }
      // The same partition of connections into MPTCP connections.
      assert.deepEqual([...ourGroup.keys()].sort(), [...streamOf.keys()].sort());
      const pairs = new Set([...streamOf].map(([k, st]) => `${st}=${ourGroup.get(k)}`));
      assert.equal(pairs.size, new Set(streamOf.values()).size, `groups differ: ${[...pairs].join(' ')}`);
      for (const [st, tks] of tokens) {
        if (![...streamOf.values()].includes(st)) continue;
        const id = ourGroup.get([...streamOf].find(([, s]) => s === st)![0])!;
        const meta = metas.find((m) => m.id === id)!;
        for (const tk of tks)
          assert.ok(meta.tokens.includes(tk), `token ${tk} of stream ${st}: ours ${meta.tokens}`);
      }
      for (const s of r.summaries)
        if (
          streamOf.has(
            connectionKey(endpoint(s.clientAddress, s.clientPort), endpoint(s.serverAddress, s.serverPort)),
          )
        ) {
          if (s.handshake) assert.ok(s.mptcpSubflow, 'a subflow seen from its SYN is flagged');
        }
    });
  }
});
