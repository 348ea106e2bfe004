/**
 * Ingest: IPFIX messages in, rows out. Owns the decoder, sorts records into profile rows
 * (profile templates) and flow rows (any other template), keeps per-exporter accounting, and
 * writes batches to the store by count or after a short interval.
 */
import type { Logger } from 'pino';
import {
  type DataSet,
  type DecodeResult,
  IPFIX_ERRORS,
  IpfixDecoder,
  type IpfixErrorCode,
  type IpfixRecord,
  type IpfixValue,
  isTypeRecordTemplate,
  recordToJson,
  type SessionInfo,
  type Transport,
} from '../ipfix/index.js';
import { columnDecoder } from './profile-columns.js';
import { profileRowBuilder } from './profile-row.js';
import { isProfileTemplate } from './profile-schema.js';
import { type PackedBatch, type TableBuilder, tablePackers } from './store/packed-batch.js';
import type { ExporterDelta, FlowRow, Store } from './store/types.js';

/** Ingest settings. */
export interface IngestOptions {
  store: Store;
  log: Logger;
  /** Rows that trigger a flush. Default 5000. */
  batchSize?: number;
  /** Longest a received record waits before it is written, ms. Default 200. */
  flushIntervalMs?: number;
  /**
   * Most rows received and not yet stored (waiting or being written). Past it, records are
   * dropped and counted as `overload` rather than memory growing without bound. Default 200 000.
   */
  maxPendingRows?: number;
  /** UDP template lifetime, ms. Default 30 min. */
  templateLifetimeMs?: number;
  /**
   * Read profile data sets straight into columns where the template allows (profile-columns.ts).
   * Default true; false decodes every record into an object first (the generic path).
   */
  columnar?: boolean;
  clock?: () => number;
}

/** Why a record or message did not reach the store. */
export type DropReason = 'decode_error' | 'no_template' | 'store_error' | 'overload';

/** Counters the metrics endpoint reads. */
export interface IngestCounters {
  messages: number;
  bytes: number;
  recordsReceived: number;
  /** Profile records read straight into columns (profile-columns.ts), not decoded into objects. */
  recordsColumnar: number;
  profilesStored: number;
  flowsStored: number;
  /** Records (or, for decode errors, messages/sets) dropped, by reason. */
  dropped: Record<DropReason, number>;
  decodeErrors: Partial<Record<IpfixErrorCode, number>>;
  flushes: number;
  /** RFC 5610 type records received (learned by the decoder, not stored). */
  typeRecords: number;
  /** Duration of each flush, ms, for the latency histogram (drained by the metrics reader). */
  flushDurations: number[];
}

function asInt(v: IpfixValue | undefined): number | bigint | null {
  return typeof v === 'number' || typeof v === 'bigint' ? v : typeof v === 'boolean' ? Number(v) : null;
}

/** Milliseconds since the epoch from any of the flow start/end time elements of a record. */
function flowTime(r: IpfixRecord, which: 'Start' | 'End', sysInitMs: number | undefined): number | null {
  const ms = r[`flow${which}Milliseconds`];
  if (typeof ms === 'number') return ms;
  const s = r[`flow${which}Seconds`];
  if (typeof s === 'number') return s * 1000;
  const us = r[`flow${which}Microseconds`];
  if (typeof us === 'number') return Math.floor(us / 1000);
  const ns = r[`flow${which}Nanoseconds`];
  if (typeof ns === 'bigint') return Number(ns / 1000000n);
  const up = r[`flow${which}SysUpTime`];
  if (typeof up === 'number' && sysInitMs !== undefined) return sysInitMs + up;
  return null;
}

interface ExporterAccount extends ExporterDelta {
  /** Lost-record totals per domain already reported, to turn decoder totals into increments. */
  lostSeen: Map<number, number>;
  /** systemInitTimeMilliseconds per domain, for sysUpTime-relative flow times. */
  sysInit: Map<number, number>;
  /** Something besides counters changed (template ids) since the last flush. */
  dirty: boolean;
}

