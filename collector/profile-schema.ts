/**
 * What the collector stores for performance profiles: the template ids that carry them, the
 * connection states, and the typed columns (named exactly as the IPFIX elements they hold).
 */

/** Template ids of kpiflow (and Flowcorder) profiles. */
export const PROFILE_TEMPLATES = { tcp: 47561, mptcpMeta: 47563, mptcpSubflow: 47564 } as const;

/** True when records of this template id go to profile storage. */
export function isProfileTemplate(id: number): boolean {
  return (
    id === PROFILE_TEMPLATES.tcp ||
    id === PROFILE_TEMPLATES.mptcpMeta ||
    id === PROFILE_TEMPLATES.mptcpSubflow
  );
}

/** Connection states as numbered on the wire (flowStartReason, flowEndReason). */
export const STATE_NAMES: Record<number, string> = {
  1: 'NEW',
  2: 'ESTABLISHED',
  3: 'UPDATE',
  4: 'FINISHED',
  5: 'BROKEN',
  6: 'UNREACHABLE',
  7: 'DESYNC',
};

/** State number of a name, or undefined. */
export function stateNumber(name: string): number | undefined {
  const n = Object.entries(STATE_NAMES).find(([, v]) => v === name.toUpperCase());
  return n ? Number(n[0]) : undefined;
}

/**
 * Integer KPI columns of the profile table, each named as its IPFIX element. Any other field of
 * a profile record is kept in the `extra` JSON column, so nothing an agent sends is lost.
 */
export const PROFILE_KPI_COLUMNS = [
  'transferredOctetTotalCount',
  'receivedOctetTotalCount',
  'droppedOctetTotalCount',
  'retransmittedPacketTotalCount',
  'meanLatencyMilliseconds',
  'meanLatencyMicroseconds',
  'latencyJitterMicroseconds',
  'rfc3550JitterMilliseconds',
  'duplicatePacketTotalCount',
  'duplicateOctetTotalCount',
  'stallCount',
  'reorderingPacketCount',
  'reorderingOctetCount',
  'meanReorderingDistance',
  'varReorderingDistance',
  'reinjectionOctetIn',
  'reinjectionOctetOut',
  'reinjectionPacketIn',
  'reinjectionPacketOut',
  'subflowCount',
  'rcvBufOctetCount',
  'pathIndex',
  'timeToEstablishMilliseconds',
  'synRetransmissionCount',
  'checksumErrorCount',
  'dsackCount',
  'reorderSeenCount',
  'rtoRecoveryCount',
  'headOfLineStallCount',
  'maximumIpTotalLength',
] as const;

/** Identity and time columns of a profile, also named as IPFIX elements where one exists. */
export const PROFILE_ID_COLUMNS = [
  'flowId',
  'flowStartMilliseconds',
  'flowEndMilliseconds',
  'flowStartReason',
  'flowEndReason',
  'ipVersion',
  'sourceAddress',
  'destinationAddress',
  'sourceTransportPort',
  'destinationTransportPort',
] as const;

/** Typed columns of the generic flow table (records of any other template), as IPFIX element names. */
export const FLOW_COLUMNS = [
  'flowStartMilliseconds',
  'flowEndMilliseconds',
  'protocolIdentifier',
  'ipVersion',
  'sourceAddress',
  'destinationAddress',
  'sourceTransportPort',
  'destinationTransportPort',
  'octetDeltaCount',
  'packetDeltaCount',
] as const;

/** Every typed profile column. */
export const PROFILE_COLUMN_SET: ReadonlySet<string> = new Set<string>([
  ...PROFILE_ID_COLUMNS,
  ...PROFILE_KPI_COLUMNS,
]);

/** Address elements and the profile column each fills (IPv4-mapped IPv6 shown as IPv4). */
export const ADDRESS_FIELDS: Readonly<Record<string, 'sourceAddress' | 'destinationAddress'>> = {
  sourceIPv4Address: 'sourceAddress',
  sourceIPv6Address: 'sourceAddress',
  destinationIPv4Address: 'destinationAddress',
  destinationIPv6Address: 'destinationAddress',
};
