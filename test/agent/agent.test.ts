/**
 * The Agent wired end to end with an in-memory source and a file exporter, read back with the
 * IPFIX decoder: the active timeout driven by an injected clock (tick → scan → snapshots),
 * DESYNC profiles on lost events and on shutdown, the end of a replay flushing everything, a
 * failing source, the template built from what the kernel provides, wall-clock times from the
 * injected clock, the recorder hook, and Prometheus /metrics over HTTP.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  Agent,
  type AgentClock,
  type AgentOptions,
  MemorySource,
  type ProbeEvent,
  STATE,
  TCP_STATE,
  type TcpCounters,
  tcpProfileFields,
} from '../../agent/index.js';
import { IpfixDecoder, type IpfixRecord, MessageFramer } from '../../ipfix/index.js';
import { parseMetrics } from '../helpers/collector-process.js';
import { SyntheticSocket } from '../helpers/synthetic-events.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A clock the test moves: monotonic ns and wall ms advance together. */
class FakeClock implements AgentClock {
  mono = 1_000_000_000_000n;
  readonly wall0 = 1_760_000_000_000;
  readonly mono0 = this.mono;
  monotonicNs(): bigint {
    return this.mono;
  }
  wallMs(): number {
    return this.wall0 + Number((this.mono - this.mono0) / 1_000_000n);
  }
  advance(ms: number): void {
    this.mono += BigInt(ms) * 1_000_000n;
  }
}

/** Profiles of template 47561 in an RFC 5655 file, in order. */
function readProfiles(file: string): IpfixRecord[] {
  const dec = new IpfixDecoder();
  const out: IpfixRecord[] = [];
  for (const m of new MessageFramer().push(readFileSync(file))) {
    const res = dec.decode('f', m.bytes, 'file');
    assert.deepEqual(res.errors, []);
    for (const d of res.dataSets) if (d.templateId === 47561) out.push(...d.records);
  }
  return out;
}

async function startAgent(
  source: MemorySource,
  extra: Partial<AgentOptions> = {},
): Promise<{ agent: Agent; file: string; clock: FakeClock }> {
  const dir = mkdtempSync(join(tmpdir(), 'kpiflow-agent-'));
  dirs.push(dir);
  const file = join(dir, 'out.ipfix');
  const clock = (extra.clock as FakeClock | undefined) ?? new FakeClock();
  const agent = await Agent.start({
    source,
    export: { target: `file:${file}`, flushIntervalMs: 20 },
    tickMs: 0,
    clock,
    bootId: 'test-boot',
    ...extra,
  });
  return { agent, file, clock };
}

const ends = (ps: IpfixRecord[]) => ps.map((p) => [p['flowStartReason'], p['flowEndReason']]);

