/**
 * IPFIX codec fuzzing: seed messages, mutators, structured-random generators and the invariants
 * every input must keep (shared with fuzz.test.ts), plus a driver for long runs:
 *
 *   node dist/test/ipfix/fuzz-long.js [--cases N] [--seconds S] [--seed N] [--save DIR]
 *
 * Invariants: IpfixDecoder.decode, MessageFramer and dumpIpfix never throw; every error is an
 * IpfixError with a catalogued code, no internal exception (TypeError, RangeError...) masked as
 * one, and an offset inside the input; each input decodes fast; decoded values never outnumber
 * the input bytes; records are plain objects; a long-lived decoder stays within its caps.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import fc from 'fast-check';
import {
  type DecodeResult,
  type DecoderOptions,
  dumpIpfix,
  ElementRegistry,
  type FieldDefinition,
  IPFIX_ERRORS,
  IpfixDecoder,
  IpfixEncoder,
  IpfixError,
  kpiflowElements,
  MessageFramer,
  type Transport,
} from '../../ipfix/index.js';
import { FIXTURES } from '../helpers/tools.js';

// ---------------------------------------------------------------------------------------------
// Randomness

/** A small seeded PRNG (mulberry32): fast, and a failing run replays from its seed. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return n <= 1 ? 0 : this.u32() % n;
  }
  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.u32() < p * 4294967296;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

/** A fresh random seed, or FUZZ_SEED from the environment to replay a run. */
export function runSeed(): number {
  const env = process.env['FUZZ_SEED'];
  return env ? Number(env) >>> 0 : (Math.random() * 4294967296) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Invariants

/** A decode call (or a whole case) slower than this is a hang. Generous: the machine is noisy. */
export const HANG_MS = 200;

/** Internal exceptions the decoder's defensive catch would turn into IPFIX_ERR_RECORD. */
const INTERNAL = /\b(?:TypeError|RangeError|ReferenceError|SyntaxError|EvalError|Maximum call stack)\b/;

/** Asserts `e` is a catalogued IpfixError with a sane offset (at most `limit`). */
export function checkError(e: unknown, limit: number, where: string): void {
  if (!(e instanceof IpfixError)) assert.fail(`${where}: not an IpfixError: ${String(e)}`);
  assert.ok(Object.hasOwn(IPFIX_ERRORS, e.code), `${where}: unknown code ${e.code}`);
  assert.ok(!INTERNAL.test(e.message), `${where}: internal exception reported as ${e.code}: ${e.message}`);
  if (e.offset !== undefined) {
    assert.ok(
      Number.isInteger(e.offset) && e.offset >= 0 && e.offset <= limit,
      `${where}: offset ${e.offset} outside [0, ${limit}]: ${e.message}`,
    );
  }
}

/**
 * Checks one decode result; returns how many values it decoded (records x fields). Errors from
 * a delayed set are relative to that set, which came with an earlier message: hence the 65535.
 */
export function checkResult(res: DecodeResult, msg: Uint8Array, base: number, where = 'decode'): number {
  for (const e of res.errors) checkError(e, base + Math.max(msg.length, 65535), where);
  let values = 0;
  for (const ds of res.dataSets) {
    assert.ok(ds.templateId >= 256, `${where}: data set ${ds.templateId}`);
    for (const r of ds.records) {
      if (Object.getPrototypeOf(r) !== Object.prototype) {
        assert.fail(
          `${where}: record of template ${ds.templateId} has a foreign prototype (element named __proto__?)`,
        );
      }
    }
    values += ds.records.length * ds.template.specs.length;
  }
  return values;
}

/** Caps of the long-lived decoder in the mutation run: small, so the fuzzer reaches them. */
export const FUZZ_CAPS = {
  maxSessions: 24,
  maxDomainsPerSession: 4,
  maxTemplatesPerDomain: 48,
  maxPendingSets: 8,
  maxPendingBytes: 16 * 1024,
  maxLearnedElements: 32,
  templateLifetimeMs: 60_000,
  pendingTimeoutMs: 20_000,
} satisfies DecoderOptions;

const KPIFLOW_COUNT = kpiflowElements().length;

/** Asserts the decoder's state is within `caps` (sessions, domains, templates, pending, learned). */
export function checkState(dec: IpfixDecoder, caps: typeof FUZZ_CAPS): void {
  const sessions = dec.sessions();
  assert.ok(sessions.length <= caps.maxSessions, `${sessions.length} sessions > ${caps.maxSessions}`);
  for (const s of sessions) {
    assert.ok(s.domains.length <= caps.maxDomainsPerSession, `${s.key}: ${s.domains.length} domains`);
    for (const d of s.domains) {
      assert.ok(
        d.templateIds.length <= caps.maxTemplatesPerDomain,
        `${s.key}/${d.observationDomainId}: ${d.templateIds.length} templates`,
      );
      assert.equal(d.stats.templates, d.templateIds.length);
      assert.ok(d.stats.pendingSets <= caps.maxPendingSets, `${s.key}: ${d.stats.pendingSets} pending sets`);
    }
    let own = 0;
    for (const _ of dec.sessionRegistry(s.key)!.ownElements()) own++;
    // Learned elements are capped; re-typing kpiflow's own elements does not count against it.
    assert.ok(own <= caps.maxLearnedElements + KPIFLOW_COUNT, `${s.key}: ${own} learned elements`);
  }
}

/** Heap in use after a full collection when one is available (--expose-gc or a v8 flag). */
export function heapAfterGc(): { bytes: number; gc: boolean } {
  const gc = getGc();
  if (gc) {
    gc();
    gc();
  }
  return { bytes: process.memoryUsage().heapUsed, gc: gc !== undefined };
}

let gcFn: (() => void) | undefined | null = null;
function getGc(): (() => void) | undefined {
  if (gcFn !== null) return gcFn;
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) gcFn = g;
  else {
    try {
      v8.setFlagsFromString('--expose-gc');
      gcFn = vm.runInNewContext('gc') as () => void;
    } catch {
      gcFn = undefined;
    }
  }
  return gcFn;
}

