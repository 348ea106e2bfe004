/**
 * The live event source: the kernel side's probe loader (agent/probe-loader.ts, loaded on demand
 * so that the rest of the agent works where the probes are not built) adapted to EventSource.
 * At start it subscribes to the ring buffer first, then runs one iterator scan, so connections
 * already open are picked up and nothing that happens meanwhile is missed.
 */
import type { Logger } from 'pino';
import { AgentError } from './errors.js';
import type { EventSink, EventSource } from './event-source.js';
import type { ProbeEvent, TcpCounters } from './probe-event.js';

/** What this adapter uses of the loader's LiveProbes. */
interface LiveProbesLike {
  readonly missing: readonly (keyof TcpCounters)[];
  readonly unavailable?: readonly { kpi: string; reason: string }[];
  subscribe(onEvents: (events: ProbeEvent[]) => void, onLost?: (count: number) => void): { close(): void };
  snapshot(): ProbeEvent[];
  close(): void;
}

/** What this adapter uses of the loader module. */
interface ProbeLoaderModule {
  startLiveProbes(options?: Record<string, unknown>): LiveProbesLike;
}

/** Options of the live source, handed to the loader as they are (e.g. `netns`, `perPacket`). */
export interface LiveSourceOptions {
  log?: Logger;
  loaderOptions?: Record<string, unknown>;
}

/** Loads the probe loader module, or fails with AGT_ERR_SOURCE_UNAVAILABLE saying why. */
async function loadLoader(): Promise<ProbeLoaderModule> {
  // A computed specifier: the loader is another engineer's module and may not be built here.
  const specifier = new URL('./probe-loader.js', import.meta.url).href;
  let mod: Partial<ProbeLoaderModule>;
  try {
    mod = (await import(specifier)) as Partial<ProbeLoaderModule>;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_MODULE_NOT_FOUND' && String(e.message).includes('probe-loader'))
      throw new AgentError(
        'AGT_ERR_SOURCE_UNAVAILABLE',
        'the live source is not built (agent/probe-loader.js is missing): run make build, or use a replay source (issue 5)',
        { cause: err },
      );
    throw new AgentError('AGT_ERR_SOURCE_UNAVAILABLE', `cannot load the probe loader: ${e.message}`, {
      cause: err,
    });
  }
  if (typeof mod.startLiveProbes !== 'function')
    throw new AgentError(
      'AGT_ERR_SOURCE_UNAVAILABLE',
      'agent/probe-loader.js has no startLiveProbes(): the kernel side and the agent disagree',
    );
  return mod as ProbeLoaderModule;
}

/** Loads and attaches the probes and returns them as an EventSource. */
export async function openLiveSource(options: LiveSourceOptions = {}): Promise<EventSource> {
  const loader = await loadLoader();
  let probes: LiveProbesLike;
  try {
    probes = loader.startLiveProbes(options.loaderOptions ?? {});
  } catch (err) {
    if (err instanceof AgentError) throw err;
    throw new AgentError('AGT_ERR_SOURCE_UNAVAILABLE', (err as Error).message, { cause: err });
  }
  const log = options.log?.child({ component: 'live-source' });
  if (probes.unavailable?.length)
    log?.warn({ unavailable: probes.unavailable }, 'KPIs this kernel cannot measure');
  return new LiveSource(probes);
}

class LiveSource implements EventSource {
  readonly name = 'live';
  readonly missing: readonly (keyof TcpCounters)[];
  readonly reorderingDistance: boolean;
  private sink: EventSink | null = null;
  private sub: { close(): void } | null = null;

  constructor(private readonly probes: LiveProbesLike) {
    this.missing = probes.missing;
    // The loader lists the distance as unavailable unless the per-packet program is attached.
    this.reorderingDistance = !(probes.unavailable ?? []).some((u) => u.kpi === 'ofoDistance');
  }

  async start(sink: EventSink): Promise<void> {
    this.sink = sink;
    this.sub = this.probes.subscribe(
      (events) => sink.events(events),
      (count) => sink.lost(count),
    );
    this.scan();
  }

  scan(): void {
    const sink = this.sink;
    if (!sink) return;
    let events: ProbeEvent[];
    try {
      events = this.probes.snapshot();
    } catch (err) {
      sink.error(
        new AgentError('AGT_ERR_SOURCE', `iterator scan: ${(err as Error).message}`, { cause: err }),
      );
      return;
    }
    if (events.length > 0) sink.events(events);
  }

  async close(): Promise<void> {
    this.sub?.close();
    this.sub = null;
    this.sink = null;
    this.probes.close();
  }
}
