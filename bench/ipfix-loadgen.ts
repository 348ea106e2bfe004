/**
 * IPFIX load generator (a separate process of the ingest benchmark): sends Flowcorder-style TCP
 * profiles over UDP to one or more collectors at a fixed rate of records per second, with
 * correct per-domain sequence numbers, and prints what it sent as one JSON line.
 *
 *   node dist/bench/ipfix-loadgen.js --target 127.0.0.1:4739 [--target ...] --rate 100000 --seconds 5
 *     [--template flowcorder|agent]
 */
import { createSocket } from 'node:dgram';
import { parseArgs } from 'node:util';
import { tcpProfileFields } from '../agent/profile-templates.js';
import { IpfixDecoder, IpfixEncoder } from '../ipfix/index.js';

const { values } = parseArgs({
  options: {
    target: { type: 'string', multiple: true },
    rate: { type: 'string', default: '100000' },
    seconds: { type: 'string', default: '5' },
    domain: { type: 'string', default: '7' },
    // flowcorder: 21 fields incl. 2 non-column ones (kept in `extra`); agent: the template kpiflow
    // agents send (agent/profile-templates.ts: IPv6 fields, IPv4 as mapped, every TCP KPI).
    template: { type: 'string', default: 'flowcorder' },
  },
});
if (values.template !== 'flowcorder' && values.template !== 'agent') {
  process.stderr.write(`ipfix-loadgen: --template ${values.template} is not flowcorder or agent\n`);
  process.exit(2);
}
const targets = (values.target ?? []).map((t) => {
  const i = t.lastIndexOf(':');
  return { host: t.slice(0, i), port: Number(t.slice(i + 1)) };
});
if (targets.length === 0) {
  process.stderr.write('ipfix-loadgen: give at least one --target HOST:PORT\n');
  process.exit(2);
}
const rate = Number(values.rate);
const seconds = Number(values.seconds);

/** One pool message: bytes (sequence patched at send time) and its data record count. */
interface PoolMessage {
  bytes: Buffer;
  records: number;
  /** Profile records among them (the others: RFC 5610 type records describing kpiflow's elements). */
  profiles: number;
}

/** 40,000 profiles of the template kpiflow agents send. */
function agentProfiles(enc: IpfixEncoder, now: number): void {
  const fields = tcpProfileFields();
  const lengths = enc.defineTemplate(47561, fields).fields.map((f) => f.length);
  for (let i = 0; i < 40_000; i++) {
    const r: Record<string, number | string> = {};
    for (const [k, f] of fields.entries()) {
      if (f === 'sourceIPv6Address') r[f] = '::ffff:192.0.2.1';
      else if (f === 'destinationIPv6Address') r[f] = `::ffff:198.51.100.${i % 250}`;
      else if (f === 'flowId') r[f] = i;
      else if (f === 'ipVersion') r[f] = 4;
      else if (f === 'sourceTransportPort') r[f] = 1024 + (i % 60000);
      else if (f === 'destinationTransportPort') r[f] = 443;
      else if (f === 'flowStartMilliseconds') r[f] = now - 60_000 + (i % 60_000);
      else if (f === 'flowEndMilliseconds') r[f] = now - 59_000 + (i % 60_000);
      else if (f === 'flowStartReason') r[f] = 2;
      else if (f === 'flowEndReason') r[f] = 4;
      else r[f] = (i * 7919) % Math.min(100_000, 2 ** (8 * lengths[k]!));
    }
    enc.add(47561, r);
  }
}

