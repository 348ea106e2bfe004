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
import { mptcpUnmeasuredFields } from './profile-templates.js';

/** What this adapter uses of the loader's LiveProbes. */
interface LiveProbesLike {
  readonly missing: readonly (keyof TcpCounters)[];
  readonly unavailable?: readonly { kpi: string; reason: string }[];
  subscribe(onEvents: (events: ProbeEvent[]) => void, onLost?: (count: number) => void): { close(): void };
  snapshot(namespaces?: readonly NamespaceLike[]): ProbeEvent[];
  readonly snapshotErrors?: readonly { path: string; error?: string }[];
  close(): void;
}

/** A network namespace to walk: its inode (the events' netns) and a path that opens it. */
interface NamespaceLike {
  inode: number;
  path: string;
}

/** What this adapter uses of the loader module. */
interface ProbeLoaderModule {
  startLiveProbes(options?: Record<string, unknown>): LiveProbesLike;
  listNetworkNamespaces?(): NamespaceLike[];
}

/**
 * Snapshots handed to the agent per event-loop turn during a scan: with 100,000 connections a
 * scan applied at once blocked the loop for seconds; in slices, ring events keep flowing.
 */
const SCAN_SLICE = 2000;

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
  return new LiveSource(probes, loader.listNetworkNamespaces, log);
}

class LiveSource implements EventSource {
  readonly name = 'live';
  readonly missing: readonly (keyof TcpCounters)[];
  readonly reorderingDistance: boolean;
  readonly mptcpUnmeasured: readonly string[];
  private sink: EventSink | null = null;
  private sub: { close(): void } | null = null;
  private scanning = false;
  /** Namespaces whose walk failed, each logged once (a narrowed capability set shows here). */
  private readonly unwalkable = new Set<string>();

  constructor(
    private readonly probes: LiveProbesLike,
    private readonly namespaces?: () => NamespaceLike[],
    private readonly log?: Logger,
  ) {
    this.missing = probes.missing;
    // The loader lists the distance as unavailable unless the per-packet program is attached.
    this.reorderingDistance = !(probes.unavailable ?? []).some((u) => u.kpi === 'ofoDistance');
    this.mptcpUnmeasured = mptcpUnmeasuredFields(probes.unavailable ?? []);
  }

  async start(sink: EventSink): Promise<void> {
    this.sink = sink;
    this.sub = this.probes.subscribe(
      (events) => sink.events(events),
      (count) => sink.lost(count),
    );
    // Resolves once the start-up scan is applied: connections already open are then adopted
    // with the counters they had when the agent started.
    await new Promise<void>((resolve) => this.scan(resolve));
  }

  /**
   * An iterator scan, one namespace per event-loop turn and its snapshots in slices of
   * SCAN_SLICE, so ring-buffer batches are served in between. One scan at a time; a scan that
   * walked its namespaces is reported complete (`sink.scanned`), so the agent can drop the
   * connections the kernel no longer has.
   */
  scan(done: () => void = () => {}): void {
    const sink = this.sink;
    if (!sink || this.scanning) {
      done();
      return;
    }
    if (!this.namespaces) {
      this.scanAtOnce(sink);
      done();
      return;
    }
    this.scanning = true;
    const startNs = process.hrtime.bigint();
    const todo = this.namespaces();
    const walked = new Set<number>();
    const cookies = new Set<bigint>();
    sink.scanStarted?.();
    const finish = (ok: boolean) => {
      this.scanning = false;
      if (this.sink === sink) sink.scanned?.(ok ? { startNs, netns: walked, cookies } : null);
      done();
    };
    const deliver = (events: ProbeEvent[], from: number, then: () => void) => {
      if (this.sink !== sink) return finish(false);
      const slice = events.slice(from, from + SCAN_SLICE);
      for (const e of slice) cookies.add(e.cookie);
      if (slice.length > 0) sink.events(slice);
      if (from + SCAN_SLICE < events.length) setImmediate(() => deliver(events, from + SCAN_SLICE, then));
      else then();
    };
    const step = (i: number) => {
      if (this.sink !== sink) return finish(false);
      if (i >= todo.length) return finish(true);
      const ns = todo[i]!;
      let events: ProbeEvent[];
      try {
        events = this.probes.snapshot([ns]);
      } catch (err) {
        sink.error(
          new AgentError('AGT_ERR_SOURCE', `iterator scan: ${(err as Error).message}`, { cause: err }),
        );
        return finish(false);
      }
      // A namespace that could not be walked (gone meanwhile) proves nothing about its sockets.
      const failed = this.probes.snapshotErrors ?? [];
      if (failed.length === 0) walked.add(ns.inode);
      for (const f of failed) if (!this.unwalkable.has(f.path)) this.noteUnwalkable(f);
      deliver(events, 0, () => setImmediate(() => step(i + 1)));
    };
    step(0);
  }

  /** Logs, once per namespace, that its sockets could not be walked (and why). */
  private noteUnwalkable(f: { path: string; error?: string }): void {
    this.unwalkable.add(f.path);
    this.log?.warn(
      { namespace: f.path, error: f.error },
      'cannot walk the sockets of this network namespace (gone, or not permitted: CAP_SYS_ADMIN, CAP_SYS_PTRACE); its open connections are not picked up',
    );
  }

  private scanAtOnce(sink: EventSink): void {
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