// ---------------------------------------------------------------------------------------------
// Seed messages

/** Enterprise number of the fuzz elements (RFC 5612 documentation PEN). */
export const FUZZ_PEN = 32473;

/** One enterprise element per RFC 7012 type and legal length, named fz_<type>_<length|var>. */
export interface FuzzElement {
  name: string;
  type: number;
  /** Field length in templates: VARLEN (65535) for variable length. */
  length: number;
}

const TYPE_LENGTHS: [type: number, lengths: number[]][] = [
  [0, [65535, 1, 5, 16]], // octetArray
  [1, [1]],
  [2, [2, 1]],
  [3, [4, 3, 2, 1]],
  [4, [8, 7, 6, 5, 4, 3, 2, 1]],
  [5, [1]],
  [6, [2, 1]],
  [7, [4, 3, 2, 1]],
  [8, [8, 7, 6, 5, 4, 3, 2, 1]],
  [9, [4]],
  [10, [8, 4]],
  [11, [1]],
  [12, [6]],
  [13, [65535, 1, 16, 300]], // string
  [14, [4]],
  [15, [8]],
  [16, [8]],
  [17, [8]],
  [18, [4]],
  [19, [16]],
];

const TYPE_NAMES = [
  'octetArray',
  'unsigned8',
  'unsigned16',
  'unsigned32',
  'unsigned64',
  'signed8',
  'signed16',
  'signed32',
  'signed64',
  'float32',
  'float64',
  'boolean',
  'macAddress',
  'string',
  'dateTimeSeconds',
  'dateTimeMilliseconds',
  'dateTimeMicroseconds',
  'dateTimeNanoseconds',
  'ipv4Address',
  'ipv6Address',
];

/** Every fuzz element, in a stable order (ids 1..n under FUZZ_PEN). */
export const FUZZ_ELEMENTS: FuzzElement[] = TYPE_LENGTHS.flatMap(([type, lengths]) =>
  lengths.map((length) => ({
    name: `fz_${TYPE_NAMES[type]}_${length === 65535 ? 'var' : length}`,
    type,
    length,
  })),
);

/** The standard registry plus the fuzz elements. */
export function fuzzRegistry(): ElementRegistry {
  const r = ElementRegistry.standard();
  FUZZ_ELEMENTS.forEach((e, i) => {
    r.add({ pen: FUZZ_PEN, id: i + 1, name: e.name, type: e.type, semantics: 0, units: 0 });
  });
  return r;
}

