/**
 * Back-pressure of the ClickHouse store against a real server (Debian's clickhouse-server,
 * stopped and started again by the test; no mocks). With the server down, inserts still resolve
 * and the batches wait in spool files; once it is back every row arrives exactly once and the
 * spool folder empties. A store closed during an outage leaves its batches for the next one; a
 * full spool refuses new batches (counted) and keeps the earlier ones; a batch the server refuses
 * as malformed goes to rejected/ without holding back the batches behind it. End to end, a
 * `kpiflow collect --store clickhouse` shows the backlog in /metrics during an outage, delivers
 * every record its sender sent, and keeps its spool across a SIGTERM. Ground truth is what the
 * test sent and what ClickHouse itself counts (server.query), never the store's own answers.
 */
import assert from 'node:assert/strict';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { CollectorError } from '../../collector/errors.js';
import { type InsertPayload, Spool } from '../../collector/store/clickhouse-spool.js';
import { classifyInsertError } from '../../collector/store/clickhouse-sql.js';
import { ClickHouseStore, type ClickHouseStoreOptions } from '../../collector/store/clickhouse-store.js';
import type { ProfileRow } from '../../collector/store/types.js';
import { CLICKHOUSE_SERVER, ClickHouseServer } from '../helpers/clickhouse-server.js';
import { CollectorProcess, type HostPort } from '../helpers/collector-process.js';
import { profileEncoder, profileFields } from '../helpers/profile-fields.js';
import { hasTool, requireTools } from '../helpers/tools.js';
import { sampleProfiles } from './store-conformance.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 20 ms until it holds; throws naming `what` after `timeoutMs`. */
async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** `n` profiles whose flowIds are first, first + 1, ...: each row can be found once in ClickHouse. */
function rows(first: number, n: number): ProfileRow[] {
  return sampleProfiles(n).map((r, i) => ({ ...r, flowId: first + i }));
}

/** Spool files waiting in `dir` (rejected/ apart). */
function batchFiles(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((n) => n.endsWith('.batch')) : [];
}

/** Rows held in the spool files of `dir` (read from the files themselves). */
function spooledRows(dir: string): number {
  let n = 0;
  for (const f of batchFiles(dir)) {
    // A 4-byte header length, the JSON header, then the bodies (clickhouse-spool.ts).
    const buf = readFileSync(join(dir, f));
    const header = JSON.parse(buf.subarray(4, 4 + buf.readUInt32LE(0)).toString('utf8')) as {
      rows: number;
    }[];
    for (const p of header) n += p.rows;
  }
  return n;
}

function rejectedFiles(dir: string): string[] {
  const r = join(dir, 'rejected');
  return existsSync(r) ? readdirSync(r) : [];
}

