/** Test byte helpers. */

/** Bytes from hex text; spaces, newlines and `|` separators are ignored. */
export function hex(text: string): Buffer {
  const clean = text.replace(/[\s|]/g, '');
  if (!/^([0-9a-fA-F]{2})*$/.test(clean)) throw new Error(`bad hex: ${text}`);
  return Buffer.from(clean, 'hex');
}

/** An IPFIX message: header (version 10, computed length) followed by `body`. */
export function message(
  body: Buffer,
  opts: { exportTime?: number; sequence?: number; domain?: number } = {},
): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt16BE(10, 0);
  h.writeUInt16BE(16 + body.length, 2);
  h.writeUInt32BE(opts.exportTime ?? 1600000000, 4);
  h.writeUInt32BE(opts.sequence ?? 0, 8);
  h.writeUInt32BE(opts.domain ?? 0, 12);
  return Buffer.concat([h, body]);
}

/** A set: id, computed length, body. */
export function set(id: number, body: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt16BE(id, 0);
  h.writeUInt16BE(4 + body.length, 2);
  return Buffer.concat([h, body]);
}