/** The ingest pipeline. */
export class Ingest {
  readonly decoder: IpfixDecoder;
  readonly counters: IngestCounters;
  private readonly store: Store;
  private readonly log: Logger;
  private readonly batchSize: number;
  private readonly flushIntervalMs: number;
  private readonly maxPendingRows: number;
  /** Rows handed to flushes that have not finished yet. */
  private writingRows = 0;
  private readonly clock: () => number;
  private readonly profiles: TableBuilder;
  private readonly flows: TableBuilder;
  private readonly accounts = new Map<string, ExporterAccount>();
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  private readonly expireTimer: NodeJS.Timeout;

  constructor(options: IngestOptions) {
    this.store = options.store;
    this.log = options.log.child({ component: 'ingest' });
    this.batchSize = options.batchSize ?? 5000;
    this.flushIntervalMs = options.flushIntervalMs ?? 200;
    this.maxPendingRows = options.maxPendingRows ?? 200_000;
    this.clock = options.clock ?? Date.now;
    const packers = tablePackers();
    this.profiles = packers.profiles.builder();
    this.flows = packers.flows.builder();
    const columnar = options.columnar ?? true;
    this.decoder = new IpfixDecoder({
      clock: this.clock,
      templateLifetimeMs: options.templateLifetimeMs,
      rawSets: columnar
        ? (t) => isProfileTemplate(t.id) && columnDecoder(t, this.profiles) !== null
        : undefined,
    });
    this.counters = {
      messages: 0,
      bytes: 0,
      recordsReceived: 0,
      recordsColumnar: 0,
      profilesStored: 0,
      flowsStored: 0,
      dropped: { decode_error: 0, no_template: 0, store_error: 0, overload: 0 },
      decodeErrors: {},
      flushes: 0,
      typeRecords: 0,
      flushDurations: [],
    };
    // Data waiting for templates expires, and idle UDP sessions are forgotten, once a second.
    this.expireTimer = setInterval(() => this.absorb('', this.decoder.expire()), 1000);
    this.expireTimer.unref();
  }

  /** One complete IPFIX message from exporter session `key`. */
  message(
    key: string,
    transport: Transport,
    bytes: Uint8Array,
    peer: { address: string | null; port: number | null },
    offset = 0,
  ): DecodeResult {
    this.counters.messages++;
    this.counters.bytes += bytes.length;
    // The account names the wire transport (udp, tcp, tls, file): the key's prefix.
    const acc = this.account(key, key.slice(0, Math.max(0, key.indexOf(':'))) || transport, peer);
    acc.lastSeen = this.clock();
    const res = this.decoder.decode(key, bytes, transport, offset);
    this.absorb(key, res);
    return res;
  }

  /** The exporter session ended (TCP close, end of file): data still waiting for templates is dropped. */
  sessionClosed(key: string, reason: string): void {
    // Take the session's template ids and lost records into the account before they go.
    const acc = this.accounts.get(key);
    const info = this.decoder.sessions().find((s) => s.key === key);
    if (acc && info) this.sync(acc, info);
    const res = this.decoder.closeSession(key);
    this.absorb(key, res);
    if (res.dropped.length)
      this.log.warn(
        { exporter: key, dropped: res.dropped.length, reason },
        'session closed with data waiting for templates',
      );
  }

  private account(
    key: string,
    transport: string,
    peer: { address: string | null; port: number | null },
  ): ExporterAccount {
    let a = this.accounts.get(key);
    if (!a) {
      a = {
        exporter: key,
        transport,
        address: peer.address,
        port: peer.port,
        lastSeen: this.clock(),
        records: 0,
        profiles: 0,
        flows: 0,
        lostRecords: 0,
        decodeErrors: 0,
        templateIds: [],
        lostSeen: new Map(),
        sysInit: new Map(),
        dirty: true,
      };
      this.accounts.set(key, a);
    }
    return a;
  }

