/**
 * `kpiflow demo` run non-interactively, as `make demo` runs it (live agent, root): its summary
 * must be what the collector's API answers while the demo serves it, the case studies must show
 * (the delayed destination has the highest RTT, SYN loss stalls the IPv4 web server only, the
 * lossy bulk transfer retransmits, MPTCP uploads use both paths), and Ctrl-C must stop it and
 * remove its namespaces.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { DemoSummary } from '../../demo/run.js';
import { requireRoot } from '../helpers/netns.js';
import { requireTools } from '../helpers/tools.js';

const CLI = fileURLToPath(new URL('../../cli/kpiflow.js', import.meta.url));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('kpiflow demo', () => {
  it('shows the case studies, prints a summary equal to the API, and Ctrl-C removes everything', async (t) => {
    if (!requireRoot(t)) return;
    if (!requireTools(t, 'python3', 'nft')) return;
    const dir = mkdtempSync(join(tmpdir(), 'kpiflow-demo-test-'));
    const summaryFile = join(dir, 'summary.json');
    const port = await freePort();
    const demo = spawn(
      process.execPath,
      [
        CLI,
        'demo',
        '--seconds',
        '15',
        '--api-port',
        String(port),
        '--summary-json',
        summaryFile,
        '--dir',
        dir,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    demo.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    demo.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const exited = new Promise<number | null>((r) => demo.once('exit', (code) => r(code)));
    try {
      for (let i = 0; !existsSync(summaryFile); i++) {
        if (demo.exitCode !== null) assert.fail(`demo exited ${demo.exitCode}: ${stderr}`);
        if (i > 1200) assert.fail(`no summary after 120 s; stdout: ${stdout}`);
        await sleep(100);
      }
      await sleep(200);
      const s = JSON.parse(readFileSync(summaryFile, 'utf8')) as DemoSummary;
      assert.equal(s.mode, 'live');
      assert.match(stdout, /\d+\/15 s: \d+ connections, \d+ profiles stored/, 'progress while it runs');
      assert.match(stdout, /Destinations by RTT/);
      // What it printed is what the API answers.
      const api = async (path: string) =>
        ((await (await fetch(`http://127.0.0.1:${port}${path}`)).json()) as { items: unknown[] }).items;
      assert.deepEqual(s.destinations, await api('/api/v1/profiles/summary?groupBy=destination&limit=50'));
      assert.deepEqual(s.ipVersions, await api('/api/v1/profiles/summary?groupBy=ipVersion&limit=10'));
      const by = new Map(s.destinations.map((d) => [d.key, d]));
      const far = by.get('198.51.100.80');
      assert.ok(far?.rtt && far.rtt.p50 >= 150, `the delayed destination's RTT: ${JSON.stringify(far?.rtt)}`);
      for (const d of s.destinations)
        if (d !== far) assert.ok((d.rtt?.p50 ?? 0) < far.rtt.p50, `${d.key} below it`);
      assert.ok((by.get('198.51.100.10')?.stallCount ?? 0) > 0, 'SYN loss stalls the IPv4 web server');
      assert.equal(by.get('2001:db8:1::10')?.stallCount, 0, 'not the IPv6 one');
      assert.ok(
        (by.get('203.0.113.20')?.retransmittedPacketTotalCount ?? 0) > 0,
        'the lossy bulk transfer retransmits',
      );
      assert.ok(s.mptcp.connectionProfiles > 0, 'MPTCP connections profiled');
      assert.deepEqual(s.mptcp.pathIndexes, [1, 2], 'their subflows on both paths');
      const v4 = s.ipVersions.find((v) => v.key === 4);
      assert.ok((v4?.timeToEstablish?.p90 ?? 0) >= 1000, 'a lost SYN costs the IPv4 handshake a second');
      demo.kill('SIGINT');
      assert.equal(await exited, 130, `exit code after Ctrl-C; stderr: ${stderr}`);
      const left = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
      assert.doesNotMatch(left, /kfdemo-/, 'namespaces removed');
    } finally {
      if (demo.exitCode === null) {
        demo.kill('SIGINT');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