describe('Agent', () => {
  it('active timeout from the injected clock: tick asks the source for a scan, snapshots close the window', async () => {
    const clock = new FakeClock();
    const socks: SyntheticSocket[] = [];
    const source = new MemorySource({
      // The iterator's answer: a snapshot of every open socket, at the clock's time.
      onScan: (src) => {
        for (const s of socks) {
          s.tsNs = clock.mono;
          src.push(...s.snapshot());
        }
      },
    });
    const { agent, file } = await startAgent(source, { clock, activeTimeoutMs: 2000 });
    const s = new SyntheticSocket({ cookie: 5n, t0Ns: clock.mono });
    socks.push(s);
    source.push(...s.connect(), ...s.establish(10));
    clock.advance(300); // scan interval 500 ms (a quarter of the timeout): not yet
    agent.tick();
    assert.equal(source.scans, 0);
    for (let i = 0; i < 9; i++) {
      clock.advance(500);
      s.transfer(0, 1000, 1000);
      agent.tick();
    }
    assert.equal(source.scans, 9);
    s.tsNs = clock.mono;
    source.push(...s.closeActive(), ...s.destroy());
    await agent.close();
    const ps = readProfiles(file);
    // 4.8 s of ESTABLISHED with scans every 0.5 s and a 2 s timeout: two periodic profiles.
    assert.deepEqual(ends(ps), [
      [STATE.NEW, STATE.ESTABLISHED],
      [STATE.ESTABLISHED, STATE.ESTABLISHED],
      [STATE.ESTABLISHED, STATE.ESTABLISHED],
      [STATE.ESTABLISHED, STATE.FINISHED],
    ]);
    assert.equal(
      ps.reduce((n, p) => n + (p['transferredOctetTotalCount'] as number), 0),
      s.appSent,
    );
    for (const p of ps.slice(1, 3)) {
      const len = (p['flowEndMilliseconds'] as number) - (p['flowStartMilliseconds'] as number);
      assert.ok(len >= 2000 && len < 2500, `periodic window of ${len} ms`);
    }
    // Wall times come from the injected clock: the SYN was at wall0.
    assert.equal(ps[0]!['flowStartMilliseconds'], clock.wall0);
  });

  it('lost events: DESYNC profiles for open connections, counted; shutdown: DESYNC for the rest', async () => {
    const source = new MemorySource();
    const { agent, file } = await startAgent(source);
    const a = new SyntheticSocket({ cookie: 1n });
    const b = new SyntheticSocket({ cookie: 2n });
    source.push(...a.connect(), ...a.establish(5), ...b.connect(), ...b.establish(5));
    source.lose(17);
    assert.equal(agent.stats.lostEvents, 17);
    a.transfer(100, 5000, 5000);
    source.push(...a.closeActive(), ...a.destroy());
    b.transfer(100, 777, 0);
    source.push(...b.duplicate(10));
    await agent.close();
    const ps = readProfiles(file);
    const of = (cookie: number) => ps.filter((p) => p['sourceTransportPort'] === 40000 + cookie);
    assert.deepEqual(ends(of(1)), [
      [STATE.NEW, STATE.ESTABLISHED],
      [STATE.ESTABLISHED, STATE.DESYNC],
      [STATE.DESYNC, STATE.FINISHED],
    ]);
    assert.deepEqual(ends(of(2)), [
      [STATE.NEW, STATE.ESTABLISHED],
      [STATE.ESTABLISHED, STATE.DESYNC],
      [STATE.DESYNC, STATE.DESYNC],
    ]);
    assert.equal(
      of(2).at(-1)!['transferredOctetTotalCount'],
      777,
      'the shutdown profile counts up to the last event',
    );
    assert.equal(agent.stats.profilesByEnd[STATE.DESYNC], 3);
    assert.equal(agent.table.size, 0);
  });

  it('the end of a replay flushes open connections and resolves done; a failing source ends with its error', async () => {
    const source = new MemorySource();
    const { agent, file } = await startAgent(source);
    const a = new SyntheticSocket({ cookie: 3n });
    source.push(...a.connect(), ...a.establish(5));
    source.end();
    assert.deepEqual(await agent.done, { reason: 'source-ended' });
    assert.deepEqual(ends(readProfiles(file)), [
      [STATE.NEW, STATE.ESTABLISHED],
      [STATE.ESTABLISHED, STATE.DESYNC],
    ]);
    const bad = new MemorySource();
    const second = await startAgent(bad);
    bad.fail(new Error('ring buffer vanished'));
    const end = await second.agent.done;
    assert.equal(end.reason, 'source-failed');
    assert.equal((end.error as { code?: string }).code, 'AGT_ERR_SOURCE');
  });

  it('a kernel without some counters: the template and every record leave their KPIs out', async () => {
    const missing: (keyof TcpCounters)[] = ['dsackDups', 'reordSeen'];
    const source = new MemorySource({ missing });
    const { agent, file } = await startAgent(source);
    const a = new SyntheticSocket({ cookie: 4n, missing });
    source.push(...a.connect(), ...a.establish(5), ...a.closeActive());
    await agent.close();
    const ps = readProfiles(file);
    assert.equal(ps.length, 2);
    for (const p of ps) {
      assert.deepEqual(Object.keys(p), tcpProfileFields(missing));
      assert.ok(!('dsackCount' in p) && !('reorderSeenCount' in p));
    }
    assert.equal(agent.stats.missingMismatch, 0);
  });

  it('the recorder sees every raw batch and lost notice before the pipeline', async () => {
    const batches: (readonly ProbeEvent[])[] = [];
    const lost: number[] = [];
    let closed = false;
    const source = new MemorySource();
    const { agent } = await startAgent(source, {
      record: {
        write: (b) => batches.push(b),
        lost: (n) => lost.push(n),
        close: async () => {
          closed = true;
        },
      },
    });
    const a = new SyntheticSocket({ cookie: 6n, tcpState: TCP_STATE.ESTABLISHED });
    source.push(...a.snapshot());
    source.push(...a.duplicate(5), ...a.badChecksum());
    source.lose(2);
    await agent.close();
    assert.deepEqual(
      batches.map((b) => b.map((e) => e.kind)),
      [[12], [8, 9]],
    );
    assert.deepEqual(lost, [2]);
    assert.ok(closed);
  });

  it('serves Prometheus /metrics: events by kind, lost events, connections, profiles by end state, export', async () => {
    const source = new MemorySource();
    const { agent } = await startAgent(source, { metrics: { host: '127.0.0.1', port: 0 } });
    try {
      const a = new SyntheticSocket({ cookie: 7n });
      const b = new SyntheticSocket({ cookie: 8n });
      source.push(...a.connect(), ...a.establish(5), ...a.resetByPeer(), ...b.connect());
      source.lose(3);
      const at = agent.metricsAddress!;
      const res = await fetch(`http://${at.host}:${at.port}/metrics`);
      assert.equal(res.status, 200);
      const m = parseMetrics(await res.text());
      assert.equal(m.get('kpiflow_agent_events_total', { kind: 'connect' }), 2);
      assert.equal(m.get('kpiflow_agent_events_total', { kind: 'state' }), 2);
      assert.equal(m.get('kpiflow_agent_events_total', { kind: 'resetReceived' }), 1);
      assert.equal(m.get('kpiflow_agent_lost_events_total'), 3);
      // a ended BROKEN and is no longer tracked; b (DESYNC) still is.
      assert.equal(m.get('kpiflow_agent_connections'), 1);
      assert.equal(m.get('kpiflow_agent_profiles_total', { end_state: 'ESTABLISHED' }), 1);
      assert.equal(m.get('kpiflow_agent_profiles_total', { end_state: 'BROKEN' }), 1);
      assert.equal(m.get('kpiflow_agent_profiles_total', { end_state: 'DESYNC' }), 1);
      assert.equal(m.get('kpiflow_agent_export_connected'), 1);
      for (const name of [
        'kpiflow_agent_export_errors_total',
        'kpiflow_agent_export_queue_records',
        'kpiflow_agent_spool_bytes',
        'kpiflow_agent_export_dropped_total',
        'kpiflow_agent_exported_records_total',
        'kpiflow_agent_evictions_total',
      ])
        assert.ok(m.has(name), name);
      assert.equal((await fetch(`http://${at.host}:${at.port}/nope`)).status, 404);
    } finally {
      await agent.close();
    }
  });

  it('a metrics address that cannot be bound fails the start with AGT_ERR_METRICS_LISTEN', async () => {
    const first = await startAgent(new MemorySource(), { metrics: { host: '127.0.0.1', port: 0 } });
    try {
      await assert.rejects(startAgent(new MemorySource(), { metrics: first.agent.metricsAddress! }), {
        code: 'AGT_ERR_METRICS_LISTEN',
      });
    } finally {
      await first.agent.close();
    }
  });
});
