/**
 * ProbeSet: a loaded BPF object and what hangs off it (links, ring-buffer subscriptions). It owns
 * kernel resources: close() releases them gracefully, destroy(err) does the same and records
 * why. The addon also releases everything when the Node environment ends.
 */
import { readFileSync } from 'node:fs';
import type { NativeBinding, NativeObject } from './binding.js';
import { NativeError } from './errors.js';
import { type KnobValue, type ProbeSpec, type ProgramSpec, rodataWithKnobs } from './probe-spec.js';

/** How to load a ProbeSpec. */
export interface LoadOptions {
  /** `const volatile` values to set before load. */
  knobs?: Readonly<Record<string, KnobValue>>;
  /** Programs not to load (hook absent on this kernel, or opt-in programs not wanted). */
  skip?: readonly string[];
  /** Map sizes to change before load (ring buffer bytes, hash entries). */
  maxEntries?: Readonly<Record<string, number>>;
}

/** An attached program; close() detaches it. */
export class Link {
  private open = true;

  constructor(
    private readonly obj: NativeObject,
    private readonly id: number,
    /** The program attached. */
    readonly program: ProgramSpec,
    /** Where it is attached (cgroup path, tracepoint). */
    readonly target: string,
  ) {}

  /** Detaches the program (idempotent). */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.obj.detach(this.id);
  }
}

/** A ring-buffer subscription; close() stops the callbacks. */
export class Subscription {
  private open = true;

  constructor(
    private readonly obj: NativeObject,
    private readonly id: number,
  ) {}

  /** Stops polling (idempotent); no callback runs after it returns. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.obj.ringUnsubscribe(this.id);
  }
}

/** A loaded BPF object. */
export class ProbeSet {
  private readonly links = new Set<Link>();
  private readonly subscriptions = new Set<Subscription>();
  private closedWith: Error | null | undefined;

  constructor(
    /** The object's description. */
    readonly spec: ProbeSpec,
    private readonly obj: NativeObject,
    private readonly binding: NativeBinding,
    /** Programs loaded into the kernel (spec.programs minus the skipped ones). */
    readonly loaded: readonly string[],
  ) {}

  /** True once close() or destroy() ran. */
  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  private live(): NativeObject {
    if (this.closedWith !== undefined) throw new NativeError('NAT_ERR_CLOSED', 'probe set is closed');
    return this.obj;
  }

  /** A program's spec by name. */
  program(name: string): ProgramSpec {
    const p = this.spec.programs.find((x) => x.name === name);
    if (!p) throw new NativeError('NAT_ERR_ARGUMENT', `${this.spec.path} has no program ${name}`);
    return p;
  }

  /** Attaches a program the way its section says; `target` is required for cgroup programs. */
  attach(name: string, target?: string): Link {
    const p = this.program(name);
    if (!this.loaded.includes(name)) throw new NativeError('NAT_ERR_ARGUMENT', `${name} was not loaded`);
    const where = target ?? p.target;
    if (p.kind === 'cgroup' && !where)
      throw new NativeError('NAT_ERR_ARGUMENT', `${name} needs a cgroup path`);
    if (p.kind === 'iter') throw new NativeError('NAT_ERR_ARGUMENT', `${name} is an iterator: use iterate()`);
    const id = this.live().attach(name, p.kind, where);
    const link = new Link(this.obj, id, p, where);
    this.links.add(link);
    return link;
  }

  /** A map value, or null when the key is absent. Per-CPU maps give every CPU's value in a row. */
  lookup(map: string, key: Buffer): Buffer | null {
    return this.live().mapLookup(map, key);
  }

  /** Writes a map value (flags: BPF_ANY 0, BPF_NOEXIST 1, BPF_EXIST 2). */
  update(map: string, key: Buffer, value: Buffer, flags = 0): void {
    this.live().mapUpdate(map, key, value, flags);
  }

  /** Deletes a key; false when it was absent. */
  delete(map: string, key: Buffer): boolean {
    return this.live().mapDelete(map, key);
  }

  /** Every key of a map. */
  keys(map: string): Buffer[] {
    return this.live().mapKeys(map);
  }