  private absorb(key: string, res: DecodeResult): void {
    const acc = key ? this.accounts.get(key) : undefined;
    for (const e of res.errors) {
      this.counters.decodeErrors[e.code] = (this.counters.decodeErrors[e.code] ?? 0) + 1;
      if (e.code === 'IPFIX_ERR_NO_TEMPLATE') this.counters.dropped.no_template++;
      else this.counters.dropped.decode_error++;
      if (acc) acc.decodeErrors++;
      else {
        // Errors found by expire() belong to whichever session held the set; counted globally.
      }
    }
    if (res.errors.length && acc)
      this.log.debug({ exporter: key, errors: res.errors.map((e) => e.message) }, 'decode errors');
    if (!acc) return;
    const now = this.clock();
    for (const set of res.dataSets) this.rows(acc, set, now);
    if (this.profiles.n + this.flows.n >= this.batchSize) void this.flush();
    else if (!this.timer && this.profiles.n + this.flows.n > 0) {
      this.timer = setTimeout(() => void this.flush(), this.flushIntervalMs);
    }
  }

  private rows(acc: ExporterAccount, set: DataSet, now: number): void {
    const t = set.template;
    const n = set.count;
    acc.records += n;
    this.counters.recordsReceived += n;
    // RFC 5610 type records describe elements; the decoder has learned them. They are not flows.
    if (isTypeRecordTemplate(t)) {
      this.counters.typeRecords += n;
      return;
    }
    if (this.pending + n > this.maxPendingRows) {
      // The store is behind by more than the bound: these records cannot be kept.
      this.counters.dropped.overload += n;
      if (this.counters.dropped.overload === n)
        this.log.warn(
          { pending: this.pending, max: this.maxPendingRows },
          'store behind, dropping records (overload)',
        );
      return;
    }
    if (isProfileTemplate(set.templateId) && !t.isOptions) {
      acc.profiles += n;
      const odid = set.observationDomainId;
      const raw = set.raw;
      if (raw) {
        const decode = columnDecoder(t, this.profiles)!;
        decode(raw.bytes, raw.dv, raw.start, n, raw.recordLength, this.profiles, acc.exporter, odid, now);
        this.counters.recordsColumnar += n;
        return;
      }
      const build = profileRowBuilder(t);
      for (const r of set.records) this.profiles.addRow(build(acc.exporter, odid, now, r));
      return;
    }
    acc.flows += n;
    const registry = this.decoder.sessionRegistry(acc.exporter);
    for (const r of set.records) {
      const init = r['systemInitTimeMilliseconds'];
      if (typeof init === 'number') acc.sysInit.set(set.observationDomainId, init);
      this.flows.addRow(
        this.flowRow(acc, set, r, now, registry ? recordToJson(t, r, registry) : recordToJson(t, r)),
      );
    }
  }

  private flowRow(acc: ExporterAccount, set: DataSet, r: IpfixRecord, now: number, fields: string): FlowRow {
    const sysInit = acc.sysInit.get(set.observationDomainId);
    const src = r['sourceIPv4Address'] ?? r['sourceIPv6Address'];
    const dst = r['destinationIPv4Address'] ?? r['destinationIPv6Address'];
    const ipv = asInt(r['ipVersion']);
    return {
      exporter: acc.exporter,
      observationDomainId: set.observationDomainId,
      templateId: set.templateId,
      receivedMilliseconds: now,
      flowStartMilliseconds: flowTime(r, 'Start', sysInit),
      flowEndMilliseconds: flowTime(r, 'End', sysInit),
      protocolIdentifier: typeof r['protocolIdentifier'] === 'number' ? r['protocolIdentifier'] : null,
      ipVersion:
        typeof ipv === 'number'
          ? ipv
          : typeof r['sourceIPv4Address'] === 'string'
            ? 4
            : typeof r['sourceIPv6Address'] === 'string'
              ? 6
              : null,
      sourceAddress: typeof src === 'string' ? src : null,
      destinationAddress: typeof dst === 'string' ? dst : null,
      sourceTransportPort: typeof r['sourceTransportPort'] === 'number' ? r['sourceTransportPort'] : null,
      destinationTransportPort:
        typeof r['destinationTransportPort'] === 'number' ? r['destinationTransportPort'] : null,
      octetDeltaCount: asInt(r['octetDeltaCount'] ?? r['octetTotalCount']),
      packetDeltaCount: asInt(r['packetDeltaCount'] ?? r['packetTotalCount']),
      fields,
    };
  }

