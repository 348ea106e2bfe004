/**
 * Bad input: a missing file, wrong magic, an empty file, truncated pcap and pcapng files, an
 * unsupported link type, lengths that cannot be, 10 MB of random bytes (bare and behind a valid
 * header), and a valid capture with random bytes flipped. Each ends with a typed AGT_ERR_PCAP_*
 * error or counted skips, within a time bound: never a crash, a hang or an untyped error.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { AgentError } from '../../agent/index.js';
import { conversation, frame, LINK, pcapFile, pcapngFile } from './capture-writer.js';
import { replay } from './replay-helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'kf-pcap-bad-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, bytes: Buffer): string {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}

async function startError(file: string): Promise<AgentError> {
  try {
    await replay(file);
  } catch (err) {
    assert.ok(err instanceof AgentError, `not an AgentError: ${err}`);
    return err;
  }
  assert.fail('the source started');
}

const good = () =>
  pcapFile(
    conversation().map((r) => ({ ...r, data: frame(r.data, 'ethernet') })),
    { linkType: LINK.ethernet },
  );

/** A seeded generator, so a failing mutation can be replayed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

describe('pcap replay on bad input: typed errors or counted skips, never a crash or a hang', () => {
  it('refuses a missing file with AGT_ERR_PCAP_OPEN', async () => {
    const e = await startError(join(dir, 'nope.pcap'));
    assert.equal(e.code, 'AGT_ERR_PCAP_OPEN');
    assert.match(e.message, /nope\.pcap/);
  });

  it('refuses an empty file, a text file and a directory', async () => {
    assert.equal((await startError(write('empty.pcap', Buffer.alloc(0)))).code, 'AGT_ERR_PCAP_FORMAT');
    const e = await startError(write('text.pcap', Buffer.from('hello, this is not a capture\n')));
    assert.equal(e.code, 'AGT_ERR_PCAP_FORMAT');
    assert.match(e.message, /unknown magic 0x68656c6c/);
    assert.equal((await startError(dir)).code, 'AGT_ERR_PCAP_OPEN');
  });

  it('refuses a pcap whose link type it does not read, naming it', async () => {
    const e = await startError(write('lt.pcap', pcapFile([], { linkType: 147 })));
    assert.equal(e.code, 'AGT_ERR_PCAP_LINKTYPE');
    assert.match(e.message, /link type 147/);
  });

  it('replays a pcap cut in the middle of a record up to the cut, then fails with AGT_ERR_PCAP_TRUNCATED', async () => {
    const bytes = good();
    for (const cut of [30, bytes.length - 5, bytes.length - 60]) {
      const r = await replay(write(`cut${cut}.pcap`, bytes.subarray(0, cut)));
      assert.ok(r.error instanceof AgentError);
      assert.equal((r.error as AgentError).code, 'AGT_ERR_PCAP_TRUNCATED');
      assert.match(r.error.message, /at byte \d+/);
      if (cut > 100) assert.ok(r.events.length > 0, 'events before the cut reach the agent');
    }
    // Cut inside the file header.
    assert.equal((await startError(write('hdr.pcap', bytes.subarray(0, 10)))).code, 'AGT_ERR_PCAP_TRUNCATED');
  });

  it('fails a truncated pcapng and a pcapng whose block lengths disagree', async () => {
    const ng = pcapngFile(
      [{ linkType: LINK.raw }],
      conversation().map((r) => ({ iface: 0, t: r.t, data: r.data })),
    );
    const r = await replay(write('cut.pcapng', ng.subarray(0, ng.length - 7)));
    assert.equal((r.error as AgentError).code, 'AGT_ERR_PCAP_TRUNCATED');
    const bad = Buffer.from(ng);
    bad.writeUInt32LE(0x100, bad.length - 4); // trailing length of the last block
    const r2 = await replay(write('badlen.pcapng', bad));
    assert.equal((r2.error as AgentError).code, 'AGT_ERR_PCAP_FORMAT');
    assert.match(r2.error!.message, /trailing length/);
  });

  it('fails a record whose captured length cannot be', async () => {
    const bytes = good();
    bytes.writeUInt32LE(0x7fffffff, 24 + 8);
    const r = await replay(write('huge.pcap', bytes));
    assert.equal((r.error as AgentError).code, 'AGT_ERR_PCAP_FORMAT');
  });

  it('refuses 10 MB of random bytes at once, and fails fast on random bytes behind a valid header', async () => {
    const noise = randomBytes(10 * 1024 * 1024);
    const t0 = Date.now();
    assert.equal((await startError(write('random.bin', noise))).code, 'AGT_ERR_PCAP_FORMAT');
    const behind = Buffer.concat([pcapFile([], { linkType: LINK.ethernet }), noise]);
    const r = await replay(write('random.pcap', behind));
    assert.ok(r.error instanceof AgentError && /^AGT_ERR_PCAP_/.test(r.error.code), String(r.error));
    const ngBehind = Buffer.concat([pcapngFile([{ linkType: LINK.ethernet }], []), noise]);
    const r2 = await replay(write('random.pcapng', ngBehind));
    assert.ok(r2.error instanceof AgentError && /^AGT_ERR_PCAP_/.test(r2.error.code), String(r2.error));
    assert.ok(Date.now() - t0 < 20_000, 'no hang');
  });

  it('survives 300 captures with random bytes flipped: typed errors or counted skips only', async () => {
    const base = good();
    const rand = rng(0x5eed);
    let failed = 0;
    for (let i = 0; i < 300; i++) {
      const m = Buffer.from(base);
      const flips = 1 + Math.floor(rand() * 8);
      for (let k = 0; k < flips; k++) m[24 + Math.floor(rand() * (m.length - 24))] = Math.floor(rand() * 256);
      const r = await replay(write('mut.pcap', m));
      if (r.error) {
        failed++;
        assert.ok(
          r.error instanceof AgentError && /^AGT_ERR_PCAP_/.test(r.error.code),
          `mutation ${i}: ${r.error.stack}`,
        );
      }
      const s = r.source.stats;
      const skipped = Object.values(s.skipped).reduce((a, b) => a + b, 0);
      assert.ok(s.tcp + skipped <= s.packets, `mutation ${i}: every packet analyzed or counted`);
    }
    assert.ok(failed < 300);
  });
});