/** A valid value for an element of `type` in a field of `length` bytes (as the encoder takes it). */
export function randomValue(rng: Rng, type: number, length: number): unknown {
  const varlen = length === 65535;
  switch (type) {
    case 0:
      return rng.bytes(varlen ? rng.pick([0, 1, 3, 40, 254, 255, 300]) : rng.int(length + 1));
    case 1:
    case 2:
    case 3:
    case 4: {
      if (length >= 7 && rng.chance(0.3)) return BigInt.asUintN(length * 8, BigInt(rng.u32()) << 24n);
      return rng.int(2 ** Math.min(length * 8, 32));
    }
    case 5:
    case 6:
    case 7:
    case 8: {
      const bits = Math.min(length * 8, 32);
      return rng.int(2 ** bits) - 2 ** (bits - 1);
    }
    case 9:
    case 10:
      return rng.pick([0, -0, 1.5, -2.25, 3.4e38, Number.NaN, Number.POSITIVE_INFINITY, rng.u32() / 7]);
    case 11:
      return rng.chance(0.5);
    case 12:
      return [...rng.bytes(6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
    case 13: {
      const s = rng.pick(['', 'eth0', 'wlan0 ünïcödé', 'x'.repeat(260), '\u{1F600} flow', 'tail\0\0']);
      return varlen
        ? s
        : Buffer.from(s)
            .subarray(0, length)
            .toString('latin1')
            .replace(/[^\x20-\x7e]/g, '');
    }
    case 14:
      return rng.u32();
    case 15:
      return 1_600_000_000_000 + rng.int(1e9);
    case 16:
      return 1_600_000_000_000_000 + rng.int(1e9);
    case 17:
      return 1_600_000_000_000_000_000n + BigInt(rng.u32());
    case 18:
      return [...rng.bytes(4)].join('.');
    case 19:
      return rng.pick(['::1', '2001:db8::42', 'fe80::1:2:3:4', '::ffff:192.0.2.1', '2001:db8:1:2:3:4:5:6']);
    default:
      return 0;
  }
}

/** A Flowcorder TCP profile record template (IANA and PEN 65534 elements). */
export const PROFILE_FIELDS: FieldDefinition[] = [
  'flowId',
  'sourceIPv4Address',
  'destinationIPv4Address',
  'sourceTransportPort',
  'destinationTransportPort',
  'protocolIdentifier',
  'ipVersion',
  'flowStartMilliseconds',
  'flowEndMilliseconds',
  'flowStartReason',
  'flowEndReason',
  'transferredOctetTotalCount',
  'receivedOctetTotalCount',
  'retransmittedPacketTotalCount',
  'meanLatencyMilliseconds',
  'duplicatePacketTotalCount',
  'duplicateOctetTotalCount',
  'stallCount',
  'reorderingPacketCount',
  'reorderingOctetCount',
  'meanReorderingDistance',
];

/** A profile record with counters in realistic ranges. */
export function profileRecord(i: number): Record<string, number | string> {
  return {
    flowId: 1_000_000 + i,
    sourceIPv4Address: `10.0.${(i >> 8) & 255}.${i & 255}`,
    destinationIPv4Address: '192.0.2.80',
    sourceTransportPort: 32768 + (i % 28000),
    destinationTransportPort: 443,
    protocolIdentifier: 6,
    ipVersion: 4,
    flowStartMilliseconds: 1_700_000_000_000 + i * 10,
    flowEndMilliseconds: 1_700_000_000_500 + i * 10,
    flowStartReason: 1 + (i % 7),
    flowEndReason: 1 + (i % 5),
    transferredOctetTotalCount: 1_000_000 + i * 1460,
    receivedOctetTotalCount: 50_000 + i * 7,
    retransmittedPacketTotalCount: i % 13,
    meanLatencyMilliseconds: 20 + (i % 200),
    duplicatePacketTotalCount: i % 3,
    duplicateOctetTotalCount: (i % 3) * 1460,
    stallCount: i % 2,
    reorderingPacketCount: i % 11,
    reorderingOctetCount: (i % 11) * 1460,
    meanReorderingDistance: i % 4,
  };
}

/** Hand-made RFC 6313 list values (the encoder writes list fields as raw octets). */
function listBytes(rng: Rng): { basic: Buffer; stl: Buffer; stml: Buffer } {
  // basicList of sourceIPv4Address (8), 4 bytes each; then of interfaceName, variable length.
  const basic = rng.chance(0.5)
    ? Buffer.concat([Buffer.from([3, 0, 8, 0, 4]), rng.bytes(4 * rng.int(4))])
    : Buffer.concat([Buffer.from([3, 0, 82, 0xff, 0xff, 4]), Buffer.from('eth0'), Buffer.from([0])]);
  const stl = Buffer.concat([Buffer.from([3, 1, 0]), rng.bytes(rng.int(12))]);
  const block = rng.bytes(rng.int(8));
  const stml = Buffer.concat([Buffer.from([3, 1, 1, 0, 4 + block.length]), block, Buffer.from([1, 2, 0, 4])]);
  return { basic, stl, stml };
}

/**
 * Valid messages from IpfixEncoder with varied templates: the profile (enterprise elements and
 * RFC 5610 type records), strings and octet arrays of variable and fixed length, options
 * templates, every type and reduced-size encoding, RFC 6313 lists, IPv6, withdrawals.
 */
export function encoderSeeds(seed = 1): Buffer[] {
  const rng = new Rng(seed);
  const out: Buffer[] = [];
  const reg = fuzzRegistry();
  for (const maxMessageSize of [512, 1400, 9000]) {
    const enc = new IpfixEncoder({
      registry: reg,
      maxMessageSize,
      observationDomainId: rng.pick([0, 1, 42]),
      clock: () => 1_700_000_000_000,
    });
    enc.defineTemplate(256, PROFILE_FIELDS);
    enc.defineTemplate(257, [
      'interfaceName',
      { name: 'samplerName', length: 16 },
      'mplsTopLabelStackSection',
      { name: 'applicationDescription', length: 8 },
      'sourceIPv6Address',
      'destinationIPv6Address',
      'flowStartNanoseconds',
      'flowEndMicroseconds',
      'sourceMacAddress',
    ]);
    enc.defineTemplate(
      258,
      [
        'observationDomainId',
        'meteringProcessId',
        'exportedMessageTotalCount',
        'exportedFlowRecordTotalCount',
      ],
      2,
    );
    enc.defineTemplate(
      259,
      FUZZ_ELEMENTS.map((e) => ({ name: e.name, length: e.length })),
    );
    enc.defineTemplate(260, ['basicList', 'subTemplateList', 'subTemplateMultiList', 'octetDeltaCount']);
    enc.defineTemplate(261, [
      { name: 'octetDeltaCount', length: 4 },
      { name: 'packetDeltaCount', length: 2 },
      { name: 'samplingProbability', length: 4 },
      'dataRecordsReliability',
      'flowStartSeconds',
    ]);
    const add = (id: number, rec: Record<string, unknown>) => {
      try {
        enc.add(id, rec as never);
      } catch (err) {
        // A value the template cannot hold (a random string too long for a small message): skip.
        if (!(err instanceof IpfixError)) throw err;
      }
    };
    for (let i = 0; i < 12; i++) add(256, profileRecord(rng.u32() & 0xffff));
    for (let i = 0; i < 6; i++) {
      add(257, {
        interfaceName: randomValue(rng, 13, 65535),
        samplerName: 'sampler-1',
        mplsTopLabelStackSection: rng.bytes(rng.int(6)),
        applicationDescription: 'app',
        sourceIPv6Address: randomValue(rng, 19, 16),
        destinationIPv6Address: '2001:db8::1',
        flowStartNanoseconds: randomValue(rng, 17, 8),
        flowEndMicroseconds: randomValue(rng, 16, 8),
        sourceMacAddress: randomValue(rng, 12, 6),
      });
    }
    add(258, {
      observationDomainId: 1,
      meteringProcessId: 7,
      exportedMessageTotalCount: 1000,
      exportedFlowRecordTotalCount: 12345,
    });
    for (let i = 0; i < 3; i++) {
      const rec: Record<string, unknown> = {};
      for (const e of FUZZ_ELEMENTS) rec[e.name] = randomValue(rng, e.type, e.length);
      add(259, rec);
    }
    for (let i = 0; i < 4; i++) {
      const l = listBytes(rng);
      add(260, {
        basicList: l.basic,
        subTemplateList: l.stl,
        subTemplateMultiList: l.stml,
        octetDeltaCount: i,
      });
    }
    add(261, {
      octetDeltaCount: 5,
      packetDeltaCount: 1,
      samplingProbability: 0.5,
      dataRecordsReliability: true,
      flowStartSeconds: 1_700_000_000,
    });
    out.push(...enc.flush());
    enc.withdrawTemplate(257);
    enc.withdrawTemplate(258);
    add(256, profileRecord(1));
    out.push(...enc.flush());
  }
  return out;
}

/** Splits a byte stream into its messages (as far as framing holds). */
export function frame(stream: Buffer): Buffer[] {
  const f = new MessageFramer();
  const out = f.push(stream).map((m) => Buffer.from(m.bytes));
  f.end();
  return out;
}

/** Messages of the real captures: ipfixcol's test files and ipfixcol2's example flows. */
export function captureSeeds(): Buffer[] {
  const out: Buffer[] = [];
  const dirs = [join(FIXTURES, 'ipfix/ipfixcol')];
  for (const d of dirs) {
    for (const name of readdirSync(d).sort())
      if (name.endsWith('.ipfix')) out.push(...frame(readFileSync(join(d, name))));
  }
  const example = frame(readFileSync(join(FIXTURES, 'ipfix/ipfixcol2/example_flows.ipfix')));
  // The example file is large; a spread of its messages keeps every template in play.
  const step = Math.max(1, Math.floor(example.length / 200));
  for (let i = 0; i < example.length; i += step) out.push(example[i]!);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Mutation

/** Offsets of the sets of a message, as far as their lengths chain. */
export function walkSets(m: Buffer): { at: number; id: number; length: number }[] {
  const out: { at: number; id: number; length: number }[] = [];
  let o = 16;
  while (o + 4 <= m.length) {
    const id = m.readUInt16BE(o);
    const length = m.readUInt16BE(o + 2);
    if (length < 4 || o + length > m.length) break;
    out.push({ at: o, id, length });
    o += length;
  }
  return out;
}

/** Offsets of the template records (their id field) in the template sets of a message. */
export function walkTemplates(m: Buffer): { at: number; options: boolean }[] {
  const out: { at: number; options: boolean }[] = [];
  for (const s of walkSets(m)) {
    if (s.id !== 2 && s.id !== 3) continue;
    const end = s.at + s.length;
    let o = s.at + 4;
    while (end - o >= 4) {
      const count = m.readUInt16BE(o + 2);
      out.push({ at: o, options: s.id === 3 });
      o += s.id === 3 && count > 0 ? 6 : 4;
      for (let i = 0; i < count && end - o >= 4; i++) o += m.readUInt16BE(o) & 0x8000 ? 8 : 4;
    }
  }
  return out;
}

const INTERESTING_8 = [0, 1, 2, 3, 0x7f, 0x80, 0xfe, 0xff];
const INTERESTING_16 = [0, 1, 2, 3, 4, 5, 10, 16, 255, 256, 257, 0x7fff, 0x8000, 0xfffe, 0xffff];
const SET_IDS = [0, 1, 2, 3, 4, 255, 256, 257, 258, 259, 260, 261, 65000, 65535];

/** Applies 1-4 random mutations to a copy of `msg`; `seeds` supplies splice material. */
export function mutate(rng: Rng, seeds: readonly Buffer[], msg: Buffer): Buffer {
  let m = Buffer.from(msg);
  const n = 1 + (rng.chance(0.5) ? 0 : rng.int(4));
  for (let k = 0; k < n; k++) {
    if (m.length === 0) m = Buffer.from(rng.pick(seeds));
    switch (rng.int(12)) {
      case 0: {
        const i = rng.int(m.length);
        m[i] = m[i]! ^ (1 << rng.int(8));
        break;
      }
      case 1:
        m[rng.int(m.length)] = rng.chance(0.7) ? rng.pick(INTERESTING_8) : rng.u32() & 0xff;
        break;
      case 2:
        if (m.length >= 2) m.writeUInt16BE(rng.pick(INTERESTING_16), rng.int(m.length - 1));
        break;
      case 3:
        m = m.subarray(0, rng.int(m.length));
        break;
      case 4: {
        const extra = rng.chance(0.5) ? rng.bytes(rng.range(1, 64)) : rng.pick(seeds).subarray(16);
        m = Buffer.concat([m, extra]);
        break;
      }
      case 5: {
        const sets = walkSets(m);
        if (sets.length === 0) break;
        const s = rng.pick(sets);
        const v = rng.chance(0.5)
          ? s.length + rng.range(-8, 8)
          : rng.chance(0.5)
            ? rng.pick(INTERESTING_16)
            : rng.int(65536);
        m.writeUInt16BE(v & 0xffff, s.at + 2);
        break;
      }
      case 6: {
        const sets = walkSets(m);
        if (sets.length === 0) break;
        m.writeUInt16BE(rng.chance(0.8) ? rng.pick(SET_IDS) : rng.int(65536), rng.pick(sets).at);
        break;
      }
      case 7: {
        const ts = walkTemplates(m);
        if (ts.length === 0) break;
        const t = rng.pick(ts);
        const which = rng.int(t.options ? 4 : 3);
        if (which === 0) {
          // Field count.
          const c = m.readUInt16BE(t.at + 2);
          m.writeUInt16BE(
            (rng.chance(0.5) ? c + rng.range(-3, 3) : rng.pick(INTERESTING_16)) & 0xffff,
            t.at + 2,
          );
        } else if (which === 1) {
          // Template id.
          m.writeUInt16BE(rng.chance(0.7) ? rng.pick(SET_IDS) : rng.int(65536), t.at);
        } else if (which === 2) {
          // A field length inside the record.
          const o = t.at + (t.options ? 6 : 4) + 4 * rng.int(4) + 2;
          if (o + 2 <= m.length) m.writeUInt16BE(rng.pick([0, 1, 2, 4, 8, 16, 255, 0xfffe, 0xffff]), o);
        } else if (t.at + 6 <= m.length) {
          // Scope field count.
          m.writeUInt16BE(rng.pick([0, 1, 2, 3, 0xffff]), t.at + 4);
        }
        break;
      }
      case 8: {
        const other = rng.pick(seeds);
        const a = rng.int(m.length + 1);
        const b = rng.int(other.length + 1);
        m = Buffer.concat([m.subarray(0, a), other.subarray(b)]);
        break;
      }
      case 9: {
        // Splice whole sets of another message in (templates meet foreign data and vice versa).
        const other = rng.pick(seeds);
        const os = walkSets(other);
        if (os.length === 0) break;
        const s = rng.pick(os);
        const at = rng.chance(0.5) ? 16 : m.length;
        m = Buffer.concat([m.subarray(0, at), other.subarray(s.at, s.at + s.length), m.subarray(at)]);
        break;
      }
      case 10: {
        // Duplicate or drop a set.
        const sets = walkSets(m);
        if (sets.length === 0) break;
        const s = rng.pick(sets);
        const body = m.subarray(s.at, s.at + s.length);
        m = rng.chance(0.5)
          ? Buffer.concat([m.subarray(0, s.at + s.length), body, m.subarray(s.at + s.length)])
          : Buffer.concat([m.subarray(0, s.at), m.subarray(s.at + s.length)]);
        break;
      }
      default:
        // Header fields: domain, sequence number, export time.
        if (m.length >= 16) m.writeUInt32BE(rng.chance(0.7) ? rng.int(6) : rng.u32(), rng.pick([4, 8, 12]));
        break;
    }
  }
  // Most of the time keep the header consistent, so decoding reaches the sets.
  if (m.length >= 4 && m.length <= 65535 && rng.chance(0.85)) {
    m.writeUInt16BE(10, 0);
    m.writeUInt16BE(m.length, 2);
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// Structured random messages (fast-check): a valid header and random sets

const u16 = (v: number) => [(v >> 8) & 0xff, v & 0xff];
const u32 = (v: number) => [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];

/** Element ids worth hitting: every type, the RFC 6313 lists, the RFC 5610 elements. */
const IANA_IDS = [
  1, 2, 4, 6, 7, 8, 10, 27, 56, 82, 89, 136, 150, 152, 154, 156, 291, 292, 293, 303, 311, 339, 341, 346, 434,
];
/** Names RFC 5610 records try to teach, some hostile. */
const LEARN_NAMES = [
  'fzLearned',
  'sourceIPv4Address',
  'flowStartReason',
  '__proto__',
  'constructor',
  'toString',
  'x',
  'a_1',
];

const fieldArb = fc.oneof(
  fc.record({
    pen: fc.constant(0),
    id: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...IANA_IDS) }, fc.integer({ min: 0, max: 0x7fff })),
    length: fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom(0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 65535) },
      fc.integer({ min: 0, max: 0xffff }),
    ),
  }),
  fc.record({
    pen: fc.constantFrom(65534, FUZZ_PEN, 1, 0xffffffff),
    id: fc.integer({ min: 1, max: 20 }),
    length: fc.constantFrom(0, 1, 2, 4, 8, 65535),
  }),
);
type FieldArb = { pen: number; id: number; length: number };

