/**
 * `pcap:FILE` as an EventSource: the capture reader, the packet decoder and the passive TCP
 * analyzer in one loop that pushes probe events to the agent in batches, exactly as the live
 * source does. The loop runs over each chunk of the file without awaiting (a packet costs no
 * promise) and yields to the event loop at every read, so exporters and timers keep running.
 * At the end of the file every open connection gets a last snapshot, then the source ends and
 * the agent flushes; on a malformed or truncated file the same happens, then the source fails
 * with the reader's error.
 */
import { AgentError } from '../errors.js';
import type { EventSink, EventSource } from '../event-source.js';
import type { TcpCounters } from '../probe-event.js';
import { type Cidr, parseCidr } from './addresses.js';
import { type CaptureFormat, CaptureReader, type RawPacket } from './capture-reader.js';
import { decodePacket, newSegment, SKIP, SUPPORTED_LINK_TYPES } from './packet-decoder.js';
import {
  type ConnectionSummary,
  type MptcpConnectionInfo,
  PCAP_MISSING,
  TcpAnalyzer,
  type TcpAnalyzerStats,
} from './tcp-analyzer.js';

/** Settings of a pcap source; only the path is required. */
export interface PcapSourceOptions {
  /** CIDR block(s) of the local host: their end of each connection is the local side. Default: the SYN sender. */
  localNet?: string | readonly string[];
  /** Most connections tracked at once. Default 100,000. */
  maxConnections?: number;
  /** A connection silent this long, in capture time, is ended. Default 1 h. */
  idleTimeoutMs?: number;
  /** Longest stretch of capture time without an event for a connection. Default 15 s (a quarter of the default active timeout). */
  snapshotIntervalMs?: number;
  /** Events per batch handed to the agent. Default 1024. */
  batchSize?: number;
  /** Called as each connection leaves the analyzer (tests, tools). */
  onConnectionEnd?: (s: ConnectionSummary) => void;
}

/** What the source read, decoded and skipped. */
export interface PcapSourceStats {
  format: CaptureFormat | null;
  packets: number;
  bytes: number;
  /** Packets handed to the analyzer. */
  tcp: number;
  /** Packets not analyzed, by reason. */
  skipped: {
    linkType: number;
    notIp: number;
    notTcp: number;
    fragment: number;
    truncated: number;
    malformed: number;
  };
  /** Packets cut by the snapshot length (still analyzed when their headers are whole). */
  snaplenCut: number;
  analyzer: TcpAnalyzerStats | null;
  /** Capture times of the first and last packets, ns since the epoch. */
  firstNs: bigint | null;
  lastNs: bigint | null;
}

const SKIP_NAMES = ['ok', 'linkType', 'notIp', 'notTcp', 'fragment', 'truncated', 'malformed'] as const;

/** A capture file as an event source. */
export class PcapSource implements EventSource {
  readonly name: string;
  readonly missing: readonly (keyof TcpCounters)[] = PCAP_MISSING;
  /** The analyzer measures the out-of-order distance at the receiver, as the per-packet probes do. */
  readonly reorderingDistance = true;
  readonly stats: PcapSourceStats = {
    format: null,
    packets: 0,
    bytes: 0,
    tcp: 0,
    skipped: { linkType: 0, notIp: 0, notTcp: 0, fragment: 0, truncated: 0, malformed: 0 },
    snaplenCut: 0,
    analyzer: null,
    firstNs: null,
    lastNs: null,
  };
  /** Resolves when the replay has ended (its end, failure or close). */
  done: Promise<void> = Promise.resolve();
  private readonly localNets: Cidr[];
  private analyzer: TcpAnalyzer | null = null;
  private reader: CaptureReader | null = null;
  private stopped = false;

  constructor(
    readonly path: string,
    private readonly options: PcapSourceOptions = {},
  ) {
    this.name = `pcap:${path}`;
    const nets =
      options.localNet === undefined
        ? []
        : typeof options.localNet === 'string'
          ? [options.localNet]
          : options.localNet;
    this.localNets = nets.map(parseCidr);
  }

