/**
 * The collecting side's decoder: one state machine per transport session (exporter address and
 * port, or one TCP connection, or one file) and observation domain. It keeps templates (with an
 * RFC 7011 8.4 lifetime on UDP), holds data that arrives before its template, tracks sequence
 * numbers to count lost records, learns element names and types from RFC 5610 type records,
 * and never throws: every problem is a typed IpfixError, counted and returned.
 */
import { IPFIX_ERRORS, IpfixError, type IpfixErrorCode } from './errors.js';
import type { Cursor, IpfixRecord } from './record-codec.js';
import { ElementRegistry, type InformationElement } from './registry.js';
import {
  MIN_DATA_SET_ID,
  parseTemplateSet,
  SET_ID_OPTIONS_TEMPLATE,
  SET_ID_TEMPLATE,
  type Template,
} from './template.js';

/** IPFIX protocol version (RFC 7011 3.1). */
export const IPFIX_VERSION = 10;
/** Message header length. */
export const HEADER_LENGTH = 16;

/** The message header (RFC 7011 3.1). */
export interface MessageHeader {
  version: number;
  length: number;
  /** Export time, seconds since the Unix epoch. */
  exportTime: number;
  sequenceNumber: number;
  observationDomainId: number;
}

/** How messages of a session arrive: UDP templates expire, stream templates do not. */
export type Transport = 'udp' | 'tcp' | 'sctp' | 'file';

/** The records of one data set, decoded with their template. */
export interface DataSet {
  templateId: number;
  template: Template;
  observationDomainId: number;
  exportTime: number;
  sequenceNumber: number;
  /** The decoded records; empty when the set is handed over `raw`. */
  records: IpfixRecord[];
  /** Records in the set (records.length, or the raw record count). */
  count: number;
  /**
   * The set's bytes, undecoded, when the decoder's `rawSets` option chose so for its template (a
   * fixed-length template): `count` records of `recordLength` bytes from `start`. The bytes belong
   * to the message buffer: read them before `decode` is called again.
   */
  raw?: { bytes: Uint8Array; dv: DataView; start: number; recordLength: number };
  /** True when the set arrived before its template and waited for it. */
  delayed: boolean;
}

/** A data set kept as bytes because its template is unknown (goflow2's RawFlowSet). */
export interface RawSet {
  setId: number;
  observationDomainId: number;
  exportTime: number;
  sequenceNumber: number;
  bytes: Uint8Array;
  /** Clock time at which the set was received. */
  receivedAt: number;
}

/** A template learned or withdrawn by a message. */
export type TemplateEvent =
  | { kind: 'template'; observationDomainId: number; template: Template; replaced: boolean }
  | { kind: 'withdrawal'; observationDomainId: number; templateId: number };

/** What one call to `decode` produced. */
export interface DecodeResult {
  header: MessageHeader | null;
  dataSets: DataSet[];
  templates: TemplateEvent[];
  /** Elements this message taught through RFC 5610 type records. */
  elements: InformationElement[];
  errors: IpfixError[];
  /** Data sets dropped while handling this message (pending overflow). */
  dropped: RawSet[];
}

/** Limits and clocks; every field has a default. */
export interface DecoderOptions {
  /** Registry new sessions start from (they learn into a child of it). */
  registry?: ElementRegistry;
  /** UDP template lifetime (RFC 7011 8.4), ms. Default 30 min. */
  templateLifetimeMs?: number;
  /** How long a data set may wait for its template, ms. Default 30 s. */
  pendingTimeoutMs?: number;
  /** Data sets that may wait per domain. Default 64. */
  maxPendingSets?: number;
  /** Bytes that may wait per domain. Default 512 KiB. */
  maxPendingBytes?: number;
  /** Templates per observation domain. Default 1024. */
  maxTemplatesPerDomain?: number;
  /** Fields in one template. Default 1024: compiled codecs grow with the fields. */
  maxFieldsPerTemplate?: number;
  /** Observation domains per session. Default 64. */
  maxDomainsPerSession?: number;
  /** Transport sessions (exporters). Default 4096. */
  maxSessions?: number;
  /** Elements one session may define through RFC 5610 records. Default 4096. */
  maxLearnedElements?: number;
  /** UDP sessions idle this long are forgotten by `expire`, ms. Default: the template lifetime. */
  sessionIdleMs?: number;
  /** Clock in ms; injectable for tests. */
  clock?: () => number;
  /**
   * Templates whose data sets the caller reads itself (columnar ingest): true hands a set of a
   * fixed-length template over as bytes (`DataSet.raw`) instead of record objects. Its fields are
   * resolved against the session's registry before the call.
   */
  rawSets?: (t: Template) => boolean;
}

