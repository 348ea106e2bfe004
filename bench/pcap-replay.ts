/**
 * pcap replay speed: packets per second of `pcap:FILE` on one core (read + decode + passive TCP
 * analysis + the Agent's connection table, FSM and profile building, exporting IPFIX to a file),
 * side by side with `tshark -r FILE -q -z conv,tcp` on the same file in the same run.
 *
 * The capture is made here (needs root, iproute2, nftables, tcpdump, iperf3): a bulk transfer
 * between two network namespaces with 1 % random loss (nftables `numgen random` at the
 * receiver's input), 4 parallel flows, one segment per packet (gso_max_segs 1), captured at the
 * sender with a 96-byte snapshot length. `--file F` replays an existing capture instead.
 *
 *   node dist/bench/pcap-replay.js [--bytes 1600M] [--rounds 3] [--file F] [--keep]
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../agent/index.js';
import {
  CaptureReader,
  captureBootId,
  decodePacket,
  newSegment,
  openPcapSource,
  replayClock,
} from '../agent/pcap/index.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : def;
}

function sh(cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function makeCapture(file: string, bytes: string): Promise<void> {
  const id = `${process.pid.toString(36)}b`;
  const a = `kfbench-${id}-a`;
  const b = `kfbench-${id}-b`;
  try {
    sh('ip', ['netns', 'add', a]);
    sh('ip', ['netns', 'add', b]);
    sh('ip', ['link', 'add', 'kfba', 'netns', a, 'type', 'veth', 'peer', 'name', 'kfbb', 'netns', b]);
    for (const [n, dev, addr] of [
      [a, 'kfba', '192.0.2.1/24'],
      [b, 'kfbb', '192.0.2.2/24'],
    ] as const) {
      sh('ip', ['netns', 'exec', n, 'ip', 'addr', 'add', addr, 'dev', dev]);
      sh('ip', ['netns', 'exec', n, 'ip', 'link', 'set', 'dev', dev, 'gso_max_segs', '1', 'up']);
      sh('ip', ['netns', 'exec', n, 'ip', 'link', 'set', 'lo', 'up']);
    }
    sh(
      'ip',
      ['netns', 'exec', b, 'nft', '-f', '-'],
      'table inet kfbench {\n  chain c {\n    type filter hook input priority 0;\n    tcp dport 5201 numgen random mod 100 < 1 drop\n  }\n}\n',
    );
    const server = spawn('ip', ['netns', 'exec', b, 'iperf3', '-s', '-1', '-B', '192.0.2.2'], {
      stdio: 'ignore',
    });
    const dump = spawn(
      'ip',
      ['netns', 'exec', a, 'tcpdump', '-i', 'kfba', '-s', '96', '-B', '131072', '-n', '-w', file, 'tcp'],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    await new Promise<void>((resolve) =>
      dump.stderr.on('data', (d: Buffer) => /listening/.test(d.toString()) && resolve()),
    );
    await new Promise((r) => setTimeout(r, 500));
    sh('ip', ['netns', 'exec', a, 'iperf3', '-c', '192.0.2.2', '-n', bytes, '-P', '4', '-M', '1400']);
    await new Promise((r) => setTimeout(r, 1000));
    dump.kill('SIGINT');
    await new Promise((r) => dump.once('exit', r));
    server.kill('SIGKILL');
  } finally {
    spawnSync('ip', ['netns', 'del', a], { stdio: 'ignore' });
    spawnSync('ip', ['netns', 'del', b], { stdio: 'ignore' });
  }
}

async function readOnly(file: string): Promise<number> {
  const r = await CaptureReader.open(file);
  const seg = newSegment();
  let n = 0;
  for (;;) {
    let p = r.nextBuffered();
    if (p === undefined) p = await r.next();
    if (p === null) break;
    decodePacket(p.buf, p.offset, p.caplen, p.origLen, p.linkType, seg);
    n++;
  }
  await r.close();
  return n;
}

async function fullReplay(
  file: string,
  out: string,
): Promise<{ packets: number; profiles: number; events: number }> {
  const source = openPcapSource(file);
  const agent = await Agent.start({
    source,
    export: { target: `file:${out}` },
    clock: replayClock,
    bootId: captureBootId(file),
    tickMs: 0,
  });
  const end = await agent.done;
  if (end.reason !== 'source-ended') throw end.error ?? new Error(end.reason);
  return {
    packets: source.stats.packets,
    profiles: agent.builder.stats.profiles,
    events: agent.stats.events,
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)]!;
}

const fmt = (x: number) => `${(x / 1e6).toFixed(2)} M`;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'kf-bench-pcap-'));
  const rounds = Number(arg('rounds', '3'));
  try {
    let file = arg('file', '');
    if (file === '') {
      file = join(dir, 'bulk.pcap');
      process.stdout.write(`making the capture (${arg('bytes', '1600M')} over 4 flows, 1 % loss)...\n`);
      await makeCapture(file, arg('bytes', '1600M'));
    }
    const size = statSync(file).size;
    const packets = await readOnly(file);
    process.stdout.write(`capture: ${file}, ${packets} packets, ${(size / 1e6).toFixed(0)} MB\n`);
    const ours: number[] = [];
    const parse: number[] = [];
    const tshark: number[] = [];
    let info = { packets: 0, profiles: 0, events: 0 };
    for (let i = 0; i < rounds; i++) {
      let t0 = process.hrtime.bigint();
      await readOnly(file);
      parse.push(packets / (Number(process.hrtime.bigint() - t0) / 1e9));
      t0 = process.hrtime.bigint();
      info = await fullReplay(file, join(dir, 'out.ipfix'));
      ours.push(info.packets / (Number(process.hrtime.bigint() - t0) / 1e9));
      t0 = process.hrtime.bigint();
      // One core for tshark too (it has helper threads otherwise).
      const r = spawnSync('taskset', ['-c', '0', 'tshark', '-r', file, '-q', '-z', 'conv,tcp'], {
        stdio: 'ignore',
      });
      if (r.status !== 0) throw new Error('tshark failed');
      tshark.push(packets / (Number(process.hrtime.bigint() - t0) / 1e9));
    }
    const o = median(ours);
    const t = median(tshark);
    process.stdout.write(
      [
        `rounds: ${rounds} (medians; every round's figures: ours ${ours.map(fmt).join(', ')}; tshark ${tshark.map(fmt).join(', ')})`,
        `read + decode only:                         ${fmt(median(parse))} packets/s`,
        `pcap replay (read, decode, analyze, Agent): ${fmt(o)} packets/s  (${info.events} events, ${info.profiles} profiles)`,
        `tshark -r FILE -q -z conv,tcp:              ${fmt(t)} packets/s`,
        `ratio replay / tshark:                      ${(o / t).toFixed(1)}x`,
        '',
      ].join('\n'),
    );
  } finally {
    if (!process.argv.includes('--keep')) rmSync(dir, { recursive: true, force: true });
    else process.stdout.write(`kept ${dir}\n`);
  }
}

await main();
