/**
 * The information-element registry: IANA elements (generated data), kpiflow's enterprise
 * elements, and elements learned at run time from RFC 5610 type records.
 */
import { IANA_ELEMENTS } from './iana-elements.js';
import { KPIFLOW_PEN, kpiflowElements } from './kpiflow-elements.js';
import { DataType } from './types.js';

/** One information element: identity, type and meaning. */
export interface InformationElement {
  /** Private Enterprise Number; 0 for IANA elements. */
  pen: number;
  id: number;
  /** Name exactly as the registry spells it. */
  name: string;
  /** IANA data type code. */
  type: number;
  /** IANA semantics code (0 default). */
  semantics: number;
  /** IANA units code (0 none). */
  units: number;
  rangeBegin?: number | bigint;
  rangeEnd?: number | bigint;
  description?: string;
}

const key = (pen: number, id: number) => pen * 65536 + id;

/** RFC 5103 reverse information element PEN. */
export const REVERSE_PEN = 29305;

/** The name given to an element no registry knows: `ie<pen>_<id>`. */
export function unknownElementName(pen: number, id: number): string {
  return `ie${pen}_${id}`;
}

/**
 * A lookup table of information elements by (pen, id) and by name. A registry may have a
 * parent: lookups fall through to it, additions stay local (per-session learned elements).
 */
export class ElementRegistry {
  private readonly byKey = new Map<number, InformationElement>();
  private readonly byName = new Map<string, InformationElement>();
  /** Incremented on every addition, so compiled codecs know when to re-resolve names. */
  version = 0;

  constructor(private readonly parent?: ElementRegistry) {}

  /** The standard registry: IANA plus kpiflow's enterprise elements under `pen`. */
  static standard(pen: number = KPIFLOW_PEN): ElementRegistry {
    const r = new ElementRegistry();
    for (const [id, name, type, semantics, units, rangeBegin, rangeEnd] of IANA_ELEMENTS) {
      const ie: InformationElement = { pen: 0, id, name, type, semantics, units };
      if (rangeBegin !== 0 || rangeEnd !== 0) {
        ie.rangeBegin = rangeBegin;
        ie.rangeEnd = rangeEnd;
      }
      r.add(ie);
    }
    // RFC 5103 biflows: the reverse of IANA element N is PEN 29305 element N, named
    // "reverse" + its name with a capital (reverseOctetDeltaCount), same type and meaning.
    for (const ie of [...r.ownElements()]) {
      r.add({ ...ie, pen: REVERSE_PEN, name: `reverse${ie.name[0]!.toUpperCase()}${ie.name.slice(1)}` });
    }
    for (const ie of kpiflowElements(pen)) r.add(ie);
    return r;
  }

  /** A child registry whose additions do not reach this one. */
  child(): ElementRegistry {
    return new ElementRegistry(this);
  }

  /** Adds or replaces an element. */
  add(ie: InformationElement): void {
    const old = this.byKey.get(key(ie.pen, ie.id));
    if (old && this.byName.get(old.name) === old) this.byName.delete(old.name);
    this.byKey.set(key(ie.pen, ie.id), ie);
    // Names are unique per registry; an IANA name wins over an enterprise element claiming it.
    const named = this.lookupName(ie.name);
    if (named?.pen !== 0 || ie.pen === 0) this.byName.set(ie.name, ie);
    this.version++;
  }

  /** The element with this (pen, id), if known. */
  get(pen: number, id: number): InformationElement | undefined {
    return this.byKey.get(key(pen, id)) ?? this.parent?.get(pen, id);
  }

  /** The element with this name, if known. */
  lookupName(name: string): InformationElement | undefined {
    return this.byName.get(name) ?? this.parent?.lookupName(name);
  }

  /** The element with this (pen, id), or a synthetic octetArray element named `ie<pen>_<id>`. */
  resolve(pen: number, id: number): InformationElement {
    return (
      this.get(pen, id) ?? {
        pen,
        id,
        name: unknownElementName(pen, id),
        type: DataType.octetArray,
        semantics: 0,
        units: 0,
      }
    );
  }

  /** Total version including parents; changes whenever any level gains an element. */
  get fullVersion(): number {
    return this.version + (this.parent ? this.parent.fullVersion : 0);
  }

  /** Every element of this level (not the parent's). */
  ownElements(): IterableIterator<InformationElement> {
    return this.byKey.values();
  }
}
