/**
 * `kpiflow collect`: runs the collector until SIGTERM or SIGINT, then stops cleanly (stop
 * listening, write everything received, close the database).
 */
import { pino } from 'pino';
import { parseCollectorArgs, startCollector } from '../collector/index.js';

/** Runs the collector; resolves with the exit code. */
export async function runCollect(argv: string[]): Promise<number> {
  const config = parseCollectorArgs(argv);
  const log = pino({ level: config.logLevel, base: { service: 'kpiflow-collector' } });
  const collector = await startCollector(config, log);
  if (config.once) {
    await collector.close();
    const c = collector.ingest.counters;
    process.stderr.write(
      `kpiflow collect: ingested ${c.messages} messages: ${c.profilesStored} profiles and ${c.flowsStored} flows stored in ${config.db}\n`,
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
      db: config.db,
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
