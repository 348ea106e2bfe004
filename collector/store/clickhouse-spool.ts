/**
 * What stands between ingest and a ClickHouse server that is slow or down: batches wait in an
 * ordered queue and are sent one at a time, oldest first. A few wait in memory; past that, or
 * while the server fails, they are written to files in the spool folder, so memory stays bounded
 * and a restart delivers what a stopped collector held. A failed send is retried with growing
 * pauses (never dropped); a batch the server refuses as malformed is moved to `rejected/` and
 * counted, because sending it again would block every batch behind it. Only a full spool folder
 * refuses new batches: the caller then counts them as lost.
 */
import {
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { CollectorError } from '../errors.js';
import type { StoreBacklog } from './types.js';

/** One INSERT: rows of a table, encoded in `format`. */
export interface InsertPayload {
  table: string;
  columns: string[];
  format: 'RowBinary' | 'TabSeparated';
  rows: number;
  body: Buffer;
}

/**
 * A spool file: a 4-byte length, a JSON header describing the payloads, then their bodies one
 * after the other. `NAME.done` next to it holds how many payloads were delivered, so that a
 * restart does not send those again.
 */
function encodeFile(payloads: readonly InsertPayload[]): Buffer {
  const header = Buffer.from(
    JSON.stringify(
      payloads.map((p) => ({
        table: p.table,
        columns: p.columns,
        format: p.format,
        rows: p.rows,
        bytes: p.body.length,
      })),
    ),
  );
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  return Buffer.concat([len, header, ...payloads.map((p) => p.body)]);
}

function decodeFile(file: string): { payloads: InsertPayload[]; done: number } {
  const buf = readFileSync(file);
  const hl = buf.readUInt32LE(0);
  const header = JSON.parse(buf.subarray(4, 4 + hl).toString('utf8')) as (Omit<InsertPayload, 'body'> & {
    bytes: number;
  })[];
  let o = 4 + hl;
  const out = header.map(({ bytes, ...h }) => {
    const body = buf.subarray(o, o + bytes);
    o += bytes;
    return { ...h, body };
  });
  if (o !== buf.length) throw new Error(`spool file ${file} is ${buf.length} bytes, its header says ${o}`);
  let done = 0;
  try {
    done = Number(readFileSync(`${file}.done`, 'utf8'));
  } catch {
    // No payload of it was delivered yet.
  }
  done = Number.isInteger(done) && done > 0 ? done : 0;
  return { payloads: out.slice(done), done };
}

/** Outcome of a failed send: retry later, or set the batch aside for good. */
export type SendFailure = 'retry' | 'reject';

/** Options of a spool. */
export interface SpoolOptions {
  /** Folder of the spool files (created when missing). */
  dir: string;
  /** Sends one payload; throws on failure. */
  send: (p: InsertPayload) => Promise<void>;
  /** Whether an error of `send` is worth a retry. */
  classify: (err: unknown) => SendFailure;
  log: Logger;
  /** Batches kept in memory before new ones go to files. Default 4. */
  memoryBatches?: number;
  /** Most bytes of spool files; past it new batches are refused. Default 1 GiB. */
  maxBytes?: number;
  /** First pause after a failure, ms; it doubles up to maxRetryMs. Default 500. */
  retryMs?: number;
  /** Longest pause between retries, ms. Default 30 000. */
  maxRetryMs?: number;
}

/** What a spool holds and has done (for /metrics and logs). */
export type SpoolStats = StoreBacklog;

interface Entry {
  seq: number;
  createdMs: number;
  rows: number;
  /** Payloads not yet delivered; null while they live only in the file. */
  payloads: InsertPayload[] | null;
  file: string | null;
  bytes: number;
  /** Payloads of the file already delivered (noted in FILE.done). */
  done: number;
}

const FILE = /^(\d{16})\.batch$/;

/** An ordered, retrying, disk-backed queue of inserts. */
export class Spool {
  private readonly queue: Entry[] = [];
  private nextSeq = 1;
  private inMemory = 0;
  private bytes = 0;
  private readonly memoryBatches: number;
  private readonly maxBytes: number;
  private readonly retryMs: number;
  private readonly maxRetryMs: number;
  private sending: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly counters = {
    spooledBatches: 0,
    deliveredRows: 0,
    failedSends: 0,
    rejectedRows: 0,
    refusedRows: 0,
  };
  private failing = false;
  private lastError: string | null = null;
  private pause: number;

  constructor(private readonly o: SpoolOptions) {
    this.memoryBatches = o.memoryBatches ?? 4;
    this.maxBytes = o.maxBytes ?? 1 << 30;
    this.retryMs = o.retryMs ?? 500;
    this.maxRetryMs = o.maxRetryMs ?? 30_000;
    this.pause = this.retryMs;
    try {
      mkdirSync(join(o.dir, 'rejected'), { recursive: true });
    } catch (err) {
      throw new CollectorError('COL_ERR_STORE', `spool folder ${o.dir}: ${(err as Error).message}`);
    }
    // Batches a previous run left behind go first, in their order; progress notes without their
    // batch are stale.
    const all = readdirSync(o.dir);
    for (const n of all)
      if (n.endsWith('.batch.done') && !all.includes(n.slice(0, -'.done'.length)))
        rmSync(join(o.dir, n), { force: true });
    const names = all.filter((n) => FILE.test(n)).sort();
    for (const name of names) {
      const seq = Number(FILE.exec(name)![1]);
      const file = join(o.dir, name);
      const bytes = statSync(file).size;
      let rows = 0;
      let done = 0;
      try {
        const d = decodeFile(file);
        rows = d.payloads.reduce((a, p) => a + p.rows, 0);
        done = d.done;
      } catch (err) {
        o.log.error({ err, file }, 'unreadable spool file moved to rejected/');
        renameSync(file, join(o.dir, 'rejected', name));
        continue;
      }
      this.queue.push({ seq, createdMs: statSync(file).mtimeMs, rows, payloads: null, file, bytes, done });
      this.bytes += bytes;
      this.nextSeq = Math.max(this.nextSeq, seq + 1);
    }
    if (this.queue.length)
      o.log.warn(
        { batches: this.queue.length, bytes: this.bytes, dir: o.dir },
        'delivering batches spooled by a previous run',
      );
    this.kick();
  }

  /**
   * Queues a batch (its payloads go in order). Resolves once it is held: in memory, or in a
   * file when memory is full or the server fails. Throws COL_ERR_STORE when the spool is full.
   */
  async push(payloads: InsertPayload[]): Promise<void> {
    if (this.closed) throw new CollectorError('COL_ERR_STORE', 'the ClickHouse store is closed');
    const rows = payloads.reduce((a, p) => a + p.rows, 0);
    const e: Entry = {
      seq: this.nextSeq++,
      createdMs: Date.now(),
      rows,
      payloads,
      file: null,
      bytes: 0,
      done: 0,
    };
    if (this.failing || this.inMemory >= this.memoryBatches) {
      const size = payloads.reduce((a, p) => a + p.body.length, 0);
      if (this.bytes + size > this.maxBytes) {
        this.counters.refusedRows += rows;
        throw new CollectorError(
          'COL_ERR_STORE',
          `ClickHouse spool ${this.o.dir} is full (${this.bytes} of ${this.maxBytes} bytes): batch of ${rows} rows refused`,
        );
      }
      this.writeFile(e, false);
      e.payloads = null;
    } else this.inMemory++;
    this.queue.push(e);
    this.kick();
  }

  /** What the spool holds and has done. */
  stats(): SpoolStats {
    return {
      pendingBatches: this.queue.length,
      pendingRows: this.queue.reduce((a, e) => a + e.rows, 0),
      spoolBytes: this.bytes,
      ...this.counters,
      failing: this.failing,
      lastError: this.lastError,
      oldestAgeMs: this.queue.length ? Math.max(0, Date.now() - this.queue[0]!.createdMs) : 0,
    };
  }

  /** Resolves once nothing waits, or after `timeoutMs`; true when everything was delivered. */
  async drain(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length && Date.now() < deadline) {
      this.kick();
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.queue.length === 0;
  }

  /**
   * Stops sending after trying to deliver for up to `timeoutMs`; what still waits in memory is
   * written to spool files, which the next start delivers.
   */
  async close(timeoutMs: number): Promise<void> {
    if (this.closed) return;
    await this.drain(timeoutMs);
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.sending;
    for (const e of this.queue) {
      if (e.file || !e.payloads) continue;
      this.writeFile(e);
    }
    if (this.queue.length)
      this.o.log.warn(
        { batches: this.queue.length, rows: this.stats().pendingRows, dir: this.o.dir },
        'ClickHouse unreachable at close: batches kept in the spool for the next start',
      );
  }

  /** Writes a batch's payloads to its file; `fromMemory`: it was counted as held in memory. */
  private writeFile(e: Entry, fromMemory = true): void {
    const name = `${String(e.seq).padStart(16, '0')}.batch`;
    const file = join(this.o.dir, name);
    const text = encodeFile(e.payloads!);
    try {
      // A progress note left by an earlier batch of the same number must not skip this one's.
      rmSync(`${file}.done`, { force: true });
      writeFileSync(`${file}.tmp`, text);
      renameSync(`${file}.tmp`, file);
    } catch (err) {
      throw new CollectorError('COL_ERR_STORE', `cannot write spool file ${file}: ${(err as Error).message}`);
    }
    e.file = file;
    e.done = 0;
    e.bytes = text.length;
    this.bytes += e.bytes;
    this.counters.spooledBatches++;
    if (fromMemory) this.inMemory = Math.max(0, this.inMemory - 1);
  }

  /** Starts the send loop unless it runs or waits for a retry. */
  private kick(): void {
    if (this.sending || this.closed || this.timer || !this.queue.length) return;
    this.sending = this.sendAll().finally(() => {
      this.sending = null;
    });
  }

  private async sendAll(): Promise<void> {
    while (this.queue.length && !this.closed) {
      const e = this.queue[0]!;
      let payloads = e.payloads;
      if (!payloads) {
        try {
          payloads = decodeFile(e.file!).payloads;
        } catch (err) {
          this.o.log.error({ err, file: e.file }, 'unreadable spool file moved to rejected/');
          this.setAside(e);
          continue;
        }
      }
      try {
        while (payloads.length) {
          await this.o.send(payloads[0]!);
          this.counters.deliveredRows += payloads[0]!.rows;
          e.rows -= payloads[0]!.rows;
          payloads.shift();
          e.done++;
          // A file's payloads are read again after a restart: note which ones were delivered.
          if (e.file && payloads.length) writeFileSync(`${e.file}.done`, String(e.done));
        }
      } catch (err) {
        this.counters.failedSends++;
        this.lastError = (err as Error).message;
        if (this.o.classify(err) === 'reject') {
          this.o.log.error(
            { err, rows: e.rows, table: payloads[0]?.table },
            'ClickHouse refused a batch as malformed: moved to rejected/',
          );
          if (!e.file) {
            e.payloads = payloads;
            this.writeFile(e);
          }
          this.setAside(e);
          continue;
        }
        if (!this.failing)
          this.o.log.warn(
            { err, pending: this.queue.length },
            'ClickHouse insert failed; spooling and retrying',
          );
        this.failing = true;
        // Keep what is left in memory in files from now on: the outage may outlast the process.
        for (const q of this.queue)
          if (!q.file && q.payloads) {
            if (q === e) q.payloads = payloads;
            this.writeFile(q);
            q.payloads = q === e ? payloads : null;
          }
        this.timer = setTimeout(() => {
          this.timer = null;
          this.kick();
        }, this.pause);
        this.pause = Math.min(this.maxRetryMs, this.pause * 2);
        return;
      }
      if (this.failing)
        this.o.log.info({ pending: this.queue.length - 1 }, 'ClickHouse inserts succeed again');
      this.failing = false;
      this.pause = this.retryMs;
      this.queue.shift();
      if (e.file) {
        this.bytes -= e.bytes;
        try {
          // The note first: a crash in between then sends the batch again (at least once)
          // rather than leaving a note behind for a later batch of the same number.
          rmSync(`${e.file}.done`, { force: true });
          unlinkSync(e.file);
        } catch {
          // Already gone: nothing to keep.
        }
      } else this.inMemory = Math.max(0, this.inMemory - 1);
    }
  }

  private setAside(e: Entry): void {
    this.queue.shift();
    this.counters.rejectedRows += e.rows;
    if (!e.file) {
      this.inMemory = Math.max(0, this.inMemory - 1);
      return;
    }
    this.bytes -= e.bytes;
    try {
      renameSync(e.file, join(this.o.dir, 'rejected', e.file.slice(e.file.lastIndexOf('/') + 1)));
      if (e.done)
        renameSync(
          `${e.file}.done`,
          join(this.o.dir, 'rejected', `${e.file.slice(e.file.lastIndexOf('/') + 1)}.done`),
        );
    } catch {
      // A file that cannot be moved is left where it is; its rows are counted as rejected.
    }
  }
}
