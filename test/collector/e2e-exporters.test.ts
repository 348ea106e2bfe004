/**
 * Real exporters into a running `kpiflow collect`: softflowd and pmacct's pmacctd (nfprobe
 * plugin) read TCP captures from shared/fixtures/tcp and export IPFIX over UDP through a relay
 * socket that keeps a copy of every datagram. The API (/api/v1/flows, every page, and
 * /api/v1/exporters) must return exactly the records the exporters sent, counted independently:
 * softflowd's own statistics, tshark's cflow dissection of the relayed datagrams and, for pmacct,
 * ipfixDump reading the same datagrams; and every row's addresses, ports, protocol, octets and
 * packets (and pmacct's absolute times) must be those tshark decodes.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { type CollectorProcess, UdpRelay, withCollector } from '../helpers/collector-process.js';
import {
  type CflowMessage,
  cflowMessages,
  flatten,
  ipfixDump,
  mergedTcpCapture,
  type PdmlField,
  tsharkPdml,
  writePcap,
} from '../helpers/pcap.js';
import { runPmacctd } from '../helpers/pmacct.js';
import { runSoftflowd } from '../helpers/softflowd.js';
import { requireTools } from '../helpers/tools.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The comparable values of one flow record: the 5-tuple and counters, as text. */
type FlowKey = string;

function show(flow: PdmlField[], name: string): string | undefined {
  return flow.find((f) => f.name === name)?.show;
}

/** A flow record of tshark's decode, keyed like `apiKey`. */
function tsharkKey(flow: PdmlField[]): FlowKey {
  return [
    show(flow, 'cflow.srcaddr') ?? show(flow, 'cflow.srcaddrv6'),
    show(flow, 'cflow.dstaddr') ?? show(flow, 'cflow.dstaddrv6'),
    show(flow, 'cflow.srcport'),
    show(flow, 'cflow.dstport'),
    show(flow, 'cflow.protocol'),
    show(flow, 'cflow.octets') ?? show(flow, 'cflow.octets64'),
    show(flow, 'cflow.packets') ?? show(flow, 'cflow.packets64'),
  ].join(' ');
}

/** An API flow keyed like `tsharkKey`. */
function apiKey(item: Record<string, unknown>): FlowKey {
  return [
    item['sourceAddress'],
    item['destinationAddress'],
    item['sourceTransportPort'],
    item['destinationTransportPort'],
    item['protocolIdentifier'],
    item['octetDeltaCount'],
    item['packetDeltaCount'],
  ].join(' ');
}

/** What tshark sees in the relayed datagrams. */
interface TsharkView {
  messages: CflowMessage[];
  /** Every data record, with the set (template) id it came in. */
  records: { templateId: number; flow: PdmlField[] }[];
  /** Template ids the template and options template sets define. */
  templateIds: number[];
}

function tsharkView(datagrams: { payload: Buffer; port: number }[], pcap: string): TsharkView {
  writePcap(
    pcap,
    datagrams.map((d) => ({ payload: d.payload, srcAddr: '127.0.0.1', srcPort: d.port })),
  );
  const messages = cflowMessages(pcap);
  assert.equal(messages.length, datagrams.length, 'tshark dissects every datagram as IPFIX');
  assert.ok(
    messages.every((m) => m.version === 10 && m.errors === 0 && m.missingTemplates === 0),
    'tshark finds no error and no missing template',
  );
  const records = messages.flatMap((m) =>
    m.sets.flatMap((s) =>
      s.setId >= 256 ? (s.flows ?? []).map((flow) => ({ templateId: s.setId, flow })) : [],
    ),
  );
  const templateIds = new Set<number>();
  for (const p of tsharkPdml(pcap)) {
    for (const l of p.layers)
      for (const f of flatten(l)) if (f.name === 'cflow.template_id') templateIds.add(Number(f.show));
  }
  return { messages, records, templateIds: [...templateIds].sort((a, b) => a - b) };
}

/**
 * Waits until the collector has stored `expected` records of `key`, then checks the flows API
 * (walked in small pages) and the exporters API against tshark's view.
 */
