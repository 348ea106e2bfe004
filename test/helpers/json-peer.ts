/**
 * A helper program run inside a test namespace that reports on stdout as JSON lines, each with a
 * `phase`: the live probe tests' TCP peers and the overhead benchmark's workloads. Waits for a
 * phase, writes to its stdin, kills it.
 */
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { NetnsHost } from './netns.js';

/** What a peer printed: a phase and its fields. */
export type PeerLine = Record<string, number | string | null> & { phase: string };

/** A running peer. */
export interface Peer {
  proc: ChildProcess;
  /** Every line printed so far, in order. */
  readonly lines: readonly PeerLine[];
  /** Resolves with the first line of that phase (rejects if the peer exits first or on timeout). */
  phase(name: string, timeoutMs?: number): Promise<PeerLine>;
  /** Sends a line to the peer's stdin (the client closes on it). */
  release(): void;
  /** Closes the peer's stdin (peers that wait for EOF go on). */
  endInput(): void;
  kill(): void;
}

/** Starts `python3 script args...` inside `host`. */
export function startPythonPeer(host: NetnsHost, script: string, args: (string | number)[]): Peer {
  const proc = host.spawn('python3', [script, ...args.map(String)]);
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
  // 'close', not 'exit': the last lines may still be unread when the process has exited.
  proc.on('close', () => {
    exited = true;
    for (const w of waiters.splice(0)) w();
  });
  return {
    proc,
    lines,
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
    endInput() {
      proc.stdin?.end();
    },
    kill() {
      if (!exited) proc.kill('SIGKILL');
    },
  };
}
