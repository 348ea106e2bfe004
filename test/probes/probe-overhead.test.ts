/**
 * Nothing runs per packet on a healthy connection: with kernel.bpf_stats_enabled, a 100 MB
 * transfer between two namespaces runs kpiflow's programs a handful of times (connection
 * set-up and close), while the opt-in per-packet program, measured the same way on the same
 * transfer, runs for every segment received. Run counts come from the kernel (bpftool).
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { type LiveProbes, startLiveProbes } from '../../agent/probe-loader.js';
import { createNetnsPair, type NetnsPair, requireRoot } from '../helpers/netns.js';
import { run } from '../helpers/tools.js';
import { startPeer } from './live-peers.js';

const BYTES = 100 * 1024 * 1024;

/** run_cnt and run_time_ns of each program of `probes`, from the kernel. */
function runStats(probes: LiveProbes): Map<string, { runs: number; ns: number }> {
  const out = new Map<string, { runs: number; ns: number }>();
  for (const [name, id] of probes.probes.programIds()) {
    const info = JSON.parse(run('bpftool', ['prog', 'show', 'id', String(id), '-j'])) as {
      run_cnt?: number;
      run_time_ns?: number;
    };
    out.set(name, { runs: info.run_cnt ?? 0, ns: info.run_time_ns ?? 0 });
  }
  return out;
}

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

function delta(
  after: Map<string, { runs: number; ns: number }>,
  before: Map<string, { runs: number; ns: number }>,
) {
  let runs = 0;
  let ns = 0;
  const per: Record<string, number> = {};
  for (const [name, a] of after) {
    const b = before.get(name) ?? { runs: 0, ns: 0 };
    per[name] = a.runs - b.runs;
    runs += a.runs - b.runs;
    ns += a.ns - b.ns;
  }
  return { runs, ns, per };
}

describe('probe overhead', () => {
  it('runs no kpiflow program per packet during a healthy 100 MB transfer; the per-packet mode does', async (t) => {
    if (!requireRoot(t)) return;
    const sysctl = '/proc/sys/kernel/bpf_stats_enabled';
    const previous = readFileSync(sysctl, 'utf8').trim();
    const pair = createNetnsPair();
    let probes: LiveProbes | null = null;
    try {
      writeFileSync(sysctl, '1');
      probes = startLiveProbes({ netns: pair.a.inode });
      const before = runStats(probes);
      const segs = await transfer(pair, 5101);
      const kp = delta(runStats(probes), before);
      probes.close();
      probes = null;

      probes = startLiveProbes({ programs: ['kf_naive_probe'] });
      const nBefore = runStats(probes);
      const segs2 = await transfer(pair, 5102);
      const naive = delta(runStats(probes), nBefore);
      t.diagnostic(
        `kpiflow: ${kp.runs} program runs (${JSON.stringify(kp.per)}), ${kp.ns} ns in total, for ${segs.segsOut} segments sent`,
      );
      t.diagnostic(
        `per-packet mode: ${naive.per['kf_naive_probe']} runs, ${naive.ns} ns in total (${Math.round(naive.ns / Math.max(1, naive.runs))} ns/run), for ${segs2.segsIn} segments received`,
      );
      // Connection life-cycle only (other tests running at the same time may add a few runs).
      assert.ok(kp.runs < segs.segsOut / 100, `${kp.runs} runs for ${segs.segsOut} segments`);
      // Per received skb (GRO merges segments): still thousands of runs where kpiflow has a few.
      assert.ok((naive.per['kf_naive_probe'] ?? 0) > 1000, 'the per-packet program does run per packet');
      assert.ok(kp.runs * 10 < (naive.per['kf_naive_probe'] ?? 0));
    } finally {
      probes?.close();
      writeFileSync(sysctl, previous);
      pair.close();
    }
  });
});
