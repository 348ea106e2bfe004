/**
 * Event sources: where probe events come from (the live probes, a replay file, a test). A
 * source pushes batches of decoded ProbeEvents and "N events lost" notices into a sink; the
 * agent owns the sink. `scan()` asks for a snapshot event of every open socket (the live source
 * runs the TCP iterator): the agent calls it for the active timeout.
 */
import type { ProbeEvent, TcpCounters } from './probe-event.js';

/** What a source pushes into. */
export interface EventSink {
  /** A batch of events, in the order the kernel made them. */
  events(batch: readonly ProbeEvent[]): void;
  /** The source lost `count` events (ring buffer full): the agent can no longer trust its FSMs. */
  lost(count: number): void;
  /** The source has no more events (a replay reached its end). */
  end(): void;
  /** The source failed and stops. */
  error(err: Error): void;
  /**
   * A scan walked every socket of the namespaces `netns` (inode numbers) since `startNs`
   * (monotonic) and found the connections `cookies`: a tracked connection of those namespaces
   * not among them, and quiet since the scan began, is gone from the kernel (its close was lost).
   */
  scanned?(result: ScanResult | null): void;
  /** A scan begins: its snapshots come in several batches, ended by `scanned` (null: abandoned). */
  scanStarted?(): void;
}

/** What one complete scan found (EventSink.scanned). */
export interface ScanResult {
  startNs: bigint;
  netns: ReadonlySet<number>;
  cookies: ReadonlySet<bigint>;
}

/** A source of probe events. */
export interface EventSource {
  /** For logs and metrics (`live`, `events:FILE`, `memory`). */
  readonly name: string;
  /** TcpCounters fields this kernel cannot provide (the profile template leaves their KPIs out). */
  readonly missing: readonly (keyof TcpCounters)[];
  /**
   * True when events carry the out-of-order distance (the live probes' per-packet mode): the
   * template then has meanReorderingDistance and varReorderingDistance. Absent: false.
   */
  readonly reorderingDistance?: boolean;
  /** MPTCP connection fields the source cannot measure (left out of the template). Absent: none. */
  readonly mptcpUnmeasured?: readonly string[];
  /** Starts pushing into `sink`; resolves once running (or rejects with a clear error). */
  start(sink: EventSink): Promise<void>;
  /** Asks for a snapshot event of every open socket; absent where the source cannot (replay). */
  scan?(): void;
  /** Stops pushing; resolves when the source released everything it holds. */
  close(): Promise<void>;
}

/** One item of an async-iterable source. */
export type SourceItem = { events: readonly ProbeEvent[] } | { lost: number };

/**
 * An in-memory source for tests and tools: whatever is pushed goes to the agent's sink at once;
 * `scan` runs a callback (a test answers it by pushing snapshots).
 */
export class MemorySource implements EventSource {
  readonly name = 'memory';
  readonly missing: readonly (keyof TcpCounters)[];
  /** Scans asked for by the agent. */
  scans = 0;
  private sink: EventSink | null = null;
  private readonly onScan: ((source: MemorySource) => void) | undefined;
  private closed = false;

  constructor(
    options: { missing?: readonly (keyof TcpCounters)[]; onScan?: (s: MemorySource) => void } = {},
  ) {
    this.missing = options.missing ?? [];
    this.onScan = options.onScan;
  }

  async start(sink: EventSink): Promise<void> {
    this.sink = sink;
  }

  /** Pushes a batch of events. */
  push(...batch: ProbeEvent[]): void {
    if (!this.sink || this.closed) throw new Error('MemorySource: not started, or closed');
    this.sink.events(batch);
  }

  /** Reports lost events. */
  lose(count: number): void {
    this.sink?.lost(count);
  }

  /** Ends the stream, as a replay reaching the end of its file. */
  end(): void {
    this.sink?.end();
  }

  /** Fails, as a source whose kernel side broke. */
  fail(err: Error): void {
    this.sink?.error(err);
  }

  scan(): void {
    this.scans++;
    this.onScan?.(this);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** A source over an async iterable of batches and lost notices; it ends with the iterable. */
export class IterableSource implements EventSource {
  readonly name: string;
  readonly missing: readonly (keyof TcpCounters)[];
  private stopped = false;
  private running: Promise<void> = Promise.resolve();

  constructor(
    private readonly items: AsyncIterable<SourceItem>,
    options: { name?: string; missing?: readonly (keyof TcpCounters)[] } = {},
  ) {
    this.name = options.name ?? 'iterable';
    this.missing = options.missing ?? [];
  }

  async start(sink: EventSink): Promise<void> {
    this.running = (async () => {
      try {
        for await (const item of this.items) {
          if (this.stopped) return;
          if ('lost' in item) sink.lost(item.lost);
          else sink.events(item.events);
        }
        if (!this.stopped) sink.end();
      } catch (err) {
        if (!this.stopped) sink.error(err as Error);
      }
    })();
  }

  /** Stops; waits up to a second for the iteration to notice (an iterable may block forever). */
  async close(): Promise<void> {
    this.stopped = true;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.running, new Promise((r) => (timer = setTimeout(r, 1000)))]);
    clearTimeout(timer);
  }
}
