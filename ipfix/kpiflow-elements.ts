/**
 * kpiflow's enterprise information elements. Ids 1-19 are wire-compatible with Flowcorder's
 * (same names, ids and types); ids from 100 are kpiflow's own. The PEN is configurable.
 */
import type { InformationElement } from './registry.js';
import { DataType as T } from './types.js';

/** Default Private Enterprise Number: Flowcorder's, for wire compatibility with its collectors. */
export const KPIFLOW_PEN = 65534;

const S = { default: 0, quantity: 1, totalCounter: 2, deltaCounter: 3, identifier: 4 } as const;
const U = { none: 0, octets: 2, packets: 3, milliseconds: 6, microseconds: 7, entries: 12 } as const;

type Row = [id: number, name: string, type: number, semantics: number, units: number, description: string];

const ROWS: Row[] = [
  [
    1,
    'flowStartReason',
    T.unsigned8,
    S.identifier,
    U.none,
    'Connection state that opened this profile (NEW=1 ... DESYNC=7)',
  ],
  [
    2,
    'transferredOctetTotalCount',
    T.unsigned64,
    S.deltaCounter,
    U.octets,
    'Bytes sent and acknowledged by the peer in this profile',
  ],
  [
    3,
    'receivedOctetTotalCount',
    T.unsigned64,
    S.deltaCounter,
    U.octets,
    'Bytes received in order in this profile',
  ],
  [
    4,
    'retransmittedPacketTotalCount',
    T.unsigned32,
    S.deltaCounter,
    U.packets,
    'Segments retransmitted in this profile',
  ],
  [
    5,
    'meanLatencyMilliseconds',
    T.unsigned16,
    S.quantity,
    U.milliseconds,
    'Mean smoothed RTT over the profile',
  ],
  [
    6,
    'duplicatePacketTotalCount',
    T.unsigned32,
    S.deltaCounter,
    U.packets,
    'Segments received that were already acknowledged',
  ],
  [
    7,
    'duplicateOctetTotalCount',
    T.unsigned64,
    S.deltaCounter,
    U.octets,
    'Bytes received that were already acknowledged',
  ],
  [
    8,
    'stallCount',
    T.unsigned16,
    S.deltaCounter,
    U.none,
    'Retransmission timeouts with data pending (stalls)',
  ],
  [9, 'reorderingPacketCount', T.unsigned32, S.deltaCounter, U.packets, 'Segments received out of order'],
  [10, 'reorderingOctetCount', T.unsigned64, S.deltaCounter, U.octets, 'Bytes received out of order'],
  [11, 'meanReorderingDistance', T.unsigned32, S.quantity, U.none, 'Mean out-of-order distance'],
  [12, 'varReorderingDistance', T.unsigned32, S.quantity, U.none, 'Variance of the out-of-order distance'],
  [
    13,
    'reinjectionOctetIn',
    T.unsigned64,
    S.deltaCounter,
    U.octets,
    'MPTCP bytes reinjected into this subflow',
  ],
  [
    14,
    'reinjectionOctetOut',
    T.unsigned64,
    S.deltaCounter,
    U.octets,
    'MPTCP bytes reinjected on another subflow',
  ],
  [
    15,
    'reinjectionPacketIn',
    T.unsigned32,
    S.deltaCounter,
    U.packets,
    'MPTCP segments reinjected into this subflow',
  ],
  [
    16,
    'reinjectionPacketOut',
    T.unsigned32,
    S.deltaCounter,
    U.packets,
    'MPTCP segments reinjected on another subflow',
  ],
  [17, 'subflowCount', T.unsigned8, S.quantity, U.none, 'Number of MPTCP subflows'],
  [18, 'rcvBufOctetCount', T.unsigned32, S.quantity, U.octets, 'MPTCP receive buffer size'],
  [19, 'pathIndex', T.unsigned8, S.identifier, U.none, 'MPTCP path (subflow) index'],
  [
    100,
    'timeToEstablishMilliseconds',
    T.unsigned32,
    S.quantity,
    U.milliseconds,
    'Time from the first SYN to the established state',
  ],
  [
    101,
    'synRetransmissionCount',
    T.unsigned16,
    S.deltaCounter,
    U.packets,
    'SYN or SYN-ACK retransmissions during the handshake',
  ],
  [
    102,
    'checksumErrorCount',
    T.unsigned32,
    S.deltaCounter,
    U.packets,
    'Segments received with a bad checksum',
  ],
  [
    103,
    'dsackCount',
    T.unsigned32,
    S.deltaCounter,
    U.packets,
    'D-SACK blocks received: spurious retransmissions',
  ],
  [104, 'reorderSeenCount', T.unsigned32, S.deltaCounter, U.none, 'Reordering events the sender detected'],
  [105, 'rtoRecoveryCount', T.unsigned32, S.deltaCounter, U.none, 'Recoveries from retransmission timeouts'],
  [
    106,
    'meanLatencyMicroseconds',
    T.unsigned32,
    S.quantity,
    U.microseconds,
    'Mean smoothed RTT over the profile',
  ],
  [
    107,
    'latencyJitterMicroseconds',
    T.unsigned32,
    S.quantity,
    U.microseconds,
    'RTT mean deviation over the profile',
  ],
  [
    108,
    'headOfLineStallCount',
    T.unsigned32,
    S.deltaCounter,
    U.none,
    'MPTCP connection-level retransmission timeouts',
  ],
];

/** kpiflow's enterprise elements under the given PEN. */
export function kpiflowElements(pen: number = KPIFLOW_PEN): InformationElement[] {
  return ROWS.map(([id, name, type, semantics, units, description]) => ({
    pen,
    id,
    name,
    type,
    semantics,
    units,
    description,
  }));
}
