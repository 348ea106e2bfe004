/**
 * `events:FILE`: a recording of the raw probe events the live agent consumed (`--record FILE`)
 * and the source that replays it through the same pipeline. The format is in docs/event-file.md:
 * a fixed 32-byte preamble (magic, format version, flags, header length, one instant on both
 * clocks), a JSON header (kernel, host, boot id, the source's `missing`, event layout, agent
 * version, active timeout), then framed records: batches of struct kf_event bytes exactly as the
 * decoder reads them, "N events lost" notices, and an end record. Each record carries a CRC32 of
 * its frame and payload, so garbling is found, never decoded into wrong profiles.
 *
 * Replay reproduces the live profiles: the same events in the same order, the same boot id
 * (flowIds), the same wall-minus-monotonic offset (profile times), the same active timeout.
 */
import { closeSync, fsyncSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { hostname, release } from 'node:os';
import type { EventRecorder } from './agent.js';
import { AgentError } from './errors.js';
import type { EventSink, EventSource } from './event-source.js';
import type { ProbeEvent, TcpCounters } from './probe-event.js';
import {
  decodeProbeEvents,
  encodeProbeEvent,
  PROBE_COUNTERS,
  PROBE_EVENT_LAYOUT,
  PROBE_EVENT_SIZE,
} from './probe-event-decoder.js';
import type { AgentClock } from './profile-builder.js';

/** The file's first 8 bytes. */
export const EVENT_FILE_MAGIC = Buffer.from('KFEVENTS', 'latin1');
/** The format version this code writes and the newest it reads. */
export const EVENT_FILE_VERSION = 1;
/** Bytes before the JSON header: magic, version, flags, header length, start wall ms, start mono ns. */
export const EVENT_FILE_PREAMBLE = 32;
/** Bytes before each record's payload: type, 3 reserved, payload length, CRC32. */
export const EVENT_RECORD_HEADER = 12;
/** Largest record payload a reader accepts (the writer's are at most about 1 MiB). */
export const EVENT_RECORD_MAX = 16 << 20;
/** Record types. Readers skip (and count) types they do not know, so new ones need no new version. */
export const EVENT_RECORD = { events: 1, lost: 2, end: 3 } as const;

/** Preamble flag: the start times pair the clocks exactly as the agent did (see setClockOffset). */
const FLAG_CLOCK_EXACT = 1;
/** Largest JSON header a reader accepts. */
const HEADER_MAX = 1 << 20;
/** Events per record the writer makes: about 930 KB, so a reader's buffer stays small. */
const EVENTS_PER_RECORD = 4096;

/** The JSON header of an events file. */
export interface EventFileHeader {
  /** `uname -r` of the recording host. */
  kernelRelease: string;
  hostname: string;
  /** The boot id the live agent salted flowIds with (replay uses it, so flowIds match). */
  bootId: string;
  /** Where the events came from (`live`). */
  source: string;
  /** The source's TcpCounters fields that kernel could not provide (the templates leave them out). */
  missing: (keyof TcpCounters)[];
  /** The source measured the out-of-order distance (per-packet mode). */
  reorderingDistance: boolean;
  /** MPTCP connection fields the recording kernel could not measure (absent: none). */
  mptcpUnmeasured?: string[];
  /** Size of one event record (struct kf_event). */
  eventSize: number;
  /** Offset and size of every field of struct kf_event, as the recording agent decoded it. */
  eventLayout: Record<string, [number, number]>;
  /** Bit i of kf_event.missing is this counter. */
  counterBits: string[];
  /** kpiflow's version (package.json) that recorded. */
  agentVersion: string;
  /** The live agent's active timeout and connection cap: replay uses them, so windows match. */
  activeTimeoutMs: number;
  maxConnections: number;
  /** Free text: what was recorded, and how the file was trimmed. */
  note?: string;
}

/** Everything read from the front of an events file. */
export interface EventFileInfo {
  version: number;
  /** Epoch ms and CLOCK_MONOTONIC ns of one instant: their difference is the agent's clock offset. */
  startWallMs: number;
  startMonoNs: bigint;
  /** The start times were paired by the agent itself (exact offset), not only measured at open. */
  clockExact: boolean;
  header: EventFileHeader;
  /** Byte offset of the first record. */
  recordsOffset: number;
}

/** What the caller of EventFileWriter.create must say; the rest is read from this host. */
export type EventFileHeaderInit = Pick<
  EventFileHeader,
  'bootId' | 'missing' | 'reorderingDistance' | 'activeTimeoutMs' | 'maxConnections'
> &
  Partial<EventFileHeader>;

// --- CRC-32 (IEEE, as zlib's): zlib.crc32 only exists from Node 20.15, engines says >= 20. ---
const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

function crc32(data: Uint8Array, crc = 0): number {
  let c = ~crc;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** CRC of a record: its type and length (bytes 0-7 of its frame), then its payload. */
function recordCrc(frame: Uint8Array, payload: Uint8Array): number {
  return crc32(payload, crc32(frame.subarray(0, 8)));
}

/** The decoder's layout as the header stores it. */
function layoutTable(): Record<string, [number, number]> {
  const out: Record<string, [number, number]> = {};
  for (const [k, v] of Object.entries(PROBE_EVENT_LAYOUT)) out[k] = [v.offset, v.size];
  return out;
}

function agentVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** The preamble's start times for clock offset `offsetNs` (wall minus monotonic) at `monoNs`. */
function pairClocks(offsetNs: bigint, monoNs: bigint): { wallMs: number; monoNs: bigint } {
  // Whole ms on the wall side, so that wallMs * 1e6 - monoNs is exactly the offset.
  const wallMs = (monoNs + offsetNs) / 1_000_000n;
  return { wallMs: Number(wallMs), monoNs: wallMs * 1_000_000n - offsetNs };
}

/** Options of EventFileWriter. */
export interface EventFileWriterOptions {
  /** Bytes buffered before a write (default 1 MiB): bounds memory and what a crash can lose. */
  bufferBytes?: number;
  /** Longest a buffered event waits for the disk, ms (default 1000; 0: only when full). */
  flushIntervalMs?: number;
  /** A write failed: recording stops there (the agent goes on). Called once. */
  onError?: (err: AgentError) => void;
}

/** What a writer wrote. */
export interface EventFileWriterStats {
  events: number;
  lost: number;
  records: number;
  bytes: number;
}

/**
 * `--record FILE`: the agent's recorder hook, writing an events file. Writes are synchronous
 * (the hook is called synchronously by the agent) and buffered up to `bufferBytes`, so memory
 * is bounded whatever the event rate; close() writes the end record and fsyncs. A failed write
 * never throws into the agent: recording stops, `onError` is told and `error` is set.
 */
export class EventFileWriter implements EventRecorder {
  readonly stats: EventFileWriterStats = { events: 0, lost: 0, records: 0, bytes: 0 };
  /** The write error that stopped recording, if one did. */
  error: AgentError | null = null;
  private fd: number | null;
  private buf: Buffer;
  private used = 0;
  private readonly timer: NodeJS.Timeout | null;
  private readonly onError: ((err: AgentError) => void) | undefined;

  private constructor(
    readonly path: string,
    fd: number,
    options: EventFileWriterOptions,
  ) {
    this.fd = fd;
    this.buf = Buffer.allocUnsafe(
      Math.max(options.bufferBytes ?? 1 << 20, EVENT_RECORD_HEADER + EVENTS_PER_RECORD * PROBE_EVENT_SIZE),
    );
    this.onError = options.onError;
    const every = options.flushIntervalMs ?? 1000;
    this.timer = every > 0 ? setInterval(() => this.flush(), every) : null;
    this.timer?.unref();
  }

  /** Creates (truncates) `path` and writes the preamble and header. Throws AGT_ERR_RECORD. */
  static create(
    path: string,
    init: EventFileHeaderInit,
    options: EventFileWriterOptions = {},
  ): EventFileWriter {
    const header: EventFileHeader = {
      kernelRelease: release(),
      hostname: hostname(),
      source: 'live',
      eventSize: PROBE_EVENT_SIZE,
      eventLayout: layoutTable(),
      counterBits: PROBE_COUNTERS.map((c) => c.name),
      agentVersion: agentVersion(),
      ...init,
      missing: [...init.missing],
    };
    const json = Buffer.from(JSON.stringify(header), 'utf8');
    const pre = Buffer.alloc(EVENT_FILE_PREAMBLE);
    EVENT_FILE_MAGIC.copy(pre, 0);
    pre.writeUInt16LE(EVENT_FILE_VERSION, 8);
    pre.writeUInt16LE(0, 10);
    pre.writeUInt32LE(json.length, 12);
    // Measured now; setClockOffset replaces them with the agent's own pairing.
    const mono = process.hrtime.bigint();
    const wall = Date.now();
    const pair = pairClocks(BigInt(wall) * 1_000_000n - mono, mono);
    pre.writeBigUInt64LE(BigInt(pair.wallMs), 16);
    pre.writeBigUInt64LE(pair.monoNs, 24);
    let fd: number;
    try {
      fd = openSync(path, 'w');
      writeSync(fd, Buffer.concat([pre, json]));
    } catch (err) {
      throw new AgentError('AGT_ERR_RECORD', `${path}: ${(err as Error).message}`, { cause: err });
    }
    const w = new EventFileWriter(path, fd, options);
    w.stats.bytes = pre.length + json.length;
    return w;
  }

  /**
   * Records the clock offset (wall minus monotonic, ns) the agent's profile builder uses
   * (`agent.builder.clockOffsetNs`): a replay then computes the very same profile times.
   * Rewrites the preamble's start times in place.
   */
  setClockOffset(offsetNs: bigint): void {
    if (this.fd === null) return;
    const pair = pairClocks(offsetNs, process.hrtime.bigint());
    const b = Buffer.alloc(EVENT_FILE_PREAMBLE - 10);
    b.writeUInt16LE(FLAG_CLOCK_EXACT, 0);
    b.writeUInt32LE(0, 2);
    b.writeBigUInt64LE(BigInt(pair.wallMs), 6);
    b.writeBigUInt64LE(pair.monoNs, 14);
    // Bytes 12-15 (header length) must stay: write flags, then the two times, around them.
    this.io(() => {
      writeSync(this.fd!, b, 0, 2, 10);
      writeSync(this.fd!, b, 6, 16, 16);
    });
  }

  /** Records a batch the agent is about to process. */
  write(batch: readonly ProbeEvent[]): void {
    for (let i = 0; i < batch.length; i += EVENTS_PER_RECORD) {
      const part = batch.slice(i, i + EVENTS_PER_RECORD);
      const at = this.frame(EVENT_RECORD.events, part.length * PROBE_EVENT_SIZE);
      if (at < 0) return;
      for (let j = 0; j < part.length; j++)
        encodeProbeEvent(part[j]!).copy(this.buf, at + j * PROBE_EVENT_SIZE);
      this.seal(at, part.length * PROBE_EVENT_SIZE);
      this.stats.events += part.length;
    }
  }

  /**
   * Records a batch given as raw struct kf_event bytes (a whole number of events), e.g. a copy
   * of another recording.
   */
  writeRaw(bytes: Uint8Array): void {
    const step = EVENTS_PER_RECORD * PROBE_EVENT_SIZE;
    for (let i = 0; i + PROBE_EVENT_SIZE <= bytes.length; i += step) {
      const part = bytes.subarray(i, Math.min(bytes.length - (bytes.length % PROBE_EVENT_SIZE), i + step));
      const at = this.frame(EVENT_RECORD.events, part.length);
      if (at < 0) return;
      this.buf.set(part, at);
      this.seal(at, part.length);
      this.stats.events += part.length / PROBE_EVENT_SIZE;
    }
  }

  /** Records that the source lost `count` events. */
  lost(count: number): void {
    const at = this.frame(EVENT_RECORD.lost, 8);
    if (at < 0) return;
    this.buf.writeBigUInt64LE(BigInt(count), at);
    this.seal(at, 8);
    this.stats.lost += count;
  }

  /** Writes the end record (events and lost counts), flushes, fsyncs and closes. Never rejects. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.fd === null) return;
    const at = this.frame(EVENT_RECORD.end, 16);
    if (at >= 0) {
      this.buf.writeBigUInt64LE(BigInt(this.stats.events), at);
      this.buf.writeBigUInt64LE(BigInt(this.stats.lost), at + 8);
      this.seal(at, 16);
    }
    this.flush();
    const fd = this.fd;
    this.io(() => fsyncSync(fd));
    try {
      closeSync(fd);
    } catch {
      // Nothing more can be lost: the data is written and synced, or the error is recorded.
    }
    this.fd = null;
  }

  /** Writes the buffered records to the file. */
  flush(): void {
    if (this.fd === null || this.used === 0) return;
    const n = this.used;
    this.used = 0;
    this.io(() => {
      let off = 0;
      while (off < n) off += writeSync(this.fd!, this.buf, off, n - off);
    });
    this.stats.bytes += n;
  }

  /** Reserves a record of `len` payload bytes; returns the payload's offset in buf, -1 if stopped. */
  private frame(type: number, len: number): number {
    if (this.fd === null) return -1;
    if (this.used + EVENT_RECORD_HEADER + len > this.buf.length) this.flush();
    if (this.fd === null) return -1;
    const at = this.used;
    this.buf.writeUInt32LE(type, at); // type in byte 0, bytes 1-3 reserved (0)
    this.buf.writeUInt32LE(len, at + 4);
    return at + EVENT_RECORD_HEADER;
  }

  private seal(payloadAt: number, len: number): void {
    const frame = this.buf.subarray(payloadAt - EVENT_RECORD_HEADER, payloadAt);
    frame.writeUInt32LE(recordCrc(frame, this.buf.subarray(payloadAt, payloadAt + len)), 8);
    this.used = payloadAt + len;
    this.stats.records++;
  }

  private io(fn: () => void): void {
    if (this.fd === null) return;
    try {
      fn();
    } catch (err) {
      this.error = new AgentError('AGT_ERR_RECORD', `${this.path}: ${(err as Error).message}`, {
        cause: err,
      });
      const fd = this.fd;
      this.fd = null;
      this.used = 0;
      try {
        closeSync(fd);
      } catch {
        // Already failing; the first error is the one reported.
      }
      this.onError?.(this.error);
    }
  }
}

/**
 * Reads the preamble and header of `path` (synchronously: the agent needs the source's
 * `missing` before it opens its exporter). Throws AGT_ERR_EVENTS_OPEN, _FORMAT, _TRUNCATED,
 * _VERSION (a newer format, naming both versions) or _LAYOUT (another event layout).
 */
export function readEventFileInfo(path: string): EventFileInfo {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new AgentError('AGT_ERR_EVENTS_OPEN', `${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const read = (len: number, at: number, what: string): Buffer => {
      const b = Buffer.alloc(len);
      let got = 0;
      try {
        while (got < len) {
          const n = readSync(fd, b, got, len - got, at + got);
          if (n === 0) break;
          got += n;
        }
      } catch (err) {
        throw new AgentError('AGT_ERR_EVENTS_OPEN', `${path}: ${(err as Error).message}`, { cause: err });
      }
      if (got < len)
        throw new AgentError(
          'AGT_ERR_EVENTS_TRUNCATED',
          `${path}: the file ends at byte ${at + got}, inside the ${what} (${len} bytes from ${at})`,
        );
      return b;
    };
    const magicAndVersion = read(10, 0, 'preamble');
    if (!magicAndVersion.subarray(0, 8).equals(EVENT_FILE_MAGIC))
      throw new AgentError(
        'AGT_ERR_EVENTS_FORMAT',
        `${path}: not a kpiflow events file (its first bytes are ${magicAndVersion.subarray(0, 8).toString('hex')}, not "KFEVENTS")`,
      );
    const version = magicAndVersion.readUInt16LE(8);
    if (version > EVENT_FILE_VERSION)
      throw new AgentError(
        'AGT_ERR_EVENTS_VERSION',
        `${path}: events file format version ${version} is newer than this kpiflow reads (version ${EVENT_FILE_VERSION}); replay it with a newer kpiflow`,
      );
    if (version === 0)
      throw new AgentError('AGT_ERR_EVENTS_FORMAT', `${path}: events file format version 0 does not exist`);
    const pre = read(EVENT_FILE_PREAMBLE, 0, 'preamble');
    const flags = pre.readUInt16LE(10);
    const headerLen = pre.readUInt32LE(12);
    if (headerLen > HEADER_MAX)
      throw new AgentError(
        'AGT_ERR_EVENTS_FORMAT',
        `${path}: header of ${headerLen} bytes (at most ${HEADER_MAX})`,
      );
    const json = read(headerLen, EVENT_FILE_PREAMBLE, 'JSON header');
    let header: EventFileHeader;
    try {
      header = JSON.parse(json.toString('utf8')) as EventFileHeader;
    } catch (err) {
      throw new AgentError(
        'AGT_ERR_EVENTS_FORMAT',
        `${path}: the header is not JSON: ${(err as Error).message}`,
      );
    }
    checkHeader(path, header);
    return {
      version,
      startWallMs: Number(pre.readBigUInt64LE(16)),
      startMonoNs: pre.readBigUInt64LE(24),
      clockExact: (flags & FLAG_CLOCK_EXACT) !== 0,
      header,
      recordsOffset: EVENT_FILE_PREAMBLE + headerLen,
    };
  } finally {
    closeSync(fd);
  }
}

function checkHeader(path: string, h: EventFileHeader): void {
  const bad = (why: string) => new AgentError('AGT_ERR_EVENTS_FORMAT', `${path}: header: ${why}`);
  if (typeof h !== 'object' || h === null || Array.isArray(h)) throw bad('not an object');
  if (typeof h.bootId !== 'string' || h.bootId === '') throw bad('no bootId');
  const counters = new Set<string>(PROBE_COUNTERS.map((c) => c.name));
  if (!Array.isArray(h.missing) || !h.missing.every((m) => counters.has(m)))
    throw bad(`missing must list TcpCounters fields, not ${JSON.stringify(h.missing)}`);
  for (const k of ['activeTimeoutMs', 'maxConnections', 'eventSize'] as const)
    if (!Number.isInteger(h[k]) || h[k] <= 0) throw bad(`${k} must be a positive integer`);
  if (typeof h.reorderingDistance !== 'boolean') throw bad('reorderingDistance must be true or false');
  if (
    h.mptcpUnmeasured !== undefined &&
    !(Array.isArray(h.mptcpUnmeasured) && h.mptcpUnmeasured.every((f) => typeof f === 'string'))
  )
    throw bad(`mptcpUnmeasured must list field names, not ${JSON.stringify(h.mptcpUnmeasured)}`);
  const mine = layoutTable();
  const theirs = h.eventLayout ?? {};
  const differs = Object.keys(mine).filter((k) => JSON.stringify(mine[k]) !== JSON.stringify(theirs[k]));
  const bitsDiffer = JSON.stringify(h.counterBits) !== JSON.stringify(PROBE_COUNTERS.map((c) => c.name));
  if (h.eventSize !== PROBE_EVENT_SIZE || differs.length > 0 || bitsDiffer)
    throw new AgentError(
      'AGT_ERR_EVENTS_LAYOUT',
      `${path}: recorded with an event record of ${h.eventSize} bytes by kpiflow ${h.agentVersion}; this kpiflow decodes ${PROBE_EVENT_SIZE} bytes` +
        (differs.length > 0 ? ` and places ${differs.slice(0, 4).join(', ')} elsewhere` : '') +
        (bitsDiffer ? ' and numbers the missing-counter bits differently' : ''),
    );
}

/** The agent clock that makes a replay's profile times the recording's (AgentOptions.clock). */
export function eventFileClock(info: EventFileInfo): AgentClock {
  // The agent measures wallMs * 1e6 - monotonicNs once: constant clocks give the recorded offset.
  return { monotonicNs: () => info.startMonoNs, wallMs: () => info.startWallMs };
}

/** One record of an events file, as EventFileReader yields it. */
export type EventFileRecord =
  /** Raw struct kf_event bytes; a view valid until the next record is read. */
  | { type: 'events'; offset: number; bytes: Uint8Array }
  | { type: 'lost'; offset: number; count: number }
  | { type: 'end'; offset: number; events: number; lost: number }
  /** A record whose CRC does not match; `events` is how many events it held, if it held events. */
  | { type: 'garbled'; offset: number; events: number }
  | { type: 'unknown'; offset: number; recordType: number };

/**
 * Streams the records of an events file through one reused buffer (4 MiB, larger only for a
 * larger record, at most EVENT_RECORD_MAX): memory does not grow with the file. Throws (from
 * the iteration) AGT_ERR_EVENTS_TRUNCATED or _FORMAT with the byte offset.
 */
export class EventFileReader {
  readonly info: EventFileInfo;
  private buf = Buffer.allocUnsafe(4 << 20);
  private start = 0;
  private end = 0;
  /** File offset of buf[start]. */
  private pos: number;
  private fh: FileHandle | null = null;
  private eof = false;

  constructor(readonly path: string) {
    this.info = readEventFileInfo(path);
    this.pos = this.info.recordsOffset;
  }

  /** The records, in file order. */
  async *records(): AsyncGenerator<EventFileRecord> {
    try {
      this.fh = await open(this.path, 'r');
    } catch (err) {
      throw new AgentError('AGT_ERR_EVENTS_OPEN', `${this.path}: ${(err as Error).message}`, { cause: err });
    }
    this.start = this.end = 0;
    this.eof = false;
    let readAt = this.pos;
    const fill = async (need: number): Promise<boolean> => {
      while (this.end - this.start < need && !this.eof) {
        if (this.buf.length - this.start < need) {
          // Compact, and grow only for a record larger than the buffer.
          const size = Math.max(this.buf.length, need);
          const next = size > this.buf.length ? Buffer.allocUnsafe(size) : this.buf;
          this.buf.copy(next, 0, this.start, this.end);
          this.end -= this.start;
          this.start = 0;
          this.buf = next;
        }
        let n: number;
        try {
          ({ bytesRead: n } = await this.fh!.read(this.buf, this.end, this.buf.length - this.end, readAt));
        } catch (err) {
          throw new AgentError('AGT_ERR_EVENTS_OPEN', `${this.path}: ${(err as Error).message}`, {
            cause: err,
          });
        }
        if (n === 0) this.eof = true;
        this.end += n;
        readAt += n;
      }
      return this.end - this.start >= need;
    };
    for (;;) {
      if (!(await fill(1))) return;
      const offset = this.pos;
      if (!(await fill(EVENT_RECORD_HEADER)))
        throw new AgentError(
          'AGT_ERR_EVENTS_TRUNCATED',
          `${this.path}: the file ends at byte ${offset + this.end - this.start}, inside the record header at ${offset}`,
        );
      const frame = this.buf.subarray(this.start, this.start + EVENT_RECORD_HEADER);
      const type = frame[0]!;
      const len = frame.readUInt32LE(4);
      if (frame[1] !== 0 || frame[2] !== 0 || frame[3] !== 0 || type === 0 || len > EVENT_RECORD_MAX)
        throw new AgentError(
          'AGT_ERR_EVENTS_FORMAT',
          `${this.path}: no plausible record at byte ${offset} (type ${type}, length ${len}): the file is garbled`,
        );
      if (!(await fill(EVENT_RECORD_HEADER + len)))
        throw new AgentError(
          'AGT_ERR_EVENTS_TRUNCATED',
          `${this.path}: the file ends at byte ${offset + this.end - this.start}, inside the record at ${offset} (${len} bytes of payload)`,
        );
      const head = this.buf.subarray(this.start, this.start + EVENT_RECORD_HEADER);
      const payload = this.buf.subarray(
        this.start + EVENT_RECORD_HEADER,
        this.start + EVENT_RECORD_HEADER + len,
      );
      this.start += EVENT_RECORD_HEADER + len;
      this.pos += EVENT_RECORD_HEADER + len;
      const ok = recordCrc(head, payload) === head.readUInt32LE(8);
      if (!ok) {
        // A garbled length would misplace the next record: only a whole number of events is
        // taken as a garbled payload; anything else means the framing itself is gone.
        if (type === EVENT_RECORD.events && len % PROBE_EVENT_SIZE === 0)
          yield { type: 'garbled', offset, events: len / PROBE_EVENT_SIZE };
        else if ((type === EVENT_RECORD.lost && len === 8) || (type === EVENT_RECORD.end && len === 16))
          yield { type: 'garbled', offset, events: 0 };
        else
          throw new AgentError(
            'AGT_ERR_EVENTS_FORMAT',
            `${this.path}: the record at byte ${offset} fails its CRC (type ${type}, length ${len}): the file is garbled`,
          );
        continue;
      }
      if (type === EVENT_RECORD.events) {
        if (len % PROBE_EVENT_SIZE !== 0)
          throw new AgentError(
            'AGT_ERR_EVENTS_FORMAT',
            `${this.path}: the event batch at byte ${offset} is ${len} bytes, not a multiple of ${PROBE_EVENT_SIZE}`,
          );
        yield { type: 'events', offset, bytes: payload };
      } else if (type === EVENT_RECORD.lost && len === 8) {
        yield { type: 'lost', offset, count: Number(payload.readBigUInt64LE(0)) };
      } else if (type === EVENT_RECORD.end && len === 16) {
        yield {
          type: 'end',
          offset,
          events: Number(payload.readBigUInt64LE(0)),
          lost: Number(payload.readBigUInt64LE(8)),
        };
      } else if (type === EVENT_RECORD.lost || type === EVENT_RECORD.end) {
        throw new AgentError(
          'AGT_ERR_EVENTS_FORMAT',
          `${this.path}: the record at byte ${offset} (type ${type}) has ${len} bytes`,
        );
      } else {
        yield { type: 'unknown', offset, recordType: type };
      }
    }
  }

  /** Releases the file. */
  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    await fh?.close().catch(() => {});
  }
}

/** What an events replay read and skipped. */
export interface EventFileSourceStats {
  records: number;
  events: number;
  /** Events the recording itself says were lost (ring buffer overruns of the live run). */
  lostRecorded: number;
  /** Records skipped: failed CRC (their events are reported to the agent as lost), unknown type. */
  garbledRecords: number;
  unknownRecords: number;
  /** Event records the decoder refused (unknown kind or IP version). */
  malformedEvents: number;
  /** The file has its end record (the recording agent stopped cleanly) and its counts agree. */
  complete: boolean;
}

/**
 * `events:FILE` as an EventSource. The header is read when it is opened (the agent needs
 * `missing` first); records are streamed when it starts. Errors after the header come after
 * everything before them was handed to the agent; the agent then flushes and stops.
 */
export class EventFileSource implements EventSource {
  readonly name: string;
  readonly missing: readonly (keyof TcpCounters)[];
  readonly reorderingDistance: boolean;
  readonly mptcpUnmeasured: readonly string[];
  readonly info: EventFileInfo;
  readonly stats: EventFileSourceStats = {
    records: 0,
    events: 0,
    lostRecorded: 0,
    garbledRecords: 0,
    unknownRecords: 0,
    malformedEvents: 0,
    complete: false,
  };
  private readonly reader: EventFileReader;
  private stopped = false;
  private running: Promise<void> = Promise.resolve();

  constructor(path: string) {
    this.reader = new EventFileReader(path);
    this.info = this.reader.info;
    this.name = `events:${path}`;
    this.missing = this.info.header.missing;
    this.reorderingDistance = this.info.header.reorderingDistance;
    this.mptcpUnmeasured = this.info.header.mptcpUnmeasured ?? [];
  }

  /** AgentOptions a replay of this file needs to reproduce the live profiles. */
  agentOptions(): {
    clock: AgentClock;
    bootId: string;
    tickMs: 0;
    activeTimeoutMs: number;
    maxConnections: number;
  } {
    const h = this.info.header;
    return {
      clock: eventFileClock(this.info),
      bootId: h.bootId,
      tickMs: 0,
      activeTimeoutMs: h.activeTimeoutMs,
      maxConnections: h.maxConnections,
    };
  }

  async start(sink: EventSink): Promise<void> {
    this.running = this.run(sink);
  }

  private async run(sink: EventSink): Promise<void> {
    const s = this.stats;
    let seen = 0;
    let seenLost = 0;
    try {
      for await (const r of this.reader.records()) {
        if (this.stopped) return;
        s.records++;
        if (r.type === 'events') {
          const { events, malformed } = decodeProbeEvents(r.bytes);
          seen += events.length + malformed;
          s.malformedEvents += malformed;
          s.events += events.length;
          if (events.length > 0) sink.events(events);
        } else if (r.type === 'lost') {
          s.lostRecorded += r.count;
          seenLost += r.count;
          sink.lost(r.count);
        } else if (r.type === 'end') {
          s.complete = r.events === seen && r.lost === seenLost;
        } else if (r.type === 'garbled') {
          s.garbledRecords++;
          // Events we cannot trust are events lost: the agent desynchronises, as live.
          if (r.events > 0) sink.lost(r.events);
        } else {
          s.unknownRecords++;
        }
        // Let timers and I/O (the exporter) run between records of a long file.
        if (s.records % 64 === 0) await new Promise((r) => setImmediate(r));
      }
      if (!this.stopped) sink.end();
    } catch (err) {
      if (!this.stopped) sink.error(err as Error);
    } finally {
      await this.reader.close();
    }
  }

  async close(): Promise<void> {
    this.stopped = true;
    await this.running.catch(() => {});
  }
}

/** Opens `events:FILE` (reads and checks its header now; throws AGT_ERR_EVENTS_*). */
export function openEventFileSource(path: string): EventFileSource {
  return new EventFileSource(path);
}

/**
 * Copies an events file keeping only the events `keep` accepts (and every lost notice), e.g.
 * to trim a recording to one test's connections. The header is kept, with `note` added.
 */
export async function copyEventFile(
  from: string,
  to: string,
  keep: (ev: ProbeEvent) => boolean,
  note?: string,
): Promise<EventFileWriterStats> {
  const reader = new EventFileReader(from);
  const h = reader.info.header;
  const w = EventFileWriter.create(to, { ...h, ...(note ? { note } : {}) }, { flushIntervalMs: 0 });
  try {
    if (reader.info.clockExact)
      w.setClockOffset(BigInt(reader.info.startWallMs) * 1_000_000n - reader.info.startMonoNs);
    for await (const r of reader.records()) {
      if (r.type === 'events') {
        const kept = decodeProbeEvents(r.bytes).events.filter(keep);
        if (kept.length > 0) w.write(kept);
      } else if (r.type === 'lost') w.lost(r.count);
    }
  } finally {
    await reader.close();
    await w.close();
  }
  if (w.error) throw w.error;
  return w.stats;
}
