/**
 * tshark's view of a capture, per connection and direction, for the replay tests: packet and
 * payload counts, its tcp.analysis flags, and a receiver-side reassembly computed from tshark's
 * own sequence fields (tshark has no flag for "data above the next expected byte").
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import type { ConnectionSummary, DirectionStats } from '../../agent/pcap/index.js';
import type { Replay } from './replay-helpers.js';

/** tshark's counts for one direction of one connection. */
export interface TsharkDirection {
  packets: number;
  dataPackets: number;
  payloadBytes: number;
  /** tcp.analysis.retransmission (includes fast and spurious ones). */
  retransmission: number;
  fastRetransmission: number;
  spuriousRetransmission: number;
  outOfOrder: number;
  lostSegment: number;
  /** Packets with tcp.analysis.rto (generic, timer-like retransmissions). */
  rto: number;
  /**
   * From tshark's tcp.seq/tcp.len/tcp.flags: segments (payload or FIN) starting above the
   * highest contiguous sequence received so far in this direction (the receiver's rcv_nxt).
   */
  aboveExpected: number;
  /** ACKs this direction sent below an earlier one (ACKs reordered on the way to the capture). */
  backwardAcks: number;
}

/** One connection: endpoints as `addr:port`, both directions. */
export interface TsharkConnection {
  key: string;
  client: string;
  server: string;
  clientToServer: TsharkDirection;
  serverToClient: TsharkDirection;
  /** Packets with RST; a connection of nothing else is no connection to an end host. */
  resets: number;
}

const FIELDS = [
  'tcp.stream',
  'ip.src',
  'ipv6.src',
  'tcp.srcport',
  'ip.dst',
  'ipv6.dst',
  'tcp.dstport',
  'tcp.len',
  'tcp.flags',
  'tcp.seq_raw',
  'tcp.analysis.retransmission',
  'tcp.analysis.fast_retransmission',
  'tcp.analysis.spurious_retransmission',
  'tcp.analysis.out_of_order',
  'tcp.analysis.lost_segment',
  'tcp.analysis.rto',
  'tcp.ack_raw',
] as const;

function zero(): TsharkDirection {
  return {
    packets: 0,
    dataPackets: 0,
    payloadBytes: 0,
    retransmission: 0,
    fastRetransmission: 0,
    spuriousRetransmission: 0,
    outOfOrder: 0,
    lostSegment: 0,
    rto: 0,
    aboveExpected: 0,
    backwardAcks: 0,
  };
}

/** Endpoint text as both tools print it. */
export function endpoint(addr: string, port: number | string): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/** Direction-independent key of a connection. */
export function connectionKey(a: string, b: string): string {
  return a < b ? `${a} ${b}` : `${b} ${a}`;
}

/** Runs tshark over `file` and returns its view of every TCP connection, keyed by endpoints. */
export function tsharkConnections(file: string, extraArgs: string[] = []): Map<string, TsharkConnection> {
  const args = [
    '-r',
    file,
    '-n',
    ...extraArgs,
    '-Y',
    'tcp',
    '-T',
    'fields',
    '-E',
    'separator=\t',
    '-E',
    'occurrence=f',
  ];
  for (const f of FIELDS) args.push('-e', f);
  const r = spawnSync('tshark', args, {
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    env: { ...process.env, TZ: 'UTC' },
  });
  if (r.status !== 0) throw new Error(`tshark failed: ${r.stderr}`);
  const conns = new Map<string, TsharkConnection>();
  // Per direction of each stream: receiver reassembly state for aboveExpected.
  const rcv = new Map<string, { nxt: number; init: boolean; ooo: [number, number][] }>();
  const maxAck = new Map<string, number>();
  for (const line of r.stdout.split('\n')) {
    if (line === '') continue;
    const c = line.split('\t');
    const src = endpoint(c[1] || c[2]!, c[3]!);
    const dst = endpoint(c[4] || c[5]!, c[6]!);
    const key = connectionKey(src, dst);
    let conn = conns.get(key);
    const flags = Number.parseInt(c[8]!, 16);
    const syn = (flags & 2) !== 0;
    const ack = (flags & 16) !== 0;
    if (conn === undefined) {
      // The client is the SYN sender; seen from a SYN-ACK the other end; mid-stream the higher port.
      const srcIsClient = syn ? !ack : Number(c[3]) >= Number(c[6]);
      conn = {
        key,
        client: srcIsClient ? src : dst,
        server: srcIsClient ? dst : src,
        clientToServer: zero(),
        serverToClient: zero(),
        resets: 0,
      };
      conns.set(key, conn);
    }
    const d = src === conn.client ? conn.clientToServer : conn.serverToClient;
    const len = Number(c[7]);
    d.packets++;
    if (len > 0) d.dataPackets++;
    d.payloadBytes += len;
    if (c[10]) d.retransmission++;
    if (c[11]) d.fastRetransmission++;
    if (c[12]) d.spuriousRetransmission++;
    if (c[13]) d.outOfOrder++;
    if (c[14]) d.lostSegment++;
    if (c[15]) d.rto++;
    if (ack) {
      const a = Number(c[16]);
      const prev = maxAck.get(`${key}|${src}`);
      if (prev !== undefined && ((a - prev) | 0) < 0) d.backwardAcks++;
      else maxAck.set(`${key}|${src}`, a);
    }
    // Receiver reassembly over raw sequence numbers (mod 2^32).
    const fin = (flags & 1) !== 0;
    if (flags & 4) {
      conn.resets++;
      continue;
    }
    const rawSeq = Number(c[9]);
    const dirKey = `${key}|${src}`;
    let st = rcv.get(dirKey);
    if (st === undefined) {
      st = { nxt: 0, init: false, ooo: [] };
      rcv.set(dirKey, st);
    }
    const start = (rawSeq + (syn ? 1 : 0)) >>> 0;
    const end = (start + len + (fin ? 1 : 0)) >>> 0;
    if (!st.init) {
      st.init = true;
      st.nxt = start;
    }
    if (len === 0 && !fin) continue;
    const ahead = (start - st.nxt) | 0;
    if (ahead > 0) {
      d.aboveExpected++;
      st.ooo.push([start, end]);
    } else if (((end - st.nxt) | 0) > 0) {
      st.nxt = end;
      for (let again = true; again; ) {
        again = false;
        for (let i = 0; i < st.ooo.length; i++) {
          const [l, rr] = st.ooo[i]!;
          if (((l - st.nxt) | 0) > 0) continue;
          if (((rr - st.nxt) | 0) > 0) st.nxt = rr;
          st.ooo.splice(i, 1);
          again = true;
          break;
        }
      }
    }
  }
  return conns;
}

