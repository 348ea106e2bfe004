/**
 * `kpiflow demo` run non-interactively, as `make demo` runs it (live agent, root), with Debian's
 * Prometheus scraping its collector from the start:
 * - its summary is what the collector's API answers while the demo serves it, and the case studies
 *   show (the delayed destination has the highest RTT, SYN loss stalls the IPv4 web server only,
 *   the lossy bulk transfer retransmits, MPTCP uploads use both paths);
 * - every panel of every dashboard under dashboards/ returns data: API panels (Infinity
 *   datasource) through the collector with Grafana's variables filled in, PromQL panels through
 *   Prometheus;
 * - Ctrl-C stops it and removes its namespaces, also when its output pipe is gone (and SIGHUP,
 *   SIGTERM); a demo killed outright leaves namespaces that the next demo replaces and removes.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type DemoSummary, freePort } from '../../demo/run.js';
import { requireRoot, rootUnavailableReason } from '../helpers/netns.js';
import { hasTool, requireTools } from '../helpers/tools.js';

const CLI = fileURLToPath(new URL('../../cli/kpiflow.js', import.meta.url));
const DASHBOARDS = fileURLToPath(new URL('../../../dashboards/', import.meta.url));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Target {
  refId: string;
  datasource: { type: string; uid: string };
  expr?: string;
  url?: string;
  url_options?: { params: { key: string; value: string }[] };
  root_selector?: string;
  columns?: { selector: string; text: string }[];
}
interface Panel {
  id: number;
  title: string;
  targets: Target[];
}

/** The value at a dotted path of an object (`rtt.p50`), or undefined. */
function at(obj: unknown, path: string): unknown {
  let v: unknown = obj;
  for (const k of path.split('.'))
    v = v === null || typeof v !== 'object' ? undefined : (v as Record<string, unknown>)[k];
  return v;
}

