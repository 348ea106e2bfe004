/**
 * The agent: event source → connection table + FSM → profile builder → exporter, with optional
 * Prometheus /metrics and an optional recorder that receives the raw event batches. Stopping
 * (close, end of a replay, source failure) flushes every open connection as a DESYNC profile
 * before the exporter sends what it holds.
 */
import { type Logger, pino } from 'pino';
import { ConnectionTable, type ProfileWindow } from './connection-table.js';
import { AgentError } from './errors.js';
import type { EventSink, EventSource } from './event-source.js';
import { Exporter, type ExporterOptions } from './exporter.js';
import { STATE, STATE_NAME, STATES, type State } from './fsm.js';
import { type AgentMetricsServer, startMetricsServer } from './metrics.js';
import { MptcpTable, type MptcpWindow } from './mptcp-table.js';
import { EVENT_KIND, type ProbeEvent, type TcpCounters } from './probe-event.js';
import {
  type AgentClock,
  defaultBootId,
  flowIdOf,
  measureClockOffset,
  mptcpFlowIdOf,
  ProfileBuilder,
  systemClock,
} from './profile-builder.js';
import { profileTemplates } from './profile-templates.js';

/**
 * Where raw event batches can be tee'd (`--record FILE`; the file format comes with the replay
 * sources). Called before the batch is processed.
 */
export interface EventRecorder {
  write(batch: readonly ProbeEvent[]): void;
  lost?(count: number): void;
  close(): Promise<void>;
}

/** Agent settings; only the source and a destination are required. */
export interface AgentOptions {
  source: EventSource;
  /** Export settings; the agent opens the exporter with the templates of the source's kernel. */
  export?: Omit<ExporterOptions, 'templates' | 'log'>;
  /** An exporter opened by the caller (its templates must match the source's `missing`). */
  exporter?: Exporter;
  /** Active timeout, ms: a long connection reports at least this often. Default 60 s. */
  activeTimeoutMs?: number;
  /** Most connections tracked at once. Default 100,000. */
  maxConnections?: number;
  /**
   * Timer period, ms (scans for the active timeout). Default: 1000, or the scan interval when
   * shorter; 0: no timer, call tick().
   */
  tickMs?: number;
  /** Least time between two iterator scans, ms. Default activeTimeoutMs / 4. */
  scanIntervalMs?: number;
  clock?: AgentClock;
  /** Mixed with socket cookies into flowIds. Default: the kernel's boot id. */
  bootId?: string;
  /** Serve Prometheus /metrics here. */
  metrics?: { host: string; port: number } | null;
  record?: EventRecorder;
  log?: Logger;
}

/** Why the agent stopped. */
export interface AgentEnd {
  reason: 'closed' | 'source-ended' | 'source-failed';
  error?: Error;
}

/** The agent's counters (the metrics read them). */
export interface AgentStats {
  /** Events by kind number. */
  eventsByKind: Map<number, number>;
  events: number;
  /** Events the source reported lost, and the notices that carried them. */
  lostEvents: number;
  lostNotices: number;
  /** Profiles by end state. */
  profilesByEnd: Record<State, number>;
  /** Events that lack a counter the template was built with (the kernel changed its mind). */
  missingMismatch: number;
}

/** A running agent. Create it with `Agent.start`. */
export class Agent {
  readonly source: EventSource;
  readonly table: ConnectionTable;
  /** MPTCP connections (meta sockets); their subflows are in `table`. */
  readonly mptcp: MptcpTable;
  readonly builder: ProfileBuilder;
  readonly exporter: Exporter;
  readonly stats: AgentStats;
  readonly log: Logger;
  /** Resolves when the agent has stopped and flushed everything. */
  readonly done: Promise<AgentEnd>;
  private resolveDone!: (end: AgentEnd) => void;
  private readonly clock: AgentClock;
  private readonly scanIntervalNs: bigint;
  private lastScanNs: bigint;
  private timer: NodeJS.Timeout | null = null;
  private readonly recorder: EventRecorder | undefined;
  private metricsServer: AgentMetricsServer | null = null;
  private stopping: Promise<void> | null = null;
  private readonly declaredMissing: ReadonlySet<keyof TcpCounters>;
  private readonly ownsExporter: boolean;

