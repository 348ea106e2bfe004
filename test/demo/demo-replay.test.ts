/**
 * `kpiflow demo --replay`, what `make demo` does without root: the bundled recording of a live
 * demo run (demo/recordings) replayed through the agent into the collector prints the summary that
 * live run printed, case studies included. Needs no privileges.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type DemoSummary, freePort } from '../../demo/run.js';

const CLI = fileURLToPath(new URL('../../cli/kpiflow.js', import.meta.url));
const RECORDED = fileURLToPath(new URL('../../../demo/recordings/demo.summary.json', import.meta.url));

describe('kpiflow demo --replay', () => {
  it('replays the recorded live demo into the summary the live run printed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kpiflow-demo-replay-'));
    try {
      const file = join(dir, 'summary.json');
      const r = spawnSync(
        process.execPath,
        [CLI, 'demo', '--replay', '--exit', '--api-port', String(await freePort()), '--summary-json', file],
        { encoding: 'utf8', timeout: 120_000 },
      );
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /replaying recorded live runs/);
      const got = JSON.parse(readFileSync(file, 'utf8')) as DemoSummary;
      const live = JSON.parse(readFileSync(RECORDED, 'utf8')) as DemoSummary;
      assert.equal(got.mode, 'replay');
      assert.equal(live.mode, 'live');
      assert.deepEqual({ ...got, mode: 'live' }, live);
      // The recording holds the case studies.
      const far = got.destinations.find((d) => d.key === '198.51.100.80');
      assert.ok(far?.rtt && far.rtt.p50 >= 150);
      assert.ok((got.destinations.find((d) => d.key === '198.51.100.10')?.stallCount ?? 0) > 0);
      assert.deepEqual(got.mptcp.pathIndexes, [1, 2]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
