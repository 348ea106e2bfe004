/**
 * The events file (agent/event-file.ts): what `--record` writes replays into the very profiles
 * the recording agent exported (same records, same order, same times, same flowIds); the
 * reader streams (memory flat over a 100 MB file); a newer format version, another event layout,
 * wrong magic, truncation at every byte, garbled frames and payloads, and random bytes give a
 * typed error or a counted skip, never a crash or a hang.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  Agent,
  EVENT_FILE_VERSION,
  EventFileReader,
  EventFileSource,
  EventFileWriter,
  MemorySource,
  type ProbeEvent,
  readEventFileInfo,
  TCP_STATE,
} from '../../agent/index.js';
import { decodeProbeEvents, encodeProbeEvent, PROBE_EVENT_SIZE } from '../../agent/probe-event-decoder.js';
import { IpfixDecoder, type IpfixRecord, MessageFramer } from '../../ipfix/index.js';
import { KPIFLOW } from '../helpers/collector-process.js';
import { SyntheticSocket } from '../helpers/synthetic-events.js';

const dir = mkdtempSync(join(tmpdir(), 'kf-events-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const tmp = (ext: string) => join(dir, `${n++}.${ext}`);

function readProfiles(file: string): IpfixRecord[] {
  const dec = new IpfixDecoder();
  const out: IpfixRecord[] = [];
  for (const m of new MessageFramer().push(readFileSync(file))) {
    const res = dec.decode('f', m.bytes, 'file');
    assert.deepEqual(res.errors, []);
    for (const d of res.dataSets) out.push(...d.records);
  }
  return out;
}

/** A live-like session: batches and lost notices pushed in order. */
type Step = ProbeEvent[] | number;

function session(): Step[] {
  const steps: Step[] = [];
  const a = new SyntheticSocket({ cookie: 11n });
  const b = new SyntheticSocket({ cookie: 12n, ipVersion: 6 });
  const c = new SyntheticSocket({ cookie: 13n, tcpState: TCP_STATE.ESTABLISHED });
  steps.push([...a.connect(), ...b.connect()], c.snapshot());
  steps.push([...a.establish(3), ...b.synTimeout(1000), ...b.establish(7)]);
  a.transfer(200, 50_000, 1000);
  steps.push(a.rto(1000), [...a.recover(), ...b.transfer(40, 777, 12).duplicate(100)]);
  steps.push(2); // ring buffer overrun: everything open resumes after a DESYNC profile
  c.transfer(500, 1234, 5);
  steps.push([...c.snapshot(), ...a.closeActive(), ...b.resetByPeer()]);
  // A batch larger than one record (4096 events): the writer splits it.
  const many: ProbeEvent[] = [];
  for (let i = 0; i < 1500; i++) {
    const s = new SyntheticSocket({
      cookie: 1000n + BigInt(i),
      t0Ns: 2_000_000_000_000n + BigInt(i) * 1000n,
    });
    many.push(...s.connect(), ...s.establish(1), ...s.transfer(5, 100, 100).closeActive());
  }
  steps.push(many);
  return steps;
}

/** Runs `steps` through an agent that records to `rec`; returns its export file. */
async function recordRun(rec: string, steps: Step[]): Promise<string> {
  const out = tmp('ipfix');
  const source = new MemorySource();
  const writer = EventFileWriter.create(rec, {
    bootId: 'test-boot',
    missing: [],
    reorderingDistance: false,
    activeTimeoutMs: 60_000,
    maxConnections: 100_000,
  });
  const agent = await Agent.start({
    source,
    export: { target: `file:${out}` },
    bootId: 'test-boot',
    tickMs: 0,
    record: writer,
  });
  writer.setClockOffset(agent.builder.clockOffsetNs);
  for (const s of steps) {
    if (typeof s === 'number') source.lose(s);
    else source.push(...s);
  }
  await agent.close();
  assert.equal(writer.error, null);
  return out;
}

/** Replays `rec` with the options the CLI uses; the export file and how it ended. */
async function replayRun(rec: string) {
  const out = tmp('ipfix');
  const source = new EventFileSource(rec);
  const agent = await Agent.start({ source, export: { target: `file:${out}` }, ...source.agentOptions() });
  const end = await agent.done;
  return { out, end, source, agent };
}

