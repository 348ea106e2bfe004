/**
 * Makes the golden recordings of test/fixtures/events/ (run by scripts/record-golden.sh, as
 * root, on a host with the probes built). Each scenario of test/agent-live runs once more with
 * `kpiflow agent --source live --record FILE --export file:PROFILES` observing it; then the
 * recording is trimmed to the scenario's connections (its namespace pair has addresses no other
 * connection of the host has) and the exported profiles are filtered the same way and written
 * as `kpiflow ipfix dump` NDJSON. test/replay/events-golden.test.ts replays each recording and
 * expects exactly those profiles.
 *
 *   node dist/test/replay/events-record-golden.js [OUT_DIR] [SCENARIO...]
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { copyEventFile } from '../../agent/index.js';
import {
  AgentProcess,
  nftAdd,
  nftDelete,
  type Peer,
  sleep,
  startPeer,
  tcpExt,
} from '../agent-live/live-harness.js';
import { KPIFLOW } from '../helpers/collector-process.js';
import { createNetnsPair, type NetnsPair } from '../helpers/netns.js';
import { profileLines } from './events-profiles.js';

/** Where the fixtures live in the source tree. */
const GOLDEN_DIR = fileURLToPath(new URL('../../../test/fixtures/events/', import.meta.url));

/** What a scenario does between the agent's start and stop; returns facts for scenario.json. */
type Scenario = {
  /** Extra `kpiflow agent` flags. */
  args?: string[];
  /** Runs before the agent starts (a connection older than the agent). */
  before?: (pair: NetnsPair, peers: Peer[]) => Promise<Record<string, unknown>>;
  run: (pair: NetnsPair, peers: Peer[], pre: Record<string, unknown>) => Promise<Record<string, unknown>>;
};

