/**
 * native/ without a kernel: the ProbeSpec read from the compiled object (programs, attach kinds,
 * maps, knobs), knob encoding, and a loader over a fake binding that plays canned ring-buffer
 * bytes, so the whole path from raw bytes to ProbeEvents runs without privileges. Also the
 * agent's decisions that need no kernel: capabilities, cgroup mount, kernel support from BTF.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ZERO_COUNTERS } from '../../agent/index.js';
import { EVENT_KIND, type ProbeEvent } from '../../agent/probe-event.js';
import { encodeProbeEvent, PROBE_EVENT_SIZE } from '../../agent/probe-event-decoder.js';
import {
  findCgroup2Mount,
  kernelSupport,
  kernelTooOld,
  missingCapabilities,
  ProbeSourceError,
  privilegesMessage,
  startLiveProbes,
} from '../../agent/probe-loader.js';
import {
  attachKindOf,
  Btf,
  type NativeBinding,
  NativeError,
  type NativeObject,
  readProbeSpec,
  rodataWithKnobs,
} from '../../native/index.js';
import { IN_CI } from '../helpers/tools.js';

const OBJECT = fileURLToPath(new URL('../../../build/probes/kpiflow.bpf.o', import.meta.url));

function built(t: { skip(m: string): void }): boolean {
  if (existsSync(OBJECT)) return true;
  if (IN_CI) throw new Error(`${OBJECT} missing: make build compiles the probes`);
  t.skip('SKIPPED: probes not built (make build)');
  return false;
}

/** A fake addon: records calls, plays `batches` to ring subscribers on the next tick. */
function fakeBinding(batches: Buffer[], calls: string[]): NativeBinding {
  class FakeObject implements NativeObject {
    constructor(readonly path: string) {
      calls.push(`open ${path}`);
    }
    programs() {
      return [];
    }
    maps() {
      return [];
    }
    setAutoload(p: string, on: boolean) {
      calls.push(`autoload ${p} ${on}`);
    }
    initialValue() {
      return null;
    }
    setInitialValue(m: string, v: Buffer) {
      calls.push(`rodata ${m} ${v.toString('hex')}`);
    }
    setMaxEntries(m: string, n: number) {
      calls.push(`max ${m} ${n}`);
    }
    load() {
      calls.push('load');
    }
    attach(p: string, kind: string, target?: string) {
      calls.push(`attach ${p} ${kind} ${target ?? ''}`);
      return calls.length;
    }
    detach(id: number) {
      calls.push(`detach ${id}`);
      return true;
    }
    mapLookup(m: string, key: Buffer) {
      calls.push(`lookup ${m} ${key.toString('hex')}`);
      const v = Buffer.alloc(16); // two CPUs
      v.writeBigUInt64LE(key.readUInt32LE() === 0 ? 3n : 1n, 0);
      v.writeBigUInt64LE(4n, 8);
      return v;
    }
    mapUpdate() {}
    mapDelete() {
      return false;
    }
    mapKeys() {
      return [];
    }
    ringSubscribe(m: string, size: number, cb: (b: Buffer, wrong: number) => void) {
      calls.push(`subscribe ${m} ${size}`);
      setImmediate(() => {
        for (const b of batches) cb(b, 0);
      });
      return 99;
    }
    ringUnsubscribe(id: number) {
      calls.push(`unsubscribe ${id}`);
      return true;
    }
    iterRead(p: string, ns?: string) {
      calls.push(`iter ${p} ${ns ?? ''}`);
      return Buffer.alloc(0);
    }
    close() {
      calls.push('close');
    }
  }
  return {
    init() {},
    libbpfVersion: () => '1.1',
    numPossibleCpus: () => 2,
    BpfObject: FakeObject,
  };
}

