/**
 * The store (and ingest, when this process receives IPFIX) as decorators every route plugin
 * sees. The caller owns the store: the API closes it on close only when asked to, because the
 * collector must flush ingest into it after the API stops.
 */
import fp from 'fastify-plugin';
import type { Ingest } from '../ingest.js';
import type { Store } from '../store/types.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** The store the API reads. */
    store: Store;
    /** Ingest of this process, when it receives IPFIX (null for an API over a store alone). */
    ingest: Ingest | null;
  }
}

/** Options of the store plugin. */
export interface StorePluginOptions {
  store: Store;
  ingest?: Ingest | undefined;
  /** Close the store when the app closes. Default false. */
  closeStore?: boolean | undefined;
}

/** Decorates the app with `store` and `ingest`. */
export const storePlugin = fp<StorePluginOptions>(
  async (app, opts) => {
    app.decorate('store', opts.store);
    app.decorate('ingest', opts.ingest ?? null);
    if (opts.closeStore) app.addHook('onClose', async () => opts.store.close());
  },
  { name: 'kpiflow-store', fastify: '5.x' },
);
