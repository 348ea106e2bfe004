/**
 * The error catalogue and the information-element registry. The registry's IANA part is
 * checked against an independent copy of the IANA registry: python3-ipfix's iana.iespec.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  DATA_TYPE_NAMES,
  ElementRegistry,
  IPFIX_ERRORS,
  IpfixError,
  kpiflowElements,
} from '../../ipfix/index.js';
import { IN_CI } from '../helpers/tools.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

describe('error catalogue', () => {
  it('uses each key as its code and documents every code in docs/errors.md', () => {
    const doc = readFileSync(`${ROOT}docs/errors.md`, 'utf8');
    for (const code of Object.keys(IPFIX_ERRORS) as (keyof typeof IPFIX_ERRORS)[]) {
      assert.equal(new IpfixError(code).code, code);
      assert.match(doc, new RegExp(`\`${code}\``), `${code} missing from docs/errors.md`);
    }
    const documented = [...doc.matchAll(/`(IPFIX_ERR_[A-Z_]+)`/g)].map((m) => m[1]);
    for (const d of documented) assert.ok(d! in IPFIX_ERRORS, `docs list ${d}, which the code does not have`);
  });

  it('puts the byte offset in the message', () => {
    assert.equal(
      new IpfixError('IPFIX_ERR_RECORD', 'field x', 42).message,
      'data record runs past the end of its set: field x (at byte 42)',
    );
  });
});

describe('element registry', () => {
  const iespec = '/usr/lib/python3/dist-packages/ipfix/iana.iespec';

  it('agrees with python3-ipfix on the id, name and type of every IANA element both know', (t) => {
    if (!existsSync(iespec)) {
      if (IN_CI) throw new Error(`${iespec} missing: make test installs python3-ipfix`);
      t.skip('SKIPPED: python3-ipfix not installed');
      return;
    }
    const reg = ElementRegistry.standard();
    // python3-ipfix has the old name of element 278; IANA (and libfixbuf, our source) renamed it.
    const renamed = new Map([[278, 'newConnectionDeltaCount']]);
    let compared = 0;
    for (const line of readFileSync(iespec, 'utf8').split('\n')) {
      const m = /^(\w+)\((\d+)\)<(\w+)>/.exec(line);
      if (!m) continue;
      const [, name, idText, type] = m;
      const ie = reg.get(0, Number(idText));
      assert.ok(ie, `element ${idText} (${name}) missing`);
      assert.equal(ie.name, renamed.get(ie.id) ?? name, `element ${idText}`);
      assert.equal(DATA_TYPE_NAMES[ie.type], type, `type of ${name}`);
      compared++;
    }
    assert.ok(compared > 390, `only ${compared} elements compared`);
  });

  it("holds Flowcorder's enterprise elements with its ids and types, and ours from 100", () => {
    const reg = ElementRegistry.standard();
    const flowcorder: [number, string, string][] = [
      [1, 'flowStartReason', 'unsigned8'],
      [2, 'transferredOctetTotalCount', 'unsigned64'],
      [4, 'retransmittedPacketTotalCount', 'unsigned32'],
      [5, 'meanLatencyMilliseconds', 'unsigned16'],
      [8, 'stallCount', 'unsigned16'],
      [13, 'reinjectionOctetIn', 'unsigned64'],
      [19, 'pathIndex', 'unsigned8'],
    ];
    for (const [id, name, type] of flowcorder) {
      const ie = reg.get(65534, id)!;
      assert.equal(ie.name, name);
      assert.equal(DATA_TYPE_NAMES[ie.type], type);
      assert.equal(reg.lookupName(name), ie);
    }
    const ids = kpiflowElements().map((e) => e.id);
    for (let i = 1; i <= 19; i++) assert.ok(ids.includes(i), `Flowcorder id ${i}`);
    assert.ok(ids.filter((i) => i > 19).every((i) => i >= 100));
    assert.equal(new Set(kpiflowElements().map((e) => e.name)).size, ids.length, 'names are unique');
  });

  it('knows the RFC 5103 reverse of every IANA element under PEN 29305', () => {
    const reg = ElementRegistry.standard();
    assert.equal(reg.get(29305, 1)?.name, 'reverseOctetDeltaCount');
    assert.equal(reg.get(29305, 8)?.type, reg.get(0, 8)?.type);
    assert.equal(reg.lookupName('octetDeltaCount')?.pen, 0);
  });

  it('moves the enterprise elements to a configured PEN', () => {
    const reg = ElementRegistry.standard(32473);
    assert.equal(reg.get(32473, 8)?.name, 'stallCount');
    assert.equal(reg.get(65534, 8), undefined);
  });
});
