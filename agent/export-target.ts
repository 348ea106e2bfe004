/**
 * Where profiles go: `udp://H:P`, `tcp://H:P`, `tls://H:P` (IPv6 hosts in brackets) or
 * `file:PATH` (RFC 5655: messages back to back).
 */
import { AgentError } from './errors.js';

/** A parsed export destination. */
export type ExportTarget =
  | { kind: 'udp' | 'tcp' | 'tls'; host: string; port: number }
  | { kind: 'file'; path: string };

/** The default IPFIX port (RFC 7011), and the one for IPFIX over TLS. */
export const IPFIX_PORT = 4739;
/** IANA's port for IPFIX over TLS (ipfixs). */
export const IPFIX_TLS_PORT = 4740;

/** Parses an export URL; `option` names the option in the error (e.g. `--export`). */
export function parseExportTarget(text: unknown, option = 'export'): ExportTarget {
  const bad = (why: string) => new AgentError('AGT_ERR_CONFIG', `${option}: ${why}`);
  if (typeof text !== 'string' || text === '')
    throw bad('expected udp://H:P, tcp://H:P, tls://H:P or file:PATH');
  if (text.startsWith('file:')) {
    const path = text.slice(5).replace(/^\/\/(?=\/)/, '');
    if (path === '') throw bad(`${JSON.stringify(text)} has no path after file:`);
    return { kind: 'file', path };
  }
  const m = /^(udp|tcp|tls):\/\/(?:\[([0-9a-fA-F:.]+)\]|([^:/\s[\]]+))(?::(\d{1,5}))?\/?$/.exec(text);
  if (!m)
    throw bad(
      `${JSON.stringify(text)} is not udp://HOST:PORT, tcp://HOST:PORT, tls://HOST:PORT or file:PATH`,
    );
  const kind = m[1] as 'udp' | 'tcp' | 'tls';
  const port = m[4] === undefined ? (kind === 'tls' ? IPFIX_TLS_PORT : IPFIX_PORT) : Number(m[4]);
  if (port < 1 || port > 65535) throw bad(`port ${port} outside 1-65535`);
  return { kind, host: m[2] ?? m[3]!, port };
}

/** The URL text of a target (for logs and metrics labels). */
export function formatExportTarget(t: ExportTarget): string {
  if (t.kind === 'file') return `file:${t.path}`;
  return `${t.kind}://${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
}