/** Counters of one observation domain of one session. */
export interface DomainStats {
  messages: number;
  records: number;
  /** Records the exporter sent that never arrived, from sequence-number gaps. */
  lostRecords: number;
  /** Messages whose sequence number went backwards (reordered, duplicated or exporter restart). */
  outOfSequence: number;
  templates: number;
  pendingSets: number;
  droppedSets: number;
}

/** Counters of the whole decoder. */
export interface DecoderStats {
  messages: number;
  records: number;
  dataSets: number;
  delayedSets: number;
  droppedSets: number;
  lostRecords: number;
  templatesLearned: number;
  templatesWithdrawn: number;
  templatesExpired: number;
  templatesReplaced: number;
  elementsLearned: number;
  sessionsOpened: number;
  sessionsClosed: number;
  /** Errors by code. */
  errors: Record<IpfixErrorCode, number>;
}

interface TemplateEntry {
  template: Template;
  expiresAt: number;
}

interface PendingSet extends RawSet {
  /** View over the bytes, so a delayed set decodes like a fresh one. */
  dv: DataView;
}

interface Domain {
  id: number;
  templates: Map<number, TemplateEntry>;
  expectedSequence: number | null;
  pending: PendingSet[];
  pendingBytes: number;
  stats: DomainStats;
}

interface Session {
  key: string;
  transport: Transport;
  registry: ElementRegistry;
  learned: number;
  domains: Map<number, Domain>;
  lastSeen: number;
  errors: number;
}

/** What `sessions()` reports for one exporter session. */
export interface SessionInfo {
  key: string;
  transport: Transport;
  lastSeen: number;
  errors: number;
  domains: { observationDomainId: number; stats: DomainStats; templateIds: number[] }[];
}

const RFC5610_SCOPE = [346, 303];

/** True when an options template carries RFC 5610 information element type records. */
export function isTypeRecordTemplate(t: Template): boolean {
  if (!t.isOptions) return false;
  const scope = t.specs.slice(0, t.scopeFieldCount);
  return (
    RFC5610_SCOPE.every((id) => scope.some((s) => s.pen === 0 && s.id === id)) &&
    t.specs.some((s) => s.pen === 0 && (s.id === 339 || s.id === 341))
  );
}

function newResult(): DecodeResult {
  return { header: null, dataSets: [], templates: [], elements: [], errors: [], dropped: [] };
}

/** Reads a message header at `o` (caller checked 16 bytes are there). */
export function readMessageHeader(dv: DataView, o = 0): MessageHeader {
  return {
    version: dv.getUint16(o),
    length: dv.getUint16(o + 2),
    exportTime: dv.getUint32(o + 4),
    sequenceNumber: dv.getUint32(o + 8),
    observationDomainId: dv.getUint32(o + 12),
  };
}

/** The IPFIX decoder for any number of exporter sessions. */
export class IpfixDecoder {
  readonly stats: DecoderStats;
  private readonly registry: ElementRegistry;
  private readonly sessionsByKey = new Map<string, Session>();
  private readonly clock: () => number;
  private readonly rawSets: ((t: Template) => boolean) | undefined;
  private readonly opt: Required<Omit<DecoderOptions, 'registry' | 'clock' | 'rawSets'>>;
  private readonly cursor: Cursor = { next: 0 };