  /** Sum over CPUs of a per-CPU array's u64 slot. */
  perCpuSum(map: string, index: number): bigint {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(index);
    const v = this.lookup(map, key);
    if (!v) return 0n;
    let sum = 0n;
    for (let o = 0; o + 8 <= v.length; o += 8) sum += v.readBigUInt64LE(o);
    return sum;
  }

  /**
   * Kernel ids of the loaded programs (what `bpftool prog show id N` takes), from the program
   * fds' /proc/self/fdinfo: how run counts and run time are read with kernel.bpf_stats_enabled.
   */
  programIds(): Map<string, number> {
    const out = new Map<string, number>();
    for (const p of this.live().programs()) {
      if (p.fd < 0) continue;
      const m = /^prog_id:\s*(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${p.fd}`, 'utf8'));
      if (m) out.set(p.name, Number(m[1]));
    }
    return out;
  }

  /** Number of possible CPUs (the row count of per-CPU values). */
  get cpus(): number {
    return this.binding.numPossibleCpus();
  }

  /**
   * Receives the ring buffer's records in batches (records of `recordSize` bytes back to back,
   * one Buffer per batch); records of another size are skipped and their running count given.
   */
  subscribe(
    map: string,
    recordSize: number,
    onBatch: (batch: Buffer, wrongSize: number) => void,
  ): Subscription {
    const id = this.live().ringSubscribe(map, recordSize, onBatch);
    const sub = new Subscription(this.obj, id);
    this.subscriptions.add(sub);
    return sub;
  }

  /** Runs an iterator program once, in the network namespace at `netnsPath` if given. */
  iterate(name: string, netnsPath?: string): Buffer {
    const p = this.program(name);
    if (p.kind !== 'iter') throw new NativeError('NAT_ERR_ARGUMENT', `${name} is not an iterator`);
    return netnsPath === undefined ? this.live().iterRead(name) : this.live().iterRead(name, netnsPath);
  }

  /** Stops subscriptions, detaches every link and frees the object (idempotent). */
  close(): void {
    this.destroy(null);
  }

  /** As close(), recording why (err) for anyone asking `closeReason`. */
  destroy(err: Error | null = null): void {
    if (this.closedWith !== undefined) return;
    this.closedWith = err;
    for (const s of this.subscriptions) s.close();
    for (const l of this.links) l.close();
    this.subscriptions.clear();
    this.links.clear();
    this.obj.close();
  }

  /** The error given to destroy(), null after a graceful close, undefined while open. */
  get closeReason(): Error | null | undefined {
    return this.closedWith;
  }
}

/** Loads ProbeSpecs through a binding. */
export interface ProbeLoader {
  /** The addon's libbpf version ("1.1"). */
  readonly libbpfVersion: string;
  /** Opens, configures and loads the object; NAT_ERR_LOAD carries the verifier log. */
  load(spec: ProbeSpec, options?: LoadOptions): ProbeSet;
}

/** A loader over the binding `getBinding` returns (called once, on first load). */
export function createProbeLoader(getBinding: () => NativeBinding): ProbeLoader {
  let binding: NativeBinding | null = null;
  const bind = (): NativeBinding => {
    binding ??= getBinding();
    return binding;
  };
  return {
    get libbpfVersion() {
      return bind().libbpfVersion();
    },
    load(spec, options = {}) {
      const b = bind();
      const obj = new b.BpfObject(spec.path);
      try {
        const skip = new Set(options.skip ?? []);
        for (const name of skip) spec.programs.find((p) => p.name === name) && obj.setAutoload(name, false);
        if (options.knobs && Object.keys(options.knobs).length > 0) {
          obj.setInitialValue('.rodata', rodataWithKnobs(spec, options.knobs));
        }
        for (const [map, n] of Object.entries(options.maxEntries ?? {})) obj.setMaxEntries(map, n);
        obj.load();
        const loaded = spec.programs.filter((p) => !skip.has(p.name)).map((p) => p.name);
        return new ProbeSet(spec, obj, b, loaded);
      } catch (err) {
        obj.close();
        throw err;
      }
    },
  };
}