  /** MPTCP connections seen so far, with their subflows. */
  mptcpConnections(): MptcpConnectionInfo[] {
    return this.analyzer?.mptcpConnections() ?? [];
  }

  async start(sink: EventSink): Promise<void> {
    const reader = await CaptureReader.open(this.path);
    if (reader.format === 'pcap' && !SUPPORTED_LINK_TYPES.has(reader.linkType)) {
      await reader.close();
      throw new AgentError(
        'AGT_ERR_PCAP_LINKTYPE',
        `${this.path}: link type ${reader.linkType} (supported: ${[...SUPPORTED_LINK_TYPES].join(', ')})`,
      );
    }
    this.reader = reader;
    this.stats.format = reader.format;
    const analyzer = new TcpAnalyzer({
      localNets: this.localNets,
      maxConnections: this.options.maxConnections,
      idleTimeoutMs: this.options.idleTimeoutMs,
      snapshotIntervalMs: this.options.snapshotIntervalMs,
      onConnectionEnd: this.options.onConnectionEnd,
    });
    this.analyzer = analyzer;
    this.stats.analyzer = analyzer.stats;
    this.done = this.run(reader, analyzer, sink);
  }

  private async run(reader: CaptureReader, analyzer: TcpAnalyzer, sink: EventSink): Promise<void> {
    const seg = newSegment();
    const batchSize = this.options.batchSize ?? 1024;
    const st = this.stats;
    const skipped = st.skipped as Record<string, number>;
    let sec0 = -1;
    let nsec0 = 0;
    let t = 0;
    const flush = () => {
      if (analyzer.out.length === 0 || this.stopped) return;
      const batch = analyzer.out;
      analyzer.out = [];
      sink.events(batch);
    };
    let failure: Error | null = null;
    try {
      for (;;) {
        let pkt: RawPacket | null | undefined = reader.nextBuffered();
        if (pkt === undefined) {
          flush();
          pkt = await reader.next();
        }
        if (this.stopped) return;
        if (pkt === null) break;
        st.packets++;
        st.bytes += pkt.origLen;
        if (sec0 < 0) {
          sec0 = pkt.sec;
          nsec0 = pkt.nsec;
          analyzer.setBase(BigInt(sec0) * 1_000_000_000n + BigInt(nsec0));
        }
        t = (pkt.sec - sec0) * 1e9 + (pkt.nsec - nsec0);
        if (pkt.caplen < pkt.origLen) st.snaplenCut++;
        const r = decodePacket(pkt.buf, pkt.offset, pkt.caplen, pkt.origLen, pkt.linkType, seg);
        if (r !== SKIP.ok) {
          skipped[SKIP_NAMES[r]]!++;
          continue;
        }
        st.tcp++;
        analyzer.segment(seg, t);
        if (analyzer.out.length >= batchSize) flush();
      }
    } catch (err) {
      failure =
        err instanceof AgentError
          ? err
          : new AgentError('AGT_ERR_SOURCE', (err as Error).message, { cause: err });
    } finally {
      if (sec0 >= 0) {
        st.firstNs = BigInt(sec0) * 1_000_000_000n + BigInt(nsec0);
        st.lastNs = st.firstNs + BigInt(Math.round(t));
      }
      await reader.close().catch(() => {});
    }
    if (this.stopped) return;
    // What the capture showed up to its end (or up to the damage) still reaches the agent.
    analyzer.finish(t);
    flush();
    if (failure) sink.error(failure);
    else sink.end();
  }

  /** Stops reading; resolves once the file is closed. */
  async close(): Promise<void> {
    this.stopped = true;
    await this.done.catch(() => {});
    await this.reader?.close();
  }
}

/** Opens `pcap:FILE` as an event source (the file is opened when the agent starts it). */
export function openPcapSource(path: string, options: PcapSourceOptions = {}): PcapSource {
  return new PcapSource(path, options);
}
