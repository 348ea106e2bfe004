/**
 * Scale-out with real processes: one ClickHouse server, two `kpiflow collect` processes writing
 * the same database, and an API-only process (`--no-ingest`) answering for both. Collector A
 * takes softflowd (a third-party NetFlow/IPFIX exporter reading TCP captures) and a kpiflow agent
 * replaying the same captures; collector B takes a kpiflow agent replaying the recorded live
 * demo. Every exporter sends through a relay socket that keeps each datagram, and ipfixDump
 * (libfixbuf) decodes those datagrams: that is the ground truth, never kpiflow's own decoder.
 * The replica must return every record, across pages, with the decoded values; list the three
 * exporters with their record counts; and summarize the profiles of both collectors.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CLICKHOUSE_SERVER, ClickHouseServer } from '../helpers/clickhouse-server.js';
import {
  CollectorProcess as Collector,
  type CollectorProcess,
  KPIFLOW,
  UdpRelay,
} from '../helpers/collector-process.js';
import { type DumpRecord, type IpfixDumpOutput, ipfixDump, mergedTcpCapture } from '../helpers/pcap.js';
import { runSoftflowd } from '../helpers/softflowd.js';
import { requireTools } from '../helpers/tools.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The recorded live demo (events of a real run), replayed by the agent without privileges. */
const DEMO_RECORDING = fileURLToPath(new URL('../../../demo/recordings/demo.kfev', import.meta.url));

/** Template ids of kpiflow profiles (TCP, MPTCP meta, MPTCP subflow). */
const PROFILE_TEMPLATES = new Set([47561, 47563, 47564]);
/** kpiflow's RFC 5610 type records: counted as records, stored nowhere. */
const TYPE_RECORD_TEMPLATE = 65000;
/** Flowcorder's PEN and the ids this test reads from ipfixDump's output. */
const PEN = 65534;
const KPI = { flowStartReason: 1, transferredOctetTotalCount: 2, receivedOctetTotalCount: 3 } as const;

/** A field of a decoded record: by IANA id, or by (PEN, id). */
function field(r: DumpRecord, id: number, pen = 0): string | undefined {
  return r.fields.find((f) => f.id === id && f.pen === pen)?.value;
}

/** ipfixDump's timestamps ('2026-11-25 23:34:21.860', UTC) as ms since the epoch. */
function dumpMs(v: string | undefined): number | undefined {
  return v === undefined ? undefined : Date.parse(`${v.replace(' ', 'T')}Z`);
}

/** An address as the API writes it: IPv4 as is, IPv6 in RFC 5952 form (WHATWG's serializer). */
function canonical(a: string | undefined): string | undefined {
  if (a === undefined || !a.includes(':')) return a;
  return new URL(`http://[${a}]/`).hostname.slice(1, -1);
}

/** What went over the wire from one exporter, as ipfixDump decodes it. */
interface WireView {
  dump: IpfixDumpOutput;
  /** Data records per template id. */
  perTemplate: Map<number, number>;
  profiles: DumpRecord[];
  /** Every data record that is neither a profile nor an RFC 5610 type record. */
  flows: DumpRecord[];
}

/**
 * Writes the relayed datagrams back to back (RFC 5655) and has ipfixDump decode them, typing
 * enterprise elements by the RFC 5610 records the exporter sent (without them ipfixDump reads
 * kpiflow's reduced-size KPIs as octet arrays).
 */
function wireView(relay: UdpRelay, file: string): WireView {
  writeFileSync(file, Buffer.concat(relay.datagrams.map((d) => d.payload)));
  const dump = ipfixDump(file, ['--rfc5610']);
  assert.equal(dump.stats.messages, relay.datagrams.length, `ipfixDump reads every message of ${file}`);
  assert.deepEqual(dump.missingTemplates, [], `no data set without its template in ${file}`);
  assert.equal(dump.records.length, dump.stats.dataRecords);
  const perTemplate = new Map<number, number>();
  for (const r of dump.records) perTemplate.set(r.templateId, (perTemplate.get(r.templateId) ?? 0) + 1);
  return {
    dump,
    perTemplate,
    profiles: dump.records.filter((r) => PROFILE_TEMPLATES.has(r.templateId)),
    flows: dump.records.filter(
      (r) => !PROFILE_TEMPLATES.has(r.templateId) && r.templateId !== TYPE_RECORD_TEMPLATE,
    ),
  };
}

