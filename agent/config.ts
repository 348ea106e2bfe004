/**
 * `kpiflow agent` options: flags override the JSON config file, which overrides the defaults.
 * Every option is validated with a message that names it (the flag, or `FILE: key`).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { AgentError } from './errors.js';
import { type ExportTarget, parseExportTarget } from './export-target.js';
import { parseCidr } from './pcap/addresses.js';

/** Where events come from. */
export type SourceSpec = { kind: 'live' } | { kind: 'events' | 'pcap'; path: string };

/** The agent's validated settings. */
export interface AgentConfig {
  source: SourceSpec;
  export: ExportTarget;
  /** Tee the raw event stream to this events file (live source only). */
  record: string | null;
  /** pcap:FILE: CIDR blocks whose end of each connection is the local one (default: the SYN sender). */
  localNet: string[] | null;
  activeTimeoutMs: number;
  maxConnections: number;
  /** Size of the probes' ring buffer, bytes (a power of two); null: the loader's default, 4 MiB. */
  ringBytes: number | null;
  /** Attach the per-packet program too: the out-of-order distance is measured (costs per packet). */
  perPacket: boolean;
  /** Follow only the network namespace of this inode (from --netns NAME|PATH|INODE); null: all. */
  netns: number | null;
  /** The cgroup v2 directory sockops attaches to; null: the root of the first cgroup2 mount. */
  cgroup: string | null;
  /** Prometheus /metrics listener, or null. */
  metrics: { host: string; port: number } | null;
  /** On-disk spool for profiles the collector cannot take yet; null keeps memory only. */
  spoolDir: string | null;
  spoolMaxBytes: number;
  /** Profiles kept in memory before the oldest go to the spool (or are dropped). */
  queueSize: number;
  tlsCa: string | null;
  tlsCert: string | null;
  tlsKey: string | null;
  observationDomainId: number;
  maxMessageSize: number;
  flushIntervalMs: number;
  templateRefreshMs: number;
  logLevel: string;
}

/** Defaults: live probes, UDP to a collector on this host, no metrics, memory queue only. */
export const AGENT_DEFAULTS: AgentConfig = {
  source: { kind: 'live' },
  export: { kind: 'udp', host: '127.0.0.1', port: 4739 },
  record: null,
  localNet: null,
  activeTimeoutMs: 60_000,
  maxConnections: 100_000,
  ringBytes: null,
  perPacket: false,
  netns: null,
  cgroup: null,
  metrics: null,
  spoolDir: null,
  spoolMaxBytes: 64 * 1024 * 1024,
  queueSize: 10_000,
  tlsCa: null,
  tlsCert: null,
  tlsKey: null,
  observationDomainId: 1,
  maxMessageSize: 1400,
  flushIntervalMs: 200,
  templateRefreshMs: 60_000,
  logLevel: 'info',
};

/** Command-line flags and the config-file key each sets. */
const FLAGS = {
  source: 'source',
  export: 'export',
  record: 'record',
  'local-net': 'localNet',
  'active-timeout': 'activeTimeout',
  'max-connections': 'maxConnections',
  'ring-size': 'ringSize',
  netns: 'netns',
  cgroup: 'cgroup',
  metrics: 'metrics',
  'spool-dir': 'spoolDir',
  'spool-max': 'spoolMax',
  'queue-size': 'queueSize',
  'tls-ca': 'tlsCa',
  'tls-cert': 'tlsCert',
  'tls-key': 'tlsKey',
  'observation-domain': 'observationDomain',
  'max-message-size': 'maxMessageSize',
  'flush-interval': 'flushInterval',
  'template-refresh': 'templateRefresh',
  'log-level': 'logLevel',
} as const;

/** The inode of a network namespace given as an inode, a netns file, or an `ip netns` name. */
function netnsInode(option: string, v: string): number {
  if (/^\d+$/.test(v)) return Number(v);
  for (const path of v.includes('/') ? [v] : [`/run/netns/${v}`]) {
    try {
      return statSync(path).ino;
    } catch {
      // Named below.
    }
  }
  throw bad(
    option,
    `${JSON.stringify(v)} is no network namespace (an inode, a netns file, or a name in /run/netns)`,
  );
}