const SCENARIOS: Record<string, Scenario> = {
  'syn-drop': {
    async run({ a: client, b: server }, peers) {
      const port = 5001;
      const srv = startPeer(server, ['server', server.ipv4, port, 1000, '--expect', 1000]);
      peers.push(srv);
      await srv.phase('listening');
      nftAdd(
        server,
        'kfsyn',
        'input',
        `tcp dport ${port} tcp flags & (syn | ack) == syn numgen inc mod 1000000 == 0 drop`,
      );
      const cli = startPeer(client, ['client', server.ipv4, port, 1000, 1000]);
      peers.push(cli);
      const connected = await cli.phase('connected');
      await cli.phase('done');
      cli.release();
      await cli.phase('closed');
      return { clientPort: connected['local_port'], totalRetrans: connected['total_retrans'] };
    },
  },
  blackhole: {
    async run({ a: client, b: server }, peers) {
      const port = 5002;
      const total = 3 << 20;
      const srv = startPeer(server, ['server', server.ipv4, port, 100_000, '--expect', total]);
      peers.push(srv);
      await srv.phase('listening');
      const cli = startPeer(client, [
        'client',
        server.ipv4,
        port,
        total,
        100_000,
        '--chunk',
        32768,
        '--interval',
        20,
      ]);
      peers.push(cli);
      const connected = await cli.phase('connected');
      await sleep(300);
      nftAdd(server, 'kfbh', 'input', `tcp dport ${port} drop`);
      await sleep(1500);
      nftDelete(server, 'kfbh');
      const done = await cli.phase('done', 60_000);
      cli.release();
      await cli.phase('closed');
      await srv.phase('done', 30_000);
      return {
        clientPort: connected['local_port'],
        totalRto: done['total_rto'],
        totalRetrans: done['total_retrans'],
      };
    },
  },
  loss: {
    async run({ a: client, b: server }, peers) {
      const port = 5003;
      const total = 8 << 20;
      const srv = startPeer(server, ['server', server.ipv4, port, 1, '--expect', total]);
      peers.push(srv);
      await srv.phase('listening');
      nftAdd(server, 'kfloss', 'input', `tcp dport ${port} numgen random mod 100 < 2 drop`);
      const cli = startPeer(client, ['client', server.ipv4, port, total, 1]);
      peers.push(cli);
      const connected = await cli.phase('connected');
      const done = await cli.phase('done', 60_000);
      nftDelete(server, 'kfloss');
      cli.release();
      await cli.phase('closed');
      return {
        clientPort: connected['local_port'],
        totalRetrans: done['total_retrans'],
        bytesRetrans: done['bytes_retrans'],
      };
    },
  },
  refused: {
    async run({ a: client, b: server }, peers) {
      const cli = startPeer(client, ['connect-refused', server.ipv4, 5999]);
      peers.push(cli);
      const done = await cli.phase('done');
      return { clientPort: done['local_port'], error: done['error'] };
    },
  },
  reset: {
    async run({ a: client, b: server }, peers) {
      const port = 5004;
      const srv = startPeer(server, ['server', server.ipv6, port, 0, '--expect', 100 << 20]);
      peers.push(srv);
      await srv.phase('listening');
      const cli = startPeer(client, [
        'client',
        server.ipv6,
        port,
        100 << 20,
        0,
        '--chunk',
        65536,
        '--interval',
        5,
        '--abort-after',
        1 << 20,
      ]);
      peers.push(cli);
      const connected = await cli.phase('connected');
      await cli.phase('aborted');
      const sdone = await srv.phase('done');
      return { clientPort: connected['local_port'], serverError: sdone['error'] };
    },
  },
  ooo: {
    async run({ a: client, b: server }, peers) {
      const port = 5005;
      const total = 8 << 20;
      const srv = startPeer(server, ['server', server.ipv6, port, 1, '--expect', total]);
      peers.push(srv);
      await srv.phase('listening');
      nftAdd(server, 'kfrx', 'input', `tcp dport ${port} numgen random mod 100 < 1 drop`);
      const cli = startPeer(client, ['client', server.ipv6, port, total, 1]);
      peers.push(cli);
      await cli.phase('done', 60_000);
      nftDelete(server, 'kfrx');
      cli.release();
      await cli.phase('closed');
      const sdone = await srv.phase('done');
      return { serverRcvOoopack: sdone['rcv_ooopack'] };
    },
  },
  'dup-acks': {
    async run({ a: client, b: server }, peers) {
      const port = 5006;
      const total = 2 << 20;
      server.exec('sysctl', ['-qw', 'net.ipv4.tcp_invalid_ratelimit=0']);
      const before = tcpExt(server, 'DelayedACKLost');
      const srv = startPeer(server, ['server', server.ipv4, port, 1, '--expect', total]);
      peers.push(srv);
      await srv.phase('listening');
      const cli = startPeer(client, [
        'client',
        server.ipv4,
        port,
        total,
        1,
        '--chunk',
        32768,
        '--interval',
        20,
      ]);
      peers.push(cli);
      await cli.phase('connected');
      await sleep(300);
      nftAdd(client, 'kfack', 'input', `tcp sport ${port} drop`);
      await sleep(1500);
      nftDelete(client, 'kfack');
      await cli.phase('done', 60_000);
      cli.release();
      await cli.phase('closed');
      await srv.phase('done');
      return { delayedAckLost: tcpExt(server, 'DelayedACKLost') - before };
    },
  },
  'adopted-active-timeout': {
    args: ['--active-timeout', '2'],
    async before({ a: client, b: server }, peers) {
      const port = 5008;
      const gate = 100_000;
      const send = 65536 * 120;
      const srv = startPeer(server, ['server', server.ipv4, port, 1, '--expect', gate + send]);
      peers.push(srv);
      await srv.phase('listening');
      const cli = startPeer(client, [
        'client',
        server.ipv4,
        port,
        send,
        1,
        '--gate',
        gate,
        '--chunk',
        65536,
        '--interval',
        50,
      ]);
      peers.push(cli);
      const cport = Number((await cli.phase('connected'))['local_port']);
      const gated = await cli.phase('gated');
      return { clientPort: cport, bytesAckedAtGate: gated['bytes_acked'] };
    },
    async run(_pair, peers, pre) {
      const [srv, cli] = peers as [Peer, Peer];
      cli.release();
      const done = await cli.phase('done', 60_000);
      cli.release();
      await cli.phase('closed');
      await srv.phase('done');
      return { ...pre, bytesAckedAtEnd: done['bytes_acked'] };
    },
  },
  'concurrent-1000': {
    // The live test's ring size: a burst of 1000 connections must not lose events.
    args: ['--ring-size', '64M'],
    async run({ a: client, b: server }, peers) {
      const n = 1000;
      const port = 5007;
      const srv = startPeer(server, ['many-server', server.ipv4, port, n]);
      peers.push(srv);
      await srv.phase('listening');
      const cli = startPeer(client, ['many-client', server.ipv4, port, n]);
      peers.push(cli);
      await cli.phase('connecting');
      const done = await cli.phase('done', 60_000);
      await srv.phase('done', 30_000);
      return { connections: done['done'], replies: done['replies'], errors: done['errors'] };
    },
  },
};

