/**
 * Field lists of kpiflow TCP profiles (template 47561) for tests that encode their own: the
 * identity and state fields every profile carries, then whatever KPIs a test needs.
 */
import { IpfixEncoder } from '../../ipfix/index.js';

/** The identity, time and state fields of a profile over IPv4 or IPv6, then `kpis`. */
export function profileFields(ipVersion: 4 | 6, ...kpis: string[]): string[] {
  const v = ipVersion === 4 ? 'IPv4' : 'IPv6';
  return [
    'flowId',
    `source${v}Address`,
    `destination${v}Address`,
    'sourceTransportPort',
    'destinationTransportPort',
    'flowStartMilliseconds',
    'flowEndMilliseconds',
    'flowStartReason',
    'flowEndReason',
    ...kpis,
  ];
}

/**
 * An encoder with template 47561 of `fields` and no RFC 5610 type records (so every data
 * record the collector gets is a profile).
 */
export function profileEncoder(fields: readonly string[], observationDomainId: number): IpfixEncoder {
  const enc = new IpfixEncoder({ observationDomainId, typeRecords: false });
  enc.defineTemplate(47561, [...fields]);
  return enc;
}
