/**
 * The exporter over real transports: an RFC 5655 file and UDP datagrams read by libfixbuf's
 * ipfixDump (every field of every profile, named from our RFC 5610 records), and UDP, TCP and TLS
 * into a running `kpiflow collect` whose API must return exactly the profiles sent. The collector
 * down for a while, then up (nothing lost: the spool), restarted mid-stream, and a spool too small
 * for the outage (oldest dropped, counted, the rest delivered). Templates and type records open
 * every TCP session and are refreshed on UDP; a lone profile leaves within the flush interval;
 * close() flushes and destroy() does not.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  Exporter,
  type ExporterOptions,
  type Profile,
  profileTemplates,
  TCP_KPI_FIELDS,
} from '../../agent/index.js';
import {
  DataType,
  ElementRegistry,
  IpfixDecoder,
  type IpfixRecord,
  KPIFLOW_PEN,
  MessageFramer,
} from '../../ipfix/index.js';
import {
  CollectorProcess as Collector,
  type CollectorProcess,
  UdpRelay,
  withCollector,
} from '../helpers/collector-process.js';
import { ipfixDump } from '../helpers/pcap.js';
import { makeTestPki } from '../helpers/pki.js';
import { requireTools } from '../helpers/tools.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}
const registry = ElementRegistry.standard();
const TCP_FIELDS = profileTemplates()[0]!.fields;
const typeOf = (name: string) => registry.lookupName(name)!.type;

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'kpiflow-agent-exp-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/**
 * Profile `i`: every KPI gets a value of its own (field index and i mixed in, up to the type's
 * range) so a swapped, truncated or dropped field shows; one flowId is past 2^53.
 */
function sampleProfile(i: number): Profile {
  const v6 = i % 3 === 2;
  const start = 1_760_000_000_000 + i * 1000;
  const r: IpfixRecord = {
    flowId: i === 0 ? 2n ** 62n + 12_345n : BigInt(1000 + i),
    sourceIPv6Address: v6 ? `2001:db8::${(i + 1).toString(16)}` : `::ffff:192.0.2.${(i % 250) + 1}`,
    destinationIPv6Address: v6 ? '2001:db8:1::2' : '::ffff:198.51.100.2',
    ipVersion: v6 ? 6 : 4,
    sourceTransportPort: 1024 + i,
    destinationTransportPort: 443,
    flowStartMilliseconds: start,
    flowEndMilliseconds: start + 500 + i,
    flowStartReason: 1 + (i % 7),
    flowEndReason: 1 + ((i + 3) % 7),
  };
  TCP_KPI_FIELDS.forEach((k, j) => {
    const t = typeOf(k.name);
    r[k.name] =
      t === DataType.unsigned16
        ? (i * 17 + j * 3 + 1) % 65_536
        : t === DataType.unsigned32
          ? i * 100_003 + j + 1
          : 2 ** 40 + i * 1_000_003 + j;
  });
  return { templateId: 47561, record: r };
}

const samples = (n: number, from = 0) => Array.from({ length: n }, (_, i) => sampleProfile(from + i));

/** RFC 5952 text of an IPv6 address, whatever form it was printed in. */
const ipv6 = (text: string) => new URL(`http://[${text}]/`).hostname.slice(1, -1);
const utc = (ms: number) => new Date(ms).toISOString().replace('T', ' ').replace('Z', '');

/** Checks ipfixDump's view of an RFC 5655 file against the profiles sent, field by field. */
function checkWithIpfixDump(file: string, sent: Profile[]): void {
  const dump = ipfixDump(file, ['--rfc5610']);
  assert.deepEqual(dump.warnings, [], 'no warning (in particular no sequence error)');
  const data = dump.records.filter((r) => r.templateId === 47561);
  assert.equal(data.length, sent.length, 'every profile');
  const named = new Set(
    dump.records
      .filter((r) => r.templateId === 65000)
      .map((r) => r.fields.find((f) => f.name === 'informationElementId')?.value),
  );
  data.forEach((d, i) => {
    const input = sent[i]!.record;
    assert.deepEqual(
      d.fields.map((f) => f.name),
      TCP_FIELDS,
      `profile ${i}: ipfixDump names every field as we do (enterprise ones from our RFC 5610 records)`,
    );
    for (const f of d.fields) {
      const v = input[f.name]!;
      const where = `profile ${i} ${f.name}`;
      if (f.pen === KPIFLOW_PEN) assert.ok(named.has(String(f.id)), `${where}: announced by a type record`);
      if (f.name.endsWith('IPv6Address')) assert.equal(ipv6(f.value), ipv6(v as string), where);
      else if (f.name.endsWith('Milliseconds') && f.name.startsWith('flow'))
        assert.equal(f.value, utc(v as number), where);
      else assert.equal(f.value, String(v), where);
    }
  });
}

