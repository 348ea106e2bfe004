/**
 * /metrics: Prometheus text from a registry of this app's own. Values are read when scraped
 * (collect callbacks) from the ingest counters and the store, so nothing here runs on the ingest
 * path; the flush latency samples ingest leaves are drained into a histogram on each scrape.
 */
import type { FastifyPluginAsync } from 'fastify';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { DECODE_ERROR_CODES, type DropReason, type Ingest } from '../ingest.js';
import type { ExporterRow, Store } from '../store/types.js';

/** Prefix of every metric name. */
export const METRIC_PREFIX = 'kpiflow_collector_';

const DROP_REASONS: DropReason[] = ['decode_error', 'no_template', 'store_error', 'overload'];

/** The metrics of one API app. */
export interface ApiMetrics {
  registry: Registry;
  /** The registry's text, every value read now. */
  scrape(): Promise<string>;
  /** Counts one HTTP request by method, route pattern and status code. */
  countRequest(method: string, route: string, statusCode: number): void;
}

/** Sets a counter fed by a collect callback to absolute values. */
function setCounter(c: Counter<string>, values: [Record<string, string>, number][]): void {
  c.reset();
  for (const [labels, v] of values) c.inc(labels, v);
}

/** Creates the registry and its metrics. */
export function createApiMetrics(deps: { store: Store; ingest?: Ingest | undefined }): ApiMetrics {
  const { store, ingest } = deps;
  const registry = new Registry();
  const registers = [registry];
  const name = (n: string) => METRIC_PREFIX + n;

  // One store read serves every per-exporter series of a scrape: `scrape` starts each one
  // afresh; a read is reused for at most a second by anyone scraping the registry directly.
  let exportersRead: { at: number; rows: Promise<ExporterRow[]> } | null = null;
  let lastExporters: ExporterRow[] = [];
  let lastSize = 0;
  const exporters = () => {
    const now = Date.now();
    // A store that cannot answer (ClickHouse down) keeps the last values: the scrape still
    // serves the ingest and backlog series, which matter most then.
    if (!exportersRead || now - exportersRead.at > 1000)
      exportersRead = {
        at: now,
        rows: store.exporters().then(
          (rows) => {
            lastExporters = rows;
            return rows;
          },
          () => lastExporters,
        ),
      };
    return exportersRead.rows;
  };

  if (ingest) {
    const c = ingest.counters;
    new Counter({
      name: name('messages_received_total'),
      help: 'IPFIX messages received',
      registers,
      collect() {
        setCounter(this, [[{}, c.messages]]);
      },
    });
    new Counter({
      name: name('received_bytes_total'),
      help: 'Bytes of IPFIX messages received',
      registers,
      collect() {
        setCounter(this, [[{}, c.bytes]]);
      },
    });
    new Counter({
      name: name('records_received_total'),
      help: 'Data records decoded (profiles and flows)',
      registers,
      collect() {
        setCounter(this, [[{}, c.recordsReceived]]);
      },
    });
    new Counter({
      name: name('records_stored_total'),
      help: 'Records written to the store, by kind (profile, flow)',
      labelNames: ['kind'],
      registers,
      collect() {
        setCounter(this, [
          [{ kind: 'profile' }, c.profilesStored],
          [{ kind: 'flow' }, c.flowsStored],
        ]);
      },
    });
    new Counter({
      name: name('records_dropped_total'),
      help: 'Records not stored, by reason; decode_error counts the messages or sets skipped, no_template the data sets dropped unread, overload the records received while the store was too far behind',
      labelNames: ['reason'],
      registers,
      collect() {
        setCounter(
          this,
          DROP_REASONS.map((reason) => [{ reason }, c.dropped[reason]]),
        );
      },
    });
    new Counter({
      name: name('decode_errors_total'),
      help: 'IPFIX decoding errors, by code (docs/errors.md)',
      labelNames: ['code'],
      registers,
      collect() {
        setCounter(
          this,
          DECODE_ERROR_CODES.map((code) => [{ code }, c.decodeErrors[code] ?? 0]),
        );
      },
    });
    new Gauge({
      name: name('pending_rows'),
      help: 'Rows received and not yet written to the store',
      registers,
      collect() {
        this.set(ingest.pending);
      },
    });
    new Histogram({
      name: name('flush_duration_seconds'),
      help: 'Time to write one batch to the store',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
      collect() {
        for (const ms of c.flushDurations.splice(0)) this.observe(ms / 1000);
      },
    });
  }

  new Counter({
    name: name('exporter_records_total'),
    help: 'Data records received from each exporter (stored accounting)',
    labelNames: ['exporter'],
    registers,
    async collect() {
      setCounter(
        this,
        (await exporters()).map((e) => [{ exporter: e.exporter }, e.records]),
      );
    },
  });
  new Counter({
    name: name('exporter_lost_records_total'),
    help: 'Records each exporter sent that never arrived, from IPFIX sequence-number gaps',
    labelNames: ['exporter'],
    registers,
    async collect() {
      setCounter(
        this,
        (await exporters()).map((e) => [{ exporter: e.exporter }, e.lostRecords]),
      );
    },
  });
  new Counter({
    name: name('exporter_decode_errors_total'),
    help: 'Decoding errors in the messages of each exporter',
    labelNames: ['exporter'],
    registers,
    async collect() {
      setCounter(
        this,
        (await exporters()).map((e) => [{ exporter: e.exporter }, e.decodeErrors]),
      );
    },
  });
  new Gauge({
    name: name('exporter_templates'),
    help: 'Templates each exporter has defined (as of the last batch written)',
    labelNames: ['exporter'],
    registers,
    async collect() {
      this.reset();
      for (const e of await exporters()) this.set({ exporter: e.exporter }, e.templateIds.length);
    },
  });
  new Gauge({
    name: name('database_size_bytes'),
    help: 'Bytes the store takes on disk (database, WAL and shared-memory files)',
    registers,
    async collect() {
      lastSize = await store.sizeBytes().catch(() => lastSize);
      this.set(lastSize);
    },
  });
  if (store.backlog) {
    const backlog = () => store.backlog?.() ?? null;
    const gauge = (n: string, help: string, value: (b: NonNullable<ReturnType<typeof backlog>>) => number) =>
      new Gauge({
        name: name(n),
        help,
        registers,
        collect() {
          this.set(value(backlog() ?? ({} as NonNullable<ReturnType<typeof backlog>>)) || 0);
        },
      });
    const counter = (
      n: string,
      help: string,
      value: (b: NonNullable<ReturnType<typeof backlog>>) => number,
    ) =>
      new Counter({
        name: name(n),
        help,
        registers,
        collect() {
          const b = backlog();
          setCounter(this, [[{}, b ? value(b) : 0]]);
        },
      });
    gauge(
      'store_pending_rows',
      'Rows accepted and not yet in the store backend (ClickHouse)',
      (b) => b.pendingRows,
    );
    gauge(
      'store_pending_batches',
      'Batches accepted and not yet in the store backend',
      (b) => b.pendingBatches,
    );
    gauge(
      'store_spool_bytes',
      'Bytes of batches kept in spool files until the backend takes them',
      (b) => b.spoolBytes,
    );
    gauge(
      'store_oldest_pending_seconds',
      'Age of the oldest batch waiting for the backend',
      (b) => b.oldestAgeMs / 1000,
    );
    gauge('store_failing', '1 while writes to the store backend fail', (b) => (b.failing ? 1 : 0));
    counter('store_delivered_rows_total', 'Rows the store backend accepted', (b) => b.deliveredRows);
    counter(
      'store_failed_writes_total',
      'Failed writes to the store backend (each retry counts)',
      (b) => b.failedSends,
    );
    counter('store_spooled_batches_total', 'Batches written to spool files', (b) => b.spooledBatches);
    counter(
      'store_rejected_rows_total',
      'Rows the backend refused as malformed (kept in rejected/), and rows without a valid observation domain, template id or arrival time',
      (b) => b.rejectedRows,
    );
    counter(
      'store_refused_rows_total',
      'Rows refused because the spool was full: lost (the whole gathered insert, not only the batch that met the full spool)',
      (b) => b.refusedRows,
    );
  }
  const requests = new Counter({
    name: name('http_requests_total'),
    help: 'HTTP requests answered, by method, route pattern and status code',
    labelNames: ['method', 'route', 'status_code'],
    registers,
  });

  return {
    registry,
    scrape() {
      exportersRead = null;
      return registry.metrics();
    },
    countRequest(method, route, statusCode) {
      requests.inc({ method, route, status_code: String(statusCode) });
    },
  };
}

/** GET /metrics. */
export const metricsRoutes: FastifyPluginAsync<{ metrics: ApiMetrics }> = async (app, { metrics }) => {
  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics',
        description: `Prometheus text exposition format. Every metric name starts with \`${METRIC_PREFIX}\`.`,
        tags: ['operations'],
        response: {
          200: {
            description: 'Metrics',
            content: { 'text/plain': { schema: { type: 'string' } } },
          },
        },
      },
    },
    async (_request, reply) => {
      const text = await metrics.scrape();
      return reply.header('content-type', metrics.registry.contentType).send(text);
    },
  );
};
