/**
 * Nothing runs per packet on a healthy connection: with kernel.bpf_stats_enabled, a 100 MB
 * transfer between two namespaces runs kpiflow's programs a handful of times (connection
 * set-up and close), while the opt-in per-packet program, measured the same way on the same
 * transfer, runs for every segment received. Run counts come from the kernel (bpftool).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type LiveProbes, startLiveProbes } from '../../agent/probe-loader.js';
import { enableBpfStats, programRunStats, runStatsDelta } from '../helpers/bpf-stats.js';
import { createNetnsPair, type NetnsPair, requireRoot } from '../helpers/netns.js';
import { startPeer } from './live-peers.js';

const BYTES = 100 * 1024 * 1024;

/** Moves BYTES from a to b; returns the sender's and receiver's segment counts (TCP_INFO). */
async function transfer(pair: NetnsPair, port: number): Promise<{ segsOut: number; segsIn: number }> {
  const srv = startPeer(pair.b, ['server', pair.b.ipv4, port, BYTES, 0]);
  let cli: ReturnType<typeof startPeer> | null = null;
  try {
    await srv.phase('listening');
    cli = startPeer(pair.a, ['client', pair.b.ipv4, port, BYTES, 0]);
    const done = await cli.phase('done', 120000);
    cli.release();
    const sdone = await srv.phase('done', 120000);
    return { segsOut: Number(done['segs_out']), segsIn: Number(sdone['segs_in']) };
  } finally {
    cli?.kill();
    srv.kill();
  }
}

describe('probe overhead', () => {
  it('runs no kpiflow program per packet during a healthy 100 MB transfer; the per-packet mode does', async (t) => {
    if (!requireRoot(t)) return;
    const stats = await enableBpfStats();
    const pair = createNetnsPair();
    let probes: LiveProbes | null = null;
    try {
      probes = startLiveProbes({ netns: pair.a.inode });
      const before = programRunStats(probes.probes.programIds());
      const segs = await transfer(pair, 5101);
      const kp = runStatsDelta(programRunStats(probes.probes.programIds()), before);
      probes.close();
      probes = null;

      probes = startLiveProbes({ programs: ['kf_naive_probe'] });
      const nBefore = programRunStats(probes.probes.programIds());
      const segs2 = await transfer(pair, 5102);
      const naive = runStatsDelta(programRunStats(probes.probes.programIds()), nBefore);
      t.diagnostic(
        `kpiflow: ${kp.runs} program runs (${JSON.stringify(kp.per)}), ${kp.ns} ns in total, for ${segs.segsOut} segments sent`,
      );
      t.diagnostic(
        `per-packet mode: ${naive.per['kf_naive_probe']?.runs} runs, ${naive.ns} ns in total (${Math.round(naive.ns / Math.max(1, naive.runs))} ns/run), for ${segs2.segsIn} segments received`,
      );
      // Connection life-cycle only (other tests running at the same time may add a few runs).
      assert.ok(kp.runs < segs.segsOut / 100, `${kp.runs} runs for ${segs.segsOut} segments`);
      // Per received skb (GRO merges segments): still thousands of runs where kpiflow has a few.
      assert.ok(
        (naive.per['kf_naive_probe']?.runs ?? 0) > 1000,
        'the per-packet program does run per packet',
      );
      assert.ok(kp.runs * 10 < (naive.per['kf_naive_probe']?.runs ?? 0));
    } finally {
      probes?.close();
      stats.close();
      pair.close();
    }
  });
});