/** Usage text of `kpiflow agent`. */
export const AGENT_USAGE = `usage: kpiflow agent [options]

  --source live|events:FILE|pcap:FILE   where events come from (default live); a replay
                            (events:FILE, pcap:FILE) needs no privileges and exits 0 at its end
  --local-net CIDR[,CIDR]   pcap:FILE: the end inside these blocks is the local host
                            (default: the SYN sender)
  --export URL              udp://H:P (default udp://127.0.0.1:4739), tcp://H:P, tls://H:P, file:PATH
  --active-timeout S        long connections report at least this often (default 60s)
  --max-connections N       connections tracked at once (default 100000)
  --ring-size SIZE          probes' ring buffer, a power of two from 64K, e.g. 64M (default 4M);
                            a busy host needs more before events are lost (DESYNC)
  --per-packet              also run a probe on every received segment, so profiles carry the
                            out-of-order distance (meanReorderingDistance, varReorderingDistance);
                            off by default: it costs CPU per packet
  --netns NAME|PATH|INODE   live: follow only this network namespace (an \`ip netns\` name, a
                            netns file such as /proc/PID/ns/net, or its inode); default: all
  --cgroup DIR              live: the cgroup v2 directory the sockops program attaches to
                            (default: the root of the first cgroup2 mount), e.g. in a container
  --metrics H:P|off         serve Prometheus /metrics (default off)
  --spool-dir DIR           keep profiles on disk while the collector is down (default: memory only)
  --spool-max SIZE          largest spool, e.g. 64M (default 64M); the oldest profiles go first
  --queue-size N            profiles kept in memory (default 10000)
  --tls-ca FILE, --tls-cert FILE, --tls-key FILE   TLS export (tls://)
  --observation-domain N    IPFIX observation domain id (default 1)
  --max-message-size N      bytes per IPFIX message (default 1400)
  --flush-interval D        longest a profile waits for a message to fill (default 200ms)
  --template-refresh D      UDP template refresh (default 60s)
  --record FILE             live: also write every raw event to FILE (replay it with
                            --source events:FILE)
  --config FILE             JSON with the same options in camelCase (activeTimeout, export, ...)
  --log-level L             pino level (default info)
`;

const bad = (option: string, why: string) => new AgentError('AGT_ERR_CONFIG', `${option}: ${why}`);

/** Parses HOST:PORT ([v6]:PORT too), or "off". */
export function parseHostPort(option: string, v: unknown): { host: string; port: number } | null {
  if (v === 'off' || v === null || v === false) return null;
  if (typeof v !== 'string') throw bad(option, 'expected HOST:PORT or off');
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) throw bad(option, `${JSON.stringify(v)} is not HOST:PORT (port 0-65535) or off`);
  return { host: m[1] ?? m[2]!, port };
}

/** Parses a duration: a number with ms, s, m, h; a bare number is in `bareUnit` ('s' or 'ms'). */
export function parseDuration(option: string, v: unknown, bareUnit: 's' | 'ms' = 'ms'): number {
  const text = typeof v === 'number' ? String(v) : v;
  const m = typeof text === 'string' ? /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim()) : null;
  if (!m) throw bad(option, `${JSON.stringify(v)} is not a duration like 500ms, 30s, 5m or 1h`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? bareUnit) as 'ms'];
  return Math.round(Number(m[1]) * unit);
}

/** Parses a size in bytes: a number with an optional K, M or G (powers of 1024). */
export function parseSize(option: string, v: unknown): number {
  const text = typeof v === 'number' ? String(v) : v;
  const m = typeof text === 'string' ? /^(\d+)([KMG]i?B?)?$/i.exec(text.trim()) : null;
  if (!m) throw bad(option, `${JSON.stringify(v)} is not a size like 65536, 512K or 64M`);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[(m[2] ?? '').charAt(0).toLowerCase() as ''];
  return Number(m[1]) * unit;
}

function parseInteger(option: string, v: unknown, min: number, max: number): number {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max)
    throw bad(option, `${JSON.stringify(v)} is not an integer from ${min} to ${max}`);
  return n;
}

