/**
 * Addresses as the decoder holds them (four 32-bit words; IPv4 in the last word), their text
 * form for events, and `--local-net` CIDR blocks matched against them.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { AgentError } from '../errors.js';

/** A parsed CIDR block: version, prefix length and the network's words. */
export interface Cidr {
  ipVersion: 4 | 6;
  prefix: number;
  words: Uint32Array;
  /** As given, for messages. */
  text: string;
}

function v6Words(text: string): Uint32Array {
  // Expand "::" and an embedded dotted quad into eight 16-bit groups.
  let t = text;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(t);
  if (dotted) {
    const q = dotted[1]!.split('.').map(Number);
    t = `${t.slice(0, dotted.index)}${((q[0]! << 8) | q[1]!).toString(16)}:${((q[2]! << 8) | q[3]!).toString(16)}`;
  }
  const [head, tail] = t.includes('::') ? t.split('::') : [t, undefined];
  const h = head ? head.split(':') : [];
  const tl = tail === undefined ? [] : tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - tl.length).fill('0'), ...tl].map((g) =>
    Number.parseInt(g, 16),
  );
  const w = new Uint32Array(4);
  for (let i = 0; i < 4; i++) w[i] = ((groups[i * 2]! << 16) | groups[i * 2 + 1]!) >>> 0;
  return w;
}

/** Parses `A.B.C.D/N` or `X:Y::Z/N` (a bare address is a /32 or /128); AGT_ERR_CONFIG when bad. */
export function parseCidr(text: string): Cidr {
  const [addr, len, extra] = text.trim().split('/');
  const bad = (why: string) =>
    new AgentError('AGT_ERR_CONFIG', `--local-net ${JSON.stringify(text)}: ${why}`);
  if (addr === undefined || extra !== undefined) throw bad('expected ADDRESS/PREFIX');
  const v4 = isIPv4(addr);
  if (!v4 && !isIPv6(addr)) throw bad(`${JSON.stringify(addr)} is not an IP address`);
  const max = v4 ? 32 : 128;
  const prefix = len === undefined ? max : Number(len);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (len !== undefined && !/^\d+$/.test(len)))
    throw bad(`prefix length must be 0-${max}`);
  const words = v4 ? new Uint32Array([0, 0, 0, ipv4Word(addr)]) : v6Words(addr);
  return { ipVersion: v4 ? 4 : 6, prefix, words, text };
}

function ipv4Word(text: string): number {
  const q = text.split('.').map(Number);
  return ((q[0]! << 24) | (q[1]! << 16) | (q[2]! << 8) | q[3]!) >>> 0;
}

/** True when the address (`ipVersion`, `words`) lies in one of `nets`. */
export function inNets(nets: readonly Cidr[], ipVersion: 4 | 6, words: ArrayLike<number>): boolean {
  for (const n of nets) {
    if (n.ipVersion !== ipVersion) continue;
    const first = ipVersion === 4 ? 3 : 0;
    let bits = n.prefix;
    let ok = true;
    for (let i = first; i < 4 && bits > 0; i++) {
      const take = Math.min(32, bits);
      const mask = take === 32 ? 0xffffffff : ~((1 << (32 - take)) - 1) >>> 0;
      if (((words[i]! ^ n.words[i]!) & mask) >>> 0 !== 0) {
        ok = false;
        break;
      }
      bits -= take;
    }
    if (ok) return true;
  }
  return false;
}

/** Text form of an address: dotted quad, or RFC 5952 IPv6 (longest zero run as "::"). */
export function formatAddress(ipVersion: 4 | 6, w: ArrayLike<number>): string {
  if (ipVersion === 4) {
    const a = w[3]!;
    return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
  }
  const g: number[] = [];
  for (let i = 0; i < 4; i++) g.push(w[i]! >>> 16, w[i]! & 0xffff);
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestAt < 0) return hex.join(':');
  return `${hex.slice(0, bestAt).join(':')}::${hex.slice(bestAt + bestLen).join(':')}`;
}
