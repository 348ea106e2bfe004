/**
 * The exporting side: builds IPFIX messages bounded by a maximum size, for one observation
 * domain. Templates (and RFC 5610 type records for every enterprise element they use) go out
 * before the first record that needs them and again on each refresh (UDP, RFC 7011 8.4).
 */

import { HEADER_LENGTH, IPFIX_VERSION } from './decoder.js';
import { IpfixError } from './errors.js';
import type { IpfixRecord } from './record-codec.js';
import { ElementRegistry, type InformationElement } from './registry.js';
import {
  type FieldSpec,
  MIN_DATA_SET_ID,
  SET_ID_OPTIONS_TEMPLATE,
  SET_ID_TEMPLATE,
  Template,
} from './template.js';
import { defaultLength, lengthFitsType } from './types.js';

/** A field of a template definition: an element name, or an explicit spec. */
export type FieldDefinition = string | { name: string; length?: number } | FieldSpec;

/** Encoder settings; every field has a default. */
export interface EncoderOptions {
  observationDomainId?: number;
  /** Largest message in bytes (IPFIX header included). Default 1400: fits a 1500-byte MTU over UDP/IPv6. */
  maxMessageSize?: number;
  registry?: ElementRegistry;
  /** Resend all templates this often, ms (UDP). 0 sends them once. Default 0. */
  templateRefreshMs?: number;
  /** Announce enterprise elements with RFC 5610 type records. Default true. */
  typeRecords?: boolean;
  /** Template id of the RFC 5610 type-record options template. Default 65000. */
  typeRecordTemplateId?: number;
  /** Clock in ms; injectable for tests. */
  clock?: () => number;
  /** Receives each finished message. Without it, `flush` returns them. */
  onMessage?: (msg: Buffer) => void;
}

/** RFC 5610 3.9: the type record template (scope: PEN, element id). */
const TYPE_RECORD_FIELDS: FieldDefinition[] = [
  'privateEnterpriseNumber',
  'informationElementId',
  'informationElementDataType',
  'informationElementSemantics',
  'informationElementUnits',
  'informationElementRangeBegin',
  'informationElementRangeEnd',
  'informationElementName',
  'informationElementDescription',
];

/** An IPFIX message builder for one observation domain. */
export class IpfixEncoder {
  readonly observationDomainId: number;
  readonly maxMessageSize: number;
  readonly registry: ElementRegistry;
  private readonly templates = new Map<number, Template>();
  private readonly announced = new Set<number>();
  private readonly typeRecordsOn: boolean;
  private readonly typeTemplate: Template;
  private readonly elementsToAnnounce: InformationElement[] = [];
  private readonly announcedElements = new Set<string>();
  private readonly clock: () => number;
  private readonly refreshMs: number;
  private readonly onMessage: ((msg: Buffer) => void) | undefined;
  private readonly out: Buffer[] = [];
  private lastRefresh: number;
  /** Data records in messages already finished: the next message's sequence number. */
  private sequence = 0;
  private buf: Buffer;
  private dv: DataView;
  private pos = HEADER_LENGTH;
  private setStart = -1;
  private setId = -1;
  private recordsInMessage = 0;
  /** Counters for the exporter's metrics. */
  readonly stats = { messages: 0, records: 0, bytes: 0, templatesSent: 0, typeRecordsSent: 0 };

  constructor(options: EncoderOptions = {}) {
    this.observationDomainId = options.observationDomainId ?? 0;
    this.maxMessageSize = options.maxMessageSize ?? 1400;
    if (this.maxMessageSize < 64 || this.maxMessageSize > 65535) {
      throw new IpfixError(
        'IPFIX_ERR_BAD_TEMPLATE_DEFINITION',
        `maxMessageSize ${this.maxMessageSize} outside 64-65535`,
      );
    }
    this.registry = options.registry ?? ElementRegistry.standard();
    this.typeRecordsOn = options.typeRecords ?? true;
    this.clock = options.clock ?? Date.now;
    this.refreshMs = options.templateRefreshMs ?? 0;
    this.onMessage = options.onMessage;
    this.lastRefresh = this.clock();
    this.typeTemplate = this.build(options.typeRecordTemplateId ?? 65000, TYPE_RECORD_FIELDS, 2);
    this.buf = Buffer.alloc(this.maxMessageSize);
    this.dv = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
  }

  /** Sequence number the next message will carry. */
  get sequenceNumber(): number {
    return this.sequence;
  }

