/**
 * The real addon against this kernel: a load the verifier refuses arrives as NAT_ERR_LOAD with
 * errno, the program libbpf blamed and the verifier's log as lines; argument and lifetime errors
 * are typed; maps and knobs work through the binding.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { createProbeLoader, loadNativeBinding, NativeError, readProbeSpec } from '../../native/index.js';
import { requireRoot } from '../helpers/netns.js';
import { requireTools, run } from '../helpers/tools.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const OBJECT = `${ROOT}build/probes/kpiflow.bpf.o`;

describe('native addon', () => {
  it('reports a verifier refusal with errno, the failing program and the verifier log', (t) => {
    if (!requireRoot(t) || !requireTools(t, 'clang')) return;
    const dir = mkdtempSync(join(tmpdir(), 'kf-bad-'));
    try {
      const obj = join(dir, 'bad.bpf.o');
      run('clang', [
        ...['-g', '-O2', '-target', 'bpf', '-D__TARGET_ARCH_x86', `-I${ROOT}build/probes`],
        ...['-c', `${ROOT}test/native/fixtures/bad.bpf.c`, '-o', obj],
      ]);
      const loader = createProbeLoader(loadNativeBinding);
      assert.throws(
        () => loader.load(readProbeSpec(obj)),
        (err: unknown) => {
          assert.ok(err instanceof NativeError);
          assert.equal(err.code, 'NAT_ERR_LOAD');
          assert.equal(err.errno, 13, 'EACCES from the verifier');
          assert.equal(err.failedProgram, 'bad');
          assert.ok(err.verifierLog.length > 2, 'verifier log lines');
          assert.ok(
            err.verifierLog.some((l) => /invalid mem access 'map_value_or_null'/.test(l)),
            err.verifierLog.join('\n'),
          );
          assert.match(err.message, /Permission denied/);
          return true;
        },
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('types argument and lifetime errors, reads knobs back and walks maps', (t) => {
    if (!requireRoot(t)) return;
    const binding = loadNativeBinding();
    const obj = new binding.BpfObject(OBJECT);
    try {
      assert.throws(
        () => obj.attach('kf_state', 'tp_btf'),
        { code: 'NAT_ERR_ARGUMENT' },
        'attach before load',
      );
      assert.throws(() => obj.setAutoload('nope', false), { code: 'NAT_ERR_ARGUMENT' });
      assert.throws(() => new binding.BpfObject('/nonexistent.o'), { code: 'NAT_ERR_OPEN', errno: 2 });
      const ro = obj.initialValue('.rodata')!;
      ro.writeUInt32LE(1234, 0);
      obj.setInitialValue('.rodata', ro);
      assert.equal(obj.initialValue('.rodata')!.readUInt32LE(0), 1234);
      for (const p of obj.programs()) obj.setAutoload(p.name, p.name === 'kf_destroy');
      obj.load();
      assert.throws(
        () => obj.setMaxEntries('kf_events', 8192),
        { code: 'NAT_ERR_ARGUMENT' },
        'resize after load',
      );
      assert.throws(() => obj.attach('kf_destroy', 'sideways'), { code: 'NAT_ERR_ARGUMENT' });
      assert.throws(() => obj.attach('kf_sockops', 'cgroup', '/nonexistent'), {
        code: 'NAT_ERR_ATTACH',
        errno: 2,
      });
      // Per-CPU array: one 8-byte slot per possible CPU; every key present.
      const key = Buffer.alloc(4);
      assert.equal(obj.mapLookup('kf_stats', key)!.length, 8 * binding.numPossibleCpus());
      assert.equal(obj.mapKeys('kf_stats').length, 6, 'KF_STAT_MAX');
      assert.throws(() => obj.mapLookup('kf_stats', Buffer.alloc(3)), { code: 'NAT_ERR_MAP' });
      const hashKey = Buffer.alloc(48, 1);
      assert.equal(obj.mapLookup('kf_syn_rx', hashKey), null);
      obj.mapUpdate('kf_syn_rx', hashKey, Buffer.alloc(8, 2));
      assert.deepEqual(obj.mapLookup('kf_syn_rx', hashKey), Buffer.alloc(8, 2));
      assert.equal(obj.mapKeys('kf_syn_rx').length, 1);
      assert.equal(obj.mapDelete('kf_syn_rx', hashKey), true);
      assert.equal(obj.mapDelete('kf_syn_rx', hashKey), false);
      const link = obj.attach('kf_destroy', 'tp_btf');
      assert.equal(obj.detach(link), true);
      assert.equal(obj.detach(link), false);
    } finally {
      obj.close();
      obj.close();
    }
    assert.throws(() => obj.mapKeys('kf_stats'), { code: 'NAT_ERR_CLOSED' });
  });

  it('releases probes with a live ring subscription when a worker thread is terminated', async (t) => {
    if (!requireRoot(t)) return;
    const loader = pathToFileURL(`${ROOT}dist/agent/probe-loader.js`).href;
    const worker = new Worker(
      `import(${JSON.stringify(loader)}).then((m) => {
        const p = m.startLiveProbes();
        p.subscribe(() => {});
        require('node:worker_threads').parentPort.postMessage(p.probes.programIds().get('kf_destroy'));
      });`,
      { eval: true },
    );
    const id = await new Promise<number>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    // The environment's cleanup hook detaches and frees everything; the process must survive it.
    assert.equal(await worker.terminate(), 1);
    let gone = false;
    for (let i = 0; i < 50 && !gone; i++) {
      try {
        run('bpftool', ['prog', 'show', 'id', String(id)]);
        await new Promise((r) => setTimeout(r, 100));
      } catch {
        gone = true;
      }
    }
    assert.ok(gone, `program ${id} still loaded after the worker ended`);
  });
});