  constructor(options: DecoderOptions = {}) {
    this.registry = options.registry ?? ElementRegistry.standard();
    this.clock = options.clock ?? Date.now;
    this.rawSets = options.rawSets;
    const templateLifetimeMs = options.templateLifetimeMs ?? 30 * 60_000;
    this.opt = {
      templateLifetimeMs,
      pendingTimeoutMs: options.pendingTimeoutMs ?? 30_000,
      maxPendingSets: options.maxPendingSets ?? 64,
      maxPendingBytes: options.maxPendingBytes ?? 512 * 1024,
      maxTemplatesPerDomain: options.maxTemplatesPerDomain ?? 1024,
      maxFieldsPerTemplate: options.maxFieldsPerTemplate ?? 1024,
      maxDomainsPerSession: options.maxDomainsPerSession ?? 64,
      maxSessions: options.maxSessions ?? 4096,
      maxLearnedElements: options.maxLearnedElements ?? 4096,
      sessionIdleMs: options.sessionIdleMs ?? templateLifetimeMs,
    };
    const errors = {} as Record<IpfixErrorCode, number>;
    for (const code of Object.keys(IPFIX_ERRORS) as IpfixErrorCode[]) errors[code] = 0;
    this.stats = {
      messages: 0,
      records: 0,
      dataSets: 0,
      delayedSets: 0,
      droppedSets: 0,
      lostRecords: 0,
      templatesLearned: 0,
      templatesWithdrawn: 0,
      templatesExpired: 0,
      templatesReplaced: 0,
      elementsLearned: 0,
      sessionsOpened: 0,
      sessionsClosed: 0,
      errors,
    };
  }

  /**
   * Decodes one complete message (a UDP payload, or one framed message of a stream) received
   * on session `key`. `baseOffset` is the message's offset in its stream, for error offsets.
   */
  decode(key: string, msg: Uint8Array, transport: Transport = 'udp', baseOffset = 0): DecodeResult {
    const res = newResult();
    try {
      this.decodeInto(res, key, msg, transport, baseOffset);
    } catch (err) {
      // Defensive: a bug in a decoding path must not escape; report it as a malformed message.
      this.fail(
        res,
        null,
        err instanceof IpfixError ? err : new IpfixError('IPFIX_ERR_RECORD', String(err), baseOffset),
      );
    }
    return res;
  }

  private fail(res: DecodeResult, session: Session | null, err: IpfixError): void {
    res.errors.push(err);
    this.stats.errors[err.code]++;
    if (session) session.errors++;
  }

