/**
 * Two hosts joined by two paths, for the MPTCP live tests: namespaces `kf-mp-<id>-a` (client)
 * and `kf-mp-<id>-b` (server), two veth pairs, path 1 in 192.0.2.0/24 and path 2 in
 * 198.51.100.0/24 (a /30 of each, unique per topology of this process; or a /64 each of
 * 2001:db8:4d50::/48), MPTCP limits set on
 * both ends, and the MPTCP peer (test/agent-live/mptcp-peer.py) started inside. Removed in
 * `close()`, whatever happened.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Peer, startPythonPeer } from '../helpers/json-peer.js';
import type { NetnsHost } from '../helpers/netns.js';
import { IN_CI } from '../helpers/tools.js';

/** The peer script, from the source tree (tests run from dist/). */
export const MPTCP_PEER = fileURLToPath(new URL('../../../test/agent-live/mptcp-peer.py', import.meta.url));

function sh(cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/**
 * The kernel has MPTCP (CONFIG_MPTCP: /proc/sys/net/mptcp); otherwise the test is skipped with a
 * loud reason (developer machine) or fails (CI). Returns false when it was skipped.
 */
export function requireMptcp(t: TestContext): boolean {
  if (existsSync('/proc/sys/net/mptcp/enabled')) return true;
  const reason = 'SKIPPED: this kernel has no MPTCP (/proc/sys/net/mptcp)';
  if (IN_CI) throw new Error(`${reason}; under CI every test must run`);
  process.stderr.write(`\n*** ${t.name}: ${reason} ***\n`);
  t.skip(reason);
  return false;
}

/** One end: its namespace and its address on each path. */
export interface MptcpHost extends NetnsHost {
  /** Address and veth device on path 1 and path 2. */
  addr1: string;
  addr2: string;
  dev1: string;
  dev2: string;
}

/** The two hosts. */
export interface MptcpTopology {
  client: MptcpHost;
  server: MptcpHost;
  close(): void;
}

// /30 blocks handed out by this process, from high offsets (other live tests use low ones).
let nextBlock = 32 + (process.pid % 16);

/** Builds the topology (no MPTCP endpoint yet: see `signal`); IPv6 paths with `ipv6`. */
export function createMptcpTopology(options: { ipv6?: boolean; prefix?: string } = {}): MptcpTopology {
  const id = `${process.pid.toString(36)}${randomBytes(2).toString('hex')}`.slice(-7);
  const nsPrefix = options.prefix ?? 'kf-mp';
  const names = [`${nsPrefix}-${id}-a`, `${nsPrefix}-${id}-b`] as const;
  const n = nextBlock++ % 63;
  const block = n * 4;
  const v6 = options.ipv6 ?? false;
  // IPv6: a /64 of 2001:db8:4d50::/48 per path.
  const p1 = v6
    ? [`2001:db8:4d50:${(2 * n).toString(16)}::1`, `2001:db8:4d50:${(2 * n).toString(16)}::2`]
    : [`192.0.2.${block + 1}`, `192.0.2.${block + 2}`];
  const p2 = v6
    ? [`2001:db8:4d50:${(2 * n + 1).toString(16)}::1`, `2001:db8:4d50:${(2 * n + 1).toString(16)}::2`]
    : [`198.51.100.${block + 1}`, `198.51.100.${block + 2}`];
  const prefix = v6 ? ['64', 'nodad'] : ['30'];
  const devs = [
    [`kmp1a${id}`, `kmp2a${id}`],
    [`kmp1b${id}`, `kmp2b${id}`],
  ];
  const made: string[] = [];
  const close = () => {
    for (const n of made.splice(0)) spawnSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
  };
  try {
    for (const n of names) {
      sh('ip', ['netns', 'add', n]);
      made.push(n);
    }
    for (const p of [0, 1]) {
      sh('ip', [
        'link',
        'add',
        devs[0]![p]!,
        'netns',
        names[0],
        'type',
        'veth',
        'peer',
        'name',
        devs[1]![p]!,
        'netns',
        names[1],
      ]);
    }
    const hosts = [0, 1].map((i): MptcpHost => {
      const name = names[i]!;
      const exec = (cmd: string, args: string[], input?: string) =>
        sh('ip', ['netns', 'exec', name, cmd, ...args], input);
      exec('ip', ['link', 'set', 'lo', 'up']);
      // Replies of a join leave by the path they came in on; no reverse-path filter in the way.
      exec('sysctl', ['-qw', 'net.mptcp.enabled=1', 'net.ipv4.conf.all.rp_filter=0']);
      exec('ip', ['addr', 'add', `${p1[i]}/${prefix[0]}`, 'dev', devs[i]![0]!, ...prefix.slice(1)]);
      exec('ip', ['addr', 'add', `${p2[i]}/${prefix[0]}`, 'dev', devs[i]![1]!, ...prefix.slice(1)]);
      exec('ip', ['link', 'set', devs[i]![0]!, 'up']);
      exec('ip', ['link', 'set', devs[i]![1]!, 'up']);
      const path = `/run/netns/${name}`;
      return {
        name,
        path,
        inode: statSync(path).ino,
        ipv4: v6 ? '' : p1[i]!,
        ipv6: v6 ? p1[i]! : '',
        dev: devs[i]![0]!,
        addr1: p1[i]!,
        addr2: p2[i]!,
        dev1: devs[i]![0]!,
        dev2: devs[i]![1]!,
        exec,
        spawn: (cmd, args) =>
          spawn('ip', ['netns', 'exec', name, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }),
      };
    });
    const [client, server] = hosts as [MptcpHost, MptcpHost];
    // The server accepts up to 2 subflows and announces its addresses; the client accepts the
    // announcements and opens a subflow to each.
    server.exec('ip', ['mptcp', 'limits', 'set', 'subflows', '2', 'add_addr_accepted', '0']);
    client.exec('ip', ['mptcp', 'limits', 'set', 'subflows', '2', 'add_addr_accepted', '2']);
    return { client, server, close };
  } catch (err) {
    close();
    throw err;
  }
}

/** Announces the server's path-2 address (endpoint `id`, flag signal): clients join there. */
export function signal(server: MptcpHost, id = 2): void {
  server.exec('ip', [
    'mptcp',
    'endpoint',
    'add',
    server.addr2,
    'dev',
    server.dev2,
    'id',
    String(id),
    'signal',
  ]);
}

/** Removes endpoint `id`: the server withdraws the address (RM_ADDR) and closes its subflows. */
export function withdraw(server: MptcpHost, id = 2): void {
  server.exec('ip', ['mptcp', 'endpoint', 'delete', 'id', String(id)]);
}

/**
 * Lets the client open subflows itself from its path-2 address (endpoint `id`, flag subflow):
 * packets from that address to the server's path-1 address leave by path 2 (policy routing;
 * the server takes them on its path-2 device and answers by the connected route).
 */
export function clientSubflowEndpoint(client: MptcpHost, server: MptcpHost, id = 3): void {
  client.exec('ip', ['rule', 'add', 'from', client.addr2, 'table', '100']);
  client.exec('ip', ['route', 'add', `${server.addr1}/32`, 'dev', client.dev2, 'table', '100']);
  client.exec('ip', [
    'mptcp',
    'endpoint',
    'add',
    client.addr2,
    'dev',
    client.dev2,
    'id',
    String(id),
    'subflow',
  ]);
}

/** Removes the client's endpoint `id`: the client closes its subflows from it (RM_ADDR). */
export function clientWithdraw(client: MptcpHost, id = 3): void {
  client.exec('ip', ['mptcp', 'endpoint', 'delete', 'id', String(id)]);
}

/** An MPTcpExt counter of a namespace (/proc/net/netstat read from inside it). */
export function mptcpExt(host: NetnsHost, name: string): number {
  const lines = host.exec('cat', ['/proc/net/netstat']).split('\n');
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const keys = lines[i]!.split(/\s+/);
    const values = lines[i + 1]!.split(/\s+/);
    if (keys[0] !== 'MPTcpExt:') continue;
    const at = keys.indexOf(name);
    if (at > 0) return Number(values[at]);
  }
  throw new Error(`no MPTcpExt ${name} in /proc/net/netstat`);
}

/** Starts mptcp-peer.py inside `host`. */
export function startMptcpPeer(host: NetnsHost, args: (string | number)[]): Peer {
  return startPythonPeer(host, MPTCP_PEER, args);
}