function fieldBytes(f: FieldArb): number[] {
  return f.pen ? [...u16(f.id | 0x8000), ...u16(f.length), ...u32(f.pen)] : [...u16(f.id), ...u16(f.length)];
}

const templateIdArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(256, 257, 258, 259) },
  fc.integer({ min: 0, max: 0xffff }),
);

/** A template set (2) or options template set (3) body. */
const templateSetArb = fc
  .record({
    options: fc.boolean(),
    records: fc.array(
      fc.record({
        id: templateIdArb,
        fields: fc.array(fieldArb, { maxLength: 12 }),
        scope: fc.integer({ min: 0, max: 3 }),
        countDelta: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, fc.integer({ min: -2, max: 2 })),
        withdraw: fc.boolean(),
      }),
      { minLength: 1, maxLength: 3 },
    ),
  })
  .map(({ options, records }) => {
    const body: number[] = [];
    for (const r of records) {
      if (r.withdraw && r.fields.length === 0) {
        body.push(...u16(r.id), 0, 0);
        continue;
      }
      body.push(...u16(r.id), ...u16((r.fields.length + r.countDelta) & 0xffff));
      if (options) body.push(...u16(r.scope));
      for (const f of r.fields) body.push(...fieldBytes(f));
    }
    return { id: options ? 3 : 2, body: Uint8Array.from(body) };
  });