  private constructor(options: AgentOptions, exporter: Exporter, ownsExporter: boolean, log: Logger) {
    this.source = options.source;
    this.exporter = exporter;
    this.ownsExporter = ownsExporter;
    this.log = log.child({ component: 'agent' });
    this.clock = options.clock ?? systemClock;
    this.recorder = options.record;
    const activeTimeoutMs = options.activeTimeoutMs ?? 60_000;
    this.scanIntervalNs = BigInt(Math.round((options.scanIntervalMs ?? activeTimeoutMs / 4) * 1e6));
    this.lastScanNs = this.clock.monotonicNs();
    this.declaredMissing = new Set(options.source.missing);
    this.builder = new ProfileBuilder({
      clockOffsetNs: measureClockOffset(this.clock),
      missing: options.source.missing,
      reorderingDistance: options.source.reorderingDistance ?? false,
      mptcpUnmeasured: options.source.mptcpUnmeasured ?? [],
    });
    const bootId = options.bootId ?? defaultBootId();
    const activeTimeoutNs = BigInt(Math.round(activeTimeoutMs * 1e6));
    this.table = new ConnectionTable({
      maxConnections: options.maxConnections,
      activeTimeoutNs,
      flowId: (cookie) => flowIdOf(bootId, cookie),
      mptcpFlowId: (key) => mptcpFlowIdOf(bootId, key),
      onWindow: (w) => this.emit(w),
    });
    this.mptcp = new MptcpTable({
      maxConnections: options.maxConnections,
      activeTimeoutNs,
      flowId: (key) => mptcpFlowIdOf(bootId, key),
      onWindow: (w) => this.emitMptcp(w),
    });
    const profilesByEnd = {} as Record<State, number>;
    for (const s of STATES) profilesByEnd[s] = 0;
    this.stats = {
      eventsByKind: new Map(),
      events: 0,
      lostEvents: 0,
      lostNotices: 0,
      profilesByEnd,
      missingMismatch: 0,
    };
    this.done = new Promise((r) => {
      this.resolveDone = r;
    });
  }

  /** Opens the exporter and the metrics listener, starts the source and the timer. */
  static async start(options: AgentOptions): Promise<Agent> {
    const log = options.log ?? pino({ enabled: false });
    if (!options.exporter && !options.export)
      throw new AgentError('AGT_ERR_CONFIG', 'the agent needs an exporter or export settings');
    const exporter =
      options.exporter ??
      (await Exporter.open({
        ...options.export!,
        templates: profileTemplates(options.source.missing, {
          reorderingDistance: options.source.reorderingDistance ?? false,
          mptcpUnmeasured: options.source.mptcpUnmeasured ?? [],
        }),
        log,
      }));
    const agent = new Agent(options, exporter, !options.exporter, log);
    try {
      if (options.metrics) agent.metricsServer = await startMetricsServer(agent, options.metrics, log);
      await options.source.start(agent.sink());
    } catch (err) {
      await agent.metricsServer?.close();
      if (agent.ownsExporter) exporter.destroy();
      throw err;
    }
    // The timer must run at least as often as scans are due, or a short active timeout (2 s:
    // scans every 500 ms) would only be checked every second and report up to 50 % late.
    const activeTimeoutMs = options.activeTimeoutMs ?? 60_000;
    const tickMs = options.tickMs ?? Math.min(1000, options.scanIntervalMs ?? activeTimeoutMs / 4);
    if (tickMs > 0) {
      agent.timer = setInterval(() => agent.tick(), tickMs);
      agent.timer.unref();
    }
    agent.log.info(
      {
        source: options.source.name,
        missing: options.source.missing,
        activeTimeoutMs: options.activeTimeoutMs ?? 60_000,
        maxConnections: agent.table.maxConnections,
        metrics: agent.metricsAddress,
      },
      'agent started',
    );
    return agent;
  }

  /** Where /metrics listens (port 0 resolved), if it does. */
  get metricsAddress(): { host: string; port: number } | null {
    return this.metricsServer?.address ?? null;
  }

  private sink(): EventSink {
    return {
      events: (batch) => this.events(batch),
      lost: (count) => this.lost(count),
      scanStarted: () => this.table.beginScan(),
      scanned: (result) => {
        this.table.endScan();
        if (result === null || this.stopping) return;
        const n = this.table.dropVanished(result.netns, result.cookies, result.startNs);
        if (n > 0) {
          this.log.warn({ vanished: n }, 'connections gone from the kernel without their close: DESYNC');
          this.mptcp.dropOrphans((cookie) => this.table.get(cookie) !== undefined);
        }
      },
      end: () => {
        void this.stop({ reason: 'source-ended' });
      },
      error: (err) => {
        this.log.error({ err }, 'event source failed');
        void this.stop({
          reason: 'source-failed',
          error:
            err instanceof AgentError ? err : new AgentError('AGT_ERR_SOURCE', err.message, { cause: err }),
        });
      },
    };
  }