function event(kind: ProbeEvent['kind'], cookie: bigint): ProbeEvent {
  return {
    kind,
    tsNs: 1n,
    cookie,
    netns: 1,
    ipVersion: 4,
    localAddress: '192.0.2.1',
    remoteAddress: '192.0.2.2',
    localPort: 1,
    remotePort: 2,
    tcpState: 1,
    caState: 0,
    mptcpSubflow: false,
    arg0: 0,
    arg1: 0,
    counters: { ...ZERO_COUNTERS, bytesAcked: 1, bytesReceived: 2, bytesSent: 3, sndCwnd: 10 },
    ancillary: { synNs: 0n, synRetrans: 0, dupPackets: 0, dupOctets: 0, badChecksums: 0, stalls: 0 },
    missing: [],
  };
}

describe('ProbeSpec', () => {
  it('lists every program with its attach kind, the maps and the knobs of the compiled object', (t) => {
    if (!built(t)) return;
    const spec = readProbeSpec(OBJECT);
    assert.equal(spec.license, 'Dual BSD/GPL');
    const kinds = Object.fromEntries(spec.programs.map((p) => [p.name, `${p.kind}:${p.target}`]));
    assert.deepEqual(kinds, {
      kf_sockops: 'cgroup:',
      kf_state: 'tp_btf:inet_sock_set_state',
      kf_cong_state: 'tp_btf:tcp_cong_state_set',
      kf_kfree_skb: 'tp_btf:kfree_skb',
      kf_bad_csum: 'tp_btf:tcp_bad_csum',
      kf_send_reset: 'tp_btf:tcp_send_reset',
      kf_receive_reset: 'tp_btf:tcp_receive_reset',
      kf_destroy: 'tp_btf:tcp_destroy_sock',
      kf_iter_tcp: 'iter:tcp',
      kf_naive_probe: 'tp_btf:tcp_probe',
      kf_mptcp_get_send: 'tp_btf:mptcp_subflow_get_send',
      kf_mptcp_frag: 'tp_btf:mptcp_sendmsg_frag',
      kf_mptcp_data_avail: 'tp_btf:subflow_check_data_avail',
    });
    assert.deepEqual([...spec.maps].sort(), [
      'kf_events',
      'kf_iter_scratch',
      'kf_msk',
      'kf_ofo_wait',
      'kf_scratch',
      'kf_sk',
      'kf_stats',
      'kf_syn_rx',
      'kf_task_msk',
    ]);
    const knobs = Object.fromEntries(spec.knobs.map((k) => [k.name, k.size]));
    assert.equal(knobs['kf_netns_filter'], 4);
    assert.equal(knobs['kf_state_via_sockops'], 1);
    assert.equal(knobs['kf_iter_enable_callbacks'], 1);
    assert.equal(knobs['kf_retrans_lo'], 8);
    assert.equal(knobs['kf_frag_hi'], 8);
  });

  it('writes knob values little-endian at their .rodata offsets, refusing unknown names and overflow', (t) => {
    if (!built(t)) return;
    const spec = readProbeSpec(OBJECT);
    const ro = rodataWithKnobs(spec, { kf_netns_filter: 0xdeadbeef, kf_state_via_sockops: true });
    const at = (n: string) => spec.knobs.find((k) => k.name === n)!.offset;
    assert.equal(ro.readUInt32LE(at('kf_netns_filter')), 0xdeadbeef);
    assert.equal(ro[at('kf_state_via_sockops')], 1);
    assert.equal(ro[at('kf_iter_enable_callbacks')], 1, 'defaults kept');
    assert.throws(() => rodataWithKnobs(spec, { nope: 1 }), { code: 'NAT_ERR_ARGUMENT' });
    assert.throws(() => rodataWithKnobs(spec, { kf_state_via_sockops: 256 }), { code: 'NAT_ERR_ARGUMENT' });
  });

  it('maps section names to attach kinds as libbpf does', () => {
    assert.deepEqual(attachKindOf('tracepoint/tcp/tcp_probe'), {
      kind: 'tracepoint',
      target: 'tcp/tcp_probe',
    });
    assert.deepEqual(attachKindOf('fentry/tcp_data_queue_ofo'), {
      kind: 'fentry',
      target: 'tcp_data_queue_ofo',
    });
    assert.deepEqual(attachKindOf('raw_tp/sched_switch'), { kind: 'raw_tp', target: 'sched_switch' });
    assert.deepEqual(attachKindOf('xdp'), { kind: 'auto', target: '' });
  });

  it('refuses what is not a BPF object with NAT_ERR_SPEC or NAT_ERR_OPEN', () => {
    assert.throws(() => readProbeSpec('/nonexistent.bpf.o'), { code: 'NAT_ERR_OPEN' });
    assert.throws(() => new Btf(Buffer.from('not btf at all, really')), { code: 'NAT_ERR_SPEC' });
  });
});

