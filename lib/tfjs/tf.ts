/**
 * Loads @tensorflow/tfjs on first use. tccl/tfjs imports only its types at the top, so `require('tccl/tfjs')`
 * works without it and the main entry never touches it; the first call that needs it says what to install.
 */
import type * as TF from '@tensorflow/tfjs';

let cached: typeof TF | undefined;

/** The @tensorflow/tfjs module (any backend the application registered is used: cpu, wasm, tfjs-node...). */
export function tfjs(): typeof TF {
  if (cached) return cached;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = require('@tensorflow/tfjs') as typeof TF;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e?.code === 'MODULE_NOT_FOUND' && String(e.message).includes('@tensorflow/tfjs')) {
      throw new Error(
        'tccl/tfjs needs the optional peer dependency @tensorflow/tfjs: run `npm install @tensorflow/tfjs` ' +
          '(and `@tensorflow/tfjs-backend-wasm` for a faster backend under Node)',
        { cause: err },
      );
    }
    throw err;
  }
  return cached;
}

/**
 * True when `tf.tensor(values)` copies `values` at once. The wasm backend copies into its heap (tested); the cpu
 * backend keeps a reference to the array (tested), and other backends are not relied upon: an array the caller
 * goes on writing is copied first for every backend but wasm.
 */
export function backendCopiesOnWrite(): boolean {
  return tfjs().getBackend() === 'wasm';
}