  private build(id: number, defs: readonly FieldDefinition[], scopeFieldCount: number): Template {
    if (!Number.isInteger(id) || id < MIN_DATA_SET_ID || id > 65535) {
      throw new IpfixError('IPFIX_ERR_BAD_TEMPLATE_DEFINITION', `template id ${id} outside 256-65535`);
    }
    const specs = defs.map((d): FieldSpec => {
      if (typeof d !== 'string' && 'id' in d) return { pen: d.pen, id: d.id, length: d.length };
      const name = typeof d === 'string' ? d : d.name;
      const ie = this.registry.lookupName(name);
      if (!ie) throw new IpfixError('IPFIX_ERR_UNKNOWN_ELEMENT', `${name} (template ${id})`);
      const length = typeof d === 'string' || d.length === undefined ? defaultLength(ie.type) : d.length;
      if (!lengthFitsType(ie.type, length)) {
        throw new IpfixError(
          'IPFIX_ERR_BAD_TEMPLATE_DEFINITION',
          `${name}: length ${length} in template ${id}`,
        );
      }
      return { pen: ie.pen, id: ie.id, length };
    });
    const t = new Template(id, specs, scopeFieldCount);
    t.resolve(this.registry);
    if (t.wireLength + HEADER_LENGTH + 4 > this.maxMessageSize) {
      throw new IpfixError(
        'IPFIX_ERR_BAD_TEMPLATE_DEFINITION',
        `template ${id} does not fit a ${this.maxMessageSize}-byte message`,
      );
    }
    return t;
  }

  /**
   * Defines (or redefines) a template from element names or specs. It is announced before the
   * next record that uses it. Returns the template.
   */
  defineTemplate(id: number, fields: readonly FieldDefinition[], scopeFieldCount = 0): Template {
    if (id === this.typeTemplate.id) {
      throw new IpfixError(
        'IPFIX_ERR_BAD_TEMPLATE_DEFINITION',
        `template ${id} is the RFC 5610 type-record template`,
      );
    }
    const t = this.build(id, fields, scopeFieldCount);
    this.templates.set(id, t);
    this.announced.delete(id);
    if (this.typeRecordsOn) {
      for (const f of t.fields) {
        const k = `${f.pen}/${f.id}`;
        if (
          f.pen !== 0 &&
          !this.announcedElements.has(k) &&
          !this.elementsToAnnounce.some((e) => `${e.pen}/${e.id}` === k)
        ) {
          this.elementsToAnnounce.push(f.element);
        }
      }
    }
    return t;
  }

  /** The template with this id, if defined. */
  template(id: number): Template | undefined {
    return this.templates.get(id);
  }

  /** Queues every template and type record to be sent again (call on reconnect, or let refresh do it). */
  resendTemplates(): void {
    this.announced.clear();
    for (const t of this.templates.values())
      for (const f of t.fields) if (f.pen !== 0) this.announcedElements.delete(`${f.pen}/${f.id}`);
    if (this.typeRecordsOn) {
      this.elementsToAnnounce.length = 0;
      const seen = new Set<string>();
      for (const t of this.templates.values()) {
        for (const f of t.fields) {
          const k = `${f.pen}/${f.id}`;
          if (f.pen !== 0 && !seen.has(k)) {
            seen.add(k);
            this.elementsToAnnounce.push(f.element);
          }
        }
      }
    }
    this.lastRefresh = this.clock();
  }

  /** Withdraws a template (RFC 7011 8.1); sent in the current message. */
  withdrawTemplate(id: number): void {
    const t = this.templates.get(id);
    if (!t) return;
    this.templates.delete(id);
    this.announced.delete(id);
    this.closeSet();
    this.ensureRoom(8);
    this.dv.setUint16(this.pos, t.isOptions ? SET_ID_OPTIONS_TEMPLATE : SET_ID_TEMPLATE);
    this.dv.setUint16(this.pos + 2, 8);
    this.dv.setUint16(this.pos + 4, id);
    this.dv.setUint16(this.pos + 6, 0);
    this.pos += 8;
  }

  /** Adds one data record of template `templateId`. Throws IpfixError for values that do not fit. */
  add(templateId: number, record: IpfixRecord): void {
    const t = this.templates.get(templateId);
    if (!t)
      throw new IpfixError('IPFIX_ERR_BAD_TEMPLATE_DEFINITION', `template ${templateId} is not defined`);
    if (this.refreshMs > 0 && this.clock() - this.lastRefresh >= this.refreshMs) this.resendTemplates();
    if (this.elementsToAnnounce.length > 0) this.announceElements();
    if (!this.announced.has(templateId)) this.announceTemplate(t);
    this.writeRecord(t, record);
  }