function str(option: string, v: unknown): string {
  if (typeof v !== 'string' || v === '') throw bad(option, 'expected a non-empty string');
  return v;
}

/** Parses `live`, `events:FILE` or `pcap:FILE`. */
export function parseSource(option: string, v: unknown): SourceSpec {
  if (v === 'live') return { kind: 'live' };
  const m = typeof v === 'string' ? /^(events|pcap):(.+)$/.exec(v) : null;
  if (!m) throw bad(option, `${JSON.stringify(v)} is not live, events:FILE or pcap:FILE`);
  return { kind: m[1] as 'events' | 'pcap', path: m[2]! };
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new AgentError('AGT_ERR_CONFIG_FILE', `${path}: ${(err as Error).message}`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new AgentError('AGT_ERR_CONFIG_FILE', `${path}: not valid JSON: ${(err as Error).message}`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
    throw new AgentError('AGT_ERR_CONFIG_FILE', `${path}: expected a JSON object`);
  const known = new Set<string>([...Object.values(FLAGS), 'perPacket']);
  for (const k of Object.keys(obj))
    if (!known.has(k))
      throw new AgentError(
        'AGT_ERR_CONFIG_FILE',
        `${path}: unknown option ${JSON.stringify(k)} (known: ${[...known].join(', ')})`,
      );
  return obj as Record<string, unknown>;
}

/** Builds the configuration from the arguments after `agent`. Throws AgentError (exit 2). */
export function parseAgentArgs(argv: string[]): AgentConfig {
  const options: Record<string, { type: 'string' | 'boolean' }> = {
    config: { type: 'string' },
    'per-packet': { type: 'boolean' },
  };
  for (const f of Object.keys(FLAGS)) options[f] = { type: 'string' };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: false, strict: true });
  } catch (err) {
    throw new AgentError('AGT_ERR_CONFIG', (err as Error).message);
  }
  const flags = parsed.values as Record<string, unknown>;
  const file = typeof flags['config'] === 'string' ? readConfigFile(flags['config']) : {};
  // A switch: on the command line it takes no value, in the file it is true or false.
  if (file['perPacket'] !== undefined && typeof file['perPacket'] !== 'boolean')
    throw bad(`${flags['config']}: perPacket`, 'expected true or false');
  const merged: Record<string, unknown> = { ...file };
  const where: Record<string, string> = {};
  for (const k of Object.keys(file)) where[k] = `${flags['config']}: ${k}`;
  for (const [flag, key] of Object.entries(FLAGS)) {
    if (flags[flag] !== undefined) {
      merged[key] = flags[flag];
      where[key] = `--${flag}`;
    }
  }
  const flagOf = (key: string) => Object.entries(FLAGS).find(([, k]) => k === key)?.[0] ?? key;
  const name = (key: string) => where[key] ?? `--${flagOf(key)}`;
  const has = (k: string) => merged[k] !== undefined;
  const c: AgentConfig = { ...AGENT_DEFAULTS };
  if (has('source')) c.source = parseSource(name('source'), merged['source']);
  if (has('export')) c.export = parseExportTarget(merged['export'], name('export'));
  if (has('record')) c.record = str(name('record'), merged['record']);
  if (has('localNet')) {
    const v = merged['localNet'];
    const list = Array.isArray(v) ? v : typeof v === 'string' ? v.split(',') : null;
    if (!list || list.length === 0 || !list.every((x) => typeof x === 'string'))
      throw bad(name('localNet'), 'expected CIDR blocks such as 192.0.2.0/24,2001:db8::/32');
    for (const x of list as string[]) {
      try {
        parseCidr(x);
      } catch (err) {
        throw bad(name('localNet'), (err as Error).message.replace(/^.*--local-net /, ''));
      }
    }
    c.localNet = (list as string[]).map((x) => x.trim());
  }
  if (has('activeTimeout')) {
    c.activeTimeoutMs = parseDuration(name('activeTimeout'), merged['activeTimeout'], 's');
    if (c.activeTimeoutMs < 100 || c.activeTimeoutMs > 86_400_000)
      throw bad(name('activeTimeout'), `${c.activeTimeoutMs} ms is outside 100ms-24h`);
  }
  if (has('maxConnections'))
    c.maxConnections = parseInteger(name('maxConnections'), merged['maxConnections'], 1, 100_000_000);
  if (has('ringSize')) {
    const n = parseSize(name('ringSize'), merged['ringSize']);
    // The kernel wants a power of two and a multiple of the page size.
    if (n < 65_536 || n > 2 ** 30 || (n & (n - 1)) !== 0)
      throw bad(name('ringSize'), `${n} bytes is not a power of two from 64K to 1G`);
    c.ringBytes = n;
  }
  if (has('netns')) c.netns = netnsInode(name('netns'), str(name('netns'), merged['netns']));
  if (has('cgroup')) {
    const dir = str(name('cgroup'), merged['cgroup']);
    if (!existsSync(join(dir, 'cgroup.procs')))
      throw bad(name('cgroup'), `${dir} is not a cgroup v2 directory (no cgroup.procs)`);
    c.cgroup = dir;
  }
  c.perPacket = flags['per-packet'] === true || file['perPacket'] === true;
  if (has('metrics')) c.metrics = parseHostPort(name('metrics'), merged['metrics']);
  if (has('spoolDir'))
    c.spoolDir = merged['spoolDir'] === 'off' ? null : str(name('spoolDir'), merged['spoolDir']);
  if (has('spoolMax')) {
    c.spoolMaxBytes = parseSize(name('spoolMax'), merged['spoolMax']);
    if (c.spoolMaxBytes < 65_536) throw bad(name('spoolMax'), `${c.spoolMaxBytes} bytes is less than 64K`);
  }
  if (has('queueSize')) c.queueSize = parseInteger(name('queueSize'), merged['queueSize'], 1, 10_000_000);
  if (has('tlsCa')) c.tlsCa = str(name('tlsCa'), merged['tlsCa']);
  if (has('tlsCert')) c.tlsCert = str(name('tlsCert'), merged['tlsCert']);
  if (has('tlsKey')) c.tlsKey = str(name('tlsKey'), merged['tlsKey']);
  if (has('observationDomain'))
    c.observationDomainId = parseInteger(
      name('observationDomain'),
      merged['observationDomain'],
      0,
      0xffffffff,
    );
  if (has('maxMessageSize'))
    c.maxMessageSize = parseInteger(name('maxMessageSize'), merged['maxMessageSize'], 512, 65535);
  if (has('flushInterval')) c.flushIntervalMs = parseDuration(name('flushInterval'), merged['flushInterval']);
  if (has('templateRefresh'))
    c.templateRefreshMs = parseDuration(name('templateRefresh'), merged['templateRefresh']);
  if (has('logLevel')) {
    const l = merged['logLevel'];
    if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(String(l)))
      throw bad(name('logLevel'), `${JSON.stringify(l)} is not a pino level`);
    c.logLevel = String(l);
  }
  // Cross-option rules.
  const tlsGiven = (['tlsCa', 'tlsCert', 'tlsKey'] as const).find((k) => c[k] !== null);
  if (tlsGiven && c.export.kind !== 'tls') throw bad(name(tlsGiven), 'TLS files need a tls:// export');
  if ((c.tlsCert === null) !== (c.tlsKey === null))
    throw bad(
      name(c.tlsCert ? 'tlsKey' : 'tlsCert'),
      'a client certificate needs both --tls-cert and --tls-key',
    );
  if (c.netns !== null && c.source.kind !== 'live')
    throw bad(name('netns'), 'filters the live source only (a replay holds what was recorded)');
  if (c.cgroup !== null && c.source.kind !== 'live')
    throw bad(name('cgroup'), 'applies to the live source only (where the probes attach)');
  if (c.record !== null && c.source.kind !== 'live')
    throw bad(name('record'), 'records the live source only (a replay is already a file)');
  if (c.localNet !== null && c.source.kind !== 'pcap')
    throw bad(name('localNet'), 'applies to --source pcap:FILE only');
  return c;
}
