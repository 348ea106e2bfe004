/**
 * The exporter's queue of profiles waiting to be sent: a bounded FIFO in memory that overflows
 * into an on-disk spool (bounded too), so nothing is lost while the collector is down. Order is
 * kept: the oldest profiles move to disk, and the disk is drained before memory. When the spool
 * is full its oldest segment is dropped, and its profiles are counted as dropped.
 *
 * The spool is a directory of NDJSON segments (`<seq>.ndjson`, one profile a line). A segment is
 * deleted only once every profile in it has been handed to the transport, so an agent that dies
 * sends the rest on its next start (at-least-once: a few may go twice).
 */
import {
  appendFileSync,
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import { join } from 'node:path';
import { AgentError } from './errors.js';
import type { Profile } from './profile-builder.js';

/** Queue settings. */
export interface ProfileQueueOptions {
  /** Profiles kept in memory before the oldest go to disk (or are dropped). Default 10,000. */
  maxRecords?: number;
  /** Spool directory; without it an overflow drops the oldest profiles (counted). */
  spoolDir?: string | null;
  /** Largest spool, bytes. Default 64 MiB. */
  spoolMaxBytes?: number;
  /** Size at which a spool segment is closed and a new one started. Default spoolMaxBytes / 16. */
  segmentBytes?: number;
  /** Called when a spool write or read fails (the profiles involved are dropped and counted). */
  onError?: (err: AgentError) => void;
}

/** Why profiles were dropped before they could be sent. */
export interface QueueDrops {
  /** Memory full and no spool. */
  queueFull: number;
  /** Spool full: its oldest segment went. */
  spoolFull: number;
  /** Spool write or read failed. */
  spoolError: number;
}

interface Segment {
  name: string;
  bytes: number;
  records: number;
}

// bigints (flowId past 2^53, 64-bit counters) survive JSON as "123n"; address bytes (the
// builder's) as {"hex": "..."}.
const BIGINT_TEXT = /^\d+n$/;
const replacer = (_k: string, v: unknown) =>
  typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? { hex: Buffer.from(v).toString('hex') } : v;
const reviver = (_k: string, v: unknown) => {
  if (typeof v === 'string' && BIGINT_TEXT.test(v)) return BigInt(v.slice(0, -1));
  if (typeof v === 'object' && v !== null && typeof (v as { hex?: unknown }).hex === 'string')
    return new Uint8Array(Buffer.from((v as { hex: string }).hex, 'hex'));
  return v;
};

/** Serialises one profile as a spool line. */
export function spoolLine(p: Profile): string {
  return `${JSON.stringify({ t: p.templateId, r: p.record }, replacer)}\n`;
}

/** Parses one spool line. */
export function parseSpoolLine(line: string): Profile {
  const o = JSON.parse(line, reviver) as { t: number; r: Profile['record'] };
  return { templateId: o.t, record: o.r };
}

/** Memory queue plus disk spool, in FIFO order. */
export class ProfileQueue {
  readonly maxRecords: number;
  readonly spoolDir: string | null;
  readonly spoolMaxBytes: number;
  readonly segmentBytes: number;
  readonly dropped: QueueDrops = { queueFull: 0, spoolFull: 0, spoolError: 0 };
  /** Profiles taken and given back (their session failed before they were sent): oldest of all. */
  private front: Profile[] = [];
  /** Profiles read from the oldest segment, not yet taken. */
  private diskHead: Profile[] = [];
  private diskHeadPos = 0;
  private readonly segments: Segment[] = [];
  private nextSegment = 0;
  private mem: Profile[] = [];
  private memPos = 0;
  private readonly onError: (err: AgentError) => void;
  private spooled = 0;
  private spoolBytesNow = 0;

  constructor(options: ProfileQueueOptions = {}) {
    this.maxRecords = options.maxRecords ?? 10_000;
    this.spoolDir = options.spoolDir ?? null;
    this.spoolMaxBytes = options.spoolMaxBytes ?? 64 * 1024 * 1024;
    this.segmentBytes = options.segmentBytes ?? Math.max(4096, Math.floor(this.spoolMaxBytes / 16));
    this.onError = options.onError ?? (() => {});
    if (this.spoolDir !== null) this.openSpool(this.spoolDir);
  }

  private openSpool(dir: string): void {
    try {
      mkdirSync(dir, { recursive: true });
      const names = readdirSync(dir)
        .filter((n) => /^\d{12}\.ndjson$/.test(n))
        .sort();
      // Segments of an earlier run go out first.
      for (const name of names) {
        const p = join(dir, name);
        const bytes = statSync(p).size;
        const text = readFileSync(p, 'utf8');
        let records = 0;
        for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) records++;
        this.segments.push({ name, bytes, records });
        this.spooled += records;
        this.spoolBytesNow += bytes;
      }
      const last = names.at(-1);
      this.nextSegment = last ? Number(last.slice(0, 12)) + 1 : 0;
      // Checks the directory is writable now rather than when the collector is already down.
      const probe = join(dir, '.write-check');
      closeSync(openSync(probe, 'w'));
      unlinkSync(probe);
    } catch (err) {
      throw new AgentError('AGT_ERR_SPOOL', `${dir}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Profiles waiting (memory and disk). */
  get length(): number {
    return this.front.length + this.diskHead.length - this.diskHeadPos + this.spooled + this.memoryLength;
  }

  /** Profiles waiting in memory. */
  get memoryLength(): number {
    return this.mem.length - this.memPos;
  }

  /** Profiles waiting on disk. */
  get spoolRecords(): number {
    return this.spooled + this.diskHead.length - this.diskHeadPos;
  }

  /** Bytes of the spool on disk. */
  get spoolBytes(): number {
    return this.spoolBytesNow;
  }

  /** Adds a profile at the tail. */
  push(p: Profile): void {
    this.mem.push(p);
    if (this.memoryLength > this.maxRecords) this.overflow();
  }

  /** Puts profiles back at the head (taken, then not sent): they go first next time. */
  unshift(ps: readonly Profile[]): void {
    if (ps.length > 0) this.front = [...ps, ...this.front];
  }

  /** Takes up to `n` profiles from the head. */
  take(n: number): Profile[] {
    const out: Profile[] = [];
    if (this.front.length > 0) out.push(...this.front.splice(0, n));
    while (out.length < n && (this.diskHead.length > this.diskHeadPos || this.segments.length > 0)) {
      if (this.diskHeadPos >= this.diskHead.length) {
        this.releaseHead();
        if (!this.loadHead()) break;
        continue;
      }
      const k = Math.min(n - out.length, this.diskHead.length - this.diskHeadPos);
      for (let i = 0; i < k; i++) out.push(this.diskHead[this.diskHeadPos++]!);
      if (this.diskHeadPos >= this.diskHead.length) this.releaseHead();
    }
    const k = Math.min(n - out.length, this.memoryLength);
    for (let i = 0; i < k; i++) out.push(this.mem[this.memPos++]!);
    if (this.memPos > 4096 && this.memPos * 2 > this.mem.length) {
      this.mem = this.mem.slice(this.memPos);
      this.memPos = 0;
    }
    return out;
  }

  /** Moves every profile still in memory to the spool (at shutdown); returns how many could not go. */
  persist(): number {
    const rest = [...this.front, ...this.mem.slice(this.memPos)];
    this.front = [];
    this.mem = [];
    this.memPos = 0;
    if (this.spoolDir === null) return rest.length;
    this.appendToSpool(rest);
    return 0;
  }

  /** Drops whatever is waiting in memory (destroy); returns how many. */
  clearMemory(): number {
    const n = this.front.length + this.memoryLength;
    this.front = [];
    this.mem = [];
    this.memPos = 0;
    return n;
  }

  private overflow(): void {
    // Half the memory queue at a time: one disk write per many profiles.
    const k = Math.max(1, Math.floor(this.maxRecords / 2));
    const oldest = this.mem.slice(this.memPos, this.memPos + k);
    this.memPos += oldest.length;
    if (this.spoolDir === null) {
      this.dropped.queueFull += oldest.length;
      return;
    }
    this.appendToSpool(oldest);
  }

  private appendToSpool(ps: readonly Profile[]): void {
    const dir = this.spoolDir!;
    let i = 0;
    while (i < ps.length) {
      let seg = this.segments.at(-1);
      // The head segment may be loaded (being drained): never append to it.
      if (!seg || seg.bytes >= this.segmentBytes || (seg === this.segments[0] && this.diskHead.length > 0)) {
        seg = { name: `${String(this.nextSegment++).padStart(12, '0')}.ndjson`, bytes: 0, records: 0 };
        this.segments.push(seg);
      }
      let text = '';
      let count = 0;
      while (i < ps.length && seg.bytes + Buffer.byteLength(text) < this.segmentBytes) {
        text += spoolLine(ps[i]!);
        i++;
        count++;
      }
      const bytes = Buffer.byteLength(text);
      this.makeRoom(bytes);
      if (!this.segments.includes(seg)) {
        // makeRoom dropped this very segment (a spool smaller than two writes): start it afresh.
        seg.bytes = 0;
        seg.records = 0;
        this.segments.push(seg);
      }
      try {
        appendFileSync(join(dir, seg.name), text);
      } catch (err) {
        this.dropped.spoolError += count;
        this.onError(new AgentError('AGT_ERR_SPOOL', `${dir}: ${(err as Error).message}`, { cause: err }));
        continue;
      }
      seg.bytes += bytes;
      seg.records += count;
      this.spooled += count;
      this.spoolBytesNow += bytes;
    }
  }

  /** Drops the oldest segments until `bytes` more fit under spoolMaxBytes. */
  private makeRoom(bytes: number): void {
    while (this.spoolBytesNow + bytes > this.spoolMaxBytes && this.segments.length > 0) {
      const seg = this.segments.shift()!;
      let lost: number;
      if (this.diskHead.length > 0) {
        // The loaded head segment (its profiles are not in `spooled`): what was not taken is lost.
        lost = this.diskHead.length - this.diskHeadPos;
        this.diskHead = [];
        this.diskHeadPos = 0;
      } else {
        lost = seg.records;
        this.spooled -= seg.records;
      }
      this.dropped.spoolFull += lost;
      this.spoolBytesNow -= seg.bytes;
      this.unlink(seg.name);
    }
  }

  /** Reads the oldest segment into diskHead; false if there is none. */
  private loadHead(): boolean {
    const seg = this.segments[0];
    if (!seg) return false;
    const dir = this.spoolDir!;
    try {
      const text = readFileSync(join(dir, seg.name), 'utf8');
      const lines = text.split('\n').filter((l) => l.length > 0);
      this.diskHead = [];
      let bad = 0;
      for (const l of lines) {
        try {
          this.diskHead.push(parseSpoolLine(l));
        } catch {
          bad++;
        }
      }
      if (bad > 0) {
        this.dropped.spoolError += bad;
        this.onError(new AgentError('AGT_ERR_SPOOL', `${seg.name}: ${bad} unreadable lines dropped`));
      }
    } catch (err) {
      this.dropped.spoolError += seg.records;
      this.onError(new AgentError('AGT_ERR_SPOOL', `${seg.name}: ${(err as Error).message}`, { cause: err }));
      this.diskHead = [];
    }
    this.diskHeadPos = 0;
    // From now on the head's profiles are counted in diskHead, not in `spooled`.
    this.spooled -= seg.records;
    if (this.diskHead.length === 0) {
      this.segments.shift();
      this.spoolBytesNow -= seg.bytes;
      this.unlink(seg.name);
      return this.segments.length > 0;
    }
    return true;
  }

  /** The loaded head segment is fully taken: delete it. */
  private releaseHead(): void {
    if (this.diskHead.length === 0) return;
    const seg = this.segments.shift();
    this.diskHead = [];
    this.diskHeadPos = 0;
    if (seg) {
      this.spoolBytesNow -= seg.bytes;
      this.unlink(seg.name);
    }
  }

  private unlink(name: string): void {
    try {
      unlinkSync(join(this.spoolDir!, name));
    } catch {
      // Already gone: nothing to free.
    }
  }
}
