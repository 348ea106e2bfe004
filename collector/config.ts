/**
 * `kpiflow collect` options: flags override the JSON config file, which overrides the defaults.
 * Every option is validated with a message that names it.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CollectorError } from './errors.js';
import type { Endpoint } from './listeners.js';

/** The collector's validated settings. */
export interface CollectorConfig {
  ipfixUdp: Endpoint | null;
  ipfixTcp: Endpoint | null;
  /** TLS listener; only with tlsCert and tlsKey. */
  ipfixTls: Endpoint | null;
  tlsCert: string | null;
  tlsKey: string | null;
  /** CA file: when set, TLS exporters must present a certificate it signed. */
  tlsCa: string | null;
  http: Endpoint | null;
  db: string;
  store: 'sqlite' | 'clickhouse';
  /** PRAGMA synchronous of the SQLite writer. */
  sqliteSync: 'off' | 'normal' | 'full';
  /** How SQLite stores profiles: one row each, or column blocks (experimental; docs/storage.md). */
  sqliteLayout: 'rows' | 'blocks';
  clickhouseUrl: string | null;
  /** Folder where the ClickHouse store keeps batches the server has not taken yet; null: next to --db. */
  clickhouseSpool: string | null;
  /** Answer queries only: no listeners, no ingest files, no retention, the store opened read-only. */
  noIngest: boolean;
  /** Rows older than this are deleted, ms; 0 keeps everything. */
  retentionMs: number;
  apiToken: string | null;
  batchSize: number;
  flushIntervalMs: number;
  /** Rows received but not yet stored beyond which records are dropped (counted as overload). */
  maxPendingRows: number;
  templateLifetimeMs: number;
  /** RFC 5655 files ingested at start. */
  ingest: string[];
  /** Ingest the files, flush, and exit (no listeners, no API). */
  once: boolean;
  logLevel: string;
}

/** Defaults: IPFIX on every interface (exporters are remote), the API on loopback only. */
export const COLLECTOR_DEFAULTS: CollectorConfig = {
  ipfixUdp: { host: '0.0.0.0', port: 4739 },
  ipfixTcp: { host: '0.0.0.0', port: 4739 },
  ipfixTls: { host: '0.0.0.0', port: 4740 },
  tlsCert: null,
  tlsKey: null,
  tlsCa: null,
  http: { host: '127.0.0.1', port: 9739 },
  db: 'kpiflow.db',
  store: 'sqlite',
  sqliteSync: 'normal',
  sqliteLayout: 'blocks',
  clickhouseUrl: null,
  clickhouseSpool: null,
  noIngest: false,
  retentionMs: 30 * 86_400_000,
  apiToken: null,
  batchSize: 5000,
  flushIntervalMs: 200,
  maxPendingRows: 200_000,
  templateLifetimeMs: 30 * 60_000,
  ingest: [],
  once: false,
  logLevel: 'info',
};

/** Command-line flags and the config-file key each sets. */
/** Command-line flags and the config keys they set (cli/collect.ts lists each in its usage). */
export const COLLECTOR_FLAGS = {
  'ipfix-udp': 'ipfixUdp',
  'ipfix-tcp': 'ipfixTcp',
  'ipfix-tls': 'ipfixTls',
  'tls-cert': 'tlsCert',
  'tls-key': 'tlsKey',
  'tls-ca': 'tlsCa',
  http: 'http',
  db: 'db',
  store: 'store',
  'sqlite-sync': 'sqliteSync',
  'sqlite-layout': 'sqliteLayout',
  'clickhouse-url': 'clickhouseUrl',
  'clickhouse-spool': 'clickhouseSpool',
  retention: 'retention',
  'api-token': 'apiToken',
  'batch-size': 'batchSize',
  'flush-interval': 'flushInterval',
  'max-pending': 'maxPendingRows',
  'template-lifetime': 'templateLifetime',
  ingest: 'ingest',
  'log-level': 'logLevel',
} as const;

const bad = (option: string, why: string) => new CollectorError('COL_ERR_CONFIG', `${option}: ${why}`);

