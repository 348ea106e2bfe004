/**
 * pcap replay against an independent analyzer: every TCP capture among the shared third-party
 * fixtures (tcp/, and the pmacct captures that carry BMP/BGP over TCP), per connection and per
 * direction, compared with tshark's dissection and tcp.analysis flags.
 *
 * How the KPIs map to tshark's flags, and why each tolerance:
 * - Bytes and segments per direction (payload bytes with retransmissions = the sender's
 *   bytes_sent, data segments, all segments): tshark's tcp.len sums and packet counts. Exact.
 * - Retransmissions (the sender's total_retrans): a segment with payload, SYN or FIN starting
 *   below the highest sequence already sent. tshark splits exactly those segments into
 *   tcp.analysis.retransmission (generic, fast and spurious) and tcp.analysis.out_of_order, the
 *   latter by a timing guess (sent within the first RTT of the highest segment). An end host
 *   never reorders its own segments, so both are retransmissions to the kernel; keep-alives are
 *   excluded by both. Tolerance 0 on retransmission + out_of_order.
 * - Duplicates (data received that was already acknowledged, the probes' TCP_OLD_DATA):
 *   tcp.analysis.spurious_retransmission flags a segment whose end is at or below the
 *   receiver's last ACK. We use the receiver's highest ACK (its rcv_nxt never goes back), which
 *   equals its last one unless ACKs were reordered on the way to the capture point. Tolerance: the
 *   number of the receiver's ACKs that went backwards in the capture (0 in all but one fixture);
 *   segments with payload only (tshark does not flag FINs).
 * - Out of order at the receiver (rcv_ooopack): tshark has no flag for "data above the next
 *   expected byte". Two checks: (a) tcp.analysis.lost_segment ("previous segment not captured")
 *   marks a segment above the highest sequence seen, hence above the receiver's next expected:
 *   our count is at least tshark's; (b) a reassembly over tshark's own tcp.seq/tcp.len/flags
 *   counts segments above the contiguous point: equal, except where the receiver's ACKs show it
 *   holds data the capture missed (we then move the point to the ACK, tshark's fields cannot):
 *   allowed only on connections where tshark saw ACKs of unseen segments, or lost segments.
 * - Stalls (RTOs): tshark marks tcp.analysis.rto on every generic retransmission, RTO-driven or
 *   not; a stall is the retransmission of the first unacknowledged byte after silence, so at most
 *   as many as tshark's rto marks.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FIXTURES, requireTools } from '../helpers/tools.js';
import { captures, replay } from './replay-helpers.js';
import { assertAgreesWithTshark } from './tshark-reference.js';

const FILES = [
  ...captures(`${FIXTURES}tcp`),
  `${FIXTURES}ipfix/pmacct/400-ipfix-bmp-cisco-srv6.pcap`,
  `${FIXTURES}ipfix/pmacct/500-ipfix-bgp-cisco-srv6.pcap`,
];

describe('pcap replay agrees with tshark on the third-party TCP captures', () => {
  const rows: string[] = [];
  for (const file of FILES) {
    const name = file.slice(FIXTURES.length);
    it(`${name}: bytes, segments, retransmissions, duplicates and out-of-order per connection and direction`, async (t) => {
      if (!requireTools(t, 'tshark')) return;
      const r = await replay(file);
      assert.equal(r.error, null, `replay failed: ${r.error?.message}`);
      rows.push(...assertAgreesWithTshark(name, file, r));
    });
  }
  it('prints the agreement table', () => {
    process.stdout.write(
      `\n# ours/tshark per connection and direction\n${rows.map((r) => `# ${r}`).join('\n')}\n`,
    );
  });
});
