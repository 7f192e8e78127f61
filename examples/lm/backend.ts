/**
 * Chooses the TensorFlow.js backend. `wasm` is @tensorflow/tfjs-backend-wasm (SIMD when the runtime has it;
 * its multi-threaded build needs Web Workers and is not used under Node), `cpu` the pure-JavaScript backend.
 * bench/lm/backends.ts measures both on the example's model (see examples/lm/README.md for which is faster).
 */
import * as tf from '@tensorflow/tfjs';

export type BackendName = 'wasm' | 'cpu';

export async function useBackend(name: BackendName): Promise<void> {
  if (name !== 'wasm' && name !== 'cpu') throw new Error(`--backend must be wasm or cpu, got ${JSON.stringify(name)}`);
  if (name === 'wasm') await import('@tensorflow/tfjs-backend-wasm');
  if (!(await tf.setBackend(name))) throw new Error(`TensorFlow.js could not start the ${name} backend`);
  await tf.ready();
}

/** What the backend runs with, for result files. */
export function backendInfo(): { backend: string; simd: boolean; threads: boolean } {
  const wasm = tf.getBackend() === 'wasm';
  return {
    backend: tf.getBackend(),
    simd: wasm && tf.env().getBool('WASM_HAS_SIMD_SUPPORT'),
    threads: wasm && tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT'),
  };
}