  private announceElements(): void {
    this.announceTemplate(this.typeTemplate);
    const pending = this.elementsToAnnounce.splice(0);
    for (const ie of pending) {
      this.writeRecord(this.typeTemplate, {
        privateEnterpriseNumber: ie.pen,
        informationElementId: ie.id,
        informationElementDataType: ie.type,
        informationElementSemantics: ie.semantics,
        informationElementUnits: ie.units,
        informationElementRangeBegin: ie.rangeBegin ?? 0,
        informationElementRangeEnd: ie.rangeEnd ?? 0,
        informationElementName: ie.name,
        informationElementDescription: ie.description ?? '',
      });
      this.announcedElements.add(`${ie.pen}/${ie.id}`);
      this.stats.typeRecordsSent++;
    }
  }

  private announceTemplate(t: Template): void {
    const setId = t.isOptions ? SET_ID_OPTIONS_TEMPLATE : SET_ID_TEMPLATE;
    const need = t.wireLength + (this.setId === setId ? 0 : 4);
    if (this.setId !== setId) {
      this.closeSet();
      this.ensureRoom(need);
      this.openSet(setId);
    } else if (this.pos + need > this.maxMessageSize) {
      this.finishMessage();
      this.openSet(setId);
    }
    this.pos = t.write(this.dv, this.pos);
    this.announced.add(t.id);
    this.stats.templatesSent++;
  }

  private writeRecord(t: Template, record: IpfixRecord): void {
    const enc = t.recordEncoder(this.registry);
    const size = enc.size(record);
    if (size + HEADER_LENGTH + 4 > this.maxMessageSize) {
      throw new IpfixError(
        'IPFIX_ERR_RECORD_TOO_LARGE',
        `${size}-byte record of template ${t.id}, messages hold ${this.maxMessageSize}`,
      );
    }
    if (this.setId !== t.id) {
      this.closeSet();
      this.ensureRoom(size + 4);
      this.openSet(t.id);
    } else if (this.pos + size > this.maxMessageSize) {
      this.finishMessage();
      // The new message must carry the template again only if it was never sent.
      this.openSet(t.id);
    }
    const start = this.pos;
    try {
      this.pos = enc.write(this.buf, this.dv, this.pos, record);
    } catch (err) {
      this.pos = start;
      if (this.pos === this.setStart + 4) {
        // Nothing in this set yet: take the empty set header back.
        this.pos = this.setStart;
        this.setStart = -1;
        this.setId = -1;
      }
      throw err;
    }
    this.recordsInMessage++;
  }

  private openSet(id: number): void {
    this.setStart = this.pos;
    this.setId = id;
    this.pos += 4;
  }

  private closeSet(): void {
    if (this.setStart < 0) return;
    this.dv.setUint16(this.setStart, this.setId);
    this.dv.setUint16(this.setStart + 2, this.pos - this.setStart);
    this.setStart = -1;
    this.setId = -1;
  }

  private ensureRoom(bytes: number): void {
    if (this.pos + bytes > this.maxMessageSize) this.finishMessage();
  }

  private finishMessage(): void {
    this.closeSet();
    if (this.pos === HEADER_LENGTH) return;
    const dv = this.dv;
    dv.setUint16(0, IPFIX_VERSION);
    dv.setUint16(2, this.pos);
    dv.setUint32(4, Math.floor(this.clock() / 1000) >>> 0);
    dv.setUint32(8, this.sequence);
    dv.setUint32(12, this.observationDomainId);
    const msg = Buffer.from(this.buf.subarray(0, this.pos));
    this.sequence = (this.sequence + this.recordsInMessage) >>> 0;
    this.stats.messages++;
    this.stats.records += this.recordsInMessage;
    this.stats.bytes += msg.length;
    this.recordsInMessage = 0;
    this.pos = HEADER_LENGTH;
    if (this.onMessage) this.onMessage(msg);
    else this.out.push(msg);
  }

  /** Finishes the current message; returns the messages not yet handed to `onMessage`. */
  flush(): Buffer[] {
    this.finishMessage();
    return this.out.splice(0);
  }
}