/** 40,000 Flowcorder-style profiles of 21 fields. */
function flowcorderProfiles(enc: IpfixEncoder, now: number): void {
  enc.defineTemplate(47561, [
    'flowId',
    'sourceIPv4Address',
    'destinationIPv4Address',
    'sourceTransportPort',
    'destinationTransportPort',
    'ipVersion',
    'flowStartMilliseconds',
    'flowEndMilliseconds',
    'flowStartReason',
    'flowEndReason',
    'transferredOctetTotalCount',
    'receivedOctetTotalCount',
    'retransmittedPacketTotalCount',
    'meanLatencyMilliseconds',
    'meanLatencyMicroseconds',
    'duplicatePacketTotalCount',
    'stallCount',
    'reorderingPacketCount',
    'timeToEstablishMilliseconds',
    'packetDeltaCount',
    'octetDeltaCount',
  ]);
  for (let i = 0; i < 40_000; i++) {
    enc.add(47561, {
      flowId: i,
      sourceIPv4Address: '192.0.2.1',
      destinationIPv4Address: `198.51.100.${i % 250}`,
      sourceTransportPort: 1024 + (i % 60000),
      destinationTransportPort: 443,
      ipVersion: 4,
      flowStartMilliseconds: now - 60_000 + (i % 60_000),
      flowEndMilliseconds: now - 59_000 + (i % 60_000),
      flowStartReason: 2,
      flowEndReason: 4,
      transferredOctetTotalCount: i * 1000,
      receivedOctetTotalCount: i * 10,
      retransmittedPacketTotalCount: i % 7,
      meanLatencyMilliseconds: 10 + (i % 90),
      meanLatencyMicroseconds: 10_000 + (i % 90_000),
      duplicatePacketTotalCount: 0,
      stallCount: i % 50 === 0 ? 1 : 0,
      reorderingPacketCount: i % 3,
      timeToEstablishMilliseconds: 5,
      packetDeltaCount: 10 + (i % 100),
      octetDeltaCount: 1000 + i,
    });
  }
}

function pool(): { preamble: PoolMessage; data: PoolMessage[] } {
  const enc = new IpfixEncoder({ observationDomainId: Number(values.domain) });
  if (values.template === 'agent') agentProfiles(enc, Date.now());
  else flowcorderProfiles(enc, Date.now());
  const msgs = enc.flush();
  // Count each message's profiles by decoding it: type records may spill past the first message,
  // and a message resent every cycle of the pool resends them too.
  const dec = new IpfixDecoder();
  const out = msgs.map((bytes, k) => ({
    bytes,
    records:
      (k + 1 < msgs.length ? msgs[k + 1]!.readUInt32BE(8) : enc.sequenceNumber) - bytes.readUInt32BE(8),
    profiles: dec
      .decode('pool', bytes, 'file')
      .dataSets.filter((d) => d.templateId === 47561)
      .reduce((a, d) => a + d.count, 0),
  }));
  return { preamble: out[0]!, data: out.slice(1) };
}

async function main(): Promise<void> {
  const { preamble, data } = pool();
  const sock = createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  sock.setSendBufferSize(8 * 1024 * 1024);
  let seq = 0;
  let sentRecords = 0;
  let sentProfiles = 0;
  let sentMessages = 0;
  let inFlight = 0;
  const send = (m: PoolMessage) => {
    const b = Buffer.from(m.bytes);
    b.writeUInt32BE(seq >>> 0, 8);
    seq += m.records;
    sentRecords += m.records;
    sentProfiles += m.profiles;
    sentMessages++;
    for (const t of targets) {
      inFlight++;
      sock.send(b, t.port, t.host, () => {
        inFlight--;
      });
    }
  };
  send(preamble);
  await new Promise((r) => setTimeout(r, 200));
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let k = 0;
  const recordsPerMessage = data.reduce((a, m) => a + m.records, 0) / data.length;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      if (now >= end) return resolve();
      // Messages due by now at the target rate; the socket's own queue bounds bursts.
      const due = ((now - t0) / 1000) * (rate / recordsPerMessage);
      let sent = 0;
      while (sentMessages - 1 < due && inFlight < 2048) {
        send(data[k]!);
        k = (k + 1) % data.length;
        sent++;
      }
      // Sleep when nothing was due: spinning on setImmediate would take a whole core from the
      // receivers on this 2-core machine. A 1 ms timer sends ~20 messages a tick at 250 k/s.
      if (sent === 0) setTimeout(tick, 1);
      else setImmediate(tick);
    };
    tick();
  });
  const elapsed = (performance.now() - t0) / 1000;
  while (inFlight > 0) await new Promise((r) => setTimeout(r, 5));
  sock.close();
  process.stdout.write(
    `${JSON.stringify({ sentRecords, sentProfiles, sentMessages, seconds: elapsed, achievedRecordsPerSecond: Math.round((sentRecords - preamble.records) / elapsed) })}\n`,
  );
}

void main();