async function checkApi(
  c: CollectorProcess,
  key: string,
  view: TsharkView,
): Promise<Record<string, unknown>[]> {
  const expected = view.records.length;
  await c.until(`${expected} records from ${key}`, async () => {
    const e = (await c.exporters()).find((x) => x.exporter === key);
    return !!e && e.records >= expected;
  });
  // One more flush interval: a wrong (too large) count would show up now.
  await sleep(300);
  const pageSize = 7;
  const { items, pages } = await c.all('/api/v1/flows', { exporter: key, order: 'asc' }, pageSize);
  assert.equal(items.length, expected, `API flows of ${key} vs tshark's data records`);
  // Several pages; a store may or may not know that a full last page is the last one.
  const full = Math.ceil(expected / pageSize);
  assert.ok(pages >= Math.max(2, full) && pages <= full + 1, `${pages} pages for ${expected} rows`);
  assert.equal(new Set(items.map((i) => i['id'])).size, expected, 'no row twice across pages');
  assert.ok(items.every((i) => i['exporter'] === key));

  // Per template: same number of records.
  const perTemplate = (ids: number[]) =>
    [...ids.reduce((m, id) => m.set(id, (m.get(id) ?? 0) + 1), new Map<number, number>())].sort();
  assert.deepEqual(
    perTemplate(items.map((i) => i['templateId'] as number)),
    perTemplate(view.records.map((r) => r.templateId)),
    'records per template: API vs tshark',
  );
  // Flow records: identical 5-tuples and counters, as multisets.
  const theirs = view.records
    .filter((r) => show(r.flow, 'cflow.srcport') !== undefined)
    .map((r) => tsharkKey(r.flow));
  const ours = items.filter((i) => i['sourceTransportPort'] !== undefined).map(apiKey);
  assert.ok(theirs.length >= 10, `only ${theirs.length} flow records`);
  assert.deepEqual(ours.sort(), theirs.sort(), 'addresses, ports, protocol, octets, packets: API vs tshark');

  const [e, ...more] = (await c.exporters()).filter((x) => x.exporter === key);
  assert.equal(more.length, 0);
  assert.ok(e);
  assert.equal(e.transport, 'udp');
  assert.equal(e.address, '127.0.0.1');
  assert.equal(e.records, expected, 'exporter records');
  assert.equal(e.flows, expected, 'exporter flows');
  assert.equal(e.profiles, 0);
  assert.equal(e.lostRecords, 0, 'no sequence gap on loopback');
  assert.equal(e.decodeErrors, 0);
  assert.deepEqual(e.templateIds, view.templateIds, 'templates: API vs tshark');
  return items;
}

describe('real exporters into a running collector', () => {
  it("softflowd: the API returns exactly the records softflowd exported (its own count, tshark), with tshark's values", async (t) => {
    if (!requireTools(t, 'softflowd', 'softflowctl', 'tshark', 'mergecap')) return;
    await withCollector({}, async (c, dir) => {
      const capture = mergedTcpCapture(dir);
      const relay = await UdpRelay.open(c.udp);
      try {
        const run = await runSoftflowd(capture, dir, { target: relay.address });
        await relay.settle(run.exportedPackets);
        assert.equal(relay.datagrams.length, run.exportedPackets, 'datagrams vs softflowd');
        const view = tsharkView(relay.datagrams, join(dir, 'softflowd.pcap'));
        const flowRecords = view.records.filter((r) => show(r.flow, 'cflow.srcaddr') !== undefined);
        assert.equal(flowRecords.length, run.exportedRecords, "tshark's flow records vs softflowd's count");
        const items = await checkApi(c, relay.exporterKey, view);
        const flows = items.filter((i) => i['sourceTransportPort'] !== undefined);
        assert.equal(flows.length, run.exportedRecords, "API flows vs softflowd's count");
        // softflowd sends sysUpTime-relative times and its systemInitTimeMilliseconds in an
        // options record: the collector turns them into absolute times.
        for (const f of flows) {
          assert.equal(typeof f['flowStartMilliseconds'], 'number', 'absolute start time');
          assert.ok((f['flowEndMilliseconds'] as number) >= (f['flowStartMilliseconds'] as number));
        }
      } finally {
        relay.close();
      }
    });
  });

  it('pmacctd (nfprobe, IPFIX): the API returns exactly the records pmacct exported (tshark and ipfixDump), with their values and times', async (t) => {
    if (!requireTools(t, 'pmacctd', 'tshark', 'ipfixDump', 'mergecap')) return;
    await withCollector({}, async (c, dir) => {
      const capture = mergedTcpCapture(dir);
      const relay = await UdpRelay.open(c.udp);
      try {
        const run = await runPmacctd(capture, dir, relay.address);
        assert.equal(run.code, 0, `pmacctd exit status: ${run.log}`);
        // pmacctd exits after its plugin exported everything; loopback delivers at once.
        let n = -1;
        while (n !== relay.datagrams.length) {
          n = relay.datagrams.length;
          await sleep(200);
        }
        await relay.settle(n);
        assert.ok(n >= 1, `pmacctd sent nothing: ${run.log}`);
        const view = tsharkView(relay.datagrams, join(dir, 'pmacct.pcap'));
        // ipfixDump, independently, on the same messages written back to back (RFC 5655).
        const file = join(dir, 'pmacct.ipfix');
        writeFileSync(file, Buffer.concat(relay.datagrams.map((d) => d.payload)));
        const dump = ipfixDump(file);
        assert.equal(dump.stats.messages, n);
        assert.equal(dump.records.length, view.records.length, 'ipfixDump vs tshark: data records');
        assert.equal(dump.stats.dataRecords, view.records.length);
        const items = await checkApi(c, relay.exporterKey, view);
        // pmacct sends absolute flowStart/EndMilliseconds: the API has tshark's times.
        const times = (flowStart: unknown, flowEnd: unknown) => `${flowStart}-${flowEnd}`;
        assert.deepEqual(
          items.map((i) => times(i['flowStartMilliseconds'], i['flowEndMilliseconds'])).sort(),
          view.records
            .map((r) =>
              times(
                Date.parse(show(r.flow, 'cflow.abstimestart')!.replace(/(\.\d{3})\d+/, '$1')),
                Date.parse(show(r.flow, 'cflow.abstimeend')!.replace(/(\.\d{3})\d+/, '$1')),
              ),
            )
            .sort(),
          'flow times: API vs tshark',
        );
      } finally {
        relay.close();
      }
    });
  });
});
