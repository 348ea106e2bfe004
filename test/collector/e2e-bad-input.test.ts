/**
 * Bad input over real sockets to a running `kpiflow collect`: malformed and truncated messages,
 * data for unknown templates, a template flood past the per-domain cap (1024), maximum-size and
 * lying UDP datagrams, garbage on the TCP port, slow and silent TCP clients. After each case the
 * collector still answers /healthz, still stores a good message from another exporter, and
 * /metrics counts the case (decode errors by code, dropped records by reason).
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { IpfixEncoder } from '../../ipfix/index.js';
import { message, set } from '../helpers/bytes.js';
import { CollectorProcess, type Metrics, sendUdp } from '../helpers/collector-process.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A template record: id, then (element id, length) pairs. */
function templateRecord(id: number, fields: [number, number][]): Buffer {
  const b = Buffer.alloc(4 + 4 * fields.length);
  b.writeUInt16BE(id, 0);
  b.writeUInt16BE(fields.length, 2);
  fields.forEach(([ie, len], i) => {
    b.writeUInt16BE(ie, 4 + 4 * i);
    b.writeUInt16BE(len, 6 + 4 * i);
  });
  return b;
}

/** sourceTransportPort, destinationTransportPort: the smallest useful flow template. */
const PORTS_TEMPLATE: [number, number][] = [
  [7, 2],
  [11, 2],
];

/** A data record of PORTS_TEMPLATE. */
function portsRecord(src: number, dst: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(src, 0);
  b.writeUInt16BE(dst, 2);
  return b;
}

/** A whole message: template 300 (ports) and one record of it. */
function portsMessage(src: number, dst: number, sequence = 0): Buffer {
  return message(
    Buffer.concat([set(2, templateRecord(300, PORTS_TEMPLATE)), set(300, portsRecord(src, dst))]),
    {
      sequence,
    },
  );
}

const FLOW_FIELDS = [
  'sourceIPv4Address',
  'destinationIPv4Address',
  'sourceTransportPort',
  'destinationTransportPort',
  'protocolIdentifier',
  'octetDeltaCount',
  'packetDeltaCount',
];

let marker = 20000;

/** A metric's increase between two scrapes. */
function delta(a: Metrics, b: Metrics, name: string, labels: Record<string, string> = {}): number {
  return b.get(name, labels) - a.get(name, labels);
}

const M = {
  decode: 'kpiflow_collector_decode_errors_total',
  dropped: 'kpiflow_collector_records_dropped_total',
  messages: 'kpiflow_collector_messages_received_total',
  received: 'kpiflow_collector_records_received_total',
  templates: 'kpiflow_collector_exporter_templates',
};

