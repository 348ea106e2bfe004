/**
 * `kpiflow collect`: runs the collector until SIGTERM or SIGINT, then stops cleanly (stop
 * listening, write everything received, close the database).
 */
import { pino } from 'pino';
import { type CollectorConfig, parseCollectorArgs, spoolDir, startCollector } from '../collector/index.js';

const USAGE = `usage: kpiflow collect [options]

  --ipfix-udp H:P | off        IPFIX over UDP (default 0.0.0.0:4739)
  --ipfix-tcp H:P | off        IPFIX over TCP (default 0.0.0.0:4739)
  --ipfix-tls H:P | off        IPFIX over TLS (default 0.0.0.0:4740, only with --tls-cert and --tls-key)
  --tls-cert F --tls-key F     TLS certificate and key; --tls-ca F makes client certificates mandatory
  --http H:P | off             HTTP API (default 127.0.0.1:9739)
  --db FILE                    SQLite database (default kpiflow.db)
  --store sqlite|clickhouse    the store (default sqlite)
  --clickhouse-url URL         http://[user:pass@]host:8123/database (created when missing; default database kpiflow)
  --clickhouse-spool DIR       batches ClickHouse has not taken yet (default: clickhouse-spool next to --db)
  --no-ingest                  answer queries only (an API replica): no IPFIX listeners, no writes
  --retention D | off          delete profiles and flows older than D by flow start (default 30d;
                               ClickHouse drops whole UTC days, and flows by arrival)
  --api-token T                bearer token for everything but /healthz
  --batch-size N               rows written per batch (default 5000)
  --flush-interval D           longest a record waits before it is written (default 200ms)
  --max-pending N              rows received and not yet stored before records are dropped (default 200000)
  --sqlite-layout blocks|rows  how profiles are stored (default blocks; docs/storage.md)
  --sqlite-sync off|normal|full  SQLite synchronous mode of the writer (default normal)
  --template-lifetime D        UDP template lifetime (default 30m)
  --ingest FILE                ingest an RFC 5655 file at start (repeatable); --once exits after
  --config FILE                JSON file with the same options in camelCase (flags override it)
  --log-level L                pino level (default info); logs are JSON on stdout
`;

/** Where rows go, for messages: the SQLite file, or the ClickHouse URL without its credentials. */
function storeName(config: CollectorConfig): string {
  if (config.store === 'sqlite') return config.db;
  try {
    const u = new URL(config.clickhouseUrl!);
    u.username = '';
    u.password = '';
    return `ClickHouse ${u.toString()}`;
  } catch {
    return 'ClickHouse';
  }
}

/** Runs the collector; resolves with the exit code. */
export async function runCollect(argv: string[]): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(USAGE);
    return 0;
  }
  const config = parseCollectorArgs(argv);
  const log = pino({ level: config.logLevel, base: { service: 'kpiflow-collector' } });
  const collector = await startCollector(config, log);
  if (config.once) {
    await collector.close();
    const c = collector.ingest.counters;
    const waiting = collector.store.backlog?.()?.pendingRows ?? 0;
    process.stderr.write(
      `kpiflow collect: ingested ${c.messages} messages: ${c.profilesStored} profiles and ${c.flowsStored} flows stored in ${storeName(config)}\n`,
    );
    if (waiting)
      process.stderr.write(
        `kpiflow collect: ClickHouse did not take ${waiting} rows in time: they wait in the spool (${spoolDir(config)}) for the next start\n`,
      );
    return 0;
  }
  const a = collector.addresses;
  log.info(
    {
      udp: a.udp && `${a.udp.host}:${a.udp.port}`,
      tcp: a.tcp && `${a.tcp.host}:${a.tcp.port}`,
      tls: a.tls && `${a.tls.host}:${a.tls.port}`,
      http: a.http && `http://${a.http.host}:${a.http.port}`,
      store: storeName(config),
    },
    'collector ready',
  );
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'stopping');
      collector.close().then(resolve, (err: unknown) => {
        log.error({ err }, 'error while stopping');
        resolve();
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}