  /** Processes a batch of events (what the source's sink calls). */
  events(batch: readonly ProbeEvent[]): void {
    if (this.stopping) return;
    this.recorder?.write(batch);
    const byKind = this.stats.eventsByKind;
    for (const ev of batch) {
      byKind.set(ev.kind, (byKind.get(ev.kind) ?? 0) + 1);
      if (ev.kind === EVENT_KIND.mptcp) {
        this.mptcp.apply(ev);
        continue;
      }
      if (ev.missing.length > 0) this.mismatch(ev);
      const c = this.table.apply(ev);
      // An MPTCP subflow also counts for its connection; plain TCP stops at the flag.
      if (ev.mptcpSubflow) {
        const ended = c === undefined || this.table.get(ev.cookie) === undefined;
        this.mptcp.subflow(ev, ended, c?.state === STATE.FINISHED);
      }
    }
    this.stats.events += batch.length;
  }

  private mismatch(ev: ProbeEvent): void {
    if (ev.missing.every((m) => this.declaredMissing.has(m))) return;
    // The template was built from the source's word; this event says otherwise: the KPIs of
    // these counters in its profiles are not measured values.
    if (this.stats.missingMismatch++ === 0)
      this.log.warn(
        { declared: [...this.declaredMissing], event: ev.missing },
        'an event lacks counters the source said it had: their KPIs in this profile are wrong',
      );
  }

  /** The source lost events: every open connection gets a DESYNC profile and resumes afresh. */
  lost(count: number): void {
    if (this.stopping) return;
    this.stats.lostEvents += count;
    this.stats.lostNotices++;
    this.recorder?.lost?.(count);
    const n = this.table.desyncAll(false) + this.mptcp.desyncAll(false);
    this.log.warn({ lost: count, desynced: n }, 'events lost: open connections desynchronised');
  }

  private emit(w: ProfileWindow): void {
    const p = this.builder.build(w);
    this.stats.profilesByEnd[w.endReason]++;
    try {
      this.exporter.send(p);
    } catch (err) {
      this.log.error({ err, flowId: String(w.conn.flowId) }, 'profile not exported');
    }
  }

  private emitMptcp(w: MptcpWindow): void {
    const p = this.builder.buildMptcp(w);
    this.stats.profilesByEnd[w.endReason]++;
    try {
      this.exporter.send(p);
    } catch (err) {
      this.log.error({ err, flowId: String(w.conn.flowId) }, 'MPTCP profile not exported');
    }
  }

  /** Timer work: asks the source for a scan when one is due (active timeout). */
  tick(): void {
    if (this.stopping || !this.source.scan) return;
    const now = this.clock.monotonicNs();
    if (now - this.lastScanNs < this.scanIntervalNs) return;
    this.lastScanNs = now;
    this.source.scan();
  }

  private stop(end: AgentEnd): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      if (this.timer) clearInterval(this.timer);
      try {
        await this.source.close();
      } catch (err) {
        this.log.warn({ err }, 'source close failed');
      }
      const n = this.table.desyncAll(true) + this.mptcp.desyncAll(true);
      this.log.info(
        { desynced: n, reason: end.reason },
        'agent stopping: open connections flushed as DESYNC',
      );
      if (this.ownsExporter) await this.exporter.close();
      await this.recorder?.close();
      await this.metricsServer?.close();
      this.log.info(
        {
          events: this.stats.events,
          profiles: this.builder.stats.profiles,
          exported: this.exporter.stats.exportedRecords,
          dropped: this.exporter.droppedTotal,
        },
        'agent stopped',
      );
      this.resolveDone(end);
    })();
    return this.stopping;
  }

  /** Stops gracefully: source closed, open connections flushed as DESYNC, exporter closed. */
  async close(): Promise<void> {
    await this.stop({ reason: 'closed' });
  }

  /** Stops at once: nothing is flushed; the exporter drops what it holds in memory (counted). */
  destroy(err?: Error): void {
    if (this.timer) clearInterval(this.timer);
    const already = this.stopping !== null;
    this.stopping ??= Promise.resolve();
    if (this.ownsExporter) this.exporter.destroy(err);
    void this.source.close().catch(() => {});
    void this.metricsServer?.close();
    if (!already) this.resolveDone({ reason: 'closed', ...(err ? { error: err } : {}) });
  }

  /** Profiles per end-state name, for logs and tests. */
  profilesByEndName(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of STATES) out[STATE_NAME[s]] = this.stats.profilesByEnd[s];
    return out;
  }
}