describe('a running collector under bad input keeps serving and counts each case', () => {
  let c: CollectorProcess;

  before(async () => {
    c = await CollectorProcess.start();
  });
  after(async () => {
    await c?.kill();
    if (c) rmSync(c.dir, { recursive: true, force: true });
  });

  /** /healthz answers and a good message from a new exporter is stored with its values. */
  async function stillServes(): Promise<void> {
    const h = await c.request('/healthz');
    assert.equal(h.status, 200);
    assert.deepEqual((h.body as { status: string }).status, 'ok');
    const port = ++marker;
    const enc = new IpfixEncoder({ typeRecords: false });
    enc.defineTemplate(256, FLOW_FIELDS);
    enc.add(256, {
      sourceIPv4Address: '192.0.2.7',
      destinationIPv4Address: '198.51.100.7',
      sourceTransportPort: port,
      destinationTransportPort: 443,
      protocolIdentifier: 6,
      octetDeltaCount: 1234,
      packetDeltaCount: 5,
    });
    const from = await sendUdp(c.udp, enc.flush());
    const key = `udp:127.0.0.1:${from}`;
    await c.until(`the good message of ${key}`, async () =>
      (await c.exporters()).some((e) => e.exporter === key && e.records === 1),
    );
    const { items } = await c.all('/api/v1/flows', { exporter: key });
    assert.equal(items.length, 1);
    const f = items[0]!;
    assert.equal(f['sourceAddress'], '192.0.2.7');
    assert.equal(f['destinationAddress'], '198.51.100.7');
    assert.equal(f['sourceTransportPort'], port);
    assert.equal(f['octetDeltaCount'], 1234);
    assert.equal(f['packetDeltaCount'], 5);
  }

  it('starts serving', async () => {
    await stillServes();
  });

  it('malformed messages over UDP: each counted by its decode error code, the exporter charged with them', async () => {
    const m0 = await c.metrics();
    const good = portsMessage(1, 2);
    const setPastEnd = Buffer.from(good);
    setPastEnd.writeUInt16BE(200, 18); // first set claims 200 bytes
    const reservedSet = message(set(5, Buffer.alloc(8)));
    const lowTemplateId = message(set(2, templateRecord(100, PORTS_TEMPLATE)));
    const badTemplate = message(set(2, Buffer.from([0x01, 0x2c, 0x00, 0x05, 0x00, 0x07, 0x00, 0x02])));
    const netflow9 = Buffer.from(good);
    netflow9.writeUInt16BE(9, 0);
    const cases: [string, Buffer][] = [
      ['IPFIX_ERR_SHORT_MESSAGE', Buffer.from([0x00, 0x0a, 0x00, 0x0a, 1, 2, 3, 4, 5, 6])],
      ['IPFIX_ERR_VERSION', netflow9],
      ['IPFIX_ERR_SET_LENGTH', setPastEnd],
      ['IPFIX_ERR_SET_ID', reservedSet],
      ['IPFIX_ERR_TEMPLATE_ID', lowTemplateId],
      ['IPFIX_ERR_TEMPLATE', badTemplate],
    ];
    const from = await sendUdp(
      c.udp,
      cases.map(([, m]) => m),
    );
    await stillServes();
    const m1 = await c.metrics();
    for (const [code] of cases) assert.equal(delta(m0, m1, M.decode, { code }), 1, code);
    assert.equal(delta(m0, m1, M.decode), cases.length, 'no other decode error');
    assert.equal(delta(m0, m1, M.dropped, { reason: 'decode_error' }), cases.length);
    assert.equal(delta(m0, m1, M.messages), cases.length + 1, 'every datagram counted as a message');
    const e = (await c.exporters()).find((x) => x.exporter === `udp:127.0.0.1:${from}`);
    assert.ok(e, 'the bad exporter is listed');
    assert.equal(e.decodeErrors, cases.length);
    assert.equal(e.records, 0);
  });

  it('a truncated message: a datagram shorter than its length field is refused and counted', async () => {
    const m0 = await c.metrics();
    const whole = portsMessage(3, 4);
    await sendUdp(c.udp, [whole.subarray(0, whole.length - 3)]);
    await stillServes();
    const m1 = await c.metrics();
    assert.equal(delta(m0, m1, M.decode, { code: 'IPFIX_ERR_MESSAGE_LENGTH' }), 1);
    assert.equal(delta(m0, m1, M.dropped, { reason: 'decode_error' }), 1);
  });

  it('truncated TCP stream: a session that ends inside a message is counted (IPFIX_ERR_TRUNCATED)', async () => {
    const m0 = await c.metrics();
    const whole = portsMessage(3, 4);
    const s = net.connect(c.tcp.port, c.tcp.host);
    await new Promise<void>((r) => s.once('connect', r));
    s.end(whole.subarray(0, 30));
    await new Promise<void>((r) => s.once('close', () => r()));
    await stillServes();
    const m1 = await c.metrics();
    assert.equal(delta(m0, m1, M.decode, { code: 'IPFIX_ERR_TRUNCATED' }), 1);
    assert.equal(delta(m0, m1, M.dropped, { reason: 'decode_error' }), 1);
  });

  it('data for unknown templates: sets past the 64 that may wait are dropped (UDP), and those still waiting when a TCP session closes', async () => {
    const m0 = await c.metrics();
    // UDP: 80 messages, each one data set of template 999 that never comes; 64 may wait.
    await sendUdp(
      c.udp,
      Array.from({ length: 80 }, (_, i) => message(set(999, portsRecord(i, i)))),
    );
    // TCP: 3 sets of template 998 that never comes, then the session closes.
    const s = net.connect(c.tcp.port, c.tcp.host);
    await new Promise<void>((r) => s.once('connect', r));
    s.end(Buffer.concat([0, 1, 2].map((i) => message(set(998, portsRecord(i, i))))));
    await new Promise<void>((r) => s.once('close', () => r()));
    await c.until('the TCP session closed by the collector too', async () => {
      const m = await c.metrics();
      return delta(m0, m, M.decode, { code: 'IPFIX_ERR_NO_TEMPLATE' }) >= 16 + 3;
    });
    await stillServes();
    const m1 = await c.metrics();
    assert.equal(delta(m0, m1, M.decode, { code: 'IPFIX_ERR_NO_TEMPLATE' }), 16 + 3);
    assert.equal(delta(m0, m1, M.dropped, { reason: 'no_template' }), 16 + 3);
    assert.equal(delta(m0, m1, M.decode), 16 + 3, 'no other decode error');
  });

  it('a template flood: 3000 templates in one domain, 1024 kept, the other 1976 refused and counted', async () => {
    const m0 = await c.metrics();
    const messages: Buffer[] = [];
    const perMessage = 100;
    for (let first = 0; first < 3000; first += perMessage) {
      const records = Array.from({ length: perMessage }, (_, i) =>
        templateRecord(1000 + first + i, [...PORTS_TEMPLATE, [4, 1]]),
      );
      messages.push(message(set(2, Buffer.concat(records)), { sequence: 0 }));
    }
    // The same exporter then sends data of a kept template: still decoded.
    messages.push(message(set(1000, Buffer.concat([portsRecord(5, 6), Buffer.from([17])])), { sequence: 0 }));
    const from = await sendUdp(c.udp, messages);
    const key = `udp:127.0.0.1:${from}`;
    await c.until('the flooding exporter', async () =>
      (await c.exporters()).some((e) => e.exporter === key && e.records === 1),
    );
    await stillServes();
    const m1 = await c.metrics();
    assert.equal(delta(m0, m1, M.decode, { code: 'IPFIX_ERR_TEMPLATE_LIMIT' }), 3000 - 1024);
    assert.equal(delta(m0, m1, M.decode), 3000 - 1024, 'no other decode error');
    const e = (await c.exporters()).find((x) => x.exporter === key)!;
    assert.equal(e.templateIds.length, 1024);
    assert.equal(e.templateIds[0], 1000);
    assert.equal(e.templateIds[1023], 1000 + 1023);
    assert.equal(e.decodeErrors, 3000 - 1024);
    assert.equal(m1.get(M.templates, { exporter: key }), 1024);
    const { items } = await c.all('/api/v1/flows', { exporter: key });
    assert.equal(items.length, 1);
    assert.equal(items[0]!['protocolIdentifier'], 17);
  });

  it('oversized UDP: a 65507-byte message is stored whole; 65507 bytes whose length field says less, and a short one whose length says 65535, are refused', async () => {
    const m0 = await c.metrics();
    // Template 400: 29-byte records; as many as fit, then padding up to 65507 bytes.
    const fields: [number, number][] = [
      [8, 4],
      [12, 4],
      [7, 2],
      [11, 2],
      [4, 1],
      [1, 8],
      [2, 8],
    ];
    const tset = set(2, templateRecord(400, fields));
    const room = 65507 - 16 - tset.length - 4;
    const n = Math.floor(room / 29);
    const body = Buffer.alloc(room);
    for (let i = 0; i < n; i++) {
      const o = i * 29;
      body.writeUInt32BE(0xc0000200 + (i % 256), o); // 192.0.2.x
      body.writeUInt32BE(0xc6336401, o + 4); // 198.51.100.1
      body.writeUInt16BE(10000 + i, o + 8);
      body.writeUInt16BE(80, o + 10);
      body[o + 12] = 6;
      body.writeBigUInt64BE(BigInt(i * 1000), o + 13);
      body.writeBigUInt64BE(BigInt(i), o + 21);
    }
    const big = message(Buffer.concat([tset, set(400, body)]));
    assert.equal(big.length, 65507);
    const lying = Buffer.from(big);
    lying.writeUInt16BE(1000, 2);
    const short = Buffer.from(portsMessage(7, 8));
    short.writeUInt16BE(65535, 2);
    const fromBig = await sendUdp(c.udp, [big]);
    await sendUdp(c.udp, [lying, short]);
    const key = `udp:127.0.0.1:${fromBig}`;
    await c.until(`${n} records of the 65507-byte message`, async () =>
      (await c.exporters()).some((e) => e.exporter === key && e.records === n),
    );
    await stillServes();
    const m1 = await c.metrics();
    assert.equal(delta(m0, m1, M.decode, { code: 'IPFIX_ERR_MESSAGE_LENGTH' }), 2);
    assert.equal(delta(m0, m1, M.decode), 2, 'no other decode error');
    assert.equal(delta(m0, m1, M.received), n + 1);
    const { items } = await c.all('/api/v1/flows', { exporter: key, order: 'asc' });
    assert.equal(items.length, n);
    const ports = items.map((i) => i['sourceTransportPort'] as number).sort((a, b) => a - b);
    assert.deepEqual(
      ports,
      Array.from({ length: n }, (_, i) => 10000 + i),
    );
    const last = items.find((i) => i['sourceTransportPort'] === 10000 + n - 1)!;
    assert.equal(last['octetDeltaCount'], (n - 1) * 1000);
    assert.equal(last['packetDeltaCount'], n - 1);
    assert.equal(last['sourceAddress'], `192.0.2.${(n - 1) % 256}`);
  });

  it('garbage on the TCP port: that connection is closed and counted; another TCP exporter keeps its session', async () => {
    const m0 = await c.metrics();
    // A good TCP exporter connects first and sends its template.
    const good = net.connect(c.tcp.port, c.tcp.host);
    await new Promise<void>((r) => good.once('connect', r));
    good.write(message(set(2, templateRecord(300, PORTS_TEMPLATE)), { sequence: 0 }));
    const goodKey = `tcp:127.0.0.1:${good.localPort}`;
    try {
      const garbage: Buffer[] = [
        Buffer.from('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'),
        Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) & 0xff)),
        // A valid header whose length is smaller than a header.
        Buffer.from('000a000800000000', 'hex'),
      ];
      for (const g of garbage) {
        const s = net.connect(c.tcp.port, c.tcp.host);
        s.on('error', () => undefined);
        await new Promise<void>((r) => s.once('connect', r));
        const closed = new Promise<void>((r) => s.once('close', () => r()));
        s.write(g);
        const t0 = Date.now();
        await closed;
        assert.ok(Date.now() - t0 < 2000, 'closed by the collector at once');
      }
      await stillServes();
      // The good session still decodes with the template it sent before.
      good.write(message(set(300, portsRecord(4739, 4740)), { sequence: 0 }));
      await c.until('the good TCP exporter', async () =>
        (await c.exporters()).some((e) => e.exporter === goodKey && e.records === 1),
      );
      const m1 = await c.metrics();
      assert.equal(delta(m0, m1, M.decode, { code: 'IPFIX_ERR_FRAMING' }), garbage.length);
      assert.equal(delta(m0, m1, M.decode), garbage.length, 'no other decode error');
      assert.equal(delta(m0, m1, M.dropped, { reason: 'decode_error' }), garbage.length);
    } finally {
      good.destroy();
    }
  });

  it('slow clients: one byte per 100 ms is still one message, stored; a silent connection blocks nobody', async () => {
    const m0 = await c.metrics();
    const silent = net.connect(c.tcp.port, c.tcp.host);
    silent.on('error', () => undefined);
    await new Promise<void>((r) => silent.once('connect', r));
    const slow = net.connect(c.tcp.port, c.tcp.host);
    slow.setNoDelay(true);
    await new Promise<void>((r) => slow.once('connect', r));
    const slowKey = `tcp:127.0.0.1:${slow.localPort}`;
    try {
      const msg = portsMessage(6000, 6001);
      const trickle = (async () => {
        for (let i = 0; i < msg.length; i++) {
          slow.write(msg.subarray(i, i + 1));
          await sleep(100);
        }
      })();
      // Meanwhile the collector serves the API and other exporters.
      await sleep(500);
      const t0 = Date.now();
      await stillServes();
      assert.ok(Date.now() - t0 < 2000, 'served at once while a client trickles');
      const mid = await c.metrics();
      assert.equal(delta(m0, mid, M.decode), 0, 'half a message is no error');
      await trickle;
      await c.until('the slow message', async () =>
        (await c.exporters()).some((e) => e.exporter === slowKey && e.records === 1),
      );
      const { items } = await c.all('/api/v1/flows', { exporter: slowKey });
      assert.equal(items.length, 1);
      assert.equal(items[0]!['sourceTransportPort'], 6000);
      assert.equal(items[0]!['destinationTransportPort'], 6001);
      await stillServes();
      const m1 = await c.metrics();
      assert.equal(delta(m0, m1, M.decode), 0);
      assert.equal(delta(m0, m1, M.messages), 3, 'the slow message and two good ones');
      assert.ok(!silent.destroyed, 'the silent connection is still open');
    } finally {
      slow.destroy();
      silent.destroy();
    }
  });

  it('SIGTERM with a TCP exporter that never closes: what it sent is stored, and the collector exits 0 after the 2 s grace period', async () => {
    // allowHalfOpen: this client ignores the collector's FIN, like an exporter that hangs.
    const stuck = net.connect({ port: c.tcp.port, host: c.tcp.host, allowHalfOpen: true });
    stuck.on('error', () => undefined);
    await new Promise<void>((r) => stuck.once('connect', r));
    const key = `tcp:127.0.0.1:${stuck.localPort}`;
    try {
      const m0 = await c.metrics();
      stuck.write(portsMessage(7000, 7001));
      // Received (counted), and SIGTERM right away: likely before the 200 ms flush.
      await c.until(
        "the stuck exporter's record received",
        async () => delta(m0, await c.metrics(), M.received) === 1,
      );
      const t0 = Date.now();
      const exit = await c.stop('SIGTERM', 8000);
      const ms = Date.now() - t0;
      assert.deepEqual(exit, { code: 0, signal: null }, c.stderr);
      assert.ok(ms < 4000, `stopped in ${ms} ms`);
      const db = new Database(c.db, { readonly: true });
      try {
        const rows = db
          .prepare(
            'SELECT f.sourceTransportPort AS p FROM flows f JOIN exporters e ON e.id = f.exporterId WHERE e.key = ?',
          )
          .all(key) as { p: number }[];
        assert.deepEqual(rows, [{ p: 7000 }], 'the last record received is stored');
        assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
      } finally {
        db.close();
      }
    } finally {
      stuck.destroy();
    }
  });
});
