/**
 * The native error catalogue: every key is its own code, and native/README.md lists exactly the
 * codes the catalogue has.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { NAT_ERRORS, NativeError } from '../../native/index.js';

const README = fileURLToPath(new URL('../../../native/README.md', import.meta.url));

describe('native error catalogue', () => {
  it('uses each key as its code and documents every code in native/README.md, and no other', () => {
    const doc = readFileSync(README, 'utf8');
    for (const code of Object.keys(NAT_ERRORS) as (keyof typeof NAT_ERRORS)[]) {
      const err = new NativeError(code, 'detail', 5, ['v'], ['l']);
      assert.equal(err.code, code);
      assert.equal(err.message, `${NAT_ERRORS[code]}: detail`);
      assert.equal(err.errno, 5);
      assert.match(doc, new RegExp(`\`${code}\``), `${code} missing from native/README.md`);
    }
    const documented = [...doc.matchAll(/`(NAT_ERR_[A-Z_]+)`/g)].map((m) => m[1]!);
    for (const d of documented) assert.ok(d in NAT_ERRORS, `README lists ${d}, which the code does not have`);
  });

  it('names the program libbpf blamed for a failed load', () => {
    const err = new NativeError(
      'NAT_ERR_LOAD',
      'x',
      13,
      [],
      [
        'libbpf: map kf_events: created',
        "libbpf: prog 'kf_cong_state': BPF program load failed: Permission denied",
      ],
    );
    assert.equal(err.failedProgram, 'kf_cong_state');
    assert.equal(new NativeError('NAT_ERR_LOAD').failedProgram, null);
  });
});
