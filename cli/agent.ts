/**
 * `kpiflow agent`: runs the agent until SIGTERM or SIGINT (or until its source ends), then stops
 * cleanly: open connections flushed as DESYNC profiles, the exporter drained (or spooled).
 * Replay sources (events:FILE, pcap:FILE) end with their file: the agent flushes and exits 0.
 * Exit codes: 0 ok, 1 runtime failure, 2 bad usage.
 */
import { pino } from 'pino';
import {
  AGENT_USAGE,
  Agent,
  AgentError,
  type AgentOptions,
  defaultBootId,
  EventFileWriter,
  type EventSource,
  openEventFileSource,
  openLiveSource,
  parseAgentArgs,
} from '../agent/index.js';
import { captureBootId, openPcapSource, replayClock } from '../agent/pcap/index.js';

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
  // What a source needs of the agent: replays run on the file's clock and boot id, no timer.
  let replay: Partial<AgentOptions> = {};
  let recorder: EventFileWriter | null = null;
  const spec = config.source;
  try {
    if (spec.kind === 'events') {
      const events = openEventFileSource(spec.path);
      source = events;
      // The recording's active timeout and cap: the windows, hence the profiles, are the live run's.
      replay = events.agentOptions();
      const h = events.info.header;
      log.info(
        { file: spec.path, kernel: h.kernelRelease, host: h.hostname, recordedBy: h.agentVersion },
        'replaying an events file',
      );
    } else if (spec.kind === 'pcap') {
      source = openPcapSource(spec.path, {
        ...(config.localNet ? { localNet: config.localNet } : {}),
        maxConnections: config.maxConnections,
        // Quiet connections must see capture time pass for the active timeout (a quarter, as live).
        snapshotIntervalMs: Math.max(1, Math.floor(config.activeTimeoutMs / 4)),
      });
      replay = { clock: replayClock, bootId: captureBootId(spec.path), tickMs: 0 };
    } else {
      source = await openLiveSource({
        log,
        loaderOptions: {
          ...(config.ringBytes === null ? {} : { ringBytes: config.ringBytes }),
          perPacket: config.perPacket,
          ...(config.netns === null ? {} : { netns: config.netns }),
          ...(config.cgroup === null ? {} : { cgroupPath: config.cgroup }),
        },
      });
      if (config.record !== null) {
        // One boot id for the agent and the file, so a replay's flowIds are the live ones.
        const bootId = defaultBootId();
        try {
          recorder = EventFileWriter.create(
            config.record,
            {
              bootId,
              missing: [...source.missing],
              reorderingDistance: source.reorderingDistance ?? false,
              mptcpUnmeasured: [...(source.mptcpUnmeasured ?? [])],
              activeTimeoutMs: config.activeTimeoutMs,
              maxConnections: config.maxConnections,
            },
            { onError: (err) => log.error({ err }, 'recording stopped') },
          );
        } catch (err) {
          await source.close().catch(() => {});
          throw err;
        }
        replay = { bootId, record: recorder };
      }
    }
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
      ...replay,
    });
  } catch (err) {
    await source.close().catch(() => {});
    await recorder?.close();
    return fail(err);
  }
  // The offset the profile times were computed with: a replay of the file computes the same.
  recorder?.setClockOffset(agent.builder.clockOffsetNs);
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
  if (recorder?.error) return fail(recorder.error);
  if (recorder) log.info({ file: config.record, ...recorder.stats }, 'recording written');
  const stats = (source as { stats?: { complete?: boolean } }).stats;
  if (spec.kind === 'events' && stats?.complete === false)
    log.warn({ file: spec.path }, 'the recording has no end record: its agent did not stop cleanly');
  return 0;
}
