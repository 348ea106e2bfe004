/**
 * ipfix/: the IPFIX codec shared by the agent and the collector (RFC 7011, 7012, 5610, 5655, 6313).
 */
export {
  type DataSet,
  type DecodeResult,
  type DecoderOptions,
  type DecoderStats,
  type DomainStats,
  HEADER_LENGTH,
  IPFIX_VERSION,
  IpfixDecoder,
  isTypeRecordTemplate,
  type MessageHeader,
  type RawSet,
  readMessageHeader,
  type SessionInfo,
  type TemplateEvent,
  type Transport,
} from './decoder.js';
export { type DumpOptions, type DumpSummary, dumpIpfix } from './dump.js';
export { type EncoderOptions, type FieldDefinition, IpfixEncoder } from './encoder.js';
export { IPFIX_ERRORS, IpfixError, type IpfixErrorCode } from './errors.js';
export { recordToJson, templateToJson, valueToJson } from './json.js';
export { KPIFLOW_PEN, kpiflowElements } from './kpiflow-elements.js';
export { type Cursor, decodeRawRecord, type IpfixRecord, type RawField, readValue } from './record-codec.js';
export { ElementRegistry, type InformationElement, unknownElementName } from './registry.js';
export { type FramedMessage, MessageFramer } from './stream.js';
export {
  type FieldSpec,
  MIN_DATA_SET_ID,
  parseTemplateSet,
  SET_ID_OPTIONS_TEMPLATE,
  SET_ID_TEMPLATE,
  Template,
  type TemplateField,
} from './template.js';
export {
  DATA_TYPE_NAMES,
  DataType,
  defaultLength,
  type IpfixValue,
  ipv4ToString,
  ipv6ToString,
  lengthFitsType,
  readSigned,
  readUnsigned,
  SEMANTICS_NAMES,
  toHex,
  UNITS_NAMES,
  VARLEN,
} from './types.js';