  private decodeInto(
    res: DecodeResult,
    key: string,
    msg: Uint8Array,
    transport: Transport,
    base: number,
  ): void {
    const now = this.clock();
    if (msg.length < HEADER_LENGTH) {
      this.fail(res, null, new IpfixError('IPFIX_ERR_SHORT_MESSAGE', `${msg.length} bytes`, base));
      return;
    }
    const dv = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
    const header = readMessageHeader(dv);
    if (header.version !== IPFIX_VERSION) {
      this.fail(res, null, new IpfixError('IPFIX_ERR_VERSION', `version ${header.version}`, base));
      return;
    }
    if (header.length !== msg.length) {
      this.fail(
        res,
        null,
        new IpfixError(
          'IPFIX_ERR_MESSAGE_LENGTH',
          `header says ${header.length} bytes, got ${msg.length}`,
          base + 2,
        ),
      );
      return;
    }
    const session = this.session(key, transport, now, res, base);
    if (!session) return;
    const domain = this.domain(session, header.observationDomainId, res, base);
    if (!domain) return;
    res.header = header;
    this.stats.messages++;
    domain.stats.messages++;

    // Walk the sets once; data sets whose template is not known yet wait until the end of the
    // message, since a template may follow its data in the same message.
    let o = HEADER_LENGTH;
    let records = 0;
    let exact = true;
    const waiting: PendingSet[] = [];
    while (o < header.length) {
      if (header.length - o < 4) {
        this.fail(
          res,
          session,
          new IpfixError('IPFIX_ERR_SET_LENGTH', `${header.length - o} stray bytes`, base + o),
        );
        exact = false;
        break;
      }
      const setId = dv.getUint16(o);
      const setLength = dv.getUint16(o + 2);
      if (setLength < 4 || o + setLength > header.length) {
        this.fail(
          res,
          session,
          new IpfixError(
            'IPFIX_ERR_SET_LENGTH',
            `set ${setId} claims ${setLength} bytes, ${header.length - o} left`,
            base + o + 2,
          ),
        );
        exact = false;
        break;
      }
      const start = o + 4;
      const end = o + setLength;
      if (setId === SET_ID_TEMPLATE || setId === SET_ID_OPTIONS_TEMPLATE) {
        const parsed = parseTemplateSet(dv, start, end, setId);
        for (const e of parsed.entries) {
          if (e.kind === 'template') this.addTemplate(res, session, domain, e.template, now, base + start);
          else this.withdraw(res, domain, e.templateId, setId);
        }
        if (parsed.error) this.fail(res, session, rebase(parsed.error, base));
      } else if (setId < MIN_DATA_SET_ID) {
        this.fail(res, session, new IpfixError('IPFIX_ERR_SET_ID', `set id ${setId}`, base + o));
      } else {
        const entry = this.lookup(domain, setId, transport, now);
        if (entry) {
          const r = this.decodeDataSet(res, session, domain, entry, msg, dv, start, end, header, false, base);
          records += r.records;
          exact &&= r.complete;
        } else {
          waiting.push({
            setId,
            observationDomainId: header.observationDomainId,
            exportTime: header.exportTime,
            sequenceNumber: header.sequenceNumber,
            bytes: msg.subarray(start, end),
            dv: new DataView(msg.buffer, msg.byteOffset + start, end - start),
            receivedAt: now,
          });
        }
      }
      o = end;
    }

    for (const w of waiting) {
      const entry = this.lookup(domain, w.setId, transport, now);
      if (entry) {
        const r = this.decodeDataSet(
          res,
          session,
          domain,
          entry,
          w.bytes,
          w.dv,
          0,
          w.bytes.length,
          header,
          false,
          base,
        );
        records += r.records;
        exact &&= r.complete;
      } else {
        exact = false;
        // Copy: the set outlives the message buffer, which the caller may reuse.
        const bytes = new Uint8Array(w.bytes);
        this.hold(res, session, domain, { ...w, bytes, dv: new DataView(bytes.buffer) });
      }
    }
    this.checkSequence(domain, header, records, exact);
  }

  private session(
    key: string,
    transport: Transport,
    now: number,
    res: DecodeResult,
    base: number,
  ): Session | null {
    let s = this.sessionsByKey.get(key);
    if (!s) {
      if (this.sessionsByKey.size >= this.opt.maxSessions) {
        this.fail(
          res,
          null,
          new IpfixError(
            'IPFIX_ERR_SESSION_LIMIT',
            `${this.opt.maxSessions} sessions, refusing ${key}`,
            base,
          ),
        );
        return null;
      }
      s = {
        key,
        transport,
        registry: this.registry.child(),
        learned: 0,
        domains: new Map(),
        lastSeen: now,
        errors: 0,
      };
      this.sessionsByKey.set(key, s);
      this.stats.sessionsOpened++;
    }
    s.lastSeen = now;
    return s;
  }

  private domain(session: Session, id: number, res: DecodeResult, base: number): Domain | null {
    let d = session.domains.get(id);
    if (!d) {
      if (session.domains.size >= this.opt.maxDomainsPerSession) {
        this.fail(
          res,
          session,
          new IpfixError(
            'IPFIX_ERR_DOMAIN_LIMIT',
            `${this.opt.maxDomainsPerSession} domains, refusing domain ${id}`,
            base + 12,
          ),
        );
        return null;
      }
      d = {
        id,
        templates: new Map(),
        expectedSequence: null,
        pending: [],
        pendingBytes: 0,
        stats: {
          messages: 0,
          records: 0,
          lostRecords: 0,
          outOfSequence: 0,
          templates: 0,
          pendingSets: 0,
          droppedSets: 0,
        },
      };
      session.domains.set(id, d);
    }
    return d;
  }

  private lookup(domain: Domain, id: number, transport: Transport, now: number): TemplateEntry | undefined {
    const e = domain.templates.get(id);
    if (e && transport === 'udp' && now > e.expiresAt) {
      domain.templates.delete(id);
      domain.stats.templates = domain.templates.size;
      this.stats.templatesExpired++;
      return undefined;
    }
    return e;
  }

