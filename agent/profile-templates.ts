/**
 * THE definition of kpiflow's profile IPFIX templates: which elements a profile record carries,
 * in which order, and which kernel counters each KPI needs. The agent's exporter, tests,
 * benchmarks and the demo all take their templates from here.
 *
 * Addresses are always sourceIPv6Address/destinationIPv6Address (IPv4 as v4-mapped ::ffff:a.b.c.d)
 * plus ipVersion, so one template id serves both families; the local side of the socket is the
 * source. A KPI whose counter the running kernel lacks is left out of the template, never sent as 0.
 */
import type { TcpCounters } from './probe-event.js';

/** Template ids of profiles (the collector's PROFILE_TEMPLATES). */
export const PROFILE_TEMPLATE_IDS = { tcp: 47561, mptcpMeta: 47563, mptcpSubflow: 47564 } as const;

/** Identity and time fields every profile starts with. */
export const PROFILE_IDENTITY_FIELDS = [
  'flowId',
  'sourceIPv6Address',
  'destinationIPv6Address',
  'ipVersion',
  'sourceTransportPort',
  'destinationTransportPort',
  'flowStartMilliseconds',
  'flowEndMilliseconds',
  'flowStartReason',
  'flowEndReason',
] as const;

/** A KPI field of a profile and the kernel counters (TcpCounters) it is computed from. */
export interface KpiField {
  /** IPFIX element name (IANA or kpiflow's PEN), as the collector names its column. */
  name: string;
  /** TcpCounters fields it needs; empty for KPIs from the probes' own (ancillary) state. */
  needs: readonly (keyof TcpCounters)[];
}

/** KPIs of a TCP profile, in template order. */
export const TCP_KPI_FIELDS: readonly KpiField[] = [
  { name: 'transferredOctetTotalCount', needs: ['bytesAcked'] },
  { name: 'receivedOctetTotalCount', needs: ['bytesReceived'] },
  { name: 'droppedOctetTotalCount', needs: ['bytesRetrans'] },
  { name: 'retransmittedPacketTotalCount', needs: ['totalRetrans'] },
  { name: 'stallCount', needs: [] },
  { name: 'reorderingPacketCount', needs: ['rcvOoopack'] },
  { name: 'duplicatePacketTotalCount', needs: [] },
  { name: 'duplicateOctetTotalCount', needs: [] },
  { name: 'dsackCount', needs: ['dsackDups'] },
  { name: 'reorderSeenCount', needs: ['reordSeen'] },
  { name: 'rtoRecoveryCount', needs: ['totalRtoRecoveries'] },
  { name: 'checksumErrorCount', needs: [] },
  { name: 'synRetransmissionCount', needs: [] },
  { name: 'timeToEstablishMilliseconds', needs: [] },
  { name: 'meanLatencyMicroseconds', needs: ['srttUs'] },
  { name: 'latencyJitterMicroseconds', needs: ['mdevUs'] },
  { name: 'meanLatencyMilliseconds', needs: ['srttUs'] },
];

/**
 * KPIs of the out-of-order distance, appended to the TCP template only when the source measures
 * it (the live probes' per-packet mode): otherwise they are left out, never sent as 0.
 */
export const REORDERING_DISTANCE_FIELDS: readonly KpiField[] = [
  { name: 'meanReorderingDistance', needs: [] },
  { name: 'varReorderingDistance', needs: [] },
];

/** What the source measures beyond the kernel's counters (each adds fields to the template). */
export interface ProfileFieldOptions {
  /** The out-of-order distance (meanReorderingDistance, varReorderingDistance). */
  reorderingDistance?: boolean;
  /**
   * MPTCP connection fields the source cannot measure (their probes did not load on this
   * kernel): left out of template 47563, never sent as 0. See MPTCP_PROBE_FIELDS.
   */
  mptcpUnmeasured?: readonly string[];
}

/** MPTCP connection fields that come from optional probes, by the KPI name the loader reports. */
export const MPTCP_PROBE_FIELDS: Readonly<Record<string, string>> = {
  mptcpReinjectedSegments: 'reinjectionPacketOut',
  mptcpOutOfOrder: 'reorderingPacketCount',
};

/** The MPTCP connection fields a list of unavailable KPIs (the loader's names) removes. */
export function mptcpUnmeasuredFields(unavailable: readonly { kpi: string }[]): string[] {
  return [...new Set(unavailable.map((u) => MPTCP_PROBE_FIELDS[u.kpi]).filter((f) => f !== undefined))];
}

/**
 * KPIs of an MPTCP connection (the meta socket, template 47563), in template order: the
 * connection level's own counters (struct mptcp_sock) and what the agent sums over its subflows.
 * Reinjected segments (reinjectionPacketOut) and out-of-order at connection level
 * (reorderingPacketCount) come from MPTCP-only per-segment tracepoints. Reinjections received
 * (reinjectionOctetIn, reinjectionPacketIn) have no per-connection counter or hook: they are not
 * in the template (never sent as zeros). docs/agent.md defines each field.
 */
