/**
 * Worker thread entry of the SQLite writer: owns the write connection and applies the batches,
 * retention deletes and the final close the store posts to it, answering each by its id.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { ProfileLayout } from './block-writer.js';
import { openForWriting, SqliteWriter, type SyncMode } from './sqlite-writer.js';

/** A request from the store. */
export type WriterRequest =
  | { id: number; op: 'write'; batch: import('./packed-batch.js').PackedBatch }
  | { id: number; op: 'delete'; beforeMs: number; maxRows: number }
  | { id: number; op: 'maintain'; now: number; max: number; budgetMs: number | null }
  | { id: number; op: 'close' };

/** The answer to one request. */
export type WriterReply =
  | { id: number; ok: true; value?: number }
  | { id: number; ok: false; code: string; message: string };

const port = parentPort;
if (!port) throw new Error('sqlite-writer-thread.js runs only as a worker thread');
const { path, sync, layout } = workerData as { path: string; sync: SyncMode; layout: ProfileLayout };
let writer: SqliteWriter | null = null;
let openError: { code: string; message: string } | null = null;
try {
  writer = new SqliteWriter(openForWriting(path, sync, layout), layout);
} catch (err) {
  const e = err as Error & { code?: string };
  openError = { code: e.code ?? 'COL_ERR_STORE', message: e.message };
}

port.on('message', (m: WriterRequest) => {
  const reply = (r: WriterReply) => port.postMessage(r);
  if (!writer) {
    reply({ id: m.id, ok: false, ...openError! });
    return;
  }
  try {
    if (m.op === 'write') {
      writer.write(m.batch);
      reply({ id: m.id, ok: true });
    } else if (m.op === 'maintain') {
      reply({
        id: m.id,
        ok: true,
        value: writer.maintain(m.now, m.max, m.budgetMs ?? Number.POSITIVE_INFINITY),
      });
    } else if (m.op === 'delete') {
      reply({ id: m.id, ok: true, value: writer.deleteOlderThan(m.beforeMs, m.maxRows) });
    } else {
      writer.close();
      reply({ id: m.id, ok: true });
      port.close();
    }
  } catch (err) {
    const e = err as Error & { code?: string };
    reply({ id: m.id, ok: false, code: e.code ?? 'COL_ERR_STORE', message: e.message });
  }
});
