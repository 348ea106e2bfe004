/**
 * The systemd packaging (packaging/systemd, `make install`): the installed tree runs, the units
 * pass `systemd-analyze verify` and an offline security review, and the exact command lines the
 * units run (read from the installed unit files) work: the collector from the installed tree with
 * its installed config answers /healthz and stores what an agent sends; the agent, also from the
 * installed tree and config, replays a bundled recording into it, and runs live under the unit's
 * capability bounding set with no new privileges, and each of those capabilities is shown needed
 * by taking it away. Processes run in a namespace of their own (the configs' fixed ports stay
 * free on the host). The sandboxing directives are enforced only under systemd itself:
 * systemd-boot.test.ts.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { requireRoot } from '../helpers/netns.js';
import { requireTools } from '../helpers/tools.js';
import { composeConfig } from './compose-file.js';
import {
  execStart,
  makeInstall,
  parseUnit,
  REPO,
  serviceValue,
  tempDir,
  UNITS,
  type Unit,
  underRoot,
} from './unit-file.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The staging root of one `make install DESTDIR=...`, shared by the tests below. */
let destdir = '';
const installed = (name: string): Unit =>
  parseUnit(readFileSync(join(destdir, 'usr/lib/systemd/system', name), 'utf8'));

/** A process started in a network namespace; its stdout lines kept. */
class Started {
  readonly lines: string[] = [];
  readonly exited: Promise<number | null>;
  stderr = '';
  private readonly child: ChildProcess;