/** An RFC 5610 type-record options template (id 400) and type records for FUZZ_PEN/65534 elements. */
const typeRecordSetsArb = fc
  .array(
    fc.record({
      pen: fc.constantFrom(FUZZ_PEN, 65534, 0),
      id: fc.integer({ min: 1, max: 20 }),
      type: fc.integer({ min: 0, max: 25 }),
      name: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...LEARN_NAMES) }, fc.string({ maxLength: 12 })),
    }),
    { minLength: 1, maxLength: 4 },
  )
  .map((recs) => {
    // Scope: privateEnterpriseNumber (346, 4), informationElementId (303, 2); then
    // informationElementDataType (339, 1), informationElementName (341, variable).
    const tmpl = [...u16(400), ...u16(4), ...u16(2), ...u16(346), ...u16(4), ...u16(303), ...u16(2)];
    tmpl.push(...u16(339), ...u16(1), ...u16(341), ...u16(65535));
    const data: number[] = [];
    for (const r of recs) {
      const name = Buffer.from(r.name);
      data.push(
        ...u32(r.pen),
        ...u16(r.id),
        r.type & 0xff,
        Math.min(name.length, 254),
        ...name.subarray(0, 254),
      );
    }
    return [
      { id: 3, body: Uint8Array.from(tmpl) },
      { id: 400, body: Uint8Array.from(data) },
    ];
  });

