/**
 * `kpiflow agent`: runs the agent until SIGTERM or SIGINT (or until its source ends), then stops
 * cleanly: open connections flushed as DESYNC profiles, the exporter drained (or spooled).
 * Exit codes: 0 ok, 1 runtime failure, 2 bad usage.
 */
import { pino } from 'pino';
import {
  AGENT_USAGE,
  Agent,
  AgentError,
  type EventSource,
  openLiveSource,
  parseAgentArgs,
} from '../agent/index.js';

const USAGE_CODES = new Set(['AGT_ERR_CONFIG', 'AGT_ERR_CONFIG_FILE', 'AGT_ERR_NOT_IMPLEMENTED']);

function fail(err: unknown): number {
  if (err instanceof AgentError) {
    process.stderr.write(`kpiflow agent: ${err.message} [${err.code}]\n`);
    if (USAGE_CODES.has(err.code)) {
      process.stderr.write('try: kpiflow agent --help\n');
      return 2;
    }
    return 1;
  }
  process.stderr.write(`kpiflow agent: ${(err as Error).stack ?? String(err)}\n`);
  return 1;
}

/** Runs the agent; resolves with the exit code. */
export async function runAgent(argv: string[]): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(AGENT_USAGE);
    return 0;
  }
  let config: ReturnType<typeof parseAgentArgs>;
  try {
    config = parseAgentArgs(argv);
  } catch (err) {
    return fail(err);
  }
  const log = pino({ level: config.logLevel, base: { service: 'kpiflow-agent' } });
  let source: EventSource;
  try {
    source = await openLiveSource({
      log,
      loaderOptions: {
        ...(config.ringBytes === null ? {} : { ringBytes: config.ringBytes }),
        perPacket: config.perPacket,
      },
    });
  } catch (err) {
    return fail(err);
  }
  let agent: Agent;
  try {
    agent = await Agent.start({
      source,
      export: {
        target: config.export,
        observationDomainId: config.observationDomainId,
        maxMessageSize: config.maxMessageSize,
        flushIntervalMs: config.flushIntervalMs,
        templateRefreshMs: config.templateRefreshMs,
        queue: {
          maxRecords: config.queueSize,
          spoolDir: config.spoolDir,
          spoolMaxBytes: config.spoolMaxBytes,
        },
        tls: {
          ...(config.tlsCa ? { ca: config.tlsCa } : {}),
          ...(config.tlsCert ? { cert: config.tlsCert } : {}),
          ...(config.tlsKey ? { key: config.tlsKey } : {}),
        },
      },
      activeTimeoutMs: config.activeTimeoutMs,
      maxConnections: config.maxConnections,
      metrics: config.metrics,
      log,
    });
  } catch (err) {
    await source.close().catch(() => {});
    return fail(err);
  }
  const stop = (signal: string) => {
    log.info({ signal }, 'stopping');
    void agent.close();
  };
  const onTerm = () => stop('SIGTERM');
  const onInt = () => stop('SIGINT');
  process.once('SIGTERM', onTerm);
  process.once('SIGINT', onInt);
  const end = await agent.done;
  process.off('SIGTERM', onTerm);
  process.off('SIGINT', onInt);
  if (end.error) return fail(end.error);
  return 0;
}