/** Checks the collector's API returns exactly the profiles sent (any order), values included. */
async function checkCollector(c: CollectorProcess, sent: Profile[], transport: string): Promise<void> {
  await c.until(`${sent.length} profiles stored`, async () => {
    const ex = await c.exporters();
    return ex.reduce((n, e) => n + e.profiles, 0) >= sent.length;
  });
  await sleep(300); // one more flush interval: a duplicate would show now
  const { items } = await c.all('/api/v1/profiles', { order: 'asc' });
  assert.equal(items.length, sent.length, 'stored once each');
  const byFlow = new Map(items.map((p) => [String(p['flowId']), p]));
  assert.equal(byFlow.size, sent.length, 'no flowId twice');
  for (const p of sent) {
    const r = p.record;
    const got = byFlow.get(String(r['flowId']));
    assert.ok(got, `flowId ${r['flowId']} stored`);
    const v4 = r['ipVersion'] === 4;
    const addr = (a: string) => (v4 ? a.slice(7) : a);
    assert.equal(got['sourceAddress'], addr(r['sourceIPv6Address'] as string));
    assert.equal(got['destinationAddress'], addr(r['destinationIPv6Address'] as string));
    assert.equal(got['ipVersion'], r['ipVersion']);
    assert.equal(got['sourceTransportPort'], r['sourceTransportPort']);
    assert.equal(got['flowStartMilliseconds'], r['flowStartMilliseconds']);
    assert.equal(got['flowEndMilliseconds'], r['flowEndMilliseconds']);
    assert.equal(got['templateId'], 47561);
    const states = ['', 'NEW', 'ESTABLISHED', 'UPDATE', 'FINISHED', 'BROKEN', 'UNREACHABLE', 'DESYNC'];
    assert.equal(got['startState'], states[r['flowStartReason'] as number]);
    assert.equal(got['endState'], states[r['flowEndReason'] as number]);
    for (const k of TCP_KPI_FIELDS) assert.equal(got[k.name], r[k.name], `flowId ${r['flowId']} ${k.name}`);
    assert.ok(got['extra'] == null, `every field has its column: ${JSON.stringify(got['extra'])}`);
  }
  const ex = await c.exporters();
  assert.ok(
    ex.every((e) => e.transport === transport && e.decodeErrors === 0 && e.lostRecords === 0),
    JSON.stringify(ex),
  );
}