/** A profile's identity and life-cycle, from ipfixDump's record. */
function wireProfileKey(exporter: string, r: DumpRecord): string {
  return [
    exporter,
    r.templateId,
    field(r, 148), // flowId
    field(r, 7),
    field(r, 11),
    dumpMs(field(r, 152)),
    dumpMs(field(r, 153)),
    field(r, KPI.flowStartReason, PEN),
    field(r, 136), // flowEndReason
    field(r, KPI.transferredOctetTotalCount, PEN),
    field(r, KPI.receivedOctetTotalCount, PEN),
  ]
    .map((v) => v ?? '')
    .join(' ');
}

/** The same identity from an API profile item. */
function apiProfileKey(p: Record<string, unknown>): string {
  return [
    p['exporter'],
    p['templateId'],
    p['flowId'],
    p['sourceTransportPort'],
    p['destinationTransportPort'],
    p['flowStartMilliseconds'],
    p['flowEndMilliseconds'],
    STATE_NUMBER[p['startState'] as string] ?? p['startState'],
    STATE_NUMBER[p['endState'] as string] ?? p['endState'],
    p['transferredOctetTotalCount'],
    p['receivedOctetTotalCount'],
  ]
    .map((v) => (v === undefined || v === null ? '' : String(v)))
    .join(' ');
}

/** The wire numbers of the FSM states the API names (ARCHITECTURE: Connection life-cycle). */
const STATE_NUMBER: Record<string, number> = {
  NEW: 1,
  ESTABLISHED: 2,
  UPDATE: 3,
  FINISHED: 4,
  BROKEN: 5,
  UNREACHABLE: 6,
  DESYNC: 7,
};

/** A flow's 5-tuple and counters, from ipfixDump's record (options records: template id only). */
function wireFlowKey(exporter: string, r: DumpRecord): string {
  return [
    exporter,
    r.templateId,
    canonical(field(r, 8) ?? field(r, 27)),
    canonical(field(r, 12) ?? field(r, 28)),
    field(r, 7),
    field(r, 11),
    field(r, 4),
    field(r, 1) ?? field(r, 85),
    field(r, 2) ?? field(r, 86),
  ]
    .map((v) => v ?? '')
    .join(' ');
}

/** The same from an API flow item. */
function apiFlowKey(f: Record<string, unknown>): string {
  return [
    f['exporter'],
    f['templateId'],
    f['sourceAddress'],
    f['destinationAddress'],
    f['sourceTransportPort'],
    f['destinationTransportPort'],
    f['protocolIdentifier'],
    f['octetDeltaCount'],
    f['packetDeltaCount'],
  ]
    .map((v) => (v === undefined || v === null ? '' : String(v)))
    .join(' ');
}

/** What `kpiflow agent` said when it stopped. */
interface AgentRun {
  profiles: number;
  exported: number;
  dropped: number;
}