  /** Rows received and not yet written (waiting, or in a flush that has not finished). */
  get pending(): number {
    return this.profiles.n + this.flows.n + this.writingRows;
  }

  /** Writes everything received so far. Flushes run one at a time, in order. */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const batch: PackedBatch = {
      profiles: this.profiles.take(),
      flows: this.flows.take(),
      exporters: this.exporterDeltas(),
    };
    const rows = batch.profiles.n + batch.flows.n;
    this.writingRows += rows;
    this.flushing = this.flushing.then(async () => {
      await this.write(batch);
      this.writingRows -= rows;
    });
    return this.flushing;
  }

  private exporterDeltas(): ExporterDelta[] {
    const out: ExporterDelta[] = [];
    const sessions = new Map(this.decoder.sessions().map((s) => [s.key, s]));
    for (const a of this.accounts.values()) {
      const s = sessions.get(a.exporter);
      if (s) this.sync(a, s);
      if (a.records || a.lostRecords || a.decodeErrors || a.dirty) {
        a.dirty = false;
        const { lostSeen: _l, sysInit: _s, dirty: _d, ...delta } = a;
        out.push({ ...delta, templateIds: [...a.templateIds] });
      }
      a.records = 0;
      a.profiles = 0;
      a.flows = 0;
      a.lostRecords = 0;
      a.decodeErrors = 0;
    }
    return out;
  }

  /** Moves a decoder session's lost-record totals (as increments) and template ids into an account. */
  private sync(a: ExporterAccount, s: SessionInfo): void {
    for (const d of s.domains) {
      const seen = a.lostSeen.get(d.observationDomainId) ?? 0;
      a.lostRecords += d.stats.lostRecords - seen;
      a.lostSeen.set(d.observationDomainId, d.stats.lostRecords);
    }
    const ids = [...new Set(s.domains.flatMap((d) => d.templateIds))].sort((x, y) => x - y);
    if (ids.join() !== a.templateIds.join()) {
      a.templateIds = ids;
      a.dirty = true;
    }
  }

  private async write(batch: PackedBatch): Promise<void> {
    const rows = batch.profiles.n + batch.flows.n;
    if (rows + batch.exporters.length === 0) return;
    const t0 = performance.now();
    try {
      await this.store.insertPacked(batch);
      this.counters.profilesStored += batch.profiles.n;
      this.counters.flowsStored += batch.flows.n;
    } catch (err) {
      this.counters.dropped.store_error += rows;
      this.log.error({ err, rows }, 'store write failed, batch dropped');
    }
    this.counters.flushes++;
    this.counters.flushDurations.push(performance.now() - t0);
  }

  /** Flushes and stops timers; the decoder's waiting data is dropped and counted. */
  async close(): Promise<void> {
    clearInterval(this.expireTimer);
    for (const key of this.decoder.sessions().map((s) => s.key))
      this.sessionClosed(key, 'collector stopping');
    await this.flush();
  }
}

/** Every decode error code, for metrics label sets. */
export const DECODE_ERROR_CODES = Object.keys(IPFIX_ERRORS) as IpfixErrorCode[];