describe('events file: record, then replay', () => {
  it('replays into the profiles the recording agent exported: same records, order, times, flowIds', async () => {
    const rec = tmp('kfev');
    const live = await recordRun(rec, session());
    const { out, end, source, agent } = await replayRun(rec);
    assert.equal(end.reason, 'source-ended');
    const a = readProfiles(live);
    const b = readProfiles(out);
    assert.ok(a.length > 3000, `${a.length} profiles`);
    assert.deepEqual(b, a);
    assert.equal(agent.stats.lostEvents, 2);
    assert.equal(source.stats.complete, true);
    assert.equal(source.stats.lostRecorded, 2);
    assert.ok(
      a.some((p) => p['flowEndReason'] === 7),
      'the lost notice made DESYNC profiles',
    );
    const info = readEventFileInfo(rec);
    assert.equal(info.version, EVENT_FILE_VERSION);
    assert.equal(info.clockExact, true);
    assert.equal(info.header.bootId, 'test-boot');
    assert.equal(info.header.eventSize, PROBE_EVENT_SIZE);
  });

  it('the reader gives back the exact event bytes, batch order kept, large batches split', async () => {
    const rec = tmp('kfev');
    const steps = session();
    await recordRun(rec, steps);
    const want = Buffer.concat(steps.flatMap((s) => (typeof s === 'number' ? [] : s.map(encodeProbeEvent))));
    const got: Buffer[] = [];
    const kinds: string[] = [];
    const reader = new EventFileReader(rec);
    for await (const r of reader.records()) {
      kinds.push(r.type);
      if (r.type === 'events') got.push(Buffer.from(r.bytes));
    }
    await reader.close();
    assert.ok(Buffer.concat(got).equals(want));
    assert.equal(kinds.filter((k) => k === 'lost').length, 1);
    assert.equal(kinds.at(-1), 'end');
    // 1500 connections x 6 events = 9000 in one batch: three records.
    assert.equal(kinds.length, steps.length + 2 + 1);
  });

  it('a file without its end record (agent killed) replays, and says it is incomplete', async () => {
    const rec = tmp('kfev');
    await recordRun(rec, session());
    const bytes = readFileSync(rec);
    const cut = tmp('kfev');
    writeFileSync(cut, bytes.subarray(0, bytes.length - 28)); // the end record: 12 + 16 bytes
    const { end, source } = await replayRun(cut);
    assert.equal(end.reason, 'source-ended');
    assert.equal(source.stats.complete, false);
  });
});

describe('events file: bad input', () => {
  async function small(): Promise<Buffer> {
    const rec = tmp('kfev');
    const s = new SyntheticSocket({ cookie: 5n });
    await recordRun(rec, [s.connect(), s.establish(2), 1, s.transfer(10, 10, 10).closeActive()]);
    return readFileSync(rec);
  }

  it('a newer format version is refused, naming both versions (API and CLI)', async () => {
    const b = await small();
    b.writeUInt16LE(EVENT_FILE_VERSION + 1, 8);
    const f = tmp('kfev');
    writeFileSync(f, b);
    const message = new RegExp(
      `format version ${EVENT_FILE_VERSION + 1} is newer than this kpiflow reads \\(version ${EVENT_FILE_VERSION}\\)`,
    );
    assert.throws(() => new EventFileSource(f), { code: 'AGT_ERR_EVENTS_VERSION', message });
    const r = spawnSync(
      process.execPath,
      [KPIFLOW, 'agent', '--source', `events:${f}`, '--export', `file:${tmp('x')}`],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(r.status, 1);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /\[AGT_ERR_EVENTS_VERSION\]/);
  });

  it('wrong magic, another event layout, a malformed header: typed errors at open', async () => {
    const b = await small();
    const f = tmp('kfev');
    writeFileSync(f, Buffer.concat([Buffer.from('NOTEVENT'), b.subarray(8)]));
    assert.throws(() => readEventFileInfo(f), {
      code: 'AGT_ERR_EVENTS_FORMAT',
      message: /not a kpiflow events file/,
    });
    const hlen = b.readUInt32LE(12);
    const header = JSON.parse(b.subarray(32, 32 + hlen).toString()) as Record<string, unknown>;
    const withHeader = (h: unknown) => {
      const json = Buffer.from(JSON.stringify(h));
      const pre = Buffer.from(b.subarray(0, 32));
      pre.writeUInt32LE(json.length, 12);
      writeFileSync(f, Buffer.concat([pre, json, b.subarray(32 + hlen)]));
      return f;
    };
    assert.throws(() => readEventFileInfo(withHeader({ ...header, eventSize: 248 })), {
      code: 'AGT_ERR_EVENTS_LAYOUT',
      message: /event record of 248 bytes .* this kpiflow decodes 240 bytes/,
    });
    const layout = { ...(header['eventLayout'] as object), arg0: [72, 4] };
    assert.throws(() => readEventFileInfo(withHeader({ ...header, eventLayout: layout })), {
      code: 'AGT_ERR_EVENTS_LAYOUT',
      message: /places arg0 elsewhere/,
    });
    assert.throws(() => readEventFileInfo(withHeader({ ...header, missing: ['nonsense'] })), {
      code: 'AGT_ERR_EVENTS_FORMAT',
    });
    assert.throws(() => readEventFileInfo(join(dir, 'absent.kfev')), { code: 'AGT_ERR_EVENTS_OPEN' });
  });

  it('truncated at every byte: a typed error or a clean end, and the events before the cut replayed', async () => {
    const b = await small();
    const full = await replayEvents(b);
    assert.equal(full.error, null);
    for (let cut = 0; cut < b.length; cut++) {
      const r = await replayEvents(b.subarray(0, cut));
      if (r.error) assert.match(String(r.error.code), /^AGT_ERR_EVENTS_(TRUNCATED|FORMAT)$/, `cut ${cut}`);
      // What was replayed is a prefix of the whole file's events.
      assert.deepEqual(r.events, full.events.slice(0, r.events.length), `cut ${cut}`);
    }
  });

  it('a garbled payload is skipped and its events reported lost; a garbled frame stops with AGT_ERR_EVENTS_FORMAT', async () => {
    const b = await small();
    const first = 32 + b.readUInt32LE(12); // the first record: the connect batch
    const payload = Buffer.from(b);
    payload[first + 12 + 100]! ^= 0xff;
    const r1 = await replayEvents(payload);
    assert.equal(r1.error, null);
    assert.equal(r1.garbled, 1);
    assert.deepEqual(r1.lost, [1, 1], 'the garbled connect event, then the recorded loss');
    const frame = Buffer.from(b);
    frame[first + 5]! ^= 0x01; // its length
    const r2 = await replayEvents(frame);
    assert.equal(r2.error?.code, 'AGT_ERR_EVENTS_FORMAT');
  });

  it('1000 random mutations and 10 MB of random bytes after a valid header: never a crash or a hang', async () => {
    const b = await small();
    let seed = 42;
    const rnd = (k: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % k;
    };
    for (let i = 0; i < 1000; i++) {
      const m = Buffer.from(b);
      for (let j = 1 + rnd(4); j > 0; j--) m[rnd(m.length)] = rnd(256);
      const r = await replayEvents(m);
      if (r.error) assert.match(String(r.error.code), /^AGT_ERR_EVENTS_/, String(r.error));
    }
    const head = b.subarray(0, 32 + b.readUInt32LE(12));
    const noise = Buffer.alloc(10 << 20);
    for (let i = 0; i < noise.length; i += 4) noise.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, i);
    const t0 = Date.now();
    const r = await replayEvents(Buffer.concat([head, noise]));
    assert.equal(r.error?.code, 'AGT_ERR_EVENTS_FORMAT');
    assert.ok(Date.now() - t0 < 5000);
  });

  it('--record into a file that cannot be written: AGT_ERR_RECORD', () => {
    const init = {
      bootId: 'x',
      missing: [],
      reorderingDistance: false,
      activeTimeoutMs: 1000,
      maxConnections: 1,
    };
    assert.throws(() => EventFileWriter.create(join(dir, 'no', 'such', 'dir.kfev'), init), {
      code: 'AGT_ERR_RECORD',
    });
    assert.throws(() => EventFileWriter.create('/dev/full', init), { code: 'AGT_ERR_RECORD' });
  });
});