const dataSetArb = fc.record({
  id: fc.oneof(
    { weight: 5, arbitrary: fc.constantFrom(256, 257, 258, 259, 400) },
    fc.integer({ min: 0, max: 0xffff }),
  ),
  body: fc.uint8Array({ maxLength: 160 }),
});

const setsArb = fc.oneof(
  { weight: 3, arbitrary: templateSetArb.map((s) => [s]) },
  { weight: 1, arbitrary: typeRecordSetsArb },
  { weight: 4, arbitrary: dataSetArb.map((s) => [s]) },
);

/** One message: valid header, random sets, sometimes a lying set length or stray tail bytes. */
export const structuredMessageArb = fc
  .record({
    domain: fc.constantFrom(0, 1, 7, 0xffffffff),
    sequence: fc.oneof(fc.constantFrom(0, 1, 0xffffffff), fc.nat()),
    sets: fc.array(
      fc.record({
        sets: setsArb,
        lie: fc.oneof({ weight: 12, arbitrary: fc.constant(0) }, fc.integer({ min: -6, max: 6 })),
      }),
      { maxLength: 6 },
    ),
    tail: fc.oneof({ weight: 6, arbitrary: fc.constant(new Uint8Array(0)) }, fc.uint8Array({ maxLength: 5 })),
  })
  .map(({ domain, sequence, sets, tail }) => {
    const parts: number[] = [];
    for (const { sets: ss, lie } of sets) {
      for (const s of ss) parts.push(...u16(s.id), ...u16((s.body.length + 4 + lie) & 0xffff), ...s.body);
    }
    parts.push(...tail);
    const len = 16 + parts.length;
    return Buffer.from([
      ...u16(10),
      ...u16(len & 0xffff),
      ...u32(1_700_000_000),
      ...u32(sequence),
      ...u32(domain),
      ...parts,
    ]);
  });

/** A structured case: a few messages on one session. */
export const structuredCaseArb = fc.record({
  transport: fc.constantFrom<Transport>('udp', 'tcp', 'sctp', 'file'),
  messages: fc.array(structuredMessageArb, { minLength: 1, maxLength: 4 }),
});

// ---------------------------------------------------------------------------------------------
// Case runners

/** Decodes `messages` on a fresh session of `dec`; checks every invariant; returns elapsed ms. */
export function runMessages(
  dec: IpfixDecoder,
  key: string,
  messages: readonly Uint8Array[],
  transport: Transport,
): number {
  const t0 = performance.now();
  let bytes = 0;
  let values = 0;
  for (const m of messages) {
    bytes += m.length;
    values += checkResult(dec.decode(key, m, transport), m, 0);
  }
  const closed = dec.closeSession(key);
  for (const e of closed.errors) checkError(e, 65535, 'closeSession');
  // A record needs at least one byte per field it decodes, templates with zero-length fields
  // aside: the values one input produces never outnumber its bytes (no decode amplification).
  assert.ok(values <= bytes, `${values} values decoded from ${bytes} bytes`);
  return performance.now() - t0;
}

/**
 * Runs a stateless case and asserts it was fast. A slow run is retried twice on a fresh decoder
 * (a GC pause or a noisy neighbour is not a hang); only a consistently slow input fails.
 */
export function runTimed(
  dec: IpfixDecoder,
  key: string,
  messages: readonly Uint8Array[],
  transport: Transport,
  registry: ElementRegistry,
): void {
  let ms = runMessages(dec, key, messages, transport);
  for (let i = 0; i < 2 && ms > HANG_MS; i++) {
    ms = Math.min(ms, runMessages(new IpfixDecoder({ registry }), key, messages, transport));
  }
  assert.ok(ms <= HANG_MS, `slow input: ${ms.toFixed(0)} ms (bound ${HANG_MS} ms)`);
}

/** Framer invariants on one stream split into `chunks`. */
export function runFramer(chunks: readonly Uint8Array[]): void {
  const stream = Buffer.concat(chunks);
  const f = new MessageFramer();
  let next = 0;
  for (const c of chunks) {
    for (const m of f.push(Buffer.from(c))) {
      assert.equal(m.offset, next, 'messages follow each other');
      assert.ok(m.bytes.length >= 16 && m.offset + m.bytes.length <= stream.length);
      assert.ok(m.bytes.equals(stream.subarray(m.offset, m.offset + m.bytes.length)), 'framed bytes');
      assert.equal(m.bytes.readUInt16BE(0), 10);
      assert.equal(m.bytes.readUInt16BE(2), m.bytes.length);
      next += m.bytes.length;
    }
  }
  const err = f.end();
  if (err) checkError(err, stream.length, 'framer');
  else assert.equal(next, stream.length, 'no error means every byte was framed');
  assert.ok(f.position <= stream.length);
}

const sink = () =>
  new Writable({
    write(_chunk, _enc, cb) {
      cb();
    },
  });