/** Records one scenario into `out/<name>/`. */
async function record(name: string, sc: Scenario, out: string): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), `kf-golden-${name}-`));
  const pair = createNetnsPair({ uniqueAddresses: true });
  const peers: Peer[] = [];
  let agent: AgentProcess | null = null;
  try {
    const rec = join(work, 'full.kfev');
    const live = join(work, 'live.ipfix');
    const pre = sc.before ? await sc.before(pair, peers) : {};
    agent = await AgentProcess.start([
      '--record',
      rec,
      '--export',
      `file:${live}`,
      '--ring-size',
      '64M',
      ...(sc.args ?? []),
    ]);
    const facts = await sc.run(pair, peers, pre);
    // Let the last events (TIME_WAIT, destroy) reach the agent before it stops.
    await sleep(500);
    const code = await agent.stop();
    if (code !== 0) throw new Error(`agent exit ${code}: ${agent.stderr}`);
    const mine = new Set([pair.a.ipv4, pair.a.ipv6, pair.b.ipv4, pair.b.ipv6]);
    const dest = join(out, name);
    rmSync(dest, { recursive: true, force: true });
    mkdirSync(dest, { recursive: true });
    const stats = await copyEventFile(
      rec,
      join(dest, 'recording.kfev'),
      (ev) => mine.has(ev.localAddress) || mine.has(ev.remoteAddress),
      `scenario ${name} of test/agent-live, trimmed to ${[...mine].join(' ')} by scripts/record-golden.sh`,
    );
    const dump = spawnSync(process.execPath, [KPIFLOW, 'ipfix', 'dump', live], {
      encoding: 'utf8',
      maxBuffer: 1 << 30,
    });
    if (dump.status !== 0) throw new Error(`ipfix dump: ${dump.stderr}`);
    const lines = profileLines(dump.stdout, mine);
    writeFileSync(join(dest, 'profiles.ndjson'), `${lines.join('\n')}\n`);
    writeFileSync(
      join(dest, 'scenario.json'),
      `${JSON.stringify({ scenario: name, addresses: [...mine], kernelTruth: facts, events: stats.events, lost: stats.lost, profiles: lines.length }, null, 2)}\n`,
    );
    process.stdout.write(`${name}: ${stats.events} events, ${stats.lost} lost, ${lines.length} profiles\n`);
  } finally {
    for (const p of peers) p.kill();
    pair.close();
    await agent?.kill();
    rmSync(work, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const [outArg, ...names] = process.argv.slice(2);
  const out = outArg ?? GOLDEN_DIR;
  const todo = names.length > 0 ? names : Object.keys(SCENARIOS);
  for (const name of todo) {
    const sc = SCENARIOS[name];
    if (!sc) throw new Error(`no scenario ${name} (known: ${Object.keys(SCENARIOS).join(', ')})`);
    await record(name, sc, out);
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
