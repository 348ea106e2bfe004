/**
 * The agent's error catalogue: every key is its own code, and docs/errors.md lists exactly the
 * codes the catalogue has (the same check the codec's catalogue has).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AGT_ERRORS, AgentError } from '../../agent/index.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

describe('agent error catalogue', () => {
  it('uses each key as its code and documents every code in docs/errors.md, and no other', () => {
    const doc = readFileSync(`${ROOT}docs/errors.md`, 'utf8');
    const codes = Object.keys(AGT_ERRORS) as (keyof typeof AGT_ERRORS)[];
    assert.ok(codes.length >= 10);
    for (const code of codes) {
      const err = new AgentError(code, 'detail');
      assert.equal(err.code, code);
      assert.equal(err.message, `${AGT_ERRORS[code]}: detail`);
      assert.match(doc, new RegExp(`\`${code}\``), `${code} missing from docs/errors.md`);
    }
    const documented = [...doc.matchAll(/`(AGT_ERR_[A-Z_]+)`/g)].map((m) => m[1]!);
    for (const d of documented) assert.ok(d in AGT_ERRORS, `docs list ${d}, which the code does not have`);
  });
});