export const MPTCP_META_KPI_FIELDS: readonly KpiField[] = [
  { name: 'transferredOctetTotalCount', needs: ['bytesAcked'] },
  { name: 'receivedOctetTotalCount', needs: ['bytesReceived'] },
  { name: 'retransmittedPacketTotalCount', needs: ['totalRetrans'] },
  { name: 'stallCount', needs: [] },
  { name: 'subflowCount', needs: [] },
  { name: 'rcvBufOctetCount', needs: [] },
  { name: 'headOfLineStallCount', needs: [] },
  { name: 'reinjectionOctetOut', needs: ['bytesRetrans'] },
  { name: 'reinjectionPacketOut', needs: [] },
  { name: 'reorderingPacketCount', needs: [] },
];

/** What a subflow profile adds to the TCP KPIs (template 47564). */
export const MPTCP_SUBFLOW_KPI_FIELDS: readonly KpiField[] = [{ name: 'pathIndex', needs: [] }];

/** The KPI fields of `kpis` that the kernel can fill, given the counters it lacks. */
export function availableKpis(
  kpis: readonly KpiField[],
  missing: Iterable<keyof TcpCounters> = [],
): KpiField[] {
  const lacking = new Set(missing);
  return kpis.filter((k) => k.needs.every((c) => !lacking.has(c)));
}

/** Field list of the TCP profile template (47561). */
export function tcpProfileFields(
  missing: Iterable<keyof TcpCounters> = [],
  options: ProfileFieldOptions = {},
): string[] {
  const kpis = options.reorderingDistance
    ? [...TCP_KPI_FIELDS, ...REORDERING_DISTANCE_FIELDS]
    : TCP_KPI_FIELDS;
  return [...PROFILE_IDENTITY_FIELDS, ...availableKpis(kpis, missing).map((k) => k.name)];
}

/**
 * Field list of the MPTCP subflow template (47564): a subflow is a TCP connection, so the TCP
 * KPIs, then its path index (the kernel's subflow id in its connection).
 */
export function mptcpSubflowFields(
  missing: Iterable<keyof TcpCounters> = [],
  options: ProfileFieldOptions = {},
): string[] {
  return [...tcpProfileFields(missing, options), ...MPTCP_SUBFLOW_KPI_FIELDS.map((k) => k.name)];
}

/** Field list of the MPTCP meta-connection template (47563). */
export function mptcpMetaFields(
  missing: Iterable<keyof TcpCounters> = [],
  options: ProfileFieldOptions = {},
): string[] {
  const unmeasured = new Set(options.mptcpUnmeasured ?? []);
  return [
    ...PROFILE_IDENTITY_FIELDS,
    ...availableKpis(MPTCP_META_KPI_FIELDS, missing)
      .map((k) => k.name)
      .filter((n) => !unmeasured.has(n)),
  ];
}

/** One template: id and field names. */
export interface ProfileTemplate {
  id: number;
  fields: string[];
}

/** Every profile template for a kernel lacking `missing` counters, in id order. */
export function profileTemplates(
  missing: Iterable<keyof TcpCounters> = [],
  options: ProfileFieldOptions = {},
): ProfileTemplate[] {
  const m = [...missing];
  return [
    { id: PROFILE_TEMPLATE_IDS.tcp, fields: tcpProfileFields(m, options) },
    { id: PROFILE_TEMPLATE_IDS.mptcpMeta, fields: mptcpMetaFields(m, options) },
    { id: PROFILE_TEMPLATE_IDS.mptcpSubflow, fields: mptcpSubflowFields(m, options) },
  ];
}

/** The v4-mapped IPv6 text of an IPv4 address; IPv6 text is returned as it is. */
export function mappedAddress(address: string, ipVersion: 4 | 6): string {
  return ipVersion === 4 ? `::ffff:${address}` : address;
}

/**
 * The 16 wire bytes of an address (IPv4 as v4-mapped IPv6): what the encoder writes, computed
 * once per connection so that no profile goes through address text. Text that is not an address
 * gives all zeros (the unspecified address), as the probes report a socket with none.
 */
export function addressBytes(address: string, ipVersion: 4 | 6): Uint8Array {
  const b = new Uint8Array(16);
  if (ipVersion === 4) {
    b[10] = 0xff;
    b[11] = 0xff;
    const parts = address.split('.');
    if (parts.length !== 4) return new Uint8Array(16);
    for (let i = 0; i < 4; i++) b[12 + i] = Number(parts[i]) & 0xff;
    return b;
  }
  const [head = '', tail] = address.split('::');
  const groups = (t: string) => (t === '' ? [] : t.split(':').map((g) => Number.parseInt(g, 16) & 0xffff));
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  if (h.length + t.length > 8 || h.some(Number.isNaN) || t.some(Number.isNaN)) return new Uint8Array(16);
  const all = [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  for (let i = 0; i < 8; i++) {
    b[2 * i] = all[i]! >> 8;
    b[2 * i + 1] = all[i]! & 0xff;
  }
  return b;
}
