/**
 * Test hosts: two network namespaces joined by a veth pair, with documentation addresses
 * (192.0.2.1-2/24 and 2001:db8::1-2/64, or addresses unique to the pair), names unique per run so test files can run in parallel,
 * always removed in `finally`. Commands run inside with `ip netns exec`; the code under test
 * stays in the host namespace and observes these. requireRoot skips loudly on a developer
 * machine without root or BPF, and fails under CI, where nothing may be skipped.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { IN_CI } from './tools.js';

/** Why live kernel tests cannot run here, or null when they can. */
export function rootUnavailableReason(): string | null {
  if (process.getuid?.() !== 0) return 'not root (live probe tests load BPF programs and build namespaces)';
  if (!existsSync('/sys/kernel/btf/vmlinux')) return 'kernel without BTF (/sys/kernel/btf/vmlinux)';
  if (spawnSync('ip', ['-V'], { stdio: 'ignore' }).status !== 0) return 'iproute2 (ip) not installed';
  return null;
}

/**
 * Ensures root, BTF and iproute2; otherwise skips the test (developer machine) or throws (CI).
 * Returns false when the test was skipped and must return at once.
 */
export function requireRoot(t: TestContext): boolean {
  const reason = rootUnavailableReason();
  if (reason === null) return true;
  const text = `SKIPPED: ${reason}`;
  if (IN_CI) throw new Error(`${text}; under CI every test must run`);
  process.stderr.write(`\n*** ${t.name}: ${text} ***\n`);
  t.skip(text);
  return false;
}

function sh(cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input, maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** One side of the pair. */
export interface NetnsHost {
  /** Namespace name (ip netns). */
  name: string;
  /** /run/netns path (opens the namespace). */
  path: string;
  /** Inode of the namespace: what the probes report as netns. */
  inode: number;
  ipv4: string;
  ipv6: string;
  /** The veth end inside this namespace. */
  dev: string;
  /** Runs a command inside, returns stdout; throws on failure. */
  exec(cmd: string, args: string[], input?: string): string;
  /** Starts a command inside. */
  spawn(cmd: string, args: string[]): ChildProcess;
}

/** Two namespaces joined by a veth pair. */
export interface NetnsPair {
  a: NetnsHost;
  b: NetnsHost;
  /** Removes both namespaces (idempotent). */
  close(): void;
}

/** Settings of a pair. */
export interface NetnsPairOptions {
  /**
   * Give this pair addresses no other pair of this process has (a /30 of 198.51.100.0/24 or
   * 203.0.113.0/24, a /64 of 2001:db8:4b46::/48), so an observer of the whole host, such as the
   * agent, can tell pairs running at the same time apart by address. Default: 192.0.2.1-2 and
   * 2001:db8::1-2.
   */
  uniqueAddresses?: boolean;
}

// Blocks handed out by this process; the pid spreads concurrent test processes apart.
let nextBlock = process.pid % 128;

/** Creates the pair; call close() in `finally` (or use withNetnsPair). */
export function createNetnsPair(options: NetnsPairOptions = {}): NetnsPair {
  const id = `${process.pid.toString(36)}${randomBytes(3).toString('hex')}`.slice(-9);
  const names = [`kf-${id}-a`, `kf-${id}-b`] as const;
  const devs = [`kfa${id}`, `kfb${id}`] as const;
  let v4: readonly [string, string] = ['192.0.2.1', '192.0.2.2'];
  let v6: readonly [string, string] = ['2001:db8::1', '2001:db8::2'];
  let v4Prefix = 24;
  if (options.uniqueAddresses) {
    const block = nextBlock++ % 128;
    const net = block < 64 ? '198.51.100' : '203.0.113';
    const base = (block % 64) * 4;
    v4 = [`${net}.${base + 1}`, `${net}.${base + 2}`];
    v4Prefix = 30;
    v6 = [`2001:db8:4b46:${block.toString(16)}::1`, `2001:db8:4b46:${block.toString(16)}::2`];
  }
  const made: string[] = [];
  const close = () => {
    for (const n of made.splice(0)) spawnSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
  };
  try {
    for (const n of names) {
      sh('ip', ['netns', 'add', n]);
      made.push(n);
    }
    sh('ip', [
      'link',
      'add',
      devs[0],
      'netns',
      names[0],
      'type',
      'veth',
      'peer',
      'name',
      devs[1],
      'netns',
      names[1],
    ]);
    const hosts = [0, 1].map((i): NetnsHost => {
      const name = names[i]!;
      const dev = devs[i]!;
      const exec = (cmd: string, args: string[], input?: string) =>
        sh('ip', ['netns', 'exec', name, cmd, ...args], input);
      exec('ip', ['link', 'set', 'lo', 'up']);
      exec('ip', ['addr', 'add', `${v4[i]}/${v4Prefix}`, 'dev', dev]);
      // nodad: the address is usable at once, not after duplicate address detection.
      exec('ip', ['-6', 'addr', 'add', `${v6[i]}/64`, 'dev', dev, 'nodad']);
      exec('ip', ['link', 'set', dev, 'up']);
      const path = `/run/netns/${name}`;
      return {
        name,
        path,
        inode: statSync(path).ino,
        ipv4: v4[i]!,
        ipv6: v6[i]!,
        dev,
        exec,
        spawn: (cmd, args) =>
          spawn('ip', ['netns', 'exec', name, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }),
      };
    });
    return { a: hosts[0]!, b: hosts[1]!, close };
  } catch (err) {
    close();
    throw err;
  }
}

/** Runs `fn` with a fresh pair, removed afterwards whatever happens. */
export async function withNetnsPair<T>(
  fn: (pair: NetnsPair) => Promise<T>,
  options: NetnsPairOptions = {},
): Promise<T> {
  const pair = createNetnsPair(options);
  try {
    return await fn(pair);
  } finally {
    pair.close();
  }
}