describe('kpiflow demo', () => {
  const live =
    rootUnavailableReason() === null && hasTool('python3') && hasTool('nft') && hasTool('prometheus');
  let dir = '';
  let port = 0;
  let demo: ChildProcess | null = null;
  let exited: Promise<number | null> = Promise.resolve(null);
  let prometheus: ChildProcess | null = null;
  let promPort = 0;
  let stdout = '';
  let stderr = '';
  let summary: DemoSummary | null = null;

  before(async () => {
    if (!live) return;
    dir = mkdtempSync(join(tmpdir(), 'kpiflow-demo-test-'));
    port = await freePort();
    promPort = await freePort();
    // Prometheus scrapes the demo's collector from its start, as a deployment's would.
    writeFileSync(
      join(dir, 'prometheus.yml'),
      `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: kpiflow-collector\n    static_configs:\n      - targets: ['127.0.0.1:${port}']\n`,
    );
    prometheus = spawn(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'prometheus')}`,
        `--web.listen-address=127.0.0.1:${promPort}`,
      ],
      { stdio: 'ignore' },
    );
    const summaryFile = join(dir, 'summary.json');
    demo = spawn(
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
    const d = demo;
    d.stdout!.on('data', (b: Buffer) => {
      stdout += b.toString();
    });
    d.stderr!.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    exited = new Promise((r) => d.once('exit', (code) => r(code)));
    for (let i = 0; !existsSync(summaryFile); i++) {
      if (d.exitCode !== null) throw new Error(`demo exited ${d.exitCode}: ${stderr}`);
      if (i > 1200) throw new Error(`no summary after 120 s; stdout: ${stdout}`);
      await sleep(100);
    }
    await sleep(200);
    summary = JSON.parse(readFileSync(summaryFile, 'utf8')) as DemoSummary;
  });

  after(async () => {
    if (demo && demo.exitCode === null) {
      demo.kill('SIGINT');
      await exited;
    }
    prometheus?.kill('SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('shows the case studies and prints a summary equal to the API', async (t) => {
    if (!requireRoot(t) || !requireTools(t, 'python3', 'nft', 'prometheus')) return;
    const s = summary!;
    assert.equal(s.mode, 'live');
    assert.match(stdout, /\d+\/15 s: \d+ connections, \d+ profiles stored/, 'progress while it runs');
    assert.match(stdout, /Destinations by RTT/);
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
    // A lost SYN costs a handshake a second (the web server over IPv4 only); IPv6 handshakes take
    // under 1 ms (reported as 0, so no statistics) or close to it.
    const web4 = by.get('198.51.100.10')?.timeToEstablish;
    assert.ok(web4 && web4.mean >= 100, `IPv4 web handshakes: ${JSON.stringify(web4)}`);
    const v4 = s.ipVersions.find((v) => v.key === 4)?.timeToEstablish;
    const v6 = s.ipVersions.find((v) => v.key === 6)?.timeToEstablish;
    // (A loaded machine can stretch a few IPv6 handshakes to some ms: compared, not bounded.)
    assert.ok(v4 && v4.mean >= 20, `IPv4 time to establish ${JSON.stringify(v4)}`);
    assert.ok(
      !v6 || v6.mean * 3 < v4.mean,
      `IPv6 ${JSON.stringify(v6)} well under IPv4 ${JSON.stringify(v4)}`,
    );
  });

  it('every dashboard panel returns data: API panels from the collector, PromQL panels from Prometheus', async (t) => {
    if (!requireRoot(t) || !requireTools(t, 'python3', 'nft', 'prometheus')) return;
    const files = readdirSync(DASHBOARDS).filter((f) => f.endsWith('.json'));
    assert.ok(files.length >= 2, `dashboards in ${DASHBOARDS}`);
    // Grafana's variables: the last hour, and a connection worth drilling into (MPTCP: its
    // connection and both subflows).
    const now = Date.now();
    const sub = (await (
      await fetch(`http://127.0.0.1:${port}/api/v1/profiles?templateId=47564&limit=1`)
    ).json()) as {
      items: { flowId: number | string }[];
    };
    const vars: Record<string, string> = {
      __from: String(now - 3_600_000),
      __to: String(now + 60_000),
      flowId: String(sub.items[0]!.flowId),
    };
    const fill = (s: string) => s.replace(/\$\{(\w+)\}/g, (_, k: string) => vars[k] ?? `\${${k}}`);
    // Prometheus has scraped the collector all along; wait for it to be up and to hold samples.
    for (let i = 0; ; i++) {
      const r = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=up`).then(
        (x) => x.json() as Promise<{ data?: { result: unknown[] } }>,
        () => null,
      );
      if (r?.data?.result.length) break;
      if (i > 100) assert.fail('Prometheus never scraped the collector');
      await sleep(200);
    }
    let checked = 0;
    for (const f of files) {
      const dash = JSON.parse(readFileSync(join(DASHBOARDS, f), 'utf8')) as { panels: Panel[] };
      for (const p of dash.panels) {
        for (const tg of p.targets) {
          const what = `${f} panel ${p.id} "${p.title}" query ${tg.refId}`;
          if (tg.datasource.uid === 'kpiflow-api') {
            const params = new URLSearchParams(
              (tg.url_options?.params ?? []).map((x) => [x.key, fill(x.value)] as [string, string]),
            );
            const url = `http://127.0.0.1:${port}${fill(tg.url!)}${params.size ? `?${params}` : ''}`;
            const res = await fetch(url);
            assert.equal(res.status, 200, `${what}: GET ${url}`);
            const rows = at(await res.json(), tg.root_selector!) as unknown[];
            assert.ok(Array.isArray(rows) && rows.length > 0, `${what}: rows from ${url}`);
            for (const c of tg.columns ?? [])
              assert.ok(
                rows.some((r) => at(r, c.selector) !== undefined && at(r, c.selector) !== null),
                `${what}: column ${c.selector} holds a value`,
              );
          } else {
            assert.equal(tg.datasource.uid, 'kpiflow-prometheus', `${what}: a known datasource`);
            const r = (await (
              await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(tg.expr!)}`)
            ).json()) as { status: string; data: { result: { value: [number, string] }[] } };
            assert.equal(r.status, 'success', `${what}: ${tg.expr}`);
            assert.ok(
              r.data.result.some((x) => Number.isFinite(Number(x.value[1]))),
              `${what}: ${tg.expr} returned ${JSON.stringify(r.data.result)}`,
            );
          }
          checked++;
        }
      }
    }
    assert.ok(checked >= 12, `${checked} queries checked`);
  });

  it('Ctrl-C stops it and removes its namespaces', async (t) => {
    if (!requireRoot(t) || !requireTools(t, 'python3', 'nft', 'prometheus')) return;
    demo!.kill('SIGINT');
    assert.equal(await exited, 130, `exit code after Ctrl-C; stderr: ${stderr}`);
    const left = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
    assert.doesNotMatch(left, /kfdemo-/, 'namespaces removed');
  });
});

/** The demo's namespaces left on this machine. */
function demoNamespaces(): string[] {
  const list = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  return list.split('\n').filter((l) => l.startsWith('kfdemo-'));
}

/**
 * Starts a live demo in its own process group (as a shell job: a terminal's Ctrl-C or hang-up
 * reaches the whole group) with its output on pipes; resolves once its namespaces exist.
 */
async function startDemo(
  seconds: number,
  extra: string[] = [],
): Promise<{
  proc: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output: () => string;
}> {
  const port = await freePort();
  const proc = spawn(
    process.execPath,
    [CLI, 'demo', '--seconds', String(seconds), '--api-port', String(port), ...extra],
    { stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  let text = '';
  proc.stdout!.on('data', (b: Buffer) => {
    text += b.toString();
  });
  proc.stderr!.on('data', (b: Buffer) => {
    text += b.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.once('exit', (code, signal) => r({ code, signal })),
  );
  for (let i = 0; demoNamespaces().length < 2; i++) {
    if (proc.exitCode !== null) throw new Error(`demo exited ${proc.exitCode}: ${text}`);
    if (i > 600) throw new Error(`no demo namespaces after 60 s: ${text}`);
    await sleep(100);
  }
  // The agent is attached and the traffic runs 2.5 s after the namespaces exist (demo/run.ts).
  await sleep(3500);
  return { proc, exited, output: () => text };
}

describe('kpiflow demo cleans up whatever happens to it', () => {
  it('a signal to its process group while its output pipe is gone (make demo | tee, then Ctrl-C or a closed terminal) still removes the namespaces', async (t) => {
    if (!requireRoot(t) || !requireTools(t, 'python3', 'nft')) return;
    for (const signal of ['SIGINT', 'SIGHUP', 'SIGTERM'] as const) {
      const d = await startDemo(60);
      try {
        // The reader of its output dies first, as tee does on Ctrl-C: every later write is EPIPE.
        d.proc.stdout!.destroy();
        d.proc.stderr!.destroy();
        process.kill(-d.proc.pid!, signal);
        const exit = await Promise.race([d.exited, sleep(60_000).then(() => null)]);
        assert.ok(exit, `${signal}: the demo did not stop in 60 s`);
        assert.equal(exit.code, 130, `${signal}: exit ${JSON.stringify(exit)}; output: ${d.output()}`);
        assert.deepEqual(demoNamespaces(), [], `${signal}: namespaces removed`);
      } finally {
        if (d.proc.exitCode === null) process.kill(-d.proc.pid!, 'SIGKILL');
        await d.exited;
      }
    }
  });

  it('after a demo killed outright (SIGKILL: namespaces left behind), the next demo runs and cleans up', async (t) => {
    if (!requireRoot(t) || !requireTools(t, 'python3', 'nft')) return;
    const crashed = await startDemo(60);
    process.kill(-crashed.proc.pid!, 'SIGKILL');
    await crashed.exited;
    assert.equal(demoNamespaces().length, 2, 'the crashed demo left its namespaces');
    const dir = mkdtempSync(join(tmpdir(), 'kpiflow-demo-again-'));
    try {
      const summaryFile = join(dir, 'summary.json');
      const again = await startDemo(3, ['--exit', '--summary-json', summaryFile]);
      const exit = await again.exited;
      assert.equal(exit.code, 0, again.output());
      const summary = JSON.parse(readFileSync(summaryFile, 'utf8')) as DemoSummary;
      assert.equal(summary.mode, 'live');
      assert.ok(summary.profiles > 0, 'the second demo stored profiles');
      assert.deepEqual(demoNamespaces(), [], 'and removed its namespaces');
    } finally {
      rmSync(dir, { recursive: true, force: true });
      for (const n of demoNamespaces()) spawnSync('ip', ['netns', 'del', n]);
    }
  });
});