  private addTemplate(
    res: DecodeResult,
    session: Session,
    domain: Domain,
    t: Template,
    now: number,
    at: number,
  ): void {
    const old = domain.templates.get(t.id);
    if (t.specs.length > this.opt.maxFieldsPerTemplate) {
      this.fail(
        res,
        session,
        new IpfixError(
          'IPFIX_ERR_TEMPLATE_LIMIT',
          `template ${t.id} has ${t.specs.length} fields, at most ${this.opt.maxFieldsPerTemplate} allowed`,
          at,
        ),
      );
      return;
    }
    if (!old && domain.templates.size >= this.opt.maxTemplatesPerDomain) {
      this.fail(
        res,
        session,
        new IpfixError(
          'IPFIX_ERR_TEMPLATE_LIMIT',
          `${this.opt.maxTemplatesPerDomain} templates, refusing ${t.id}`,
          at,
        ),
      );
      return;
    }
    const expiresAt = now + this.opt.templateLifetimeMs;
    if (old?.template.sameAs(t)) {
      old.expiresAt = expiresAt;
    } else {
      domain.templates.set(t.id, { template: t, expiresAt });
      if (old) this.stats.templatesReplaced++;
      this.stats.templatesLearned++;
    }
    domain.stats.templates = domain.templates.size;
    res.templates.push({
      kind: 'template',
      observationDomainId: domain.id,
      template: t,
      replaced: !!old && !old.template.sameAs(t),
    });
    this.releasePending(res, session, domain, t.id);
  }

  private withdraw(res: DecodeResult, domain: Domain, templateId: number, setId: number): void {
    if (templateId === setId) {
      // Withdraw every template (set 2) or every options template (set 3) of the domain.
      for (const [id, e] of domain.templates) {
        if (e.template.isOptions === (setId === SET_ID_OPTIONS_TEMPLATE)) {
          domain.templates.delete(id);
          this.stats.templatesWithdrawn++;
        }
      }
    } else if (domain.templates.delete(templateId)) this.stats.templatesWithdrawn++;
    domain.stats.templates = domain.templates.size;
    res.templates.push({ kind: 'withdrawal', observationDomainId: domain.id, templateId });
  }

  private hold(res: DecodeResult, session: Session, domain: Domain, set: PendingSet): void {
    domain.pending.push(set);
    domain.pendingBytes += set.bytes.length;
    while (
      domain.pending.length > this.opt.maxPendingSets ||
      domain.pendingBytes > this.opt.maxPendingBytes
    ) {
      this.drop(res, session, domain, domain.pending.shift()!, 'pending limit reached');
    }
    domain.stats.pendingSets = domain.pending.length;
  }

  private drop(
    res: DecodeResult,
    session: Session | null,
    domain: Domain,
    set: PendingSet,
    why: string,
  ): void {
    domain.pendingBytes -= set.bytes.length;
    domain.stats.droppedSets++;
    domain.stats.pendingSets = domain.pending.length;
    this.stats.droppedSets++;
    const { dv: _dv, ...raw } = set;
    res.dropped.push(raw);
    this.fail(
      res,
      session,
      new IpfixError('IPFIX_ERR_NO_TEMPLATE', `template ${set.setId} in domain ${domain.id}: ${why}`),
    );
  }

  private releasePending(res: DecodeResult, session: Session, domain: Domain, templateId: number): void {
    if (domain.pending.length === 0) return;
    const entry = domain.templates.get(templateId)!;
    const keep: PendingSet[] = [];
    for (const p of domain.pending) {
      if (p.setId !== templateId) {
        keep.push(p);
        continue;
      }
      domain.pendingBytes -= p.bytes.length;
      const header: MessageHeader = {
        version: IPFIX_VERSION,
        length: 0,
        exportTime: p.exportTime,
        sequenceNumber: p.sequenceNumber,
        observationDomainId: domain.id,
      };
      this.decodeDataSet(res, session, domain, entry, p.bytes, p.dv, 0, p.bytes.length, header, true, 0);
      this.stats.delayedSets++;
    }
    domain.pending = keep;
    domain.stats.pendingSets = keep.length;
  }

