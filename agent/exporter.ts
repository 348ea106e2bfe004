/**
 * The IPFIX exporter: profiles in, IPFIX messages out over UDP, TCP, TLS or into an RFC 5655
 * file. Profiles wait in a ProfileQueue (memory, then disk) until a transport session can take
 * them, and are encoded only then, by an IpfixEncoder of that session: each TCP/TLS session
 * starts with its own templates and RFC 5610 type records and its own sequence numbers, and a
 * profile is never encoded into a session that is already gone.
 *
 * What IPFIX over TCP cannot promise: a message handed to the kernel just before the collector
 * died is lost (IPFIX has no acknowledgements). Everything still queued when the session drops,
 * including the profiles of the message being built, is sent on the next session.
 */
import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { closeSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { type Logger, pino } from 'pino';
import { ElementRegistry, IpfixEncoder, KPIFLOW_PEN } from '../ipfix/index.js';
import { AgentError } from './errors.js';
import { type ExportTarget, formatExportTarget, parseExportTarget } from './export-target.js';
import type { Profile } from './profile-builder.js';
import { ProfileQueue, type ProfileQueueOptions, type QueueDrops } from './profile-queue.js';
import { type ProfileTemplate, profileTemplates } from './profile-templates.js';

/** TLS client settings: file paths, read when the exporter opens. */
export interface ExporterTlsOptions {
  /** CA certificate(s) the collector's certificate must chain to (default: the system's). */
  ca?: string;
  /** Client certificate and key, for collectors that require one. */
  cert?: string;
  key?: string;
  /** Name to check the server certificate against (default: the host). */
  servername?: string;
  /** Default true; false accepts any server certificate (tests only). */
  rejectUnauthorized?: boolean;
}

/** Exporter settings; everything but the target has a default. */
export interface ExporterOptions {
  /** Destination: a URL (`udp://H:P`, `tcp://H:P`, `tls://H:P`, `file:PATH`) or a parsed target. */
  target: ExportTarget | string;
  /** Templates to define (default: profileTemplates(), i.e. a kernel with every counter). */
  templates?: readonly ProfileTemplate[];
  /** Default 1. */
  observationDomainId?: number;
  /** Largest message, bytes. Default 1400 (one datagram on a 1500-byte MTU, IPv6 included). */
  maxMessageSize?: number;
  /** Longest a profile waits in a message being filled, ms. Default 200. */
  flushIntervalMs?: number;
  /** UDP: resend templates and type records this often, ms. Default 60 s. */
  templateRefreshMs?: number;
  /** Reconnect backoff, ms: first delay and largest delay (it doubles). Defaults 100 and 30,000. */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** A connection attempt that takes longer fails, ms. Default 10,000. */
  connectTimeoutMs?: number;
  /** How long close() waits for queued profiles to go out, ms, before spooling them. Default 10,000. */
  closeTimeoutMs?: number;
  queue?: ProfileQueueOptions;
  tls?: ExporterTlsOptions;
  /** Private Enterprise Number of kpiflow's elements. Default 65534. */
  pen?: number;
  log?: Logger;
  /** Wall clock, ms (export times, template refresh). */
  clock?: () => number;
}

/** Exporter counters, for metrics. */
export interface ExporterStats {
  /** Profile records written in messages (type records not counted). */
  exportedRecords: number;
  exportedMessages: number;
  exportedBytes: number;
  /** Transport errors: refused or lost connections, failed writes, ICMP errors on UDP. */
  exportErrors: number;
  /** Sessions established (TCP/TLS connections; 1 for UDP and file). */
  sessions: number;
  /** Profiles the encoder refused (a value outside its field). */
  refused: number;
  /** Profiles still in memory when the exporter was destroyed, or closed without a spool. */
  droppedAtClose: number;
}

interface Session {
  /** Writes one message; false asks the writer to wait for 'drain'. */
  write(msg: Buffer): boolean;
  /** Bytes handed to the session and not yet to the kernel. */
  pending(): number;
  end(): Promise<void>;
  destroy(): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Reads one TLS file, or fails with AGT_ERR_TLS naming it. */
function readTlsFile(what: string, path: string | undefined): Buffer | undefined {
  if (path === undefined) return undefined;
  try {
    return readFileSync(path);
  } catch (err) {
    throw new AgentError('AGT_ERR_TLS', `${what} ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** The exporter. Create it with `Exporter.open`. */
export class Exporter {
  readonly target: ExportTarget;
  readonly queue: ProfileQueue;
  readonly stats: ExporterStats = {
    exportedRecords: 0,
    exportedMessages: 0,
    exportedBytes: 0,
    exportErrors: 0,
    sessions: 0,
    refused: 0,
    droppedAtClose: 0,
  };
  private readonly templates: readonly ProfileTemplate[];
  private readonly registry: ElementRegistry;
  private readonly log: Logger;
  private readonly clock: () => number;
  private readonly o: Required<
    Pick<
      ExporterOptions,
      | 'observationDomainId'
      | 'maxMessageSize'
      | 'flushIntervalMs'
      | 'templateRefreshMs'
      | 'reconnectMinMs'
      | 'reconnectMaxMs'
      | 'connectTimeoutMs'
      | 'closeTimeoutMs'
    >
  >;
  private readonly tlsContext: tls.ConnectionOptions | null;
  private session: Session | null = null;
  private encoder: IpfixEncoder | null = null;
  /** Profiles in the message the encoder is filling: given back to the queue if the session dies. */
  private inMessage: Profile[] = [];
  private blocked = false;
  private pumping = false;
  private flushTimer: NodeJS.Timeout | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private attempts = 0;
  private state: 'open' | 'closing' | 'closed' = 'open';
  private lastError: Error | null = null;
  private fd: number | null = null;

  private constructor(
    options: ExporterOptions,
    target: ExportTarget,
    tlsContext: tls.ConnectionOptions | null,
  ) {
    this.target = target;
    this.templates = options.templates ?? profileTemplates();
    this.registry = ElementRegistry.standard(options.pen ?? KPIFLOW_PEN);
    this.log = (options.log ?? pino({ enabled: false })).child({
      component: 'exporter',
      target: formatExportTarget(target),
    });
    this.clock = options.clock ?? Date.now;
    this.o = {
      observationDomainId: options.observationDomainId ?? 1,
      maxMessageSize: options.maxMessageSize ?? 1400,
      flushIntervalMs: options.flushIntervalMs ?? 200,
      templateRefreshMs: options.templateRefreshMs ?? 60_000,
      reconnectMinMs: options.reconnectMinMs ?? 100,
      reconnectMaxMs: options.reconnectMaxMs ?? 30_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      closeTimeoutMs: options.closeTimeoutMs ?? 10_000,
    };
    this.tlsContext = tlsContext;
    this.queue = new ProfileQueue({
      ...options.queue,
      onError: (err) => {
        this.log.error({ err }, 'spool failure');
        options.queue?.onError?.(err);
      },
    });
    // Checks every template against the registry now, not at the first profile.
    this.newEncoder();
    this.encoder = null;
  }

  /**
   * Opens an exporter: validates the templates, reads TLS files, opens the spool and the file
   * (file:), and starts connecting (tcp:, tls:) or binds the socket (udp:).
   */
  static async open(options: ExporterOptions): Promise<Exporter> {
    const target = typeof options.target === 'string' ? parseExportTarget(options.target) : options.target;
    let tlsContext: tls.ConnectionOptions | null = null;
    if (target.kind === 'tls') {
      const t = options.tls ?? {};
      tlsContext = {
        ca: readTlsFile('CA', t.ca),
        cert: readTlsFile('certificate', t.cert),
        key: readTlsFile('key', t.key),
        servername: t.servername ?? (net.isIP(target.host) ? undefined : target.host),
        rejectUnauthorized: t.rejectUnauthorized ?? true,
      };
    }
    const e = new Exporter(options, target, tlsContext);
    if (target.kind === 'file') e.openFile(target.path);
    else if (target.kind === 'udp') await e.openUdp(target.host, target.port);
    else e.connect();
    return e;
  }

  /** True while a session can take messages. */
  get connected(): boolean {
    return this.session !== null;
  }

  /** The last transport error, if any. */
  get error(): Error | null {
    return this.lastError;
  }

  /** Every profile dropped so far, by reason. */
  get dropped(): QueueDrops & { refused: number; atClose: number } {
    return { ...this.queue.dropped, refused: this.stats.refused, atClose: this.stats.droppedAtClose };
  }

  /** Total of `dropped`. */
  get droppedTotal(): number {
    const d = this.dropped;
    return d.queueFull + d.spoolFull + d.spoolError + d.refused + d.atClose;
  }

  /** Queues one profile; it goes out as soon as a session can take it. */
  send(p: Profile): void {
    if (this.state !== 'open') throw new AgentError('AGT_ERR_CLOSED', 'exporter closed');
    this.queue.push(p);
    this.pump();
  }

  private newEncoder(): IpfixEncoder {
    const enc = new IpfixEncoder({
      observationDomainId: this.o.observationDomainId,
      maxMessageSize: this.o.maxMessageSize,
      registry: this.registry,
      clock: this.clock,
      templateRefreshMs: this.target.kind === 'udp' ? this.o.templateRefreshMs : 0,
      onMessage: (msg) => this.onMessage(msg),
    });
    for (const t of this.templates) enc.defineTemplate(t.id, t.fields);
    this.encoder = enc;
    return enc;
  }

  private onMessage(msg: Buffer): void {
    const records = this.inMessage.length;
    this.inMessage = [];
    const s = this.session;
    if (s === null) return;
    this.stats.exportedMessages++;
    this.stats.exportedBytes += msg.length;
    this.stats.exportedRecords += records;
    if (!s.write(msg)) this.blocked = true;
  }

  /** Moves queued profiles into the session's encoder while the session takes them. */
  private pump(): void {
    if (this.pumping || this.session === null || this.encoder === null) return;
    this.pumping = true;
    try {
      while (this.session !== null && !this.blocked && this.queue.length > 0) {
        const enc = this.encoder;
        const batch = this.queue.take(256);
        for (const p of batch) {
          try {
            enc.add(p.templateId, p.record);
          } catch (err) {
            this.stats.refused++;
            this.log.error(
              { err: new AgentError('AGT_ERR_PROFILE', (err as Error).message, { cause: err }) },
              'profile refused',
            );
            continue;
          }
          this.inMessage.push(p);
        }
      }
      if (this.inMessage.length > 0) this.armFlush();
    } finally {
      this.pumping = false;
    }
  }

  private armFlush(): void {
    if (this.flushTimer !== null) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flushNow();
    }, this.o.flushIntervalMs);
  }

  /** Finishes the message being filled and writes it. */
  private flushNow(): void {
    if (this.session !== null && this.encoder !== null && this.inMessage.length > 0) this.encoder.flush();
  }

  private sessionUp(s: Session): void {
    this.session = s;
    this.stats.sessions++;
    this.attempts = 0;
    this.blocked = false;
    this.newEncoder();
    this.log.info({ session: this.stats.sessions }, 'export session up');
    this.pump();
  }

  /** The session is gone: what it had not sent goes back to the head of the queue. */
  private sessionDown(err: Error | null): void {
    if (this.session === null) return;
    this.session = null;
    this.encoder = null;
    this.blocked = false;
    if (this.flushTimer !== null) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    this.queue.unshift(this.inMessage);
    this.inMessage = [];
    this.log.warn({ err, queued: this.queue.length }, 'export session down');
  }

  private fail(err: Error): void {
    this.stats.exportErrors++;
    this.lastError = new AgentError('AGT_ERR_EXPORT', err.message, { cause: err });
  }

  private openFile(path: string): void {
    try {
      this.fd = openSync(path, 'w');
    } catch (err) {
      throw new AgentError('AGT_ERR_EXPORT', `${path}: ${(err as Error).message}`, { cause: err });
    }
    const fd = this.fd;
    this.sessionUp({
      write: (msg) => {
        try {
          writeSync(fd, msg);
        } catch (err) {
          this.fail(err as Error);
          this.log.error({ err }, 'file write failed');
        }
        return true;
      },
      pending: () => 0,
      end: async () => {
        fsyncSync(fd);
        closeSync(fd);
        this.fd = null;
      },
      destroy: () => {
        if (this.fd !== null) closeSync(fd);
        this.fd = null;
      },
    });
  }

  private async openUdp(host: string, port: number): Promise<void> {
    let address: string;
    let family: number;
    try {
      ({ address, family } = await lookup(host));
    } catch (err) {
      throw new AgentError('AGT_ERR_EXPORT', `${host}: ${(err as Error).message}`, { cause: err });
    }
    const sock = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
    // A connected socket hears ICMP port unreachable (collector down) as errors on later sends.
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.connect(port, address, () => {
        sock.off('error', reject);
        resolve();
      });
    }).catch((err: Error) => {
      sock.close();
      throw new AgentError('AGT_ERR_EXPORT', `udp ${host}:${port}: ${err.message}`, { cause: err });
    });
    sock.on('error', (err) => {
      this.fail(err);
      this.log.warn({ err }, 'UDP socket error');
    });
    let inFlight = 0;
    this.sessionUp({
      write: (msg) => {
        inFlight++;
        sock.send(msg, (err) => {
          inFlight--;
          if (err) {
            this.fail(err);
            this.log.warn({ err }, 'UDP send failed');
          }
        });
        return true;
      },
      pending: () => inFlight,
      end: () => new Promise<void>((r) => sock.close(() => r())),
      destroy: () => {
        try {
          sock.close();
        } catch {
          // Already closed.
        }
      },
    });
  }

  /** Starts a TCP or TLS connection attempt. */
  private connect(): void {
    if (this.state === 'closed' || this.target.kind === 'file' || this.target.kind === 'udp') return;
    const { host, port } = this.target;
    const isTls = this.target.kind === 'tls';
    const sock: net.Socket = isTls
      ? tls.connect({ host, port, ...this.tlsContext })
      : net.connect({ host, port });
    let up = false;
    sock.setTimeout(this.o.connectTimeoutMs, () => {
      if (!up) sock.destroy(new Error(`connect timeout after ${this.o.connectTimeoutMs} ms`));
    });
    sock.once(isTls ? 'secureConnect' : 'connect', () => {
      up = true;
      sock.setTimeout(0);
      sock.setNoDelay(true);
      sock.setKeepAlive(true, 10_000);
      // A collector sends nothing; reading keeps the socket flowing so its FIN is seen at once.
      sock.resume();
      this.sessionUp({
        write: (msg) => sock.write(msg),
        pending: () => sock.writableLength,
        end: () =>
          new Promise<void>((resolve) => {
            const t = setTimeout(() => {
              sock.destroy();
              resolve();
            }, 2000);
            sock.once('close', () => {
              clearTimeout(t);
              resolve();
            });
            sock.end();
          }),
        destroy: () => sock.destroy(),
      });
    });
    sock.on('drain', () => {
      this.blocked = false;
      this.pump();
    });
    sock.on('error', (err) => {
      this.fail(err);
      this.log.warn({ err, attempt: this.attempts }, up ? 'export connection failed' : 'cannot connect');
    });
    // The collector closing its side: stop writing into a half-dead connection at once.
    sock.on('end', () => sock.destroy());
    sock.on('close', () => {
      if (up) this.sessionDown(this.lastError);
      if (this.state !== 'closed') this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer !== null || this.state === 'closed') return;
    const base = Math.min(this.o.reconnectMaxMs, this.o.reconnectMinMs * 2 ** Math.min(this.attempts, 30));
    // Jitter keeps many agents from reconnecting in step after a collector restart.
    const delay = Math.round(base * (0.8 + 0.4 * Math.random()));
    this.attempts++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }

  /**
   * Sends everything queued (waiting up to closeTimeoutMs for a session), then ends the session.
   * Profiles that could not go out stay in the spool for the next run (or are counted as
   * dropped when there is no spool).
   */
  async close(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'closing';
    const deadline = this.clockMonotonic() + this.o.closeTimeoutMs;
    for (;;) {
      this.pump();
      if (this.session !== null && this.queue.length === 0) {
        this.flushNow();
        if (this.session.pending() === 0) break;
      }
      if (this.clockMonotonic() >= deadline) break;
      await sleep(10);
    }
    this.state = 'closed';
    this.clearTimers();
    const s = this.session;
    if (s === null || this.queue.length > 0) {
      // Never sent: back to the queue, then to disk.
      this.queue.unshift(this.inMessage);
      this.inMessage = [];
      const lost = this.queue.persist();
      this.stats.droppedAtClose += lost;
      if (this.queue.length > 0 || lost > 0)
        this.log.warn({ spooled: this.queue.spoolRecords, dropped: lost }, 'closed with profiles unsent');
    }
    this.session = null;
    this.encoder = null;
    if (s !== null) await s.end();
  }

  /** Stops at once: nothing more is sent; profiles in memory are dropped (counted), the spool stays. */
  destroy(err?: Error): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.clearTimers();
    if (err) this.log.error({ err }, 'exporter destroyed');
    this.stats.droppedAtClose += this.queue.clearMemory() + this.inMessage.length;
    this.inMessage = [];
    const s = this.session;
    this.session = null;
    this.encoder = null;
    s?.destroy();
  }

  private clearTimers(): void {
    if (this.flushTimer !== null) clearTimeout(this.flushTimer);
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.flushTimer = null;
    this.reconnectTimer = null;
  }

  private clockMonotonic(): number {
    return performance.now();
  }
}
