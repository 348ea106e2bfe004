/**
 * The units under a real systemd: this machine's PID 1 is not systemd, so the test boots one in a
 * container (systemd-nspawn, --volatile=yes: a throw-away root with the host's /usr, a network
 * namespace of its own) with a tree from `make install PREFIX=/opt/kpiflow` bound in, and lets
 * systemd start both units with every sandboxing directive applied. It then checks what systemd
 * made of them (the collector's dynamic user, no capabilities, seccomp, read-only root; the agent's
 * effective capabilities equal to the unit's set), that the agent measures every KPI, and that
 * traffic (docker-compose.yml's generator, natively) becomes profiles in the collector.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { requireRoot } from '../helpers/netns.js';
import { requireTools } from '../helpers/tools.js';
import { composeConfig } from './compose-file.js';
import { makeInstall, parseUnit, REPO, serviceValue, tempDir } from './unit-file.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Capability numbers (linux/capability.h) of the names the units use. */
const CAP_NUMBERS: Record<string, number> = {
  CAP_NET_ADMIN: 12,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_ADMIN: 21,
  CAP_SYSLOG: 34,
  CAP_PERFMON: 38,
  CAP_BPF: 39,
};

/** A booted container: commands run in all its namespaces through nsenter on its PID 1. */
class Container {
  private constructor(
    private readonly nspawn: ChildProcess,
    readonly leader: number,
    readonly log: () => string,
  ) {}

  /** Boots `stage` (an install with PREFIX=/opt/kpiflow) and waits for systemd to answer. */
  static async boot(stage: string): Promise<Container> {
    const target = join(stage, 'kpiflow-test.target');
    writeFileSync(
      target,
      '[Unit]\nDescription=kpiflow packaging test\nWants=kpiflow-collector.service kpiflow-agent.service dbus.socket\n',
    );
    const units = join(stage, 'opt/kpiflow/lib/systemd/system');
    const args = [
      '-q',
      '-D',
      '/',
      '--volatile=yes',
      `--machine=kpf-${randomBytes(3).toString('hex')}`,
      '--private-network',
      '--register=no',
      '--keep-unit',
      // The container's own limits (nspawn's defaults lack these); the units narrow them further.
      '--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN,CAP_SYSLOG',
      '--system-call-filter=bpf perf_event_open',
      `--bind-ro=${join(stage, 'opt/kpiflow')}:/opt/kpiflow`,
      `--bind-ro=${join(REPO, 'docker')}:/opt/kpiflow-test/docker`,
      `--bind-ro=${target}:/etc/systemd/system/kpiflow-test.target`,
      `--bind-ro=${join(units, 'kpiflow-collector.service')}:/etc/systemd/system/kpiflow-collector.service`,
      `--bind-ro=${join(units, 'kpiflow-agent.service')}:/etc/systemd/system/kpiflow-agent.service`,
      '--boot',
      '--',
      'systemd.unit=kpiflow-test.target',
      'systemd.firstboot=off',
      // Only loopback here: nothing would ever be "online".
      'systemd.mask=systemd-networkd-wait-online.service',
    ];
    const nspawn = spawn('systemd-nspawn', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    nspawn.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    nspawn.stderr!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    const end = Date.now() + 60_000;
    while (Date.now() < end) {
      if (nspawn.exitCode !== null) break;
      const leader = Number(
        spawnSync('pgrep', ['-P', String(nspawn.pid)], { encoding: 'utf8' }).stdout.split('\n')[0],
      );
      if (leader > 0) {
        const c = new Container(nspawn, leader, () => out);
        // Booted: the target reached, nothing queued (is-system-running exits 0 only when "running").
        const state = c.run('systemctl', 'is-system-running').stdout.trim();
        const jobs = c.run('systemctl', 'list-jobs', '--no-legend');
        if (['running', 'degraded'].includes(state) && jobs.status === 0 && jobs.stdout.trim() === '')
          return c;
      }
      await sleep(250);
    }
    nspawn.kill('SIGKILL');
    throw new Error(`the container did not finish booting: ${out}`);
  }

  /** Runs a command in the container. */
  run(...argv: string[]): { status: number | null; stdout: string; stderr: string } {
    return spawnSync('nsenter', ['-t', String(this.leader), '-a', '--', ...argv], {
      encoding: 'utf8',
    });
  }

  /** One property of a unit (systemctl show). */
  prop(unit: string, name: string): string {
    return this.run('systemctl', 'show', unit, '-p', name, '--value').stdout.trim();
  }

  /** /proc/PID/status of a unit's main process, as fields. */
  status(unit: string): Record<string, string> {
    const pid = this.prop(unit, 'MainPID');
    const text = this.run('cat', `/proc/${pid}/status`).stdout;
    return Object.fromEntries(
      text.split('\n').map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]),
    );
  }

  /** Powers the container off (SIGTERM to nspawn); SIGKILL if it hangs. */
  async stop(): Promise<void> {
    if (this.nspawn.exitCode !== null) return;
    const exited = new Promise((r) => this.nspawn.once('exit', r));
    this.nspawn.kill('SIGTERM');
    const t = setTimeout(() => this.nspawn.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(t);
  }
}

