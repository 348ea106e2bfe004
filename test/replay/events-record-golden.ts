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
import { AgentProcess, type Peer, sleep } from '../agent-live/live-harness.js';
import { LIVE_SCENARIOS, type LiveScenario } from '../agent-live/scenarios.js';
import { KPIFLOW } from '../helpers/collector-process.js';
import { createNetnsPair } from '../helpers/netns.js';
import { profileLines } from './events-profiles.js';

/** Where the fixtures live in the source tree. */
const GOLDEN_DIR = fileURLToPath(new URL('../../../test/fixtures/events/', import.meta.url));

/** Records one scenario into `out/<name>/`. */
async function record(name: string, sc: LiveScenario, out: string): Promise<void> {
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
  const todo = names.length > 0 ? names : Object.keys(LIVE_SCENARIOS);
  for (const name of todo) {
    const sc = LIVE_SCENARIOS[name];
    if (!sc) throw new Error(`no scenario ${name} (known: ${Object.keys(LIVE_SCENARIOS).join(', ')})`);
    await record(name, sc, out);
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
