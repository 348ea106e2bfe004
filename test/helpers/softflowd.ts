/**
 * softflowd (a third-party IPFIX exporter) reading a capture: `runSoftflowd` drives it through a
 * whole file and returns its own statistics, and the datagrams it sent when it sent them to a
 * socket of ours.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A datagram that reached our socket. */
export interface SoftflowdDatagram {
  payload: Buffer;
  /** softflowd's source port. */
  port: number;
}

/** What one softflowd run produced. */
export interface SoftflowdRun {
  /** Datagrams received by our socket; empty when softflowd exported to `target`. */
  datagrams: SoftflowdDatagram[];
  /** softflowd's closing statistics: "Flows exported: F (R records) in P packets". */
  exportedRecords: number;
  exportedPackets: number;
  log: string;
}

/** Where softflowd exports; without `target` it exports to a UDP socket this helper opens. */
export interface SoftflowdOptions {
  target?: { host: string; port: number };
}

/**
 * Runs `softflowd -r capture -v 10 -n HOST:PORT -d` with its pid and control files in `dir`.
 *
 * softflowd 1.1.0 reading a file blocks in accept() on its control socket before each batch of
 * packets (with -r it never polls, so a stale poll result makes it wait for a control
 * connection). Each `softflowctl statistics` lets one batch through; at the end of the file it
 * expires every flow, exports them and exits.
 */
export async function runSoftflowd(
  capture: string,
  dir: string,
  options: SoftflowdOptions = {},
): Promise<SoftflowdRun> {
  const datagrams: SoftflowdDatagram[] = [];
  let sock: dgram.Socket | null = null;
  let target = options.target;
  if (!target) {
    const s = dgram.createSocket('udp4');
    sock = s;
    s.on('message', (payload, rinfo) => datagrams.push({ payload, port: rinfo.port }));
    await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
    target = { host: '127.0.0.1', port: s.address().port };
  }
  const ctl = join(dir, 'softflowd.ctl');
  const proc = spawn(
    'softflowd',
    [
      '-r',
      capture,
      '-v',
      '10',
      '-n',
      `${target.host}:${target.port}`,
      '-d',
      '-p',
      join(dir, 'softflowd.pid'),
      '-c',
      ctl,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  proc.stdout.on('data', (d) => {
    log += d;
  });
  proc.stderr.on('data', (d) => {
    log += d;
  });
  // 'close', not 'exit': the statistics are the last lines, and 'exit' may come before them.
  const exited = new Promise<number | null>((resolve) => proc.on('close', (code) => resolve(code)));
  let done = false;
  void exited.then(() => {
    done = true;
  });
  try {
    const deadline = Date.now() + 15_000;
    while (!done) {
      if (Date.now() > deadline) throw new Error(`softflowd did not finish: ${log}`);
      if (existsSync(ctl))
        await execFileAsync('softflowctl', ['-c', ctl, 'statistics']).catch(() => undefined);
      else await sleep(5);
    }
    const code = await exited;
    assert.equal(code, 0, `softflowd exit status: ${log}`);
    const m = /Flows exported: \d+ \((\d+) records\) in (\d+) packets \(0 failures\)/.exec(log);
    assert.ok(m, `softflowd statistics: ${log}`);
    const exportedRecords = Number(m[1]);
    const exportedPackets = Number(m[2]);
    // Loopback datagrams are queued already; give the event loop a moment to read them all.
    if (sock) for (let i = 0; i < 200 && datagrams.length < exportedPackets; i++) await sleep(5);
    return { datagrams, exportedRecords, exportedPackets, log };
  } finally {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    sock?.close();
  }
}