describe('ClickHouse spool: back-pressure against a real server', () => {
  let server: ClickHouseServer | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'kpiflow-chspool-'));
  let n = 0;

  before(async () => {
    if (hasTool(CLICKHOUSE_SERVER)) server = await ClickHouseServer.start();
  });
  after(async () => {
    await server?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A fresh database and spool folder; short retries so an outage ends quickly in a test. */
  function place(): { url: string; db: string; spool: string } {
    const k = n++;
    const db = `spool_${k}`;
    return { url: server!.url(db), db, spool: join(dir, `spool-${k}`) };
  }

  async function open(
    p: { url: string; spool: string },
    extra: Partial<ClickHouseStoreOptions> = {},
  ): Promise<ClickHouseStore> {
    return ClickHouseStore.open({
      url: p.url,
      spoolDir: p.spool,
      retryMs: 50,
      closeTimeoutMs: 300,
      // Every insert is its own spool batch here (the collector gathers 100 000 rows into one).
      insertRows: 1,
      ...extra,
    });
  }

  /** Rows of `db`.profiles and how many distinct flowIds they have, as ClickHouse counts them. */
  async function count(db: string, where = '1'): Promise<{ rows: number; flows: number }> {
    const [a, b] = (
      await server!.query(
        `SELECT count(), uniqExact(ifNull(flowId, 0)) FROM ${db}.profiles WHERE ${where} FORMAT TSV`,
      )
    )
      .trim()
      .split('\t')
      .map(Number);
    return { rows: a!, flows: b! };
  }

  describe('one outage, three stores (each clickhouse-server stop takes seconds, so they share it)', () => {
    // The tests below run in order: the first stops the server, the last starts it again.
    let a: { url: string; db: string; spool: string };
    let b: { url: string; db: string; spool: string };
    let c: { url: string; db: string; spool: string };
    const stores: ClickHouseStore[] = [];
    let plain: ClickHouseStore;
    let closing: ClickHouseStore;
    let small: ClickHouseStore;

    before(async () => {
      if (!server) return;
      a = place();
      b = place();
      c = place();
      plain = await open(a);
      closing = await open(b);
      // Small batches (a few KB each) fit; one of 2000 rows (several hundred KB) does not.
      small = await open(c, { maxSpoolBytes: 50_000 });
      stores.push(plain, closing, small);
    });
    after(async () => {
      await server?.start();
      for (const s of stores) await s.close();
    });

    it('server down: inserts resolve and the backlog waits in spool files, nothing lost', async (t) => {
      if (!requireTools(t, CLICKHOUSE_SERVER)) return;
      await server!.stop();
      for (let k = 0; k < 6; k++)
        await plain.insert({ profiles: rows(k * 1000, 100), flows: [], exporters: [] });
      await until('the first failed send', () => plain.backlog()!.failing);
      const down = plain.backlog()!;
      assert.equal(down.pendingRows, 600);
      assert.equal(down.pendingBatches, 6);
      assert.equal(down.deliveredRows, 0);
      assert.equal(down.refusedRows, 0);
      assert.ok(down.failedSends >= 1);
      assert.ok(down.lastError, 'the failure is kept for logs');
      // Past the first failure every batch lives in a file: the outage may outlast the process.
      const files = batchFiles(a.spool);
      assert.equal(files.length, 6, `spool files: ${files.join(', ')}`);
      assert.equal(spooledRows(a.spool), 600);
      assert.equal(
        down.spoolBytes,
        files.reduce((n, f) => n + statSync(join(a.spool, f)).size, 0),
        'spoolBytes is what the files take',
      );
      // More batches during the outage join the queue behind the first ones.
      await plain.insert({ profiles: rows(6000, 50), flows: [], exporters: [] });
      assert.equal(plain.backlog()!.pendingRows, 650);
      assert.equal(spooledRows(a.spool), 650);
    });

    it('a store closed during the outage leaves its batches in its spool folder', async (t) => {
      if (!requireTools(t, CLICKHOUSE_SERVER)) return;
      for (let k = 0; k < 3; k++)
        await closing.insert({ profiles: rows(k * 1000, 40), flows: [], exporters: [] });
      // Closed at once: batches still in memory are written out by close().
      const t0 = Date.now();
      await closing.close();
      assert.ok(Date.now() - t0 < 5000, 'close gives up after closeTimeoutMs');
      assert.equal(batchFiles(b.spool).length, 3, 'every batch kept in a file');
      assert.equal(spooledRows(b.spool), 120);
      await assert.rejects(closing.insert({ profiles: rows(9000, 1), flows: [], exporters: [] }), {
        code: 'COL_ERR_STORE',
      });
    });

    it('a full spool refuses new batches with COL_ERR_STORE and counts their rows', async (t) => {
      if (!requireTools(t, CLICKHOUSE_SERVER)) return;
      await small.insert({ profiles: rows(0, 10), flows: [], exporters: [] });
      await until('the first failed send', () => small.backlog()!.failing);
      await small.insert({ profiles: rows(1000, 10), flows: [], exporters: [] });
      await assert.rejects(
        small.insert({ profiles: rows(100_000, 2000), flows: [], exporters: [] }),
        (err: unknown) =>
          err instanceof CollectorError && err.code === 'COL_ERR_STORE' && /full/.test(err.message),
      );
      const full = small.backlog()!;
      assert.equal(full.refusedRows, 2000);
      assert.equal(full.pendingRows, 20, 'the refused batch is not queued');
      assert.ok(full.spoolBytes <= 50_000);
      // Room is judged by size: a small batch still fits.
      await small.insert({ profiles: rows(2000, 10), flows: [], exporters: [] });
      assert.equal(small.backlog()!.pendingRows, 30);
    });

    it('server back: every row arrives exactly once, a new store delivers what the closed one left, the spools empty', async (t) => {
      if (!requireTools(t, CLICKHOUSE_SERVER)) return;
      await server!.start();
      assert.ok(await plain.flush(15_000), 'the backlog drains once the server is back');
      assert.deepEqual(await count(a.db), { rows: 650, flows: 650 }, 'every row once');
      const up = plain.backlog()!;
      assert.equal(up.pendingRows, 0);
      assert.equal(up.spoolBytes, 0);
      assert.equal(up.failing, false);
      assert.equal(up.deliveredRows, 650);
      assert.equal(up.rejectedRows, 0);
      assert.deepEqual(batchFiles(a.spool), []);
      assert.deepEqual(rejectedFiles(a.spool), []);

      const reopened = await open(b);
      stores.push(reopened);
      assert.ok(await reopened.flush(15_000), 'the new store delivers what the first one left');
      assert.deepEqual(await count(b.db), { rows: 120, flows: 120 });
      assert.equal(reopened.backlog()!.deliveredRows, 120);
      assert.deepEqual(batchFiles(b.spool), []);

      assert.ok(await small.flush(15_000));
      assert.deepEqual(
        await count(c.db),
        { rows: 30, flows: 30 },
        'the batches before and after the refusal',
      );
      assert.deepEqual(await count(c.db, 'flowId >= 100000'), { rows: 0, flows: 0 });
      assert.equal(small.backlog()!.refusedRows, 2000);
      assert.deepEqual(batchFiles(c.spool), []);
    });
  });

  it('memory holds at most memoryBatches batches: the rest of a burst goes to spool files', async (t) => {
    if (!requireTools(t, CLICKHOUSE_SERVER)) return;
    const p = place();
    const store = await open(p, { memoryBatches: 1 });
    try {
      // No I/O happens between these inserts, so none can be delivered yet: one batch may stay
      // in memory and nine must be in files.
      for (let b = 0; b < 10; b++)
        await store.insert({ profiles: rows(b * 100, 3), flows: [], exporters: [] });
      const burst = store.backlog()!;
      assert.equal(burst.pendingBatches, 10);
      assert.equal(
        burst.spooledBatches,
        9,
        `${10 - burst.spooledBatches} batches held in memory with memoryBatches 1`,
      );
      assert.equal(batchFiles(p.spool).length, 9);
      assert.ok(await store.flush(10_000));
      assert.deepEqual(await count(p.db), { rows: 30, flows: 30 });
      assert.deepEqual(batchFiles(p.spool), []);
    } finally {
      await store.close();
    }
  });

  it('a batch the server refuses as malformed goes to rejected/ and the batches behind it arrive', async (t) => {
    if (!requireTools(t, CLICKHOUSE_SERVER)) return;
    const p = place();
    (await open(p)).close(); // the schema
    // The store never sends a body ClickHouse cannot read, so the spool is driven directly here,
    // sending to the real server: a RowBinary body cut short is refused (code 33, cannot read
    // all data), and nothing the spool does may hold the other batches back.
    const row = (id: number) => {
      const b = Buffer.alloc(16);
      b.writeBigInt64LE(BigInt(Date.UTC(2026, 0, 1)), 0);
      b.writeBigUInt64LE(BigInt(id), 8);
      return b;
    };
    const payload = (body: Buffer, rows: number): InsertPayload => ({
      table: 'profiles',
      columns: ['t', 'id'],
      format: 'RowBinary',
      rows,
      body,
    });
    const spool = new Spool({
      dir: p.spool,
      send: async (x) => {
        const q = encodeURIComponent(
          `INSERT INTO ${p.db}.${x.table} (${x.columns.join(', ')}) FORMAT ${x.format}`,
        );
        const r = await fetch(`http://127.0.0.1:${server!.httpPort}/?query=${q}`, {
          method: 'POST',
          body: x.body,
        });
        if (!r.ok) throw new Error(await r.text());
      },
      classify: classifyInsertError,
      log: pino({ level: 'silent' }),
      retryMs: 50,
    });
    try {
      await spool.push([payload(Buffer.concat([row(1), row(2)]), 2)]);
      await spool.push([payload(Buffer.concat([row(3), row(4).subarray(0, 10)]), 2)]);
      await spool.push([payload(row(5), 1)]);
      const delivered = await spool.drain(5000);
      const b = spool.stats();
      assert.ok(
        delivered,
        `the malformed batch holds back the queue: ${b.pendingBatches} batches pending after ${b.failedSends} failed sends; last error: ${b.lastError?.split('\n')[0]}`,
      );
      assert.equal(b.rejectedRows, 2);
      assert.match(b.lastError ?? '', /^Code: 33/);
      assert.equal(rejectedFiles(p.spool).length, 1, 'the refused batch is kept in rejected/');
      assert.equal(
        (
          await server!.query(
            `SELECT groupArray(id) FROM (SELECT id FROM ${p.db}.profiles ORDER BY id) FORMAT TSV`,
          )
        ).trim(),
        '[1,2,5]',
      );
      assert.equal(b.failing, false, 'a refused batch is not an outage');
    } finally {
      await spool.close(1000);
    }
  });

  it('a progress note left without its batch does not skip the INSERTs of a new batch of that number', async (t) => {
    if (!requireTools(t, CLICKHOUSE_SERVER)) return;
    const p = place();
    // A crash after delivering batch 1 could leave '1 INSERT of it delivered' behind; a spool
    // started on the emptied folder numbers its first batch 1 again.
    mkdirSync(p.spool, { recursive: true });
    writeFileSync(join(p.spool, `${'1'.padStart(16, '0')}.batch.done`), '1');
    // memoryBatches 0: the batch goes through its file, as under back-pressure.
    const store = await open(p, { memoryBatches: 0 });
    try {
      const exporter = {
        exporter: 'udp:192.0.2.9:4739',
        transport: 'udp',
        address: '192.0.2.9',
        port: 4739,
        lastSeen: Date.UTC(2026, 0, 1),
        records: 5,
        profiles: 5,
        flows: 0,
        lostRecords: 0,
        decodeErrors: 0,
        templateIds: [47561],
      };
      // Two INSERTs in one batch: the profiles, then the exporter's accounting.
      await store.insert({ profiles: rows(100, 5), flows: [], exporters: [exporter] });
      assert.ok(await store.flush(10_000));
      assert.deepEqual(await count(p.db), { rows: 5, flows: 5 }, 'the profiles (the first INSERT) arrived');
      assert.equal(
        (await server!.query(`SELECT sum(records) FROM ${p.db}.exporter_deltas FORMAT TSV`)).trim(),
        '5',
      );
      assert.deepEqual(
        readdirSync(p.spool).filter((n) => n !== 'rejected'),
        [],
      );
    } finally {
      await store.close();
    }
  });

  it('a row without a valid observation domain is left out and counted; the others are stored', async (t) => {
    if (!requireTools(t, CLICKHOUSE_SERVER)) return;
    const p = place();
    const store = await open(p);
    try {
      const bad = rows(5000, 5);
      bad[2]!.observationDomainId = -1; // not a UInt32, and the column cannot be NULL
      await store.insert({ profiles: bad, flows: [], exporters: [] });
      assert.ok(await store.flush(5000));
      assert.equal(store.backlog()!.rejectedRows, 1);
      assert.deepEqual(await count(p.db), { rows: 4, flows: 4 });
      assert.deepEqual(await count(p.db, 'flowId = 5002'), { rows: 0, flows: 0 });
    } finally {
      await store.close();
    }
  });

  it('a value out of its column type range is stored as NULL, not as another number (port 70000, state 300)', async (t) => {
    if (!requireTools(t, CLICKHOUSE_SERVER)) return;
    const p = place();
    const store = await open(p);
    try {
      const r = rows(7000, 2);
      r[0]!.destinationTransportPort = 70_000; // UInt16
      r[1]!.flowEndReason = 300; // UInt8
      await store.insert({ profiles: r, flows: [], exporters: [] });
      await store.flush(5000);
      const stored = (
        await server!.query(
          `SELECT flowId, destinationTransportPort, flowEndReason FROM ${p.db}.profiles ORDER BY flowId FORMAT TSV`,
        )
      ).trim();
      // A value its column cannot hold is stored as NULL (unknown), never wrapped into another
      // number; the other columns of the row are kept.
      const [a, b] = stored.split('\n').map((l) => l.split('\t'));
      assert.equal(a![1], '\\N', `port 70000 stored as ${a![1]}`);
      assert.equal(b![2], '\\N', `flowEndReason 300 stored as ${b![2]}`);
      assert.equal(b![1], String(r[1]!.destinationTransportPort));
    } finally {
      await store.close();
    }
  });

  describe('kpiflow collect --store clickhouse', () => {
    const PROFILE_FIELDS = profileFields(4, 'transferredOctetTotalCount', 'meanLatencyMicroseconds');
    /** Recent: the collector's default retention (30 days) must not drop them. */
    const T0 = Date.now() - 3_600_000;

    /** Sends profiles with flowIds first .. first + count - 1 over one IPFIX/TCP session. */
    async function sendProfiles(to: HostPort, first: number, count: number): Promise<void> {
      const enc = profileEncoder(PROFILE_FIELDS, 3);
      for (let i = first; i < first + count; i++)
        enc.add(47561, {
          flowId: i,
          sourceIPv4Address: '192.0.2.10',
          destinationIPv4Address: '198.51.100.20',
          sourceTransportPort: 1024 + (i % 60_000),
          destinationTransportPort: 443,
          flowStartMilliseconds: T0 + i,
          flowEndMilliseconds: T0 + i + 40,
          flowStartReason: 1,
          flowEndReason: 4,
          transferredOctetTotalCount: i * 10,
          meanLatencyMicroseconds: 12_000,
        });
      const s = net.connect(to.port, to.host);
      await new Promise<void>((r, j) => {
        s.once('connect', r);
        s.once('error', j);
      });
      for (const m of enc.flush()) s.write(m);
      await new Promise<void>((r) => s.end(r));
    }

    it('a running collector during an outage: records spooled, /metrics shows the backlog; server back: pending 0, every record sent in ClickHouse once', async (t) => {
      if (!requireTools(t, CLICKHOUSE_SERVER)) return;
      const p = place();
      const work = mkdtempSync(join(tmpdir(), 'kpiflow-chspool-e2e-'));
      const args = ['--store', 'clickhouse', '--clickhouse-url', p.url, '--clickhouse-spool', p.spool];
      let c: CollectorProcess | undefined;
      try {
        c = await CollectorProcess.start({ dir: work, args });
        const col = c;
        const m0 = await col.metrics();
        assert.equal(m0.get('kpiflow_collector_store_failing'), 0);
        assert.equal(m0.get('kpiflow_collector_store_pending_rows'), 0);

        await server!.stop();
        const sent = 300;
        await sendProfiles(col.tcp, 0, sent);
        // Ground truth of "received and held": the spool files themselves, not /metrics.
        await col.until('every record sent held in the spool', () => spooledRows(p.spool) === sent);
        await t.test('/metrics during the outage: pending rows, spool bytes, store_failing 1', async () => {
          const m = await col.metrics();
          assert.equal(m.get('kpiflow_collector_records_received_total'), sent);
          assert.equal(m.get('kpiflow_collector_store_pending_rows'), sent);
          assert.equal(m.get('kpiflow_collector_store_failing'), 1);
          assert.ok(m.get('kpiflow_collector_store_spool_bytes') > 0);
          assert.ok(m.get('kpiflow_collector_store_failed_writes_total') >= 1);
          assert.equal(m.get('kpiflow_collector_records_dropped_total'), 0, 'nothing dropped');
        });

        const upAt = Date.now();
        await server!.start();
        await col.until(
          'every record sent in ClickHouse',
          async () => (await count(p.db)).rows >= sent,
          20_000,
        );
        const deliveredMs = Date.now() - upAt;
        assert.deepEqual(await count(p.db), { rows: sent, flows: sent }, 'every record sent, once');
        await col.until('the spool folder empty', () => batchFiles(p.spool).length === 0);
        const up = await col.metrics();
        assert.equal(up.get('kpiflow_collector_store_pending_rows'), 0);
        assert.equal(up.get('kpiflow_collector_store_failing'), 0);
        assert.equal(up.get('kpiflow_collector_store_spool_bytes'), 0);
        assert.equal(up.get('kpiflow_collector_store_delivered_rows_total'), sent);
        assert.deepEqual(await col.stop('SIGTERM', 30_000), { code: 0, signal: null }, col.stderr);
        console.log(
          `collector e2e: ${sent} spooled records in ClickHouse ${deliveredMs} ms after it came back`,
        );
      } finally {
        await c?.kill();
        await server!.start();
        rmSync(work, { recursive: true, force: true });
      }
    });

    it('SIGTERM during an outage keeps the batches in the spool; a collector restarted (still during the outage) delivers them once the server is back', async (t) => {
      if (!requireTools(t, CLICKHOUSE_SERVER)) return;
      const p = place();
      const work = mkdtempSync(join(tmpdir(), 'kpiflow-chspool-e2e-'));
      const args = ['--store', 'clickhouse', '--clickhouse-url', p.url, '--clickhouse-spool', p.spool];
      let c: CollectorProcess | undefined;
      let again: CollectorProcess | undefined;
      try {
        c = await CollectorProcess.start({ dir: work, args });
        await server!.stop();
        const sent = 200;
        await sendProfiles(c.tcp, 0, sent);
        await c.until('every record sent held in the spool', () => spooledRows(p.spool) === sent);
        const stopAt = Date.now();
        const exit = await c.stop('SIGTERM', 30_000);
        const stopMs = Date.now() - stopAt;
        assert.deepEqual(exit, { code: 0, signal: null }, c.stderr);
        assert.equal(spooledRows(p.spool), sent, 'the batches stay in the spool folder');
        assert.ok(
          c.logs.some((l) => String(l['msg']).includes('kept in the spool')),
          'the collector logs that it kept batches',
        );

        again = await CollectorProcess.start({ dir: work, args });
        await sleep(300);
        assert.equal(spooledRows(p.spool), sent, 'still held while the server is down');
        await server!.start();
        const restarted = again;
        await restarted.until(
          'the spooled records in ClickHouse',
          async () => (await count(p.db)).rows >= sent,
          20_000,
        );
        assert.deepEqual(await count(p.db), { rows: sent, flows: sent });
        await restarted.until('the spool folder empty', () => batchFiles(p.spool).length === 0);
        const m = await restarted.metrics();
        assert.equal(m.get('kpiflow_collector_store_pending_rows'), 0);
        assert.equal(m.get('kpiflow_collector_store_delivered_rows_total'), sent);
        assert.deepEqual(await restarted.stop('SIGTERM', 30_000), { code: 0, signal: null });
        console.log(
          `collector e2e: SIGTERM during the outage took ${stopMs} ms (the store's 10 s close timeout)`,
        );
      } finally {
        await c?.kill();
        await again?.kill();
        await server!.start();
        rmSync(work, { recursive: true, force: true });
      }
    });
  });
});
