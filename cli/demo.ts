/**
 * `kpiflow demo`: the collector and the live agent with case-study traffic between namespaces
 * (demo/run.ts). `kpiflow demo codec`: the IPFIX codec end to end: it encodes Flowcorder-style TCP
 * profiles with kpiflow's enterprise elements, writes them as an RFC 5655 file, decodes them back,
 * and decodes a third-party capture.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { runDemo as runLiveDemo } from '../demo/run.js';
import { dumpIpfix, IpfixDecoder, IpfixEncoder } from '../ipfix/index.js';

const DEMO_USAGE = `usage: kpiflow demo [--seconds N] [--api-port P] [--exit] [--summary-json FILE] [--dir DIR] [--replay] [--record FILE]
       kpiflow demo codec
  --seconds N          seconds of traffic (default 60)
  --api-port P         the collector's API on 127.0.0.1:P (default 9739)
  --exit               exit after the summary (default: serve the API until Ctrl-C)
  --summary-json FILE  also write the summary as JSON
  --dir DIR            keep the demo database in DIR (default: a temporary directory, removed)
  --replay             replay the bundled recordings (demo/recordings) even when the live agent could run
  --record FILE        live: the agent also records its events to FILE (how demo/recordings is made)
`;

/** `kpiflow demo [codec] ...`; returns the exit code. */
export async function runDemo(args: string[]): Promise<number> {
  if (args[0] === 'codec') return runCodecDemo();
  const { values } = parseArgs({
    args,
    options: {
      seconds: { type: 'string', default: '60' },
      'api-port': { type: 'string', default: '9739' },
      exit: { type: 'boolean', default: false },
      'summary-json': { type: 'string' },
      dir: { type: 'string' },
      replay: { type: 'boolean', default: false },
      record: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(DEMO_USAGE);
    return 0;
  }
  const seconds = Number(values.seconds);
  if (!Number.isFinite(seconds) || seconds < 1 || seconds > 86_400) {
    process.stderr.write(
      `kpiflow demo: --seconds ${values.seconds} is not a number of seconds from 1 to 86400\n`,
    );
    return 2;
  }
  const apiPort = Number(values['api-port']);
  if (!Number.isInteger(apiPort) || apiPort < 1 || apiPort > 65535) {
    process.stderr.write(`kpiflow demo: --api-port ${values['api-port']} is not a port (1-65535)\n`);
    return 2;
  }
  return runLiveDemo({
    seconds,
    apiPort,
    exit: values.exit,
    summaryJson: values['summary-json'] ?? null,
    dir: values.dir ?? null,
    replay: values.replay,
    record: values.record ?? null,
  });
}

/** The codec demo; returns the exit code. */
async function runCodecDemo(): Promise<number> {
  const out = (s: string) => process.stdout.write(`${s}\n`);
  out('kpiflow demo codec: the IPFIX codec end to end\n');
  const enc = new IpfixEncoder({ observationDomainId: 1 });
  enc.defineTemplate(47561, [
    'flowId',
    'sourceIPv4Address',
    'destinationIPv4Address',
    'sourceTransportPort',
    'destinationTransportPort',
    'flowStartMilliseconds',
    'flowEndMilliseconds',
    'flowStartReason',
    'flowEndReason',
    'transferredOctetTotalCount',
    'receivedOctetTotalCount',
    'retransmittedPacketTotalCount',
    'meanLatencyMilliseconds',
    'stallCount',
  ]);
  const t0 = Date.now();
  const dests = ['192.0.2.10', '198.51.100.7', '203.0.113.5'];
  for (let i = 0; i < 300; i++) {
    enc.add(47561, {
      flowId: i,
      sourceIPv4Address: '192.0.2.1',
      destinationIPv4Address: dests[i % 3]!,
      sourceTransportPort: 40000 + i,
      destinationTransportPort: 443,
      flowStartMilliseconds: t0 + i,
      flowEndMilliseconds: t0 + i + 50 + (i % 3) * 100,
      flowStartReason: 2,
      flowEndReason: 4,
      transferredOctetTotalCount: 1000 * i,
      receivedOctetTotalCount: 20 * i,
      retransmittedPacketTotalCount: i % 7,
      meanLatencyMilliseconds: 10 + (i % 3) * 60,
      stallCount: i % 3 === 2 ? 1 : 0,
    });
  }
  const messages = enc.flush();
  const dir = mkdtempSync(join(tmpdir(), 'kpiflow-demo-'));
  const file = join(dir, 'profiles.ipfix');
  writeFileSync(file, Buffer.concat(messages));
  out(`encoded 300 TCP profiles (template 47561, PEN 65534 elements + RFC 5610 type records)`);
  out(`  -> ${messages.length} messages of at most ${enc.maxMessageSize} bytes in ${file}`);

  const dec = new IpfixDecoder();
  const rtt = new Map<string, number[]>();
  for (const m of messages) {
    for (const set of dec.decode('demo', m, 'file').dataSets) {
      if (set.templateId !== 47561) continue;
      for (const r of set.records) {
        const d = String(r['destinationIPv4Address']);
        rtt.set(d, [...(rtt.get(d) ?? []), Number(r['meanLatencyMilliseconds'] ?? 0)]);
      }
    }
  }
  out(
    `decoded back: ${dec.stats.records} records, of which ${enc.stats.typeRecordsSent} RFC 5610 type records`,
  );
  for (const [d, v] of [...rtt].sort((a, b) => b[1]!.length - a[1]!.length)) {
    out(
      `  ${d.padEnd(15)} ${v.length} profiles, mean RTT ${(v.reduce((a, b) => a + b, 0) / v.length).toFixed(1)} ms`,
    );
  }

  // A third-party decoder reads the same file: libfixbuf's ipfixDump names our enterprise
  // elements from the RFC 5610 records alone.
  const dump = spawnSync('ipfixDump', ['--rfc5610', '--in', file], { encoding: 'utf8' });
  if (dump.status === 0) {
    const lines = dump.stdout.split('\n');
    const at = lines.findIndex((l) => l.trim().startsWith('count:') && l.includes('tid: 47561'));
    out(`\nlibfixbuf's ipfixDump --rfc5610 reads the first profile as:`);
    for (const l of lines.slice(at + 2, at + 16)) out(`  ${l.trim()}`);
  } else out('\n(ipfixDump not installed: make demo installs libfixbuf-tools)');

  const fixture = new URL('../../../shared/fixtures/ipfix/ipfixcol2/example_flows.ipfix', import.meta.url);
  let bytes: Buffer | null = null;
  try {
    bytes = readFileSync(fixture);
  } catch {
    out('\n(third-party capture ../shared/fixtures not present: skipped)');
  }
  if (bytes) {
    const proto = new Map<number, number>();
    let records = 0;
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const line of String(chunk).split('\n')) {
          if (!line) continue;
          const r = JSON.parse(line) as Record<string, unknown>;
          records++;
          const p = Number(r['protocolIdentifier'] ?? -1);
          proto.set(p, (proto.get(p) ?? 0) + Number(r['octetDeltaCount'] ?? 0));
        }
        cb();
      },
    });
    const s = await dumpIpfix(Readable.from([bytes]), sink);
    out(
      `\ndecoded ipfixcol2's example_flows.ipfix: ${s.messages} messages, ${records} flow records, ${s.errors} errors`,
    );
    for (const [p, o] of [...proto].sort((a, b) => b[1] - a[1]).slice(0, 5)) {
      out(`  protocol ${String(p).padStart(3)}: ${o} octets`);
    }
  }
  out(`\ntry: node dist/cli/kpiflow.js ipfix dump ${file} --templates | head`);
  return 0;
}