  private decodeDataSet(
    res: DecodeResult,
    session: Session,
    domain: Domain,
    entry: TemplateEntry,
    b: Uint8Array,
    dv: DataView,
    start: number,
    end: number,
    header: MessageHeader,
    delayed: boolean,
    base: number,
  ): { records: number; complete: boolean } {
    const t = entry.template;
    const records: IpfixRecord[] = [];
    const cursor = this.cursor;
    let complete = true;
    let o = start;
    // Records follow each other until what is left is shorter than the smallest record: padding.
    const min = t.minLength;
    // Zero-length fields take no bytes: a template of thousands of them would turn one set into
    // billions of values (fuzz regression zero-length-fields.bin). Such a template decodes at
    // most one value per byte of its set; templates with no more fields than bytes are unaffected.
    const fieldCount = t.specs.length;
    const cap = fieldCount > min ? Math.floor((end - start) / fieldCount) : Number.POSITIVE_INFINITY;
    const capped = () => {
      complete = false;
      this.fail(
        res,
        session,
        new IpfixError(
          'IPFIX_ERR_RECORD',
          `template ${t.id}: ${fieldCount} fields in ${min}-byte records, set capped at ${cap} records`,
          base + start,
        ),
      );
    };
    const fits = Math.floor((end - start) / min);
    // A fixed-length set the caller reads itself (rawSets) is handed over undecoded.
    let raw: DataSet['raw'];
    if (t.fixedLength > 0 && fits <= cap && fits > 0 && this.rawSets && !isTypeRecordTemplate(t)) {
      t.resolve(session.registry);
      if (this.rawSets(t)) raw = { bytes: b, dv, start, recordLength: min };
    }
    // Compiling takes time in proportion to the template's fields: only a set that holds a record
    // pays it, so a few data bytes cannot recompile a template of thousands of fields each time
    // an RFC 5610 record changes the registry (fuzz regression template-recompile.bin).
    const decode = !raw && Math.min(fits, cap) > 0 ? t.recordDecoder(session.registry) : null;
    if (raw) {
      // Read by the caller: counted below as `fits` records.
    } else if (t.fixedLength > 0) {
      let n = fits;
      if (n > cap) {
        n = cap;
        capped();
      }
      for (let i = 0; i < n; i++) {
        records.push(decode!(b, dv, o, end, cursor));
        o += min;
      }
    } else {
      try {
        while (end - o >= min) {
          if (records.length >= cap) {
            capped();
            break;
          }
          records.push(decode!(b, dv, o, end, cursor));
          o = cursor.next;
        }
      } catch (err) {
        complete = false;
        this.fail(
          res,
          session,
          err instanceof IpfixError
            ? rebase(err, base)
            : new IpfixError('IPFIX_ERR_RECORD', String(err), base + o),
        );
      }
    }
    const count = raw ? fits : records.length;
    if (count > 0) {
      res.dataSets.push({
        templateId: t.id,
        template: t,
        observationDomainId: domain.id,
        exportTime: header.exportTime,
        sequenceNumber: header.sequenceNumber,
        records,
        count,
        raw,
        delayed,
      });
      if (isTypeRecordTemplate(t)) this.learnElements(res, session, records);
    }
    this.stats.records += count;
    this.stats.dataSets++;
    domain.stats.records += count;
    return { records: count, complete };
  }