describe('loader over a fake binding', () => {
  it('sets knobs, skips programs, sizes the ring, attaches sockops to the cgroup and decodes canned batches', async (t) => {
    if (!built(t)) return;
    const spec = readProbeSpec(OBJECT);
    const calls: string[] = [];
    const batch1 = Buffer.concat(
      [event(EVENT_KIND.connect, 1n), event(EVENT_KIND.activeEstablished, 1n)].map(encodeProbeEvent),
    );
    const batch2 = encodeProbeEvent(event(EVENT_KIND.destroy, 1n));
    const live = startLiveProbes({
      getBinding: () => fakeBinding([batch1, batch2], calls),
      skipPrivilegeCheck: true,
      kernelBtf: spec.btf, // no tracepoint typedefs in it: every tp_btf program is skipped
      cgroupPath: '/sys/fs/cgroup/test',
      ringBytes: 1 << 16,
      netns: 42,
    });
    assert.ok(calls.includes('attach kf_sockops cgroup /sys/fs/cgroup/test'));
    assert.ok(calls.includes('max kf_events 65536'));
    assert.ok(calls.includes('autoload kf_state false'));
    assert.ok(calls.includes('autoload kf_naive_probe false'));
    assert.ok(!calls.some((c) => c.startsWith('attach kf_state')));
    const ro = calls.find((c) => c.startsWith('rodata .rodata '))!;
    const bytes = Buffer.from(ro.split(' ')[2]!, 'hex');
    assert.equal(bytes.readUInt32LE(0), 42);
    assert.equal(bytes[4], 1, 'state events fall back to sockops when the tracepoint is missing');
    // What is lost is reported per KPI, never left as zeros.
    const kpis = live.unavailable.map((u) => u.kpi);
    for (const k of ['duplicates', 'recovery', 'resetsSent', 'connectionEnd', 'ofoDistance'])
      assert.ok(kpis.includes(k), k);

    const got: ProbeEvent[][] = [];
    const sub = live.subscribe((evs) => got.push(evs));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(
      got.map((b) => b.map((e) => e.kind)),
      [[EVENT_KIND.connect, EVENT_KIND.activeEstablished], [EVENT_KIND.destroy]],
    );
    assert.equal(got[0]![0]!.counters.sndCwnd, 10);
    assert.equal(live.stats().lost, 7n, 'per-CPU slots summed');
    sub.close();
    live.close();
    assert.ok(calls.includes('unsubscribe 99'));
    assert.equal(calls.at(-1), 'close');
    assert.equal(PROBE_EVENT_SIZE, batch2.length);
  });

  it('turns a load failure into AGT_ERR_SOURCE_UNAVAILABLE naming the program and keeping the verifier log', (t) => {
    if (!built(t)) return;
    const spec = readProbeSpec(OBJECT);
    const failing = fakeBinding([], []);
    const Base = failing.BpfObject;
    failing.BpfObject = class extends Base {
      override load(): void {
        throw new NativeError(
          'NAT_ERR_LOAD',
          'cannot load x: Permission denied',
          13,
          ['0: (b7) r0 = 0', 'R1 !read_ok'],
          ["libbpf: prog 'kf_state': BPF program load failed: Permission denied"],
        );
      }
    };
    assert.throws(
      () =>
        startLiveProbes({
          getBinding: () => failing,
          skipPrivilegeCheck: true,
          kernelBtf: spec.btf,
          cgroupPath: '/x',
        }),
      (err: unknown) => {
        assert.ok(err instanceof ProbeSourceError);
        assert.equal(err.code, 'AGT_ERR_SOURCE_UNAVAILABLE');
        assert.equal(err.step, 'load');
        assert.match(err.message, /kf_state/);
        assert.match(err.message, /--source events:FILE/);
        assert.deepEqual((err.cause as NativeError).verifierLog, ['0: (b7) r0 = 0', 'R1 !read_ok']);
        return true;
      },
    );
  });
});

