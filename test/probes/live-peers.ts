/**
 * Helpers of the live probe tests: TCP peers (test/probes/tcp-peer.py) inside test namespaces,
 * speaking JSON lines, and a collector of the probes' events with waits.
 */
import { fileURLToPath } from 'node:url';
import type { ProbeEvent } from '../../agent/probe-event.js';
import type { LiveProbes } from '../../agent/probe-loader.js';
import { type Peer, startPythonPeer } from '../helpers/json-peer.js';
import type { NetnsHost } from '../helpers/netns.js';

/** The peer types, for the tests that use startPeer. */
export type { Peer, PeerLine } from '../helpers/json-peer.js';

/** The peer script, from the source tree (tests run from dist/). */
export const TCP_PEER = fileURLToPath(new URL('../../../test/probes/tcp-peer.py', import.meta.url));

/** Starts tcp-peer.py inside `host` with `args`. */
export function startPeer(host: NetnsHost, args: (string | number)[]): Peer {
  return startPythonPeer(host, TCP_PEER, args);
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
