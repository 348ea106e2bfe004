/**
 * The agent's Prometheus /metrics over plain node:http. Values are read when scraped (collect
 * callbacks), so nothing here runs on the event path.
 */
import { createServer } from 'node:http';
import type { Logger } from 'pino';
import { Counter, Gauge, Registry } from 'prom-client';
import type { Agent } from './agent.js';
import { AgentError } from './errors.js';
import { STATE_NAME, STATES } from './fsm.js';
import { EVENT_KIND } from './probe-event.js';

/** Prefix of every metric name. */
export const AGENT_METRIC_PREFIX = 'kpiflow_agent_';

const KIND_NAMES = new Map<number, string>(Object.entries(EVENT_KIND).map(([k, v]) => [v, k]));

function setCounter(c: Counter<string>, values: [Record<string, string>, number][]): void {
  c.reset();
  for (const [labels, v] of values) c.inc(labels, v);
}

/** The registry with every agent metric, reading `agent` when scraped. */
export function createAgentRegistry(agent: Agent): Registry {
  const registry = new Registry();
  const registers = [registry];
  const name = (n: string) => AGENT_METRIC_PREFIX + n;
  const counter = (
    n: string,
    help: string,
    read: () => [Record<string, string>, number][],
    labels: string[] = [],
  ) =>
    new Counter({
      name: name(n),
      help,
      labelNames: labels,
      registers,
      collect() {
        setCounter(this, read());
      },
    });
  const gauge = (n: string, help: string, read: () => number) =>
    new Gauge({
      name: name(n),
      help,
      registers,
      collect() {
        this.set(read());
      },
    });
  const s = agent.stats;
  const e = agent.exporter;
  const t = agent.table;
  counter(
    'events_total',
    'Probe events processed, by kind',
    () => Object.values(EVENT_KIND).map((k) => [{ kind: KIND_NAMES.get(k)! }, s.eventsByKind.get(k) ?? 0]),
    ['kind'],
  );
  counter('lost_events_total', 'Events the source reported lost (ring buffer full)', () => [
    [{}, s.lostEvents],
  ]);
  gauge('connections', 'Connections tracked now', () => t.size);
  counter(
    'connections_total',
    'Connections tracked since start, by how they were found (created, adopted)',
    () => [
      [{ how: 'created' }, t.stats.created],
      [{ how: 'adopted' }, t.stats.adopted],
    ],
    ['how'],
  );
  gauge('mptcp_connections', 'MPTCP connections (meta sockets) tracked now', () => agent.mptcp.size);
  counter(
    'mptcp_connections_total',
    'MPTCP connections tracked since start, by how they were found (created, adopted)',
    () => [
      [{ how: 'created' }, agent.mptcp.stats.created],
      [{ how: 'adopted' }, agent.mptcp.stats.adopted],
    ],
    ['how'],
  );
  counter('evictions_total', 'Connections evicted because the table was full', () => [[{}, t.stats.evicted]]);
  counter('vanished_total', 'Connections a complete scan no longer found in the kernel (DESYNC)', () => [
    [{}, t.stats.vanished],
  ]);
  counter(
    'profiles_total',
    'Profiles built, by end state',
    () => STATES.map((st) => [{ end_state: STATE_NAME[st] }, s.profilesByEnd[st]]),
    ['end_state'],
  );
  counter('exported_records_total', 'Profile records written to the export transport', () => [
    [{}, e.stats.exportedRecords],
  ]);
  counter('exported_messages_total', 'IPFIX messages written', () => [[{}, e.stats.exportedMessages]]);
  counter('export_errors_total', 'Export transport errors', () => [[{}, e.stats.exportErrors]]);
  counter('export_sessions_total', 'Export sessions established', () => [[{}, e.stats.sessions]]);
  counter(
    'export_dropped_total',
    'Profiles dropped before export, by reason',
    () => {
      const d = e.dropped;
      return [
        [{ reason: 'queue_full' }, d.queueFull],
        [{ reason: 'spool_full' }, d.spoolFull],
        [{ reason: 'spool_error' }, d.spoolError],
        [{ reason: 'refused' }, d.refused],
        [{ reason: 'at_close' }, d.atClose],
      ];
    },
    ['reason'],
  );
  gauge('export_connected', '1 while an export session is up', () => (e.connected ? 1 : 0));
  gauge('export_queue_records', 'Profiles waiting (memory and spool)', () => e.queue.length);
  gauge('spool_records', 'Profiles waiting in the on-disk spool', () => e.queue.spoolRecords);
  gauge('spool_bytes', 'Bytes of the on-disk spool', () => e.queue.spoolBytes);
  return registry;
}

/** A running /metrics listener. */
export interface AgentMetricsServer {
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

/** Serves GET /metrics (and /healthz) on `at`. */
export async function startMetricsServer(
  agent: Agent,
  at: { host: string; port: number },
  log: Logger,
): Promise<AgentMetricsServer> {
  const registry = createAgentRegistry(agent);
  const l = log.child({ component: 'metrics' });
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/metrics') {
      registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(text);
        },
        (err: unknown) => {
          l.error({ err }, 'metrics scrape failed');
          res.writeHead(500).end();
        },
      );
    } else if (req.method === 'GET' && path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) =>
      reject(
        new AgentError('AGT_ERR_METRICS_LISTEN', `${at.host}:${at.port}: ${err.message}`, { cause: err }),
      ),
    );
    server.listen(at.port, at.host, () => resolve());
  });
  const a = server.address();
  const address = typeof a === 'object' && a ? { host: a.address, port: a.port } : at;
  l.info(address, 'serving /metrics');
  return {
    address,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