/** dumpIpfix invariants on one stream: resolves, counts every byte, offsets inside the input. */
export async function runDump(chunks: readonly Uint8Array[]): Promise<void> {
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const errors: IpfixError[] = [];
  const t0 = performance.now();
  const summary = await dumpIpfix(Readable.from(chunks.map((c) => Buffer.from(c))), sink(), {
    templates: true,
    onError: (e) => errors.push(e),
  });
  const ms = performance.now() - t0;
  for (const e of errors) checkError(e, total, 'dump');
  assert.equal(summary.errors, errors.length);
  assert.ok(summary.bytes <= total);
  assert.ok(ms <= HANG_MS * 5, `dump took ${ms.toFixed(0)} ms`);
}

/** Stream chunks: valid, mutated and random messages back to back, cut at random places. */
export function randomStream(rng: Rng, seeds: readonly Buffer[]): Buffer[] {
  const parts: Buffer[] = [];
  const n = rng.range(0, 6);
  for (let i = 0; i < n; i++) {
    const r = rng.int(10);
    if (r < 5) parts.push(rng.pick(seeds));
    else if (r < 9) parts.push(mutate(rng, seeds, rng.pick(seeds)));
    else parts.push(rng.bytes(rng.int(40)));
  }
  const stream = Buffer.concat(parts);
  const chunks: Buffer[] = [];
  let o = 0;
  while (o < stream.length) {
    const l = rng.chance(0.3) ? rng.range(1, 20) : rng.range(1, 2000);
    chunks.push(stream.subarray(o, o + l));
    o += l;
  }
  return chunks;
}

// ---------------------------------------------------------------------------------------------
// The long-lived decoder of the mutation run

/** A decoder with many sessions, a fake clock, expiry and session churn, checked as it goes. */
export class MutationRun {
  readonly decoder: IpfixDecoder;
  readonly keys: string[];
  cases = 0;
  slowest = 0;
  now = 1_000_000;

  constructor(
    readonly rng: Rng,
    readonly seeds: readonly Buffer[],
    readonly caps = FUZZ_CAPS,
    registry: ElementRegistry = fuzzRegistry(),
  ) {
    this.decoder = new IpfixDecoder({ ...caps, registry, clock: () => this.now });
    // More exporters than the session cap, so the cap is reached.
    this.keys = Array.from({ length: caps.maxSessions + 8 }, (_, i) => `198.51.100.${i}:4739`);
  }

  /** Mutates a seed (or a previous mutant) and decodes it; returns the input. */
  step(): Buffer {
    const rng = this.rng;
    const base = rng.pick(this.seeds);
    const msg = rng.chance(0.05) ? base : mutate(rng, this.seeds, base);
    const key = rng.pick(this.keys);
    const transport: Transport = rng.chance(0.6) ? 'udp' : rng.pick(['tcp', 'sctp', 'file'] as const);
    this.now += rng.int(2000);
    const t0 = performance.now();
    const res = this.decoder.decode(key, msg, transport, rng.chance(0.1) ? rng.int(1 << 20) : 0);
    const ms = performance.now() - t0;
    checkResult(res, msg, 1 << 20, 'mutation');
    if (ms > this.slowest) this.slowest = ms;
    if (ms > HANG_MS) {
      // Retime on a fresh decoder: the state may differ, but a hang is a hang.
      const again = Math.min(
        ...[0, 1].map(() => {
          const d = new IpfixDecoder({ ...this.caps, registry: fuzzRegistry() });
          const t = performance.now();
          d.decode(key, msg, transport);
          return performance.now() - t;
        }),
      );
      assert.ok(again <= HANG_MS, `slow input: ${again.toFixed(0)} ms (bound ${HANG_MS} ms)`);
    }
    this.cases++;
    if (this.cases % 97 === 0) {
      for (const e of this.decoder.expire().errors) checkError(e, 65535, 'expire');
    }
    if (this.cases % 331 === 0) {
      for (const e of this.decoder.closeSession(rng.pick(this.keys)).errors) checkError(e, 65535, 'close');
    }
    if (this.cases % 1000 === 0) checkState(this.decoder, this.caps);
    return msg;
  }
}

// ---------------------------------------------------------------------------------------------
// Regression inputs

/** Folder of inputs that once broke the codec (replayed by fuzz.test.ts). */
export const REGRESSIONS_DIR = fileURLToPath(
  new URL('../../../test/fixtures/fuzz-regressions/', import.meta.url),
);

/** Saves a crashing input for the regression folder (or `dir`); returns its path. */
export function saveCrash(bytes: Uint8Array, name: string, dir = REGRESSIONS_DIR): string {
  mkdirSync(dir, { recursive: true });
  const p = join(dir, `${name}.bin`);
  writeFileSync(p, bytes);
  return p;
}

/** Replays one saved input (an RFC 5655 stream): framer, decoder per message, dumpIpfix. */
export async function replay(bytes: Buffer): Promise<{ ms: number; values: number; errors: number }> {
  const t0 = performance.now();
  const dec = new IpfixDecoder();
  const f = new MessageFramer();
  let values = 0;
  let errors = 0;
  const messages = f.push(bytes);
  const endErr = f.end();
  if (endErr) checkError(endErr, bytes.length, 'framer');
  // A file that does not frame (a single UDP payload with a lying length) decodes as one message.
  const inputs = messages.length > 0 ? messages : [{ offset: 0, bytes }];
  for (const m of inputs) {
    const res = dec.decode('replay', m.bytes, 'file', m.offset);
    values += checkResult(res, m.bytes, m.offset, 'replay');
    errors += res.errors.length;
  }
  await runDump([bytes]);
  return { ms: performance.now() - t0, values, errors };
}

// ---------------------------------------------------------------------------------------------
// The long-run driver