/** A loopback port with nothing listening (yet). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function open(o: ExporterOptions): Promise<Exporter> {
  return Exporter.open({
    flushIntervalMs: 50,
    reconnectMinMs: 50,
    reconnectMaxMs: 200,
    closeTimeoutMs: 10_000,
    ...o,
  });
}

describe('exporter into files and third-party decoders', () => {
  it('file: ipfixDump reads every field of every profile, in several messages, named from our RFC 5610 records', async (t) => {
    if (!requireTools(t, 'ipfixDump')) return;
    const file = join(tmp(), 'profiles.ipfix');
    const e = await open({ target: `file:${file}` });
    const sent = samples(120);
    for (const p of sent) e.send(p);
    await e.close();
    assert.equal(e.stats.exportedRecords, 120);
    assert.ok(e.stats.exportedMessages > 5, `${e.stats.exportedMessages} messages`);
    for (const m of new MessageFramer().push(readFileSync(file))) assert.ok(m.bytes.length <= 1400);
    checkWithIpfixDump(file, sent);
  });

  it('close() flushes what is queued; destroy() drops it and counts it', async () => {
    const dir = tmp();
    const a = await open({ target: `file:${join(dir, 'a.ipfix')}`, flushIntervalMs: 60_000 });
    for (const p of samples(5)) a.send(p);
    await a.close();
    assert.equal(a.stats.exportedRecords, 5);
    assert.throws(() => a.send(sampleProfile(9)), { code: 'AGT_ERR_CLOSED' });
    const b = await open({ target: `file:${join(dir, 'b.ipfix')}`, flushIntervalMs: 60_000 });
    for (const p of samples(5)) b.send(p);
    b.destroy();
    // Messages already full went out (the type records fill the first); the rest is dropped.
    assert.ok(b.dropped.atClose > 0);
    assert.equal(b.stats.exportedRecords + b.dropped.atClose, 5);
    const dec = new IpfixDecoder();
    let written = 0;
    for (const m of new MessageFramer().push(readFileSync(join(dir, 'b.ipfix'))))
      for (const d of dec.decode('b', m.bytes, 'file').dataSets)
        if (d.templateId === 47561) written += d.records.length;
    assert.equal(written, b.stats.exportedRecords);
  });
});

describe('exporter into a running collector', () => {
  it('UDP: the API returns exactly the profiles sent, and ipfixDump reads the same datagrams', async (t) => {
    if (!requireTools(t, 'ipfixDump')) return;
    await withCollector({}, async (c, dir) => {
      const relay = await UdpRelay.open(c.udp);
      try {
        const e = await open({ target: `udp://127.0.0.1:${relay.address.port}` });
        const sent = samples(60);
        for (const p of sent) e.send(p);
        await e.close();
        await relay.settle(e.stats.exportedMessages);
        await checkCollector(c, sent, 'udp');
        const file = join(dir, 'udp.ipfix');
        writeFileSync(file, Buffer.concat(relay.datagrams.map((d) => d.payload)));
        checkWithIpfixDump(file, sent);
      } finally {
        relay.close();
      }
    });
  });

  it('TCP: the API returns exactly the profiles sent', async () => {
    await withCollector({}, async (c) => {
      const e = await open({ target: `tcp://127.0.0.1:${c.tcp.port}` });
      const sent = samples(200);
      for (const p of sent) e.send(p);
      await e.close();
      assert.equal(e.stats.sessions, 1);
      await checkCollector(c, sent, 'tcp');
    });
  });

  it('TLS with a client certificate: the API returns exactly the profiles sent', async (t) => {
    if (!requireTools(t, 'openssl')) return;
    const pki = makeTestPki(tmp());
    const args = [
      '--ipfix-tls',
      '127.0.0.1:0',
      '--tls-cert',
      pki.server.cert,
      '--tls-key',
      pki.server.key,
      '--tls-ca',
      pki.ca.cert,
    ];
    await withCollector({ args }, async (c) => {
      assert.ok(c.tls);
      const e = await open({
        target: `tls://127.0.0.1:${c.tls.port}`,
        tls: { ca: pki.ca.cert, cert: pki.client.cert, key: pki.client.key },
      });
      const sent = samples(80);
      for (const p of sent) e.send(p);
      await e.close();
      assert.equal(e.stats.exportErrors, 0, String(e.error));
      await checkCollector(c, sent, 'tls');
    });
  });

  it('TLS files that cannot be read fail at open with AGT_ERR_TLS', async () => {
    await assert.rejects(open({ target: 'tls://127.0.0.1:4740', tls: { ca: '/nonexistent/ca.pem' } }), {
      code: 'AGT_ERR_TLS',
    });
  });

  it('collector down, then up, then restarted: nothing is lost (memory queue spills to the spool)', async () => {
    const dir = tmp();
    const port = await freePort();
    const spoolDir = join(dir, 'spool');
    const e = await open({
      target: `tcp://127.0.0.1:${port}`,
      queue: { maxRecords: 20, spoolDir, spoolMaxBytes: 4 * 1024 * 1024 },
    });
    let c: Collector | undefined;
    try {
      const first = samples(500);
      for (const p of first) e.send(p);
      await sleep(300);
      assert.equal(e.connected, false);
      assert.ok(e.stats.exportErrors > 0, 'refused connections counted');
      assert.ok(
        e.queue.spoolBytes > 0 && e.queue.spoolRecords > 400,
        `spool: ${e.queue.spoolRecords} profiles`,
      );
      assert.ok(readdirSync(spoolDir).length > 0);
      c = await Collector.start({ dir, args: ['--ipfix-tcp', `127.0.0.1:${port}`] });
      await c.until('the exporter drained', () => e.queue.length === 0 && e.connected);
      await checkCollector(c, first, 'tcp');
      // The collector stops (its TCP session ends) and another comes up on the same port, with a
      // database of its own (what each one received is checked on its own); meanwhile profiles queue.
      await c.stop('SIGTERM');
      const deadline = Date.now() + 5000;
      while (e.connected && Date.now() < deadline) await sleep(10);
      assert.equal(e.connected, false, 'the session end is noticed');
      const second = samples(300, 500);
      for (const p of second) e.send(p);
      c = await Collector.start({
        dir,
        db: join(dir, 'second.db'),
        args: ['--ipfix-tcp', `127.0.0.1:${port}`],
      });
      await e.close();
      assert.equal(e.droppedTotal, 0);
      assert.equal(readdirSync(spoolDir).filter((n) => n.endsWith('.ndjson')).length, 0, 'spool emptied');
      assert.ok(e.stats.sessions >= 2);
      await checkCollector(c, second, 'tcp');
    } finally {
      e.destroy();
      await c?.kill();
    }
  });

  it('a spool too small for the outage drops its oldest profiles, counts them, and delivers the rest', async () => {
    const dir = tmp();
    const port = await freePort();
    const e = await open({
      target: `tcp://127.0.0.1:${port}`,
      queue: {
        maxRecords: 10,
        spoolDir: join(dir, 'spool'),
        spoolMaxBytes: 64 * 1024,
        segmentBytes: 8 * 1024,
      },
    });
    let c: Collector | undefined;
    try {
      const sent = samples(1000);
      for (const p of sent) e.send(p);
      const dropped = e.dropped.spoolFull;
      assert.ok(dropped > 0, 'overflow counted');
      assert.ok(e.queue.spoolBytes <= 64 * 1024, `${e.queue.spoolBytes} spool bytes`);
      assert.equal(e.queue.length + dropped, 1000, 'every profile either waits or is counted as dropped');
      c = await Collector.start({ dir, args: ['--ipfix-tcp', `127.0.0.1:${port}`] });
      await e.close();
      // The oldest went first: what arrives is the newest, contiguous run.
      await checkCollector(c, sent.slice(dropped), 'tcp');
    } finally {
      e.destroy();
      await c?.kill();
    }
  });
});

describe('exporter sessions, refresh and flushing on the wire', () => {
  /** Set ids of each message. */
  const setIds = (msg: Buffer) => {
    const ids: number[] = [];
    for (let o = 16; o + 4 <= msg.length; ) {
      ids.push(msg.readUInt16BE(o));
      o += msg.readUInt16BE(o + 2);
    }
    return ids;
  };

  it('every TCP session starts with the templates and type records, and its own sequence numbers', async () => {
    const sessions: Buffer[][] = [];
    const server = net.createServer((s) => {
      const framer = new MessageFramer();
      const msgs: Buffer[] = [];
      sessions.push(msgs);
      s.on('data', (d) => {
        for (const m of framer.push(d)) msgs.push(Buffer.from(m.bytes));
        // The first session is cut after its first profile, as a collector restart would.
        if (sessions.length === 1 && msgs.some((m) => setIds(m).includes(47561))) s.destroy();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const e = await open({ target: `tcp://127.0.0.1:${port}` });
    try {
      e.send(sampleProfile(1));
      await until('the first session cut', () => sessions.length === 1 && !e.connected);
      await until('the exporter reconnected', () => e.connected);
      e.send(sampleProfile(2));
      await e.close();
      assert.equal(sessions.length, 2);
      for (const msgs of sessions) {
        assert.equal(msgs[0]!.readUInt32BE(8), 0, 'sequence number starts at 0 in each session');
        const upToData = msgs.slice(0, msgs.findIndex((m) => setIds(m).includes(47561)) + 1);
        const ids = upToData.flatMap(setIds);
        assert.ok(upToData.length > 0, 'the session carries the profile');
        assert.ok(ids.indexOf(3) < ids.indexOf(65000), 'type-record options template, then type records');
        assert.ok(ids.includes(2) && ids.indexOf(2) < ids.indexOf(47561), 'template before the profile');
      }
    } finally {
      e.destroy();
      server.close();
    }
  });

  it('UDP: templates are sent again after the refresh interval; a lone profile leaves within the flush interval', async () => {
    const got: { at: number; msg: Buffer }[] = [];
    const sock = dgram.createSocket('udp4');
    sock.on('message', (msg) => got.push({ at: Date.now(), msg }));
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    const e = await open({
      target: `udp://127.0.0.1:${sock.address().port}`,
      templateRefreshMs: 100,
      flushIntervalMs: 50,
    });
    try {
      const t0 = Date.now();
      const dataAt = () => got.filter((g) => setIds(g.msg).includes(47561));
      e.send(sampleProfile(1));
      while (dataAt().length < 1 && Date.now() - t0 < 2000) await sleep(5);
      assert.equal(dataAt().length, 1);
      assert.ok(dataAt()[0]!.at - t0 < 500, `a lone profile waited ${dataAt()[0]!.at - t0} ms`);
      e.send(sampleProfile(2)); // within the refresh interval: no templates
      await sleep(150);
      e.send(sampleProfile(3)); // past it: templates again
      await e.close();
      await sleep(50);
      // For each data message: were templates sent since the previous one?
      const fresh: boolean[] = [];
      let templates = false;
      for (const g of got) {
        const ids = setIds(g.msg);
        if (ids.includes(2)) templates = true;
        if (ids.includes(47561)) {
          fresh.push(templates);
          templates = false;
        }
      }
      assert.deepEqual(fresh, [true, false, true]);
    } finally {
      sock.close();
    }
  });
});
