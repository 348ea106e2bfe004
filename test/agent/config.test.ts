/**
 * `kpiflow agent` options: flags over the config file over the defaults, every bad value named
 * in the message, the replay sources with --local-net and --record (live only), and the
 * command's exit codes (2 for bad usage) from the compiled CLI.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { AGENT_DEFAULTS, parseAgentArgs, parseExportTarget } from '../../agent/index.js';
import { KPIFLOW } from '../helpers/collector-process.js';

const dir = mkdtempSync(join(tmpdir(), 'kpiflow-agent-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function config(obj: unknown): string {
  const f = join(dir, `c${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(f, typeof obj === 'string' ? obj : JSON.stringify(obj));
  return f;
}

describe('agent options', () => {
  it('defaults, then the config file, then flags', () => {
    assert.deepEqual(parseAgentArgs([]), AGENT_DEFAULTS);
    const f = config({
      activeTimeout: '2s',
      maxConnections: 50,
      export: 'tcp://[2001:db8::1]:4739',
      metrics: '127.0.0.1:9740',
    });
    const fromFile = parseAgentArgs(['--config', f]);
    assert.equal(fromFile.activeTimeoutMs, 2000);
    assert.equal(fromFile.maxConnections, 50);
    assert.deepEqual(fromFile.export, { kind: 'tcp', host: '2001:db8::1', port: 4739 });
    assert.deepEqual(fromFile.metrics, { host: '127.0.0.1', port: 9740 });
    const both = parseAgentArgs([
      '--config',
      f,
      '--active-timeout',
      '5',
      '--metrics',
      'off',
      '--spool-max',
      '8M',
    ]);
    assert.equal(both.activeTimeoutMs, 5000, 'a bare number is seconds');
    assert.equal(both.metrics, null);
    assert.equal(both.maxConnections, 50, 'the file still counts where no flag says otherwise');
    assert.equal(both.spoolMaxBytes, 8 * 1024 * 1024);
    assert.equal(both.ringBytes, null, 'the loader’s default ring');
    assert.equal(parseAgentArgs(['--ring-size', '64M']).ringBytes, 64 << 20);
    assert.equal(both.perPacket, false, 'the per-packet probe is opt-in');
    assert.equal(parseAgentArgs(['--per-packet']).perPacket, true);
    assert.throws(() => parseAgentArgs(['--per-packet=yes']), { code: 'AGT_ERR_CONFIG' });
    // --netns: an inode as is, a netns file by its inode (ground truth: the file system's stat).
    assert.equal(both.netns, null, 'every namespace by default');
    assert.equal(parseAgentArgs(['--netns', '4026531840']).netns, 4026531840);
    assert.equal(parseAgentArgs(['--netns', '/proc/self/ns/net']).netns, statSync('/proc/self/ns/net').ino);
    assert.throws(() => parseAgentArgs(['--netns', 'no-such-namespace-kpiflow']), {
      code: 'AGT_ERR_CONFIG',
      message: /--netns: "no-such-namespace-kpiflow" is no network namespace/,
    });
    assert.throws(() => parseAgentArgs(['--source', 'pcap:x.pcap', '--netns', '1']), {
      code: 'AGT_ERR_CONFIG',
      message: /--netns: filters the live source only/,
    });
    // --cgroup: a cgroup v2 directory (it has cgroup.procs), live only.
    assert.equal(both.cgroup, null, 'the cgroup2 root by default');
    const dir = mkdtempSync(join(tmpdir(), 'kpiflow-cgroup-'));
    try {
      writeFileSync(join(dir, 'cgroup.procs'), '');
      assert.equal(parseAgentArgs(['--cgroup', dir]).cgroup, dir);
      assert.throws(() => parseAgentArgs(['--cgroup', tmpdir()]), {
        code: 'AGT_ERR_CONFIG',
        message: /--cgroup: .* is not a cgroup v2 directory/,
      });
      assert.throws(() => parseAgentArgs(['--source', 'pcap:x.pcap', '--cgroup', dir]), {
        code: 'AGT_ERR_CONFIG',
        message: /--cgroup: applies to the live source only/,
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('every bad value is refused with a message naming the option where it came from', () => {
    const cases: [string[], RegExp][] = [
      [['--export', 'http://x'], /--export: "http:\/\/x" is not udp/],
      [['--export', 'udp://h:0'], /--export: port 0 outside/],
      [['--active-timeout', 'soon'], /--active-timeout: "soon" is not a duration/],
      [['--max-connections', '0'], /--max-connections: "0" is not an integer from 1/],
      [['--metrics', 'nowhere'], /--metrics: "nowhere" is not HOST:PORT/],
      [['--spool-max', '1K'], /--spool-max: 1024 bytes is less than 64K/],
      [['--queue-size', '-1'], /--queue-size/],
      [['--log-level', 'loud'], /--log-level: "loud" is not a pino level/],
      [['--source', 'socket'], /--source: "socket" is not live, events:FILE or pcap:FILE/],
      [['--tls-ca', 'ca.pem'], /--tls-ca: TLS files need a tls:\/\/ export/],
      [['--export', 'tls://h:1', '--tls-cert', 'c.pem'], /--tls-key: a client certificate needs both/],
      [['--max-message-size', '100'], /--max-message-size/],
      [['--ring-size', '3M'], /--ring-size: 3145728 bytes is not a power of two/],
      [['--ring-size', '4K'], /--ring-size: 4096 bytes is not a power of two from 64K/],
      [['--nope'], /Unknown option '--nope'/],
    ];
    for (const [args, message] of cases)
      assert.throws(() => parseAgentArgs(args), { code: 'AGT_ERR_CONFIG', message }, args.join(' '));
    const f = config({ activeTimeout: 'x' });
    assert.throws(() => parseAgentArgs(['--config', f]), { message: new RegExp(`${f}: activeTimeout`) });
    assert.throws(() => parseAgentArgs(['--config', config({ colour: 'blue' })]), {
      code: 'AGT_ERR_CONFIG_FILE',
      message: /unknown option "colour"/,
    });
    assert.throws(() => parseAgentArgs(['--config', config('{')]), { code: 'AGT_ERR_CONFIG_FILE' });
    assert.throws(() => parseAgentArgs(['--config', join(dir, 'absent.json')]), {
      code: 'AGT_ERR_CONFIG_FILE',
    });
  });

  it('replay sources, --local-net (pcap only) and --record (live only)', () => {
    assert.deepEqual(parseAgentArgs(['--source', 'events:x.kfe']).source, { kind: 'events', path: 'x.kfe' });
    const pcap = parseAgentArgs(['--source', 'pcap:x.pcap', '--local-net', '192.0.2.0/24,2001:db8::/32']);
    assert.deepEqual(pcap.localNet, ['192.0.2.0/24', '2001:db8::/32']);
    assert.equal(parseAgentArgs(['--record', 'x.kfe']).record, 'x.kfe');
    for (const [args, message] of [
      [['--source', 'events:x.kfe', '--record', 'y.kfe'], /--record: records the live source only/],
      [['--local-net', '192.0.2.0/24'], /--local-net: applies to --source pcap:FILE only/],
      [['--source', 'pcap:x', '--local-net', '192.0.2.0/33'], /--local-net: "192.0.2.0\/33": prefix/],
    ] as const)
      assert.throws(() => parseAgentArgs([...args]), { code: 'AGT_ERR_CONFIG', message });
  });

  it('export URLs', () => {
    assert.deepEqual(parseExportTarget('udp://collector.example'), {
      kind: 'udp',
      host: 'collector.example',
      port: 4739,
    });
    assert.deepEqual(parseExportTarget('tls://[::1]'), { kind: 'tls', host: '::1', port: 4740 });
    assert.deepEqual(parseExportTarget('file:/var/tmp/p.ipfix'), { kind: 'file', path: '/var/tmp/p.ipfix' });
    assert.deepEqual(parseExportTarget('file:///var/tmp/p.ipfix'), {
      kind: 'file',
      path: '/var/tmp/p.ipfix',
    });
    assert.throws(() => parseExportTarget('file:'), { code: 'AGT_ERR_CONFIG' });
  });

  it('kpiflow agent: bad usage exits 2 with the option named; --help exits 0', () => {
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [KPIFLOW, 'agent', ...args], { encoding: 'utf8' });
    const bad = run('--export', 'ftp://x');
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--export: "ftp:\/\/x" is not .* \[AGT_ERR_CONFIG\]/);
    const replay = run('--source', 'events:rec.kfe', '--record', 'x.kfe');
    assert.equal(replay.status, 2);
    assert.match(replay.stderr, /--record: records the live source only.*\[AGT_ERR_CONFIG\]/);
    const help = run('--help');
    assert.equal(help.status, 0);
    assert.match(help.stdout, /--active-timeout S/);
  });
});