describe('events file: memory', () => {
  it('writes with a bounded buffer and reads a 100 MB file through one reused buffer', async () => {
    const rec = tmp('kfev');
    const w = EventFileWriter.create(rec, {
      bootId: 'x',
      missing: [],
      reorderingDistance: false,
      activeTimeoutMs: 1000,
      maxConnections: 1,
    });
    const s = new SyntheticSocket({ cookie: 9n });
    const batch = Buffer.concat([...s.connect(), ...s.snapshot()].map(encodeProbeEvent));
    const chunk = Buffer.concat(new Array(2048).fill(batch)); // 4096 events, 950 KB
    const base = process.memoryUsage().arrayBuffers;
    for (let i = 0; i < 108; i++) {
      w.writeRaw(chunk);
      // What is not yet on disk is at most the buffer (1 MiB) plus one record.
      assert.ok(w.stats.records * 12 + w.stats.events * PROBE_EVENT_SIZE - statSync(rec).size < 2 << 20);
    }
    await w.close();
    assert.ok(statSync(rec).size > 100e6);
    let events = 0;
    let peak = 0;
    const reader = new EventFileReader(rec);
    for await (const r of reader.records()) {
      if (r.type === 'events') events += decodeProbeEvents(r.bytes).events.length;
      peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
    }
    await reader.close();
    assert.equal(events, 108 * 4096);
    assert.ok(peak < 32 << 20, `array buffers grew by ${peak} bytes`);
  });
});

/** Replays an events file's bytes into a collecting sink (no agent). */
async function replayEvents(bytes: Uint8Array) {
  const f = tmp('kfev');
  writeFileSync(f, bytes);
  const out = {
    events: [] as bigint[],
    lost: [] as number[],
    garbled: 0,
    error: null as (Error & { code?: string }) | null,
  };
  let source: EventFileSource;
  try {
    source = new EventFileSource(f);
  } catch (err) {
    // Errors in the preamble or header come when the source is opened.
    out.error = err as Error & { code?: string };
    return out;
  }
  await new Promise<void>((resolve) => {
    void source.start({
      events: (b) => {
        for (const e of b) out.events.push(e.tsNs * 100n + BigInt(e.kind));
      },
      lost: (c) => out.lost.push(c),
      end: () => resolve(),
      error: (err) => {
        out.error = err;
        resolve();
      },
    });
  });
  out.garbled = source.stats.garbledRecords;
  await source.close();
  return out;
}
