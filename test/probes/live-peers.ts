/**
 * Helpers of the live probe tests: TCP peers (test/probes/tcp-peer.py) inside test namespaces,
 * speaking JSON lines, and a collector of the probes' events with waits.
 */
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ProbeEvent } from '../../agent/probe-event.js';
import type { LiveProbes } from '../../agent/probe-loader.js';
import type { NetnsHost } from '../helpers/netns.js';

/** The peer script, from the source tree (tests run from dist/). */
export const TCP_PEER = fileURLToPath(new URL('../../../test/probes/tcp-peer.py', import.meta.url));

/** What a peer printed: a phase and the TCP_INFO fields. */
export type PeerLine = Record<string, number | string | null> & { phase: string };

/** A running tcp-peer.py. */
export interface Peer {
  proc: ChildProcess;
  /** Resolves with the first line of that phase (rejects if the peer exits first or on timeout). */
  phase(name: string, timeoutMs?: number): Promise<PeerLine>;
  /** Sends a line to the peer's stdin (the client closes on it). */
  release(): void;
  kill(): void;
}

/** Starts tcp-peer.py inside `host` with `args`. */
export function startPeer(host: NetnsHost, args: (string | number)[]): Peer {
  const proc = host.spawn('python3', [TCP_PEER, ...args.map(String)]);
  const lines: PeerLine[] = [];
  const waiters: (() => void)[] = [];
  let exited = false;
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  createInterface({ input: proc.stdout! }).on('line', (l) => {
    lines.push(JSON.parse(l) as PeerLine);
    for (const w of waiters.splice(0)) w();
  });
  proc.on('exit', () => {
    exited = true;
    for (const w of waiters.splice(0)) w();
  });
  return {
    proc,
    phase(name, timeoutMs = 20000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`peer: no ${name} within ${timeoutMs} ms; ${stderr}`)),
          timeoutMs,
        );
        const check = () => {
          const hit = lines.find((l) => l.phase === name);
          if (hit) {
            clearTimeout(timer);
            resolve(hit);
          } else if (exited) {
            clearTimeout(timer);
            reject(new Error(`peer exited before ${name}: ${stderr}`));
          } else {
            waiters.push(check);
          }
        };
        check();
      });
    },
    release() {
      proc.stdin?.write('\n');
    },
    kill() {
      if (!exited) proc.kill('SIGKILL');
    },
  };
}

/** Collects every event the probes deliver. */
export class EventLog {
  readonly events: ProbeEvent[] = [];
  lost = 0;
  private readonly sub: { close(): void };

  constructor(probes: LiveProbes) {
    this.sub = probes.subscribe(
      (batch) => {
        for (const e of batch) this.events.push(e);
      },
      (n) => {
        this.lost += n;
      },
    );
  }

  /** Events matching `pred`, in arrival order. */
  filter(pred: (e: ProbeEvent) => boolean): ProbeEvent[] {
    return this.events.filter(pred);
  }

  /** Waits until some event matches (polling: ring-buffer batches arrive on the event loop). */
  async waitFor(pred: (e: ProbeEvent) => boolean, timeoutMs = 10000): Promise<ProbeEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.events.find(pred);
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`no matching event within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void {
    this.sub.close();
  }
}