/** Parses HOST:PORT ([v6]:PORT too), or "off". */
export function parseEndpoint(option: string, v: unknown): Endpoint | null {
  if (v === 'off' || v === null || v === false) return null;
  if (typeof v !== 'string') throw bad(option, 'expected HOST:PORT or off');
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) throw bad(option, `${JSON.stringify(v)} is not HOST:PORT (port 0-65535) or off`);
  return { host: m[1] ?? m[2]!, port };
}

/** Parses a duration: plain ms, or a number with ms, s, m, h, d. */
export function parseDuration(option: string, v: unknown): number {
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return v;
  const m = typeof v === 'string' ? /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(v.trim()) : null;
  if (!m) throw bad(option, `${JSON.stringify(v)} is not a duration like 500ms, 30s, 5m, 12h or 7d`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 'ms') as 'ms'];
  return Math.round(Number(m[1]) * unit);
}

function parseInteger(option: string, v: unknown, min: number, max: number): number {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw bad(option, `${JSON.stringify(v)} is not an integer from ${min} to ${max}`);
  }
  return n;
}

function str(option: string, v: unknown): string {
  if (typeof v !== 'string' || v === '') throw bad(option, 'expected a non-empty string');
  return v;
}

/** Reads and validates the config file; its keys are the flags' camelCase names. */
function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new CollectorError('COL_ERR_CONFIG_FILE', `${path}: ${(err as Error).message}`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new CollectorError('COL_ERR_CONFIG_FILE', `${path}: not valid JSON: ${(err as Error).message}`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
    throw new CollectorError('COL_ERR_CONFIG_FILE', `${path}: expected a JSON object`);
  const known = new Set<string>([...Object.values(COLLECTOR_FLAGS), 'once', 'noIngest']);
  for (const k of Object.keys(obj)) {
    if (!known.has(k))
      throw new CollectorError(
        'COL_ERR_CONFIG_FILE',
        `${path}: unknown option ${JSON.stringify(k)} (known: ${[...known].join(', ')})`,
      );
  }
  return obj as Record<string, unknown>;
}

/** Builds the configuration from command-line arguments (after `collect`). */
export function parseCollectorArgs(argv: string[]): CollectorConfig {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {
    config: { type: 'string' },
    once: { type: 'boolean' },
    'no-ingest': { type: 'boolean' },
  };
  for (const f of Object.keys(COLLECTOR_FLAGS))
    options[f] = { type: 'string', ...(f === 'ingest' ? { multiple: true } : {}) };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: false, strict: true });
  } catch (err) {
    throw new CollectorError('COL_ERR_CONFIG', (err as Error).message);
  }
  const flags = parsed.values as Record<string, unknown>;
  const file = typeof flags['config'] === 'string' ? readConfigFile(flags['config']) : {};
  const merged: Record<string, unknown> = { ...file };
  const where: Record<string, string> = {};
  for (const k of Object.keys(file)) where[k] = `${flags['config']}: ${k}`;
  for (const [flag, key] of Object.entries(COLLECTOR_FLAGS)) {
    if (flags[flag] !== undefined) {
      merged[key] = flags[flag];
      where[key] = `--${flag}`;
    }
  }
  if (flags['once'] !== undefined) merged['once'] = flags['once'];
  if (flags['no-ingest'] !== undefined) {
    merged['noIngest'] = flags['no-ingest'];
    where['noIngest'] = '--no-ingest';
  }
  const name = (key: string) => where[key] ?? key;
  const c: CollectorConfig = { ...COLLECTOR_DEFAULTS, ingest: [] };
  const has = (k: string) => merged[k] !== undefined;
  if (has('ipfixUdp')) c.ipfixUdp = parseEndpoint(name('ipfixUdp'), merged['ipfixUdp']);
  if (has('ipfixTcp')) c.ipfixTcp = parseEndpoint(name('ipfixTcp'), merged['ipfixTcp']);
  if (has('ipfixTls')) c.ipfixTls = parseEndpoint(name('ipfixTls'), merged['ipfixTls']);
  if (has('http')) c.http = parseEndpoint(name('http'), merged['http']);
  if (has('tlsCert')) c.tlsCert = str(name('tlsCert'), merged['tlsCert']);
  if (has('tlsKey')) c.tlsKey = str(name('tlsKey'), merged['tlsKey']);
  if (has('tlsCa')) c.tlsCa = str(name('tlsCa'), merged['tlsCa']);
  if (has('db')) c.db = str(name('db'), merged['db']);
  if (has('store')) {
    const s = merged['store'];
    if (s !== 'sqlite' && s !== 'clickhouse')
      throw bad(name('store'), `${JSON.stringify(s)} is not sqlite or clickhouse`);
    c.store = s;
  }
  if (has('sqliteSync')) {
    const v = merged['sqliteSync'];
    if (v !== 'off' && v !== 'normal' && v !== 'full')
      throw bad(name('sqliteSync'), `${JSON.stringify(v)} is not off, normal or full`);
    c.sqliteSync = v;
  }
  if (has('sqliteLayout')) {
    const v = merged['sqliteLayout'];
    if (v !== 'rows' && v !== 'blocks')
      throw bad(name('sqliteLayout'), `${JSON.stringify(v)} is not rows or blocks`);
    c.sqliteLayout = v;
  }
  if (has('clickhouseUrl')) c.clickhouseUrl = str(name('clickhouseUrl'), merged['clickhouseUrl']);
  if (has('clickhouseSpool')) c.clickhouseSpool = str(name('clickhouseSpool'), merged['clickhouseSpool']);
  if (has('noIngest')) {
    if (typeof merged['noIngest'] !== 'boolean') throw bad(name('noIngest'), 'expected true or false');
    c.noIngest = merged['noIngest'];
  }
  if (has('retention'))
    c.retentionMs = merged['retention'] === 'off' ? 0 : parseDuration(name('retention'), merged['retention']);
  if (has('apiToken')) c.apiToken = str(name('apiToken'), merged['apiToken']);
  if (has('batchSize')) c.batchSize = parseInteger(name('batchSize'), merged['batchSize'], 1, 1_000_000);
  if (has('flushInterval')) c.flushIntervalMs = parseDuration(name('flushInterval'), merged['flushInterval']);
  if (has('maxPendingRows'))
    c.maxPendingRows = parseInteger(name('maxPendingRows'), merged['maxPendingRows'], 1, 100_000_000);
  if (has('templateLifetime'))
    c.templateLifetimeMs = parseDuration(name('templateLifetime'), merged['templateLifetime']);
  if (has('ingest')) {
    const v = merged['ingest'];
    c.ingest = (Array.isArray(v) ? v : [v]).map((x) => str(name('ingest'), x));
  }
  if (has('once')) c.once = merged['once'] === true;
  if (has('logLevel')) {
    const l = merged['logLevel'];
    if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(String(l)))
      throw bad(name('logLevel'), `${JSON.stringify(l)} is not a pino level`);
    c.logLevel = String(l);
  }
  // Cross-option rules.
  if ((c.tlsCert === null) !== (c.tlsKey === null))
    throw bad(c.tlsCert ? '--tls-key' : '--tls-cert', 'TLS needs both --tls-cert and --tls-key');
  if (c.tlsCert === null) c.ipfixTls = null;
  if (c.tlsCa !== null && c.tlsCert === null)
    throw bad('--tls-ca', 'client certificates need a TLS listener (--tls-cert and --tls-key)');
  if (c.store === 'clickhouse' && c.clickhouseUrl === null)
    throw bad('--clickhouse-url', '--store clickhouse needs --clickhouse-url');
  if (c.once && c.ingest.length === 0) throw bad('--once', 'needs at least one --ingest FILE');
  if (c.noIngest) {
    if (c.once || c.ingest.length)
      throw bad(name('noIngest'), 'answers queries only: drop --ingest and --once');
    if (!c.http) throw bad(name('noIngest'), 'an API-only process needs --http');
    c.ipfixUdp = null;
    c.ipfixTcp = null;
    c.ipfixTls = null;
  }
  return c;
}
