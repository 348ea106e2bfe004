/**
 * A high-RTT destination between two network namespaces on a kernel without netem: the server
 * side gets one more address, and the client side routes its packets to that address through a
 * TUN device where demo/delay-tun.py holds each one for a fixed time before the kernel forwards
 * it on to the server. Replies come back directly, so the path's RTT grows by exactly the delay.
 * Used by `make demo` (one destination with high RTT) and by the live RTT test.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** Where delay-tun.py lies in the source tree (dist/demo/ -> demo/). */
export const DELAY_TUN = fileURLToPath(new URL('../../demo/delay-tun.py', import.meta.url));

/** One end of the path: a namespace and its IPv4 address on the link to the other end. */
export interface PathEnd {
  /** Network namespace name (ip netns). */
  name: string;
  ipv4: string;
}

/** A delayed destination; `close` stops the delayer and removes what it added. */
export interface DelayedDestination {
  /** The address to connect to from the client side. */
  address: string;
  delayMs: number;
  close(): void;
}

function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')} exited ${r.status}: ${r.stderr.trim()}`);
}

/**
 * Gives `server` the extra address `address` (an IPv4 /32 not otherwise used) and makes every
 * packet the `client` namespace sends to it wait `delayMs` in a TUN device named `dev` (at most 15
 * characters, unique in the client namespace). Resolves once packets flow through the delayer.
 */
export async function addDelayedDestination(
  client: PathEnd,
  server: PathEnd,
  address: string,
  delayMs: number,
  dev = 'kfdelay0',
): Promise<DelayedDestination> {
  const proc: ChildProcess = spawn(
    'ip',
    ['netns', 'exec', client.name, 'python3', DELAY_TUN, '--dev', dev, '--delay-ms', String(delayMs)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const lines = createInterface({ input: proc.stdout! });
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`delay-tun.py not ready in 10 s: ${stderr}`)), 10_000);
    lines.on('line', (l) => {
      if (l.includes('"ready"')) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`delay-tun.py exited ${code}: ${stderr.trim()}`));
    });
  });
  const undo: (() => void)[] = [];
  const close = () => {
    for (const u of undo.reverse()) {
      try {
        u();
      } catch {
        // The namespace may be gone already.
      }
    }
    undo.length = 0;
    if (proc.exitCode === null) proc.kill('SIGTERM');
  };
  try {
    await ready;
    ip(['-n', server.name, 'addr', 'add', `${address}/32`, 'dev', 'lo']);
    undo.push(() => ip(['-n', server.name, 'addr', 'del', `${address}/32`, 'dev', 'lo']));
    ip(['-n', client.name, 'link', 'set', dev, 'up']);
    // Into the delayer; what comes back out of it goes to the server (table 4711).
    ip(['-n', client.name, 'route', 'add', `${address}/32`, 'dev', dev, 'src', client.ipv4]);
    ip(['-n', client.name, 'route', 'add', `${address}/32`, 'via', server.ipv4, 'table', '4711']);
    ip(['-n', client.name, 'rule', 'add', 'iif', dev, 'lookup', '4711']);
    undo.push(() => ip(['-n', client.name, 'rule', 'del', 'iif', dev, 'lookup', '4711']));
    // Forward what the delayer writes back, though its source is this namespace's own address.
    const sysctl = spawnSync(
      'ip',
      [
        'netns',
        'exec',
        client.name,
        'sysctl',
        '-qw',
        'net.ipv4.ip_forward=1',
        `net.ipv4.conf.${dev}.accept_local=1`,
        `net.ipv4.conf.${dev}.rp_filter=0`,
        'net.ipv4.conf.all.rp_filter=0',
      ],
      { encoding: 'utf8' },
    );
    if (sysctl.status !== 0) throw new Error(`sysctl in ${client.name}: ${sysctl.stderr.trim()}`);
  } catch (err) {
    close();
    throw err;
  }
  return { address, delayMs, close };
}