/** Our summaries keyed like tshark's connections (directions summed when a tuple is reused). */
export function ourConnections(summaries: readonly ConnectionSummary[]): Map<string, ConnectionSummary> {
  const out = new Map<string, ConnectionSummary>();
  for (const s of summaries) {
    const cl = endpoint(s.clientAddress, s.clientPort);
    const sv = endpoint(s.serverAddress, s.serverPort);
    const key = connectionKey(cl, sv);
    const prev = out.get(key);
    if (prev === undefined) {
      out.set(key, s);
      continue;
    }
    const add = (a: DirectionStats, b: DirectionStats): DirectionStats => {
      const r = { ...a } as Record<string, number | boolean>;
      for (const [k, v] of Object.entries(b)) if (typeof v === 'number') r[k] = (r[k] as number) + v;
      return r as unknown as DirectionStats;
    };
    const sameOrientation = endpoint(prev.clientAddress, prev.clientPort) === cl;
    out.set(key, {
      ...prev,
      clientToServer: add(prev.clientToServer, sameOrientation ? s.clientToServer : s.serverToClient),
      serverToClient: add(prev.serverToClient, sameOrientation ? s.serverToClient : s.clientToServer),
    });
  }
  return out;
}

/**
 * Asserts that a replay agrees with tshark on `file`, per connection and direction (the mapping
 * and tolerances are explained in fixtures-vs-tshark.test.ts); returns one table row per
 * direction for the test's report.
 */
export function assertAgreesWithTshark(name: string, file: string, r: Replay): string[] {
  const rows: string[] = [];
  const theirs = tsharkConnections(file);
  const ours = ourConnections(r.summaries);
  // A reset with nothing before it belongs to no connection an end host had: counted, not tracked.
  let strays = 0;
  for (const [key, tc] of theirs) {
    if (tc.resets === tc.clientToServer.packets + tc.serverToClient.packets && !ours.has(key)) {
      strays += tc.resets;
      theirs.delete(key);
    }
  }
  assert.equal(r.source.stats.analyzer?.strayResets, strays, 'stray resets');
  assert.deepEqual([...ours.keys()].sort(), [...theirs.keys()].sort(), 'the same connections');
  for (const [key, tc] of theirs) {
    const oc = ours.get(key)!;
    const flip = endpoint(oc.clientAddress, oc.clientPort) !== tc.client;
    const pairs = flip
      ? ([
          ['c→s', oc.serverToClient, tc.clientToServer, oc.clientToServer],
          ['s→c', oc.clientToServer, tc.serverToClient, oc.serverToClient],
        ] as const)
      : ([
          ['c→s', oc.clientToServer, tc.clientToServer, oc.serverToClient],
          ['s→c', oc.serverToClient, tc.serverToClient, oc.clientToServer],
        ] as const);
    for (const [dir, o, th] of pairs) {
      // The receiver of this direction's data is the other direction's sender.
      const receiverAcks = th === tc.clientToServer ? tc.serverToClient : tc.clientToServer;
      const at = `${name} ${key} ${dir}`;
      assert.equal(o.segs, th.packets, `${at}: segments`);
      assert.equal(o.dataSegs, th.dataPackets, `${at}: data segments`);
      assert.equal(o.payloadBytes, th.payloadBytes, `${at}: payload bytes`);
      assert.equal(o.retransSegs, th.retransmission + th.outOfOrder, `${at}: retransmissions`);
      assert.ok(
        Math.abs(o.dupDataPkts - th.spuriousRetransmission) <= receiverAcks.backwardAcks,
        `${at}: duplicates ${o.dupDataPkts}, tshark ${th.spuriousRetransmission} (receiver's reordered ACKs ${receiverAcks.backwardAcks})`,
      );
      assert.ok(
        o.oooPkts >= th.lostSegment,
        `${at}: out of order ${o.oooPkts} < lost_segment ${th.lostSegment}`,
      );
      if (th.lostSegment === 0) assert.equal(o.oooPkts, th.aboveExpected, `${at}: out of order`);
      assert.ok(o.stalls <= th.rto, `${at}: stalls ${o.stalls} > tshark rto marks ${th.rto}`);
      rows.push(
        [
          at,
          `seg ${o.segs}`,
          `bytes ${o.payloadBytes}`,
          `retrans ${o.retransSegs}/${th.retransmission}+${th.outOfOrder}`,
          `dup ${o.dupDataPkts}/${th.spuriousRetransmission}`,
          `ooo ${o.oooPkts}/${th.aboveExpected}(lost ${th.lostSegment})`,
          `stalls ${o.stalls}/rto ${th.rto}`,
          `srtt ${o.srttUs}us`,
        ].join('  '),
      );
    }
  }
  return rows;
}
