/**
 * Golden recordings (test/fixtures/events/, made by scripts/record-golden.sh on Linux 6.18 from
 * the live scenarios of test/agent-live): `kpiflow agent --source events:FILE --export file:OUT`
 * replays each one, without privileges, into exactly the profiles the live agent exported:
 * same records (every field, flowIds and times included), same order. Only the IPFIX export
 * time differs, and is left out of both sides.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { KPIFLOW } from '../helpers/collector-process.js';
import { profileLines } from './events-profiles.js';

const GOLDEN = fileURLToPath(new URL('../../../test/fixtures/events/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'kf-golden-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const scenarios = readdirSync(GOLDEN)
  .filter((d) => existsSync(join(GOLDEN, d, 'recording.kfev')))
  .sort();

type Row = Record<string, unknown>;

/** The kernel's word on each scenario (as test/agent-live checks it live), against the golden profiles. */
function checkKernelTruth(name: string, lines: readonly string[]): void {
  const truth = (
    JSON.parse(readFileSync(join(GOLDEN, name, 'scenario.json'), 'utf8')) as {
      kernelTruth: Record<string, number>;
    }
  ).kernelTruth;
  const rows = lines.map((l) => JSON.parse(l) as Row);
  const from = (port: number) => rows.filter((r) => r['sourceTransportPort'] === port);
  const sum = (rs: Row[], k: string) => rs.reduce((n, r) => n + Number(r[k] ?? 0), 0);
  const ends = (rs: Row[]) => rs.map((r) => `${r['flowStartReason']}>${r['flowEndReason']}`).join(' ');
  const client = truth['clientPort'] === undefined ? [] : from(truth['clientPort']);
  switch (name) {
    case 'syn-drop':
      assert.equal(sum(client, 'synRetransmissionCount'), truth['totalRetrans']);
      assert.equal(ends(client), '1>2 2>4');
      break;
    case 'blackhole':
      assert.equal(sum(client, 'stallCount'), truth['totalRto']);
      assert.equal(sum(client, 'retransmittedPacketTotalCount'), truth['totalRetrans']);
      assert.equal(ends(client), '1>2 2>3 3>2 2>4');
      break;
    case 'loss':
      assert.equal(sum(client, 'retransmittedPacketTotalCount'), truth['totalRetrans']);
      assert.equal(sum(client, 'droppedOctetTotalCount'), truth['bytesRetrans']);
      break;
    case 'refused':
      assert.equal(ends(client), '1>6');
      break;
    case 'reset':
      assert.equal(ends(client), '1>2 2>5');
      break;
    case 'ooo':
      assert.equal(sum(from(5005), 'reorderingPacketCount'), truth['serverRcvOoopack']);
      break;
    case 'dup-acks':
      assert.equal(sum(from(5006), 'duplicatePacketTotalCount'), truth['delayedAckLost']);
      break;
    case 'adopted-active-timeout':
      assert.equal(client[0]?.['flowStartReason'], 2, 'adopted: no handshake profile');
      assert.ok(client.filter((r) => r['flowEndReason'] === 2).length >= 2, ends(client));
      assert.equal(
        sum(client, 'transferredOctetTotalCount'),
        truth['bytesAckedAtEnd']! - truth['bytesAckedAtGate']!,
      );
      break;
  }
}

describe('golden event recordings replay into the live run’s profiles', () => {
  it('has the recordings of the live scenarios', () => {
    for (const s of [
      'syn-drop',
      'blackhole',
      'loss',
      'refused',
      'reset',
      'ooo',
      'dup-acks',
      'adopted-active-timeout',
    ])
      assert.ok(scenarios.includes(s), `test/fixtures/events/${s} (scripts/record-golden.sh)`);
  });

  for (const name of scenarios) {
    it(`${name}: kpiflow agent --source events:FILE exports the live profiles, in order, with their times`, () => {
      const rec = join(GOLDEN, name, 'recording.kfev');
      const out = join(dir, `${name}.ipfix`);
      const run = spawnSync(
        process.execPath,
        [KPIFLOW, 'agent', '--source', `events:${rec}`, '--export', `file:${out}`, '--log-level', 'warn'],
        { encoding: 'utf8', timeout: 60_000 },
      );
      assert.equal(run.status, 0, `exit ${run.status}: ${run.stderr}${run.stdout}`);
      assert.doesNotMatch(run.stdout, /no end record/);
      const dump = spawnSync(process.execPath, [KPIFLOW, 'ipfix', 'dump', out], {
        encoding: 'utf8',
        maxBuffer: 64 << 20,
      });
      assert.equal(dump.status, 0, dump.stderr);
      const want = readFileSync(join(GOLDEN, name, 'profiles.ndjson'), 'utf8')
        .split('\n')
        .filter(Boolean);
      const got = profileLines(dump.stdout);
      assert.ok(want.length > 0, 'the live run exported profiles');
      assert.deepEqual(got, want);
      // And the recording means what it should: the live profiles agree with the kernel's own
      // counters, read by the scenario's peers when it was recorded (scenario.json).
      checkKernelTruth(name, want);
    });
  }
});
