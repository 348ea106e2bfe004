/**
 * agent/pcap/: `pcap:FILE`, a capture file replayed through the same pipeline as the live probes.
 * The one public entry of the pcap source; the agent's CLI wires it in with `replayClock` (so
 * profile times are the capture's own) and `captureBootId` (so flowIds differ between captures).
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { AgentClock } from '../profile-builder.js';

export { type Cidr, formatAddress, inNets, parseCidr } from './addresses.js';
export { type CaptureFormat, CaptureReader, type RawPacket } from './capture-reader.js';
export {
  decodePacket,
  newSegment,
  SKIP,
  type SkipReason,
  SUPPORTED_LINK_TYPES,
  TCP_FLAG,
  type TcpSegment,
} from './packet-decoder.js';
export { openPcapSource, PcapSource, type PcapSourceOptions, type PcapSourceStats } from './pcap-source.js';
export {
  type ConnectionSummary,
  type DirectionStats,
  type MptcpConnectionInfo,
  PCAP_MISSING,
  TcpAnalyzer,
  type TcpAnalyzerOptions,
  type TcpAnalyzerStats,
  tokenOf,
} from './tcp-analyzer.js';

/**
 * The agent clock for a replay: event times are already epoch nanoseconds (the capture's), so the
 * wall-minus-monotonic offset the agent measures at start must be 0. Pass as `AgentOptions.clock`.
 */
export const replayClock: AgentClock = { monotonicNs: () => 0n, wallMs: () => 0 };

/**
 * A boot id for `AgentOptions.bootId` when replaying `path`: the pcap source numbers connections
 * 1, 2, 3... in every file, so flowIds must be salted by the capture, not by this host's boot.
 */
export function captureBootId(path: string): string {
  const abs = resolve(path);
  let tag = abs;
  try {
    const st = statSync(abs);
    tag = `${abs}:${st.size}:${st.mtimeMs}`;
  } catch {
    // An unreadable file fails when the source starts; the id does not matter then.
  }
  return `pcap:${createHash('sha256').update(tag).digest('hex').slice(0, 32)}`;
}
