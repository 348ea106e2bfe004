/**
 * BPF run statistics from the kernel (run_cnt and run_time_ns per program), shared by the probe
 * overhead test and the overhead benchmark. The kernel only counts while statistics are enabled:
 * enableBpfStats holds a BPF_ENABLE_STATS descriptor (bpf-enable-stats.py), the reference-counted
 * twin of kernel.bpf_stats_enabled=1, so tests running at the same time that toggle the sysctl
 * cannot stop the count, and it stops by itself if the holder dies.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { run } from './tools.js';

const HOLDER = fileURLToPath(new URL('../../../test/helpers/bpf-enable-stats.py', import.meta.url));

/** What the kernel counted for one program. */
export interface RunStat {
  runs: number;
  ns: number;
}

/** Run statistics by program name. */
export type RunStats = Map<string, RunStat>;

/** Statistics turned on until close(). */
export interface BpfStatsHold {
  close(): void;
}

/** Turns BPF run statistics on (needs root); they stay on until close() or this process exits. */
export async function enableBpfStats(): Promise<BpfStatsHold> {
  const proc: ChildProcess = spawn('python3', [HOLDER], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  await new Promise<void>((resolve, reject) => {
    const lines = createInterface({ input: proc.stdout! });
    lines.once('line', () => resolve());
    proc.once('exit', (code) => reject(new Error(`bpf-enable-stats.py exited ${code}: ${stderr}`)));
  });
  return {
    close() {
      proc.stdin?.end();
    },
  };
}

/** run_cnt and run_time_ns of each program given as [name, kernel program id]. */
export function programRunStats(ids: Iterable<readonly [string, number]>): RunStats {
  const out: RunStats = new Map();
  for (const [name, id] of ids) {
    const info = JSON.parse(run('bpftool', ['prog', 'show', 'id', String(id), '-j'])) as {
      run_cnt?: number;
      run_time_ns?: number;
    };
    out.set(name, { runs: info.run_cnt ?? 0, ns: info.run_time_ns ?? 0 });
  }
  return out;
}

/** What ran between two readings: totals and runs per program. */
export interface RunStatsDelta {
  runs: number;
  ns: number;
  per: Record<string, RunStat>;
}

/** The difference of two readings of the same programs. */
export function runStatsDelta(after: RunStats, before: RunStats): RunStatsDelta {
  let runs = 0;
  let ns = 0;
  const per: Record<string, RunStat> = {};
  for (const [name, a] of after) {
    const b = before.get(name) ?? { runs: 0, ns: 0 };
    per[name] = { runs: a.runs - b.runs, ns: a.ns - b.ns };
    runs += a.runs - b.runs;
    ns += a.ns - b.ns;
  }
  return { runs, ns, per };
}

/**
 * Names and ids of the BPF programs another process holds open (from its /proc fdinfo: program
 * descriptors and links both name their program), e.g. a running `kpiflow agent`.
 */
export function processProgramIds(pid: number): Map<string, number> {
  const ids = new Set<number>();
  const dir = `/proc/${pid}/fdinfo`;
  for (const fd of readdirSync(dir)) {
    let text: string;
    try {
      text = readFileSync(`${dir}/${fd}`, 'utf8');
    } catch {
      continue; // closed meanwhile
    }
    const m = /^prog_id:\s*(\d+)$/m.exec(text);
    if (m) ids.add(Number(m[1]));
  }
  const out = new Map<string, number>();
  for (const id of ids) {
    const info = JSON.parse(run('bpftool', ['prog', 'show', 'id', String(id), '-j'])) as { name?: string };
    out.set(info.name ?? `prog_${id}`, id);
  }
  return out;
}
