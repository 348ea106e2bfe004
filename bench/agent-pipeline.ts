/**
 * Agent pipeline benchmark (one core): probe events through the connection table and FSM, the
 * profile builder and the IPFIX encoder, as the agent runs them; and the memory one tracked
 * connection costs. Events are synthetic ProbeEvents shaped as the decoder makes them (each with
 * its own counters objects). Prints medians of timed rounds after warm-up.
 *
 *   node --expose-gc dist/bench/agent-pipeline.js [connections]
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  ConnectionTable,
  EVENT_KIND,
  type ProbeEvent,
  ProfileBuilder,
  type ProfileWindow,
  profileTemplates,
  TCP_STATE,
} from '../agent/index.js';
import { IpfixEncoder } from '../ipfix/index.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const CONNECTIONS = Number(process.argv[2] ?? 100_000);

function counters(i: number, k: number) {
  return {
    bytesAcked: 1000 * k + i,
    bytesReceived: 2000 * k + i,
    bytesSent: 1000 * k + i,
    bytesRetrans: k,
    segsIn: 10 * k,
    segsOut: 10 * k,
    dataSegsIn: 5 * k,
    dataSegsOut: 5 * k,
    totalRetrans: k,
    srttUs: 20_000 + k,
    mdevUs: 5000,
    rcvOoopack: k,
    dsackDups: 0,
    reordSeen: 0,
    totalRto: k,
    totalRtoRecoveries: k,
    delivered: 5 * k,
    sndCwnd: 10,
    unackedBytes: k % 2 ? 1448 : 0,
  };
}

function event(
  i: number,
  kind: number,
  k: number,
  tsNs: bigint,
  arg0 = 0,
  arg1 = 0,
  tcpState = 1,
): ProbeEvent {
  return {
    kind: kind as ProbeEvent['kind'],
    tsNs,
    cookie: BigInt(i + 1),
    netns: 4026531840,
    ipVersion: 4,
    localAddress: '192.0.2.1',
    remoteAddress: `198.51.100.${i % 250}`,
    localPort: 1024 + (i % 60000),
    remotePort: 443,
    tcpState,
    caState: 0,
    mptcpSubflow: false,
    arg0,
    arg1,
    counters: counters(i, k),
    ancillary: {
      synNs: tsNs,
      synRetrans: 0,
      dupPackets: k,
      dupOctets: k * 100,
      badChecksums: 0,
      stalls: k >> 1,
    },
    missing: [],
  };
}

/** One connection's life: 8 events, 4 profiles (handshake, stall, recovery, close). */
function life(i: number, t: bigint): ProbeEvent[] {
  const ms = 1_000_000n;
  return [
    event(i, EVENT_KIND.connect, 0, t, 0, 0, TCP_STATE.SYN_SENT),
    event(i, EVENT_KIND.state, 1, t + 10n * ms, TCP_STATE.SYN_SENT, TCP_STATE.ESTABLISHED),
    event(i, EVENT_KIND.activeEstablished, 1, t + 10n * ms),
    event(i, EVENT_KIND.rto, 3, t + 500n * ms, 1, 1),
    event(i, EVENT_KIND.congState, 4, t + 900n * ms, 4, 0),
    event(
      i,
      EVENT_KIND.state,
      5,
      t + 1000n * ms,
      TCP_STATE.ESTABLISHED,
      TCP_STATE.FIN_WAIT1,
      TCP_STATE.FIN_WAIT1,
    ),
    event(i, EVENT_KIND.state, 6, t + 1001n * ms, TCP_STATE.FIN_WAIT2, TCP_STATE.CLOSE, TCP_STATE.CLOSE),
    event(i, EVENT_KIND.destroy, 6, t + 1002n * ms, 0, 0, TCP_STATE.CLOSE),
  ];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function pipeline(encode: boolean) {
  const builder = new ProfileBuilder({ clockOffsetNs: 1_700_000_000_000_000_000n });
  const enc = new IpfixEncoder({ onMessage: () => {} });
  for (const t of profileTemplates()) enc.defineTemplate(t.id, t.fields);
  let profiles = 0;
  const table = new ConnectionTable({
    flowId: (c) => c,
    onWindow: (w: ProfileWindow) => {
      const p = builder.build(w);
      if (encode) enc.add(p.templateId, p.record);
      profiles++;
    },
  });
  return { table, count: () => profiles };
}

// 1. Events → table → FSM → builder (→ encoder): whole connection lives, 20,000 connections a round.
const N = 20_000;
const lives = Array.from({ length: N }, (_, i) => life(i, BigInt(i) * 1_000_000n + 1_000_000_000n));
for (const encode of [false, true]) {
  const eventsPerSec: number[] = [];
  const profilesPerSec: number[] = [];
  for (let round = 0; round < 11; round++) {
    const p = pipeline(encode);
    const t0 = performance.now();
    for (const evs of lives) for (const e of evs) p.table.apply(e);
    const s = (performance.now() - t0) / 1000;
    if (round < 2) continue;
    eventsPerSec.push((N * 8) / s);
    profilesPerSec.push(p.count() / s);
  }
  console.log(
    `events → table → FSM → builder${encode ? ' → IpfixEncoder' : ''}: ${Math.round(median(eventsPerSec)).toLocaleString('en')} events/s, ${Math.round(median(profilesPerSec)).toLocaleString('en')} profiles/s (8 events, 4 profiles per connection; median of 9 rounds)`,
  );
}

// 2. Builder + encoder alone on ready windows.
{
  const windows: ProfileWindow[] = [];
  const t = pipeline(false).table;
  const collect = new ConnectionTable({ flowId: (c) => c, onWindow: (w) => windows.push(w) });
  void t;
  for (const evs of lives.slice(0, 5000)) for (const e of evs) collect.apply(e);
  const builder = new ProfileBuilder({ clockOffsetNs: 1_700_000_000_000_000_000n });
  const rates: number[] = [];
  for (let round = 0; round < 11; round++) {
    const enc = new IpfixEncoder({ onMessage: () => {} });
    for (const tp of profileTemplates()) enc.defineTemplate(tp.id, tp.fields);
    const t0 = performance.now();
    for (let rep = 0; rep < 10; rep++)
      for (const w of windows) {
        const p = builder.build(w);
        enc.add(p.templateId, p.record);
      }
    const s = (performance.now() - t0) / 1000;
    if (round >= 2) rates.push((windows.length * 10) / s);
  }
  console.log(`builder + IpfixEncoder alone: ${Math.round(median(rates)).toLocaleString('en')} profiles/s`);
}

// 3. Memory per tracked connection: CONNECTIONS connections established (handshake seen), kept open.
{
  gc();
  const before = process.memoryUsage().heapUsed;
  const table = new ConnectionTable({
    maxConnections: CONNECTIONS + 1,
    flowId: (c) => c,
    onWindow: () => {},
  });
  for (let i = 0; i < CONNECTIONS; i++) {
    const [connect, state, est] = life(i, BigInt(i) * 1000n + 1_000_000_000n);
    table.apply(connect!);
    table.apply(state!);
    table.apply(est!);
  }
  gc();
  const after = process.memoryUsage().heapUsed;
  console.log(
    `memory: ${table.size.toLocaleString('en')} tracked connections take ${((after - before) / 1048576).toFixed(1)} MiB of heap, ${Math.round((after - before) / table.size)} bytes each (counters of the latest event and of the window baseline)`,
  );
}