describe('systemd units under systemd (nspawn container)', () => {
  let stage = '';
  let box: Container | null = null;
  let skipped = false;

  before(() => {
    stage = tempDir('nspawn');
  });
  after(async () => {
    await box?.stop();
    if (stage) rmSync(stage, { recursive: true, force: true });
  });

  it('systemd boots with both units enabled and starts them: collector as a dynamic user without capabilities, agent with exactly its capabilities', async (t) => {
    if (!requireRoot(t) || !requireTools(t, 'systemd-nspawn', 'nsenter')) {
      skipped = true;
      return;
    }
    makeInstall({ DESTDIR: stage, PREFIX: '/opt/kpiflow' });
    box = await Container.boot(stage);
    const c = box;
    for (const u of ['kpiflow-collector', 'kpiflow-agent'])
      assert.equal(
        c.prop(u, 'ActiveState'),
        'active',
        `${u}: ${c.run('journalctl', '-u', u, '-o', 'cat', '--no-pager').stdout}`,
      );
    let journal = '';
    for (let i = 0; i < 100 && !journal.includes('"msg":"agent started"'); i++, await sleep(200))
      journal = c.run('journalctl', '-u', 'kpiflow-agent', '-o', 'cat', '--no-pager').stdout;
    // The collector: a dynamic, unprivileged user; no capability at all; seccomp; no new privileges.
    const col = c.status('kpiflow-collector');
    assert.notEqual(col['Uid']!.split(/\s+/)[0], '0');
    assert.equal(BigInt(`0x${col['CapEff']}`), 0n);
    assert.equal(BigInt(`0x${col['CapBnd']}`), 0n);
    assert.equal(col['NoNewPrivs'], '1');
    assert.equal(col['Seccomp'], '2');
    assert.match(c.prop('kpiflow-collector', 'User'), /^kpiflow-collector$/);
    assert.equal(
      c.run('test', '-s', '/var/lib/private/kpiflow-collector/kpiflow.db').status,
      0,
      'database in the state directory',
    );
    // ProtectSystem=strict: the collector's root is read-only.
    const mounts = c.run('cat', `/proc/${c.prop('kpiflow-collector', 'MainPID')}/mountinfo`).stdout;
    assert.match(mounts.split('\n').find((l) => l.split(' ')[4] === '/') ?? '', / ro[, ]/);
    // The agent: root, holding exactly the unit's capabilities.
    const unit = parseUnit(
      readFileSync(join(stage, 'opt/kpiflow/lib/systemd/system/kpiflow-agent.service'), 'utf8'),
    );
    const want = serviceValue(unit, 'CapabilityBoundingSet')!
      .split(/\s+/)
      .reduce((m, name) => m | (1n << BigInt(CAP_NUMBERS[name]!)), 0n);
    const agent = c.status('kpiflow-agent');
    assert.equal(BigInt(`0x${agent['CapEff']}`).toString(16), want.toString(16), 'effective capabilities');
    assert.equal(agent['NoNewPrivs'], '1');
    assert.equal(agent['Seccomp'], '2');
    // Every KPI this kernel has is measured (CAP_SYSLOG reached the agent: kallsyms readable).
    const started = JSON.parse(journal.split('\n').find((l) => l.includes('"msg":"agent started"'))!);
    assert.deepEqual(started.missing, []);
    assert.doesNotMatch(journal, /mptcpReinjectedSegments/);
  });

  it('the agent under systemd walks a namespace held by another user (setns and /proc through its sandbox)', async (t) => {
    if (skipped || !box) return t.skip('no container (see the test above)');
    const c = box;
    const journal = () => c.run('journalctl', '-u', 'kpiflow-agent', '-o', 'cat', '--no-pager').stdout;
    const starts = () => journal().split('"msg":"agent started"').length - 1;
    const startedOnce = async (n: number) => {
      for (let i = 0; i < 100 && starts() < n; i++) await sleep(100);
      assert.equal(starts(), n, journal());
    };
    // The agent stopped first: the connection below can reach it only through the start-up scan.
    assert.equal(c.run('systemctl', 'stop', 'kpiflow-agent').status, 0);
    const before = starts();
    // A loopback connection in an anonymous namespace, held by nobody, as a transient unit.
    const script = [
      'import socket, time',
      "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()",
      "c = socket.create_connection(s.getsockname()); a, _ = s.accept(); c.sendall(b'x' * 1000); a.recv(1000)",
      "print('held', s.getsockname()[1], flush=True); time.sleep(300)",
    ].join('\n');
    const unit = `kpf-held-${randomBytes(3).toString('hex')}`;
    const r = c.run(
      'systemd-run',
      '--quiet',
      `--unit=${unit}`,
      'unshare',
      '--net',
      'sh',
      '-c',
      'ip link set lo up && exec setpriv --reuid=65534 --regid=65534 --clear-groups -- /usr/bin/python3 -c "$0"',
      script,
    );
    assert.equal(r.status, 0, r.stderr);
    let port = 0;
    for (let i = 0; i < 100 && !port; i++, await sleep(100)) {
      const m = /held (\d+)/.exec(c.run('journalctl', '-u', unit, '-o', 'cat', '--no-pager').stdout);
      if (m) port = Number(m[1]);
    }
    assert.ok(port > 0, 'the connection holder runs');
    assert.equal(c.run('systemctl', 'start', 'kpiflow-agent').status, 0);
    await startedOnce(before + 1);
    // At stop the agent flushes what it tracks: the held connection's two ends, adopted at start.
    assert.equal(c.run('systemctl', 'stop', 'kpiflow-agent').status, 0);
    assert.equal(c.prop('kpiflow-agent', 'Result'), 'success');
    const count = () => {
      const q = c.run('curl', '-sf', `http://127.0.0.1:9739/api/v1/profiles?limit=100&port=${port}`);
      return q.status === 0 ? (JSON.parse(q.stdout).items as unknown[]).length : 0;
    };
    for (let i = 0; i < 50 && count() < 2; i++) await sleep(100);
    assert.equal(count(), 2, journal());
    c.run('systemctl', 'stop', unit);
    assert.equal(c.run('systemctl', 'start', 'kpiflow-agent').status, 0);
    await startedOnce(before + 2);
  });

  it("the traffic generator's connections become profiles in the collector", async (t) => {
    if (skipped || !box) return t.skip('no container (see the test above)');
    const c = box;
    const urls = composeConfig().services['traffic']!.command!;
    // As a transient service of the container's systemd: in its cgroup, under the cgroup root the
    // agent's sockops program is attached to (a process merely nsenter'ed stays in the host's).
    const gen = c.run(
      'systemd-run',
      '--wait',
      '--quiet',
      '-p',
      'Environment=TRAFFIC_ROUNDS=3 TRAFFIC_PAUSE=0',
      'sh',
      '/opt/kpiflow-test/docker/traffic.sh',
      ...urls,
    );
    assert.equal(gen.status, 0, gen.stderr);
    const count = (port: number, end: string) => {
      const r = c.run(
        'curl',
        '-sf',
        `http://127.0.0.1:9739/api/v1/profiles?limit=1000&destinationPort=${port}&endState=${end}`,
      );
      return r.status === 0 ? (JSON.parse(r.stdout).items as unknown[]).length : 0;
    };
    const refused = urls
      .filter((u) => !u.startsWith('http://127.0.0.1:9739/'))
      .map((u) => Number(new URL(u).port));
    const ok = () => count(9739, 'FINISHED') >= 3 && refused.every((p) => count(p, 'UNREACHABLE') >= 3);
    for (let i = 0; i < 100 && !ok(); i++) await sleep(100);
    assert.ok(count(9739, 'FINISHED') >= 3, 'FINISHED profiles to the collector');
    for (const p of refused) assert.ok(count(p, 'UNREACHABLE') >= 3, `UNREACHABLE profiles to port ${p}`);
    // systemctl stop: both exit cleanly on SIGTERM.
    for (const u of ['kpiflow-agent', 'kpiflow-collector']) {
      assert.equal(c.run('systemctl', 'stop', u).status, 0);
      assert.equal(c.prop(u, 'Result'), 'success', u);
    }
  });

  it("docs/deploy.md's narrow drop-in takes CAP_SYS_ADMIN and CAP_SYS_PTRACE away and the agent still starts", async (t) => {
    if (skipped || !box) return t.skip('no container (see the test above)');
    const c = box;
    const docs = readFileSync(join(REPO, 'docs/deploy.md'), 'utf8');
    const m = /```ini\n# (\/etc\/systemd\/system\/kpiflow-agent\.service\.d\/[\w.-]+)\n([\s\S]*?)```/.exec(
      docs,
    );
    assert.ok(m, 'the drop-in block');
    const [, path, body] = m;
    assert.equal(c.run('mkdir', '-p', path!.slice(0, path!.lastIndexOf('/'))).status, 0);
    assert.equal(
      spawnSync('nsenter', ['-t', String(c.leader), '-a', '--', 'sh', '-c', `cat > ${path}`], { input: body })
        .status,
      0,
    );
    assert.equal(c.run('systemctl', 'daemon-reload').status, 0);
    assert.equal(c.run('systemctl', 'restart', 'kpiflow-collector', 'kpiflow-agent').status, 0);
    const journal = () => c.run('journalctl', '-u', 'kpiflow-agent', '-o', 'cat', '--no-pager').stdout;
    const starts = journal().split('"msg":"agent started"').length;
    for (let i = 0; i < 100 && journal().split('"msg":"agent started"').length === starts; i++)
      await sleep(100);
    assert.ok(journal().split('"msg":"agent started"').length > starts, journal());
    const want = ['CAP_BPF', 'CAP_PERFMON', 'CAP_NET_ADMIN', 'CAP_SYSLOG'].reduce(
      (mask, name) => mask | (1n << BigInt(CAP_NUMBERS[name]!)),
      0n,
    );
    assert.equal(BigInt(`0x${c.status('kpiflow-agent')['CapEff']}`).toString(16), want.toString(16));
  });
});