  constructor(netns: string, argv: string[], env: Record<string, string> = {}) {
    this.child = spawn('nsenter', [`--net=/run/netns/${netns}`, '--', ...argv], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let buf = '';
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      const parts = buf.split('\n');
      buf = parts.pop()!;
      this.lines.push(...parts);
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
    });
    this.exited = new Promise((r) => this.child.on('exit', (code) => r(code)));
  }

  /** Waits for a JSON log line whose msg is `msg`. */
  async waitFor(msg: string, ms = 20_000): Promise<Record<string, unknown>> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      for (const l of this.lines) {
        if (!l.includes(msg)) continue;
        const o = JSON.parse(l) as Record<string, unknown>;
        if (o['msg'] === msg) return o;
      }
      if (this.child.exitCode !== null) break;
      await sleep(100);
    }
    throw new Error(
      `no "${msg}" line (exit ${this.child.exitCode}): ${this.lines.join('\n')}\n${this.stderr}`,
    );
  }

  /** SIGTERM and the exit code. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }
}

/** GET inside the namespace (the API listens on the namespace's loopback). */
function getIn(netns: string, url: string): string {
  const r = spawnSync('nsenter', [`--net=/run/netns/${netns}`, '--', 'curl', '-sf', '--max-time', '5', url], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`GET ${url} in ${netns} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** A namespace with loopback up, removed by the returned function. */
function namespace(): { name: string; remove: () => void } {
  const name = `kpf-pkg-${randomBytes(4).toString('hex')}`;
  spawnSync('ip', ['netns', 'add', name], { stdio: 'inherit' });
  spawnSync('ip', ['-n', name, 'link', 'set', 'lo', 'up'], { stdio: 'inherit' });
  return { name, remove: () => spawnSync('ip', ['netns', 'del', name]) };
}

/** The collector as its installed unit runs it, in `netns`, under the staging root. */
async function startCollector(netns: string): Promise<Started> {
  const argv = underRoot(execStart(installed('kpiflow-collector.service')), destdir);
  mkdirSync(
    join(destdir, 'var/lib', serviceValue(installed('kpiflow-collector.service'), 'StateDirectory')!),
    {
      recursive: true,
    },
  );
  const c = new Started(netns, argv);
  await c.waitFor('collector ready');
  return c;
}

/** The agent's installed command line under the staging root, with its state directory made. */
function agentArgv(): string[] {
  const unit = installed('kpiflow-agent.service');
  mkdirSync(join(destdir, 'var/lib', serviceValue(unit, 'StateDirectory')!), { recursive: true });
  return underRoot(execStart(unit), destdir);
}

/** Profiles in the collector's store. */
function profiles(netns: string, query = ''): Record<string, unknown>[] {
  const body = JSON.parse(getIn(netns, `http://127.0.0.1:9739/api/v1/profiles?limit=1000${query}`));
  return body.items as Record<string, unknown>[];
}

/** Runs the agent unit's command line under a bounding set, SIGTERM once started; what it said. */
async function agentUnder(
  netns: string,
  caps: readonly string[],
): Promise<{ code: number | null; log: string }> {
  const bounding = ['-all', ...caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',');
  const agent = new Started(netns, [
    'setpriv',
    `--bounding-set=${bounding}`,
    '--inh-caps=-all',
    '--no-new-privs',
    '--',
    ...agentArgv(),
  ]);
  try {
    await agent.waitFor('agent started', 30_000);
  } catch {
    // Refused to start: the exit code and stderr say why.
  }
  const code = await agent.stop();
  return { code, log: `${agent.lines.join('\n')}\n${agent.stderr}` };
}

/**
 * A TCP connection over loopback in an anonymous network namespace (in no /run/netns) held by a
 * process of another user (nobody): only /proc/PID/ns/net leads to it. Resolves with its ports.
 */
function foreignConnection(): { ports: Promise<number[]>; stop: () => void } {
  const script = [
    'import socket, time',
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()",
    "c = socket.create_connection(s.getsockname()); a, _ = s.accept(); c.sendall(b'x' * 1000); a.recv(1000)",
    'print(s.getsockname()[1], c.getsockname()[1], flush=True); time.sleep(120)',
  ].join('\n');
  const child = spawn(
    'unshare',
    [
      '--net',
      'sh',
      '-c',
      'ip link set lo up && exec setpriv --reuid=65534 --regid=65534 --clear-groups -- /usr/bin/python3 -c "$0"',
      script,
    ],
    { cwd: '/', stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const ports = new Promise<number[]>((resolve, reject) => {
    child.stdout!.setEncoding('utf8').once('data', (d: string) => resolve(d.trim().split(' ').map(Number)));
    child.once('exit', (code) => reject(new Error(`connection holder exited ${code}`)));
  });
  return { ports, stop: () => child.kill('SIGKILL') };
}

function needsRoot(t: TestContext): boolean {
  return requireRoot(t) && requireTools(t, 'nsenter', 'curl', 'setpriv', 'docker-compose', 'python3');
}

describe('systemd packaging', () => {
  before(() => {
    destdir = tempDir('destdir');
    // A config the administrator already has must survive the install.
    mkdirSync(join(destdir, 'etc/kpiflow'), { recursive: true });
    writeFileSync(join(destdir, 'etc/kpiflow/agent.json'), '{"logLevel": "info"}\n');
    makeInstall({ DESTDIR: destdir });
    // Back to the shipped example: the tests run what a fresh install runs.
    writeFileSync(
      join(destdir, 'etc/kpiflow/agent.json.kept'),
      readFileSync(join(destdir, 'etc/kpiflow/agent.json')),
    );
    writeFileSync(
      join(destdir, 'etc/kpiflow/agent.json'),
      readFileSync(join(REPO, 'packaging/config/agent.json')),
    );
  });
  after(() => {
    if (destdir) rmSync(destdir, { recursive: true, force: true });
  });

  it('make install DESTDIR= stages the built tree, the wrapper, both units and the configs, keeping an existing config', () => {
    const lib = join(destdir, 'usr/lib/kpiflow');
    for (const f of [
      'dist/cli/kpiflow.js',
      'package.json',
      'build/probes/kpiflow.bpf.o',
      'native/build/Release/kpiflow_bpf.node',
      'node_modules/better-sqlite3/package.json',
      'node_modules/fastify/package.json',
    ])
      assert.ok(existsSync(join(lib, f)), `${f} installed`);
    // Production dependencies only, and no tests or benchmarks.
    for (const f of ['node_modules/typescript', 'node_modules/@biomejs/biome', 'dist/test', 'dist/bench'])
      assert.ok(!existsSync(join(lib, f)), `${f} not installed`);
    assert.ok(statSync(join(destdir, 'usr/bin/kpiflow')).mode & 0o111, 'the wrapper is executable');
    for (const u of UNITS)
      assert.ok(existsSync(join(destdir, 'usr/lib/systemd/system', u)), `${u} installed`);
    assert.deepEqual(
      JSON.parse(readFileSync(join(destdir, 'etc/kpiflow/collector.json'), 'utf8')),
      JSON.parse(readFileSync(join(REPO, 'packaging/config/collector.json'), 'utf8')),
    );
    assert.equal(
      readFileSync(join(destdir, 'etc/kpiflow/agent.json.kept'), 'utf8'),
      '{"logLevel": "info"}\n',
    );
    // The staged wrapper runs the staged tree.
    const r = spawnSync(join(destdir, 'usr/bin/kpiflow'), ['agent', '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /usage: kpiflow agent/);
  });

  it('make uninstall DESTDIR= removes the tree, the wrapper and the units, and keeps the configs', () => {
    const copy = tempDir('uninstall');
    try {
      spawnSync('cp', ['-a', `${destdir}/.`, copy]);
      const r = spawnSync('make', ['-s', 'uninstall', `DESTDIR=${copy}`], { cwd: REPO, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      for (const gone of [
        'usr/lib/kpiflow',
        'usr/bin/kpiflow',
        ...UNITS.map((u) => `usr/lib/systemd/system/${u}`),
      ])
        assert.ok(!existsSync(join(copy, gone)), `${gone} removed`);
      for (const kept of ['etc/kpiflow/collector.json', 'etc/kpiflow/agent.json'])
        assert.ok(existsSync(join(copy, kept)), `${kept} kept`);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  it('each capability of the agent unit has its reason, in the unit and in docs/deploy.md', () => {
    const text = readFileSync(join(REPO, 'packaging/systemd/kpiflow-agent.service.in'), 'utf8');
    const caps = serviceValue(parseUnit(text), 'CapabilityBoundingSet')!.split(/\s+/);
    const docs = readFileSync(join(REPO, 'docs/deploy.md'), 'utf8');
    for (const cap of caps) {
      assert.match(text, new RegExp(`^#\\s+${cap}\\s+\\S`, 'm'), `${cap} explained in the unit`);
      assert.match(docs, new RegExp(`^\\| \`${cap}\` \\| \\S`, 'm'), `${cap} has a row in docs/deploy.md`);
    }
    assert.equal(serviceValue(parseUnit(text), 'AmbientCapabilities'), '', 'root needs no ambient set');
  });

  it('systemd-analyze verify accepts both units installed with a PREFIX, and the offline security review scores them', (t) => {
    if (!requireTools(t, 'systemd-analyze')) return;
    const prefix = tempDir('prefix');
    try {
      makeInstall({ PREFIX: prefix });
      const units = UNITS.map((u) => join(prefix, 'lib/systemd/system', u));
      for (const u of units)
        assert.match(readFileSync(u, 'utf8'), new RegExp(`ExecStart=${prefix}/bin/kpiflow `));
      // --man=no --generators=no: verify without systemd as PID 1. Warnings (unknown keys, bad
      // syscall groups) only print, so any output at all fails the test.
      const v = spawnSync('systemd-analyze', ['--man=no', '--generators=no', 'verify', ...units], {
        encoding: 'utf8',
      });
      assert.equal(v.status, 0, v.stderr);
      assert.equal(v.stderr + v.stdout, '');
      // Exposure, 0 (locked down) to 10: the collector is nearly sealed, the agent holds the
      // capabilities eBPF needs.
      for (const [unit, threshold] of [
        [units[0]!, 2],
        [units[1]!, 4],
      ] as const) {
        const s = spawnSync(
          'systemd-analyze',
          ['security', '--offline=yes', '--no-pager', `--threshold=${threshold * 10}`, unit],
          { encoding: 'utf8' },
        );
        const score = /Overall exposure level for \S+: ([\d.]+)/.exec(s.stdout + s.stderr);
        assert.ok(score, s.stdout + s.stderr);
        assert.ok(Number(score[1]) <= threshold, `${unit}: exposure ${score[1]} > ${threshold}`);
      }
    } finally {
      rmSync(prefix, { recursive: true, force: true });
    }
  });

  it("the collector unit's command line answers /healthz, and the agent unit's command line replays a recording into it", async (t) => {
    if (!needsRoot(t)) return;
    const ns = namespace();
    let collector: Started | null = null;
    try {
      collector = await startCollector(ns.name);
      assert.deepEqual(JSON.parse(getIn(ns.name, 'http://127.0.0.1:9739/healthz')), {
        status: 'ok',
        store: 'sqlite',
      });
      const dir = join(REPO, 'test/fixtures/events/loss');
      const expected = readFileSync(join(dir, 'profiles.ndjson'), 'utf8').trim().split('\n').length;
      const agent = new Started(ns.name, [
        ...agentArgv(),
        '--source',
        `events:${join(dir, 'recording.kfev')}`,
      ]);
      assert.equal(await agent.exited, 0, agent.stderr);
      let got: Record<string, unknown>[] = [];
      for (let i = 0; i < 50 && got.length < expected; i++, await sleep(100)) got = profiles(ns.name);
      assert.equal(got.length, expected);
      assert.ok(
        existsSync(join(destdir, 'var/lib/kpiflow-collector/kpiflow.db')),
        'database in the state dir',
      );
      assert.equal(await collector.stop(), 0);
    } finally {
      await collector?.stop();
      ns.remove();
    }
  });

  it("the agent unit's command line runs live with only the unit's capabilities and reports a connection", async (t) => {
    if (!needsRoot(t)) return;
    const unit = installed('kpiflow-agent.service');
    const caps = serviceValue(unit, 'CapabilityBoundingSet')!.split(/\s+/);
    assert.equal(serviceValue(unit, 'NoNewPrivileges'), 'yes');
    const ns = namespace();
    let collector: Started | null = null;
    let agent: Started | null = null;
    try {
      collector = await startCollector(ns.name);
      // setpriv: a root process limited to the unit's bounding set holds exactly those capabilities.
      const bounding = ['-all', ...caps.map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)].join(',');
      agent = new Started(ns.name, [
        'setpriv',
        `--bounding-set=${bounding}`,
        '--inh-caps=-all',
        '--no-new-privs',
        '--',
        ...agentArgv(),
      ]);
      const started = await agent.waitFor('agent started', 30_000);
      assert.deepEqual(started['missing'], [], 'every KPI the kernel has is measured');
      // Connections in the namespace: docker-compose.yml's traffic service, run natively (its
      // image's entrypoint is docker/traffic.sh), three rounds. Only the collector listens here:
      // the other URLs are refused.
      const urls = composeConfig().services['traffic']!.command!;
      assert.ok(urls.includes('http://127.0.0.1:9739/healthz'));
      const gen = spawnSync(
        'nsenter',
        [`--net=/run/netns/${ns.name}`, '--', 'sh', join(REPO, 'docker/traffic.sh'), ...urls],
        {
          encoding: 'utf8',
          env: { ...process.env, TRAFFIC_ROUNDS: '3', TRAFFIC_PAUSE: '0' },
        },
      );
      assert.equal(gen.status, 0, gen.stderr);
      const refused = urls
        .filter((u) => !u.startsWith('http://127.0.0.1:9739/'))
        .map((u) => Number(new URL(u).port));
      const count = (port: number, end: string) =>
        profiles(ns.name, `&destinationPort=${port}&endState=${end}`).filter(
          (p) => p['destinationAddress'] === '127.0.0.1',
        ).length;
      const ok = () => count(9739, 'FINISHED') >= 3 && refused.every((p) => count(p, 'UNREACHABLE') >= 3);
      for (let i = 0; i < 100 && !ok(); i++) await sleep(100);
      assert.ok(
        count(9739, 'FINISHED') >= 3,
        `FINISHED profiles of connections to 9739: ${count(9739, 'FINISHED')}`,
      );
      for (const p of refused) assert.ok(count(p, 'UNREACHABLE') >= 3, `UNREACHABLE profiles to port ${p}`);
      // Its metrics listener (what Prometheus scrapes) answers.
      assert.match(getIn(ns.name, 'http://127.0.0.1:9740/metrics'), /kpiflow_agent_events_total/);
      assert.equal(await agent.stop(), 0, agent.stderr);
    } finally {
      await agent?.stop();
      await collector?.stop();
      ns.remove();
    }
  });
  it('each capability of the agent unit is needed: without it the agent refuses to start or misses connections or KPIs', async (t) => {
    if (!needsRoot(t) || !requireTools(t, 'unshare', 'python3')) return;
    const caps = serviceValue(installed('kpiflow-agent.service'), 'CapabilityBoundingSet')!.split(/\s+/);
    const ns = namespace();
    const held = foreignConnection();
    let collector: Started | null = null;
    try {
      const [listen] = await held.ports;
      collector = await startCollector(ns.name);
      // At stop the agent flushes every connection it tracks as DESYNC: the held connection is
      // among them exactly when the start-up snapshot reached its namespace.
      const adopted = () => profiles(ns.name, `&port=${listen}`).length;
      const run = async (...without: string[]) => {
        const before = adopted();
        const r = await agentUnder(
          ns.name,
          caps.filter((c) => !without.includes(c)),
        );
        await sleep(500);
        return { ...r, adopted: adopted() - before };
      };
      const all = await run();
      assert.equal(all.code, 0, all.log);
      assert.equal(all.adopted, 2, 'both ends of the foreign connection, adopted at start');
      assert.doesNotMatch(all.log, /mptcpReinjectedSegments/);
      for (const cap of caps) {
        // The kernel lets CAP_SYS_ADMIN stand in for CAP_BPF and CAP_PERFMON: those two are
        // tested without it (the narrow drop-in of docs/deploy.md), the others alone.
        const r = await run(cap, ...(['CAP_BPF', 'CAP_PERFMON'].includes(cap) ? ['CAP_SYS_ADMIN'] : []));
        if (['CAP_BPF', 'CAP_PERFMON', 'CAP_NET_ADMIN'].includes(cap)) {
          assert.equal(r.code, 1, `${cap}: ${r.log}`);
          assert.match(r.log, /AGT_ERR_PRIVILEGES/);
          assert.ok(r.log.includes(cap), `the refusal names ${cap}`);
        } else if (cap === 'CAP_SYS_ADMIN' || cap === 'CAP_SYS_PTRACE') {
          // setns(2) into the namespace, and opening another user's /proc/PID/ns/net.
          assert.equal(r.code, 0, `${cap}: ${r.log}`);
          assert.equal(r.adopted, 0, `without ${cap} the foreign namespace is not walked`);
          // Without setns the walk fails and the agent says so (once per namespace).
          if (cap === 'CAP_SYS_ADMIN')
            assert.match(r.log, /cannot walk the sockets of this network namespace/);
        } else if (cap === 'CAP_SYSLOG') {
          assert.equal(r.code, 0, r.log);
          assert.match(
            r.log,
            /mptcpReinjectedSegments/,
            'kallsyms addresses hidden: the KPI is reported missing',
          );
        } else assert.fail(`${cap} has no test of its reason`);
      }
    } finally {
      held.stop();
      await collector?.stop();
      ns.remove();
    }
  });
});