  private learnElements(res: DecodeResult, session: Session, records: IpfixRecord[]): void {
    for (const r of records) {
      const pen = r['privateEnterpriseNumber'];
      const id = r['informationElementId'];
      const name = r['informationElementName'];
      const type = r['informationElementDataType'];
      if (typeof pen !== 'number' || typeof id !== 'number' || id > 0x7fff) continue;
      if (typeof name !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]{0,127}$/.test(name)) continue;
      if (typeof type !== 'number' || type > 22) continue;
      // IANA elements are already known exactly; learn only what the registry lacks or the
      // exporter's own enterprise elements.
      if (pen === 0 && this.registry.get(0, id)) continue;
      const known = session.registry.get(pen, id);
      if (known && known.name === name && known.type === type) continue;
      if (!known && session.learned >= this.opt.maxLearnedElements) continue;
      const ie: InformationElement = {
        pen,
        id,
        name,
        type,
        semantics:
          typeof r['informationElementSemantics'] === 'number' ? r['informationElementSemantics'] : 0,
        units: typeof r['informationElementUnits'] === 'number' ? r['informationElementUnits'] : 0,
      };
      const desc = r['informationElementDescription'];
      if (typeof desc === 'string' && desc) ie.description = desc;
      session.registry.add(ie);
      if (!known) session.learned++;
      this.stats.elementsLearned++;
      res.elements.push(ie);
    }
  }

  private checkSequence(domain: Domain, header: MessageHeader, records: number, exact: boolean): void {
    const expected = domain.expectedSequence;
    if (expected !== null) {
      const gap = (header.sequenceNumber - expected) >>> 0;
      if (gap !== 0) {
        if (gap < 0x80000000) {
          domain.stats.lostRecords += gap;
          this.stats.lostRecords += gap;
        } else domain.stats.outOfSequence++;
      }
    }
    // A message whose record count is unknown (sets waiting or broken) cannot predict the next.
    domain.expectedSequence = exact ? (header.sequenceNumber + records) >>> 0 : null;
  }

  /**
   * Drops data sets that waited longer than the pending timeout and forgets idle UDP sessions.
   * Call periodically; returns what was dropped (each also counted as IPFIX_ERR_NO_TEMPLATE).
   */
  expire(): DecodeResult {
    const res = newResult();
    const now = this.clock();
    for (const s of this.sessionsByKey.values()) {
      for (const d of s.domains.values()) {
        while (d.pending.length > 0 && now - d.pending[0]!.receivedAt > this.opt.pendingTimeoutMs) {
          this.drop(res, s, d, d.pending.shift()!, `waited ${this.opt.pendingTimeoutMs} ms`);
        }
      }
      if (s.transport === 'udp' && now - s.lastSeen > this.opt.sessionIdleMs)
        this.closeSessionInto(res, s, 'idle');
    }
    return res;
  }

  /** Ends a session (stream closed, file ended): data still waiting for templates is dropped. */
  closeSession(key: string): DecodeResult {
    const res = newResult();
    const s = this.sessionsByKey.get(key);
    if (s) this.closeSessionInto(res, s, 'session closed');
    return res;
  }

  private closeSessionInto(res: DecodeResult, s: Session, why: string): void {
    for (const d of s.domains.values()) {
      while (d.pending.length > 0) this.drop(res, s, d, d.pending.shift()!, why);
    }
    this.sessionsByKey.delete(s.key);
    this.stats.sessionsClosed++;
  }

  /** A snapshot of every open session, for per-exporter accounting. */
  sessions(): SessionInfo[] {
    return [...this.sessionsByKey.values()].map((s) => ({
      key: s.key,
      transport: s.transport,
      lastSeen: s.lastSeen,
      errors: s.errors,
      domains: [...s.domains.values()].map((d) => ({
        observationDomainId: d.id,
        stats: { ...d.stats },
        templateIds: [...d.templates.keys()],
      })),
    }));
  }

  /** The registry a session decodes with (including what it learned), if the session is open. */
  sessionRegistry(key: string): ElementRegistry | undefined {
    return this.sessionsByKey.get(key)?.registry;
  }

  /** The current template of a session's domain, if any. */
  template(key: string, observationDomainId: number, templateId: number): Template | undefined {
    return this.sessionsByKey.get(key)?.domains.get(observationDomainId)?.templates.get(templateId)?.template;
  }
}

function rebase(err: IpfixError, base: number): IpfixError {
  if (base === 0 || err.offset === undefined) return err;
  const detail = err.message.replace(/ \(at byte \d+\)$/, '');
  const e = new IpfixError(err.code, undefined, err.offset + base);
  e.message = `${detail} (at byte ${err.offset + base})`;
  return e;
}
