/**
 * pmacct (a third-party exporter): `runPmacctd` has pmacctd read a capture and export its flows
 * with the nfprobe plugin as IPFIX (nfprobe_version 10) over UDP to `target`, and exit at the end
 * of the file (pmacctd sleeps about 2 s before and after reading a savefile).
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** What one pmacctd run printed. */
export interface PmacctdRun {
  code: number | null;
  log: string;
}

/** Runs pmacctd on `capture` with its config in `dir`, exporting IPFIX to `target`. */
export async function runPmacctd(
  capture: string,
  dir: string,
  target: { host: string; port: number },
  timeoutMs = 20_000,
): Promise<PmacctdRun> {
  const conf = join(dir, 'pmacctd.conf');
  writeFileSync(
    conf,
    [
      'daemonize: false',
      `pcap_savefile: ${capture}`,
      'plugins: nfprobe',
      'nfprobe_version: 10',
      `nfprobe_receiver: ${target.host}:${target.port}`,
      'aggregate: src_host, dst_host, src_port, dst_port, proto, tos',
      '',
    ].join('\n'),
  );
  const proc = spawn('pmacctd', ['-f', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout.on('data', (d) => {
    log += d;
  });
  proc.stderr.on('data', (d) => {
    log += d;
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      proc.on('close', (c) => resolve(c));
      timer = setTimeout(
        () => reject(new Error(`pmacctd did not finish in ${timeoutMs} ms: ${log}`)),
        timeoutMs,
      );
    });
    return { code, log };
  } finally {
    clearTimeout(timer);
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  }
}
