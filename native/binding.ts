/**
 * The shape of the C++ addon (native/src/addon.cc) and the default way to load it. Loaders take
 * a `getBinding` function instead of importing the addon, so tests can hand in a fake one that
 * plays canned event bytes.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { NativeError, type NativeErrorCode } from './errors.js';

/** One program as libbpf sees it in an opened object. */
export interface NativeProgramInfo {
  name: string;
  section: string;
  autoload: boolean;
  fd: number;
}

/** One map as libbpf sees it in an opened object. */
export interface NativeMapInfo {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  fd: number;
}

/** An opened libbpf object (a `new BpfObject(path)` of the addon). */
export interface NativeObject {
  programs(): NativeProgramInfo[];
  maps(): NativeMapInfo[];
  setAutoload(program: string, autoload: boolean): void;
  initialValue(map: string): Buffer | null;
  setInitialValue(map: string, value: Buffer): void;
  setMaxEntries(map: string, maxEntries: number): void;
  load(): void;
  /** Returns a link id for detach(). */
  attach(program: string, kind: string, target?: string): number;
  detach(linkId: number): boolean;
  mapLookup(map: string, key: Buffer): Buffer | null;
  mapUpdate(map: string, key: Buffer, value: Buffer, flags?: number): void;
  mapDelete(map: string, key: Buffer): boolean;
  mapKeys(map: string): Buffer[];
  /** Calls back with batches of records of `recordSize` bytes back to back; returns an id. */
  ringSubscribe(map: string, recordSize: number, onBatch: (batch: Buffer, wrongSize: number) => void): number;
  ringUnsubscribe(id: number): boolean;
  /** Runs an iterator program once (in the namespace at netnsPath, if given); returns its output. */
  iterRead(program: string, netnsPath?: string): Buffer;
  close(): void;
}

/** The constructor C++ uses for every error it raises. */
export type NativeErrorConstructor = new (
  code: NativeErrorCode,
  detail: string,
  errno: number,
  verifierLog: string[],
  libbpfLog: string[],
) => Error;

/** The addon's exports. */
export interface NativeBinding {
  init(errorClass: NativeErrorConstructor): void;
  libbpfVersion(): string;
  numPossibleCpus(): number;
  BpfObject: new (path: string) => NativeObject;
}

/** Where node-gyp puts the addon (native/build/Release, relative to dist/native at run time). */
export const ADDON_PATH = fileURLToPath(
  new URL('../../native/build/Release/kpiflow_bpf.node', import.meta.url),
);

let cached: NativeBinding | null = null;

/** Loads the compiled addon once; NAT_ERR_BINDING says how to build it when it is missing. */
export function loadNativeBinding(): NativeBinding {
  if (cached) return cached;
  if (!existsSync(ADDON_PATH)) {
    throw new NativeError('NAT_ERR_BINDING', `${ADDON_PATH} is not built: run make build`);
  }
  try {
    const binding = createRequire(import.meta.url)(ADDON_PATH) as NativeBinding;
    binding.init(NativeError);
    cached = binding;
    return binding;
  } catch (err) {
    throw new NativeError('NAT_ERR_BINDING', `${ADDON_PATH}: ${(err as Error).message}`);
  }
}