function parseArgs(argv: string[]): { cases: number; seconds: number; seed: number; save: string } {
  const opt = { cases: Number.POSITIVE_INFINITY, seconds: 60, seed: runSeed(), save: '/tmp/kpiflow-fuzz' };
  let explicitCases = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    if (a === '--cases') {
      opt.cases = Number(v);
      explicitCases = true;
      i++;
    } else if (a === '--seconds') {
      opt.seconds = Number(v);
      i++;
    } else if (a === '--seed') {
      opt.seed = Number(v) >>> 0;
      i++;
    } else if (a === '--save') {
      opt.save = v!;
      i++;
    } else if (a === '--help' || a === '-h') {
      console.log(
        'usage: node dist/test/ipfix/fuzz-long.js [--cases N] [--seconds S] [--seed N] [--save DIR]',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  // --cases alone runs until that many cases, however long it takes.
  if (explicitCases && !argv.includes('--seconds')) opt.seconds = Number.POSITIVE_INFINITY;
  return opt;
}

async function main(): Promise<void> {
  const opt = parseArgs(process.argv.slice(2));
  const seeds = [...encoderSeeds(opt.seed), ...captureSeeds()];
  const rng = new Rng(opt.seed);
  const registry = fuzzRegistry();
  // The long-lived decoder starts from the standard registry: it learns the fuzz elements from
  // the seeds' RFC 5610 type records.
  const run = new MutationRun(rng, seeds, FUZZ_CAPS, ElementRegistry.standard());
  const stateless = new IpfixDecoder({ registry });
  const counts = { mutation: 0, random: 0, structured: 0, framer: 0, dump: 0 };
  let total = 0;
  let failures = 0;
  const start = performance.now();
  const deadline = start + opt.seconds * 1000;
  let lastReport = start;
  const heap0 = heapAfterGc();
  console.log(
    `fuzz-long: seed ${opt.seed}, ${seeds.length} seed messages, cases ${opt.cases}, seconds ${opt.seconds}, gc ${heap0.gc ? 'on' : 'off'}`,
  );

  const fail = (kind: string, input: Uint8Array | Uint8Array[], err: unknown) => {
    failures++;
    const bytes = Array.isArray(input) ? Buffer.concat(input) : input;
    const p = saveCrash(bytes, `${kind}-${opt.seed}-${total}`, opt.save);
    console.log(`\nFAIL ${kind} case ${total} (seed ${opt.seed}), input saved to ${p}`);
    console.log(err instanceof Error ? err.stack : String(err));
  };

  const structured = fc.sample(structuredCaseArb, { seed: opt.seed, numRuns: 2000 });
  while (total < opt.cases && performance.now() < deadline && failures < 10) {
    const r = rng.int(100);
    let input: Uint8Array | Uint8Array[] = [];
    let kind = 'mutation';
    try {
      if (r < 60) {
        input = run.step();
        counts.mutation++;
      } else if (r < 72) {
        kind = 'random';
        input = rng.chance(0.5) ? rng.bytes(rng.int(80)) : mutate(rng, seeds, rng.bytes(rng.range(16, 200)));
        runTimed(stateless, `r${total}`, [input], rng.pick(['udp', 'tcp'] as const), registry);
        counts.random++;
      } else if (r < 88) {
        kind = 'structured';
        const c = structured[total % structured.length]!;
        // Vary the sample cheaply: mutate one of its messages half the time.
        const msgs = c.messages.map((m) => (rng.chance(0.5) ? mutate(rng, seeds, m) : m));
        input = msgs;
        runTimed(stateless, `s${total}`, msgs, c.transport, registry);
        counts.structured++;
      } else if (r < 99) {
        kind = 'framer';
        const chunks = randomStream(rng, seeds);
        input = chunks;
        runFramer(chunks);
        counts.framer++;
      } else {
        kind = 'dump';
        const chunks = randomStream(rng, seeds);
        input = chunks;
        await runDump(chunks);
        counts.dump++;
      }
    } catch (err) {
      fail(kind, input, err);
    }
    total++;
    const now = performance.now();
    if (now - lastReport > 5000) {
      lastReport = now;
      const s = (now - start) / 1000;
      const st = run.decoder.stats;
      console.log(
        `${s.toFixed(0)} s: ${total} cases (${(total / s).toFixed(0)}/s), sessions ${run.decoder.sessions().length}, ` +
          `templates learned ${st.templatesLearned}, records ${st.records}, slowest ${run.slowest.toFixed(1)} ms, ` +
          `heap ${(process.memoryUsage().heapUsed / 1048576).toFixed(0)} MiB`,
      );
    }
  }
  try {
    checkState(run.decoder, run.caps);
  } catch (err) {
    fail('state', [], err);
  }
  const heap1 = heapAfterGc();
  const secs = (performance.now() - start) / 1000;
  const errs = Object.entries(run.decoder.stats.errors)
    .filter(([, n]) => n > 0)
    .map(([c, n]) => `${c} ${n}`)
    .join(', ');
  console.log(`\nfuzz-long summary (seed ${opt.seed})`);
  console.log(`  cases      ${total} in ${secs.toFixed(1)} s (${(total / secs).toFixed(0)}/s)`);
  console.log(
    `  by kind    ${Object.entries(counts)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ')}`,
  );
  console.log(`  decoder    ${JSON.stringify({ ...run.decoder.stats, errors: undefined })}`);
  console.log(`  errors     ${errs}`);
  console.log(`  slowest    ${run.slowest.toFixed(1)} ms per message (bound ${HANG_MS} ms)`);
  console.log(
    `  heap       ${(heap0.bytes / 1048576).toFixed(1)} -> ${(heap1.bytes / 1048576).toFixed(1)} MiB${heap1.gc ? ' (after gc)' : ''}`,
  );
  console.log(`  failures   ${failures}${failures ? ` (inputs in ${opt.save})` : ''}`);
  process.exitCode = failures > 0 ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(err);
    process.exit(2);
  });
}
