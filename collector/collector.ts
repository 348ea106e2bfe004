/**
 * A running collector: store, ingest, listeners, retention and the HTTP API, started in that
 * order and stopped in reverse so that nothing received is lost on SIGTERM.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Counter, type Registry } from 'prom-client';
import { buildApi } from './api/app.js';
import type { CollectorConfig } from './config.js';
import { CollectorError } from './errors.js';
import { Ingest } from './ingest.js';
import {
  type Endpoint,
  ingestFile,
  type Listener,
  listenStream,
  listenUdp,
  transportCounters,
} from './listeners.js';
import { ClickHouseStore } from './store/clickhouse-store.js';
import { SqliteStore } from './store/sqlite-store.js';
import type { Store } from './store/types.js';

/** A started collector. */
export interface Collector {
  readonly store: Store;
  readonly ingest: Ingest;
  /** Bound addresses (ports resolved). */
  readonly addresses: { udp?: Endpoint; tcp?: Endpoint; tls?: Endpoint; http?: Endpoint };
  /** Stops listening, writes everything received, closes the store. */
  close(): Promise<void>;
}

function readTls(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new CollectorError('COL_ERR_TLS', `${what} ${path}: ${(err as Error).message}`);
  }
}

/** The ClickHouse spool folder: --clickhouse-spool, or clickhouse-spool next to --db. */
export function spoolDir(config: CollectorConfig): string {
  return config.clickhouseSpool ?? join(dirname(config.db), 'clickhouse-spool');
}

/** Opens the configured store (read-only for an API-only process). */
export async function openStore(config: CollectorConfig, log: Logger): Promise<Store> {
  if (config.store === 'clickhouse') {
    return ClickHouseStore.open({
      url: config.clickhouseUrl!,
      readonly: config.noIngest,
      spoolDir: spoolDir(config),
      retentionMs: config.noIngest ? 0 : config.retentionMs,
      log,
    });
  }
  if (config.noIngest) return new SqliteStore({ path: config.db, readonly: true });
  return new SqliteStore({
    path: config.db,
    writerThread: true,
    sync: config.sqliteSync,
    layout: config.sqliteLayout,
  });
}

/** Starts a collector; on failure everything already started is stopped again. */
export async function startCollector(config: CollectorConfig, log: Logger): Promise<Collector> {
  const store = await openStore(config, log);
  const ingest = new Ingest({
    store,
    log,
    batchSize: config.batchSize,
    flushIntervalMs: config.flushIntervalMs,
    maxPendingRows: config.maxPendingRows,
    templateLifetimeMs: config.templateLifetimeMs,
  });
  const listeners: Listener[] = [];
  const addresses: Collector['addresses'] = {};
  let api: FastifyInstance | null = null;
  let retention: NodeJS.Timeout | null = null;
  let closing: Promise<void> | null = null;

  const close = (): Promise<void> => {
    closing ??= (async () => {
      if (retention) clearInterval(retention);
      await Promise.all(listeners.map((l) => l.close()));
      await ingest.close();
      if (api) await api.close();
      await store.close();
      log.info('collector stopped');
    })();
    return closing;
  };

  try {
    for (const file of config.ingest) await ingestFile(file, ingest, log);
    await ingest.flush();
    if (config.once) return { store, ingest, addresses, close };

    if (config.ipfixUdp) {
      const l = await listenUdp(config.ipfixUdp, ingest, log);
      listeners.push(l);
      addresses.udp = l.address;
    }
    if (config.ipfixTcp) {
      const l = await listenStream(config.ipfixTcp, ingest, log);
      listeners.push(l);
      addresses.tcp = l.address;
    }
    if (config.ipfixTls && config.tlsCert && config.tlsKey) {
      const tls = {
        cert: readTls(config.tlsCert, 'TLS certificate'),
        key: readTls(config.tlsKey, 'TLS key'),
        ...(config.tlsCa ? { ca: readTls(config.tlsCa, 'TLS CA') } : {}),
      };
      const l = await listenStream(config.ipfixTls, ingest, log, { tls });
      listeners.push(l);
      addresses.tls = l.address;
    }
    // ClickHouse drops whole day partitions by itself; an API-only process deletes nothing.
    if (config.retentionMs > 0 && store.kind === 'sqlite' && !config.noIngest)
      retention = startRetention(store, config.retentionMs, log);
    if (config.http) {
      api = await buildApi({
        store,
        ingest,
        log,
        extraMetrics: registerTransportMetrics,
        ...(config.apiToken ? { apiToken: config.apiToken } : {}),
      });
      await api.listen({ host: config.http.host, port: config.http.port });
      const a = api.server.address() as { address: string; port: number };
      addresses.http = { host: a.address, port: a.port };
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { store, ingest, addresses, close };
}

/**
 * Deletes rows past the retention period once a minute, 2000 rows per step with a pause in
 * between: each step is one short transaction of the writer, so ingest batches go in between.
 */
function startRetention(store: Store, retentionMs: number, log: Logger): NodeJS.Timeout {
  const l = log.child({ component: 'retention' });
  let running = false;
  const run = async () => {
    if (running) return;
    running = true;
    try {
      let total = 0;
      for (;;) {
        const n = await store.deleteOlderThan(Date.now() - retentionMs, 2000);
        total += n;
        if (n < 2000) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      if (total) l.info({ deleted: total }, 'retention');
    } catch (err) {
      l.error({ err }, 'retention failed');
    } finally {
      running = false;
    }
  };
  const t = setInterval(() => void run(), 60_000);
  t.unref();
  setImmediate(() => void run());
  return t;
}

/** Transport-level counters (connections, framing errors, TLS refusals...) in /metrics. */
function registerTransportMetrics(registry: Registry): void {
  const counters: [string, string, keyof typeof transportCounters][] = [
    ['udp_datagrams_total', 'UDP datagrams received', 'udpDatagrams'],
    ['tcp_connections_total', 'TCP and TLS exporter connections accepted', 'tcpConnections'],
    [
      'tcp_framing_errors_total',
      'TCP and TLS sessions closed because message framing was lost',
      'tcpFramingErrors',
    ],
    ['tcp_idle_timeouts_total', 'TCP and TLS sessions closed for idling too long', 'tcpIdleTimeouts'],
    [
      'tls_handshake_failures_total',
      'TLS handshakes refused (no or untrusted client certificate, not TLS)',
      'tlsHandshakeFailures',
    ],
  ];
  for (const [name, help, key] of counters) {
    new Counter({
      name: `kpiflow_collector_${name}`,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(transportCounters[key]);
      },
    });
  }
}
