/**
 * Helpers of the replay tests: run a pcap source to its end into a collecting sink, with every
 * connection's summary, and list the TCP captures among the shared third-party fixtures.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { ProbeEvent } from '../../agent/index.js';
import {
  type ConnectionSummary,
  openPcapSource,
  type PcapSource,
  type PcapSourceOptions,
} from '../../agent/pcap/index.js';

/** What one replay produced. */
export interface Replay {
  source: PcapSource;
  events: ProbeEvent[];
  summaries: ConnectionSummary[];
  /** The error the source failed with, if it did. */
  error: Error | null;
}

/** Replays `file` to its end (or failure) without an agent. Rejects only if the source cannot start. */
export async function replay(file: string, options: PcapSourceOptions = {}): Promise<Replay> {
  const summaries: ConnectionSummary[] = [];
  const events: ProbeEvent[] = [];
  const source = openPcapSource(file, { ...options, onConnectionEnd: (s) => summaries.push(s) });
  let error: Error | null = null;
  await new Promise<void>((resolve, reject) => {
    source
      .start({
        events: (b) => {
          for (const e of b) events.push(e);
        },
        lost: () => {},
        end: () => resolve(),
        error: (err) => {
          error = err;
          resolve();
        },
      })
      .catch(reject);
  });
  return { source, events, summaries, error };
}

/** Every pcap/pcapng file under `dir`, recursively, sorted. */
export function captures(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...captures(p));
    else if (/\.(pcap|pcapng|cap)$/.test(name)) out.push(p);
  }
  return out.sort();
}