describe('agent start-up decisions', () => {
  it('has codes of their own for missing privileges and a kernel too old, naming what is missing', () => {
    const p = new ProbeSourceError('privileges', privilegesMessage(['CAP_BPF', 'CAP_NET_ADMIN']));
    assert.equal(p.code, 'AGT_ERR_PRIVILEGES');
    assert.match(p.message, /lacks CAP_BPF, CAP_NET_ADMIN/);
    assert.match(p.message, /--source events:FILE/);
    assert.match(p.message, /--source pcap:FILE/);
    const structs = new Set(['bpf_ringbuf', 'bpf_local_storage']);
    const btf = (without: string) => ({
      struct: (n: string) => (n === without || !structs.has(n) ? null : 1),
    });
    assert.equal(kernelTooOld(btf('none')), null);
    assert.match(kernelTooOld(btf('bpf_ringbuf'))!, /ring buffer \(Linux 5\.8\+\)/);
    assert.match(kernelTooOld(btf('bpf_local_storage'))!, /Linux 5\.11\+/);
    assert.equal(new ProbeSourceError('kernel', 'x').code, 'AGT_ERR_KERNEL_TOO_OLD');
    assert.equal(new ProbeSourceError('attach', 'x').code, 'AGT_ERR_SOURCE_UNAVAILABLE');
    if (existsSync('/sys/kernel/btf/vmlinux'))
      assert.equal(
        kernelTooOld(new Btf(readFileSync('/sys/kernel/btf/vmlinux'))),
        null,
        'this kernel has both',
      );
  });

  it('names the missing capabilities from CapEff', () => {
    assert.deepEqual(missingCapabilities('CapEff:\t000001ffffffffff\n'), []);
    assert.deepEqual(missingCapabilities('CapEff:\t0000000000000000\n'), [
      'CAP_BPF',
      'CAP_PERFMON',
      'CAP_NET_ADMIN',
    ]);
    // CAP_SYS_ADMIN (21) covers BPF and PERFMON, not NET_ADMIN (12).
    assert.deepEqual(missingCapabilities(`CapEff:\t${(1n << 21n).toString(16).padStart(16, '0')}\n`), [
      'CAP_NET_ADMIN',
    ]);
  });

  it('finds the cgroup v2 mount in /proc/mounts, preferring /sys/fs/cgroup', () => {
    const hybrid =
      'cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n';
    assert.equal(findCgroup2Mount(hybrid), '/sys/fs/cgroup/unified');
    assert.equal(findCgroup2Mount(`${hybrid}cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n`), '/sys/fs/cgroup');
    assert.equal(findCgroup2Mount('proc /proc proc rw 0 0\n'), null);
  });

  it('finds every hook and counter of the probes in this kernel (6.18) and nothing unavailable', (t) => {
    if (!built(t)) return;
    if (!existsSync('/sys/kernel/btf/vmlinux')) {
      if (IN_CI) throw new Error('/sys/kernel/btf/vmlinux missing');
      return t.skip('SKIPPED: kernel without BTF');
    }
    const support = kernelSupport(readProbeSpec(OBJECT), new Btf(readFileSync('/sys/kernel/btf/vmlinux')));
    assert.deepEqual(support, { skip: [], unavailable: [], missing: [], stateViaSockops: false });
  });
});
