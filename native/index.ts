/**
 * native/: kpiflow's kernel-facing layer. A ProbeSpec describes a compiled .bpf.o as plain data
 * (readable without privileges); a ProbeLoader, built over the C++ addon passed in as a function,
 * loads it into a ProbeSet that owns links and ring-buffer subscriptions. All policy (what to
 * attach, fallbacks) belongs to the callers; this box only offers the primitives.
 */
export {
  ADDON_PATH,
  loadNativeBinding,
  type NativeBinding,
  type NativeErrorConstructor,
  type NativeMapInfo,
  type NativeObject,
  type NativeProgramInfo,
} from './binding.js';
export { BTF_KIND, Btf, type BtfMember, type LayoutField } from './btf.js';
export { NAT_ERRORS, NativeError, type NativeErrorCode } from './errors.js';
export {
  createProbeLoader,
  Link,
  type LoadOptions,
  type ProbeLoader,
  ProbeSet,
  Subscription,
} from './probe-set.js';
export {
  type AttachKind,
  attachKindOf,
  type KnobSpec,
  type KnobValue,
  type ProbeSpec,
  type ProgramSpec,
  parseProbeSpec,
  readProbeSpec,
  rodataWithKnobs,
} from './probe-spec.js';