/** Runs `kpiflow agent --source SOURCE --export udp://TARGET` to the end of its replay. */
async function runAgent(source: string, target: { host: string; port: number }): Promise<AgentRun> {
  const proc = spawn(
    process.execPath,
    [KPIFLOW, 'agent', '--source', source, '--export', `udp://${target.host}:${target.port}`],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  proc.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  proc.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
  try {
    const code = await new Promise<number | null>((resolve) => proc.on('close', (c) => resolve(c)));
    assert.equal(code, 0, `kpiflow agent --source ${source}: ${err}${out.slice(-2000)}`);
  } finally {
    clearTimeout(timer);
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  }
  const stopped = out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .find((l) => l['msg'] === 'agent stopped');
  assert.ok(stopped, `agent stopped line: ${out.slice(-2000)}`);
  return {
    profiles: Number(stopped['profiles']),
    exported: Number(stopped['exported']),
    dropped: Number(stopped['dropped']),
  };
}

/** Waits until the relay has taken no datagram for 200 ms, and forwarded all of them. */
async function quiet(relay: UdpRelay): Promise<void> {
  let n = -1;
  while (n !== relay.datagrams.length) {
    n = relay.datagrams.length;
    await sleep(200);
  }
  await relay.settle(n);
}

/** A multiset as sorted entries, for deepEqual with a readable diff. */
const sorted = (keys: string[]) => [...keys].sort();

describe('scale-out: two collectors write one ClickHouse database, an API replica reads it', () => {
  it('the --no-ingest replica returns every record softflowd and two agents sent to two collectors (ipfixDump), lists the three exporters and summarizes both collectors', async (t) => {
    if (!requireTools(t, CLICKHOUSE_SERVER, 'softflowd', 'softflowctl', 'ipfixDump', 'mergecap')) return;
    const started = Date.now();
    const dir = mkdtempSync(join(tmpdir(), 'kpiflow-scale-'));
    let server: ClickHouseServer | undefined;
    const collectors: CollectorProcess[] = [];
    const relays: UdpRelay[] = [];
    try {
      server = await ClickHouseServer.start();
      const database = 'kpiflow_scale';
      const url = server.url(database);
      // The captures and the demo recording start days to years ago: with the default 30-day
      // retention their day partitions would be dropped, which is not what this test is about.
      const store = ['--store', 'clickhouse', '--clickhouse-url', url, '--retention', 'off'];
      const collector = (name: string, args: string[]) => {
        mkdirSync(join(dir, name));
        return Collector.start({ dir: join(dir, name), args: [...store, ...args], readyTimeoutMs: 30_000 });
      };
      // Both ingesting collectors start at once against an empty database: the schema
      // migration must tolerate the race, as replicas started together would run it.
      const [a, b] = await Promise.all([
        collector('a', ['--clickhouse-spool', join(dir, 'a', 'spool')]),
        collector('b', ['--clickhouse-spool', join(dir, 'b', 'spool')]),
      ]);
      collectors.push(a, b);
      const api = await collector('api', ['--no-ingest']);
      collectors.push(api);
      assert.equal(api.udp, undefined, 'an API replica opens no IPFIX listener');

      // Exporters: softflowd and a pcap-replaying agent into A, the demo-replaying agent into B.
      const capture = mergedTcpCapture(dir);
      const soft = await UdpRelay.open(a.udp);
      relays.push(soft);
      const pcapAgent = await UdpRelay.open(a.udp);
      relays.push(pcapAgent);
      const demoAgent = await UdpRelay.open(b.udp);
      relays.push(demoAgent);
      mkdirSync(join(dir, 'softflowd'));
      const [softRun, pcapRun, demoRun] = await Promise.all([
        runSoftflowd(capture, join(dir, 'softflowd'), { target: soft.address }),
        runAgent(`pcap:${capture}`, pcapAgent.address),
        runAgent(`events:${DEMO_RECORDING}`, demoAgent.address),
      ]);
      await Promise.all([soft.settle(softRun.exportedPackets), quiet(pcapAgent), quiet(demoAgent)]);
      assert.equal(soft.datagrams.length, softRun.exportedPackets, "datagrams vs softflowd's count");

      // Ground truth: ipfixDump on the datagrams each exporter sent.
      const wire = {
        soft: wireView(soft, join(dir, 'softflowd.ipfix')),
        pcap: wireView(pcapAgent, join(dir, 'pcap-agent.ipfix')),
        demo: wireView(demoAgent, join(dir, 'demo-agent.ipfix')),
      };
      const flowRecords = wire.soft.flows.filter((r) => field(r, 7) !== undefined);
      assert.equal(flowRecords.length, softRun.exportedRecords, "ipfixDump's flows vs softflowd's count");
      assert.ok(flowRecords.length >= 10, `only ${flowRecords.length} softflowd flows`);
      assert.equal(wire.soft.profiles.length, 0);
      for (const [name, run, w] of [
        ['pcap agent', pcapRun, wire.pcap],
        ['demo agent', demoRun, wire.demo],
      ] as const) {
        assert.equal(run.dropped, 0, `${name} dropped nothing`);
        assert.equal(w.profiles.length, run.exported, `${name}: ipfixDump's profiles vs the agent's count`);
        assert.equal(w.flows.length, 0, `${name} sends profiles and type records only`);
        assert.ok((w.perTemplate.get(TYPE_RECORD_TEMPLATE) ?? 0) > 0, `${name} announces its elements`);
      }
      assert.ok(wire.pcap.profiles.length >= 10 && wire.demo.profiles.length >= 100);

      const expected = [
        { key: soft.exporterKey, w: wire.soft, collector: a },
        { key: pcapAgent.exporterKey, w: wire.pcap, collector: a },
        { key: demoAgent.exporterKey, w: wire.demo, collector: b },
      ];
      // The replica sees a record once the collector's batch reached ClickHouse: rows and the
      // exporter accounting go in one spool batch, rows first.
      await api.until(
        'every exporter fully stored',
        async () => {
          const listed = await api.exporters();
          return expected.every(
            (e) => (listed.find((x) => x.exporter === e.key)?.records ?? 0) >= e.w.dump.stats.dataRecords,
          );
        },
        20_000,
      );
      // One more flush interval of both collectors: a record stored twice would show now.
      await sleep(500);

      // Exporters: the three of them, with ipfixDump's counts; each listed once.
      const listed = await api.exporters();
      assert.deepEqual(
        listed.map((e) => e.exporter).sort(),
        expected.map((e) => e.key).sort(),
        'the replica lists the exporters of both collectors',
      );
      for (const { key, w } of expected) {
        const e = listed.find((x) => x.exporter === key)!;
        assert.equal(e.transport, 'udp');
        assert.equal(e.address, '127.0.0.1');
        assert.equal(e.records, w.dump.stats.dataRecords, `${key}: records vs ipfixDump`);
        assert.equal(e.profiles, w.profiles.length, `${key}: profiles vs ipfixDump`);
        assert.equal(e.flows, w.flows.length, `${key}: flows vs ipfixDump`);
        assert.equal(e.lostRecords, 0, `${key}: no sequence gap on loopback`);
        assert.equal(e.decodeErrors, 0, `${key}: no decode error`);
        assert.deepEqual(
          e.templateIds,
          [...new Set(w.dump.templates.map((x) => x.templateId))].sort((x, y) => x - y),
          `${key}: templates vs ipfixDump`,
        );
      }

      // Profiles: every one of both collectors, page by page, with the values on the wire.
      const wireProfiles = expected.flatMap((e) => e.w.profiles.map((r) => wireProfileKey(e.key, r)));
      const profiles = await api.all('/api/v1/profiles', { order: 'asc' }, 50);
      assert.equal(profiles.items.length, wireProfiles.length, 'profiles: replica vs ipfixDump');
      assert.ok(profiles.pages >= Math.ceil(wireProfiles.length / 50), `${profiles.pages} pages`);
      assert.equal(new Set(profiles.items.map((p) => p['id'])).size, wireProfiles.length, 'no row twice');
      assert.deepEqual(sorted(profiles.items.map(apiProfileKey)), sorted(wireProfiles), 'profiles: values');
      // Pages keep their order across the rows of both collectors.
      const starts = profiles.items.map((p) => (p['flowStartMilliseconds'] as number | null) ?? 0);
      for (let i = 1; i < starts.length; i++)
        assert.ok(starts[i - 1]! <= starts[i]!, `profile ${i} out of order`);
      // Newest first, as the dashboards ask: the same rows, reversed.
      const desc = await api.all('/api/v1/profiles', { order: 'desc' }, 64);
      assert.deepEqual(
        desc.items.map((p) => p['id']),
        profiles.items.map((p) => p['id']).reverse(),
        'descending pages are the ascending ones reversed',
      );

      // Flows: softflowd's records (options record included), page by page.
      const wireFlows = wire.soft.flows.map((r) => wireFlowKey(soft.exporterKey, r));
      const flows = await api.all('/api/v1/flows', { order: 'asc' }, 7);
      assert.equal(flows.items.length, wireFlows.length, 'flows: replica vs ipfixDump');
      assert.ok(flows.pages >= 2);
      assert.equal(new Set(flows.items.map((f) => f['id'])).size, wireFlows.length, 'no row twice');
      assert.deepEqual(
        sorted(flows.items.map(apiFlowKey)),
        sorted(wireFlows),
        'flows: 5-tuples and counters',
      );

      // A summary over both collectors' profiles, by exporter: counts, connections and sums.
      const summary = await api.json<{ items: Record<string, unknown>[] }>(
        '/api/v1/profiles/summary?groupBy=exporter&limit=100',
      );
      const sum = (rs: DumpRecord[], id: number) =>
        rs.reduce((s, r) => s + Number(field(r, id, PEN) ?? 0), 0);
      assert.deepEqual(
        summary.items
          .map((g) => ({
            key: g['key'],
            profiles: g['profiles'],
            connections: g['connections'],
            transferredOctetTotalCount: g['transferredOctetTotalCount'],
            receivedOctetTotalCount: g['receivedOctetTotalCount'],
          }))
          .sort((x, y) => String(x.key).localeCompare(String(y.key))),
        expected
          .filter((e) => e.w.profiles.length > 0)
          .map((e) => ({
            key: e.key,
            profiles: e.w.profiles.length,
            connections: new Set(e.w.profiles.map((r) => field(r, 148))).size,
            transferredOctetTotalCount: sum(e.w.profiles, KPI.transferredOctetTotalCount),
            receivedOctetTotalCount: sum(e.w.profiles, KPI.receivedOctetTotalCount),
          }))
          .sort((x, y) => String(x.key).localeCompare(String(y.key))),
        'summary by exporter vs ipfixDump',
      );
      // One connection of each collector's agent, rebuilt from its flowId.
      for (const e of expected.filter((x) => x.w.profiles.length > 0)) {
        const flowId = field(e.w.profiles.at(-1)!, 148)!;
        const conn = await api.json<{ items: Record<string, unknown>[] }>(`/api/v1/connections/${flowId}`);
        assert.equal(
          conn.items.length,
          e.w.profiles.filter((r) => field(r, 148) === flowId).length,
          `connection ${flowId} of ${e.key}`,
        );
      }

      // ClickHouse itself holds each row once, under the collector that received it.
      const counts = (
        await server.query(
          `SELECT exporter, count() FROM ${database}.profiles GROUP BY exporter UNION ALL
         SELECT exporter, count() FROM ${database}.flows GROUP BY exporter FORMAT TSV`,
        )
      )
        .trim()
        .split('\n')
        .map((l) => l.split('\t'))
        .reduce((m, [k, n]) => m.set(k!, (m.get(k!) ?? 0) + Number(n)), new Map<string, number>());
      for (const { key, w } of expected)
        assert.equal(counts.get(key), w.profiles.length + w.flows.length, `${key}: rows in ClickHouse`);

      // Each collector delivered its own rows and holds nothing back; the replica writes nothing.
      for (const c of [a, b]) {
        const rows = expected
          .filter((e) => e.collector === c)
          .reduce((s, e) => s + e.w.profiles.length + e.w.flows.length, 0);
        const m = await c.metrics();
        assert.equal(m.get('kpiflow_collector_store_delivered_rows_total'), rows, 'rows delivered');
        assert.equal(m.get('kpiflow_collector_store_pending_rows'), 0, 'nothing pending');
        assert.equal(m.get('kpiflow_collector_store_rejected_rows_total'), 0, 'nothing rejected');
      }
      assert.equal((await api.metrics()).get('kpiflow_collector_store_delivered_rows_total'), 0);

      // Collectors stop cleanly; the replica still answers from ClickHouse without them.
      for (const c of [a, b]) assert.equal((await c.stop()).code, 0, c.stderr);
      assert.equal((await api.all('/api/v1/profiles', {}, 1000)).items.length, wireProfiles.length);
      assert.equal((await api.stop()).code, 0, api.stderr);
      t.diagnostic(
        `${wireProfiles.length} profiles, ${wireFlows.length} flows from 3 exporters via 2 collectors in ${Date.now() - started} ms`,
      );
    } finally {
      for (const r of relays) r.close();
      await Promise.all(collectors.map((c) => c.kill()));
      await server?.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
