/** All-reduce of tfjs tensors: a list or a map (e.g. the gradients of `tf.variableGrads`). */
import type * as TF from '@tensorflow/tfjs';
import type { AllReduceManyOptions, CommunicatorAllReduceResult, ManyItem, QuantizationOptions } from '../index';
import { tfjs } from './tf';

/** The part of a Communicator these functions use (allReduceMany retries after a lost peer). */
export interface TensorCommunicator {
  allReduceMany(items: ManyItem<Float32Array>[], options?: AllReduceManyOptions): Promise<CommunicatorAllReduceResult<Float32Array>[]>;
}

/** Options of {@link allReduceTensors}. */
export interface TensorAllReduceOptions {
  /** Reduction (default 'sum'; {@link allReduceGradients} uses 'avg'). */
  op?: 'sum' | 'avg' | 'min' | 'max';
  /** Tag of the all-reduce (default 0); concurrent operations need distinct tags. */
  tag?: number;
  /** Send quantized (e.g. `{ codec: 'uint8' }`); every peer still receives bit-identical results. */
  quantization?: QuantizationOptions;
  /** Dispose the input tensors once they have been read (default false). */
  disposeInputs?: boolean;
}

/** The reduced tensors (new tensors, owned by the caller) and what the all-reduce cost. */
export interface TensorAllReduceResult<T> {
  tensors: T;
  /** Peers whose inputs went into the result. */
  worldSize: number;
  bytesSent: number;
  bytesReceived: number;
}

type TensorList = TF.Tensor[] | TF.NamedTensorMap;

/**
 * All-reduces tfjs float32 tensors across the group and returns new tensors of the same shapes, in the same
 * structure (an array, or a map by name). The tensors go in one all-reduce (one round of the master's commit,
 * however many tensors): they are copied once into a fresh buffer, reduced into a second fresh buffer, and the
 * results are views of it (backends that copy on creation, like wasm, copy them again; the cpu backend keeps
 * them). Retries after a lost peer (the group re-forms); rejects with TooFewPeersError when this peer is left
 * alone, MismatchError when peers pass different sizes.
 *
 * @example
 * ```ts
 * const { value, grads } = tf.variableGrads(() => model.loss(x, y));
 * const { tensors: avg } = await allReduceGradients(comm, grads, { disposeInputs: true });
 * optimizer.applyGradients(avg);
 * tf.dispose([value, avg]);
 * ```
 */
export async function allReduceTensors<T extends TensorList>(comm: TensorCommunicator, tensors: T, options: TensorAllReduceOptions = {}): Promise<TensorAllReduceResult<T>> {
  if (comm === null || typeof comm !== 'object' || typeof comm.allReduceMany !== 'function') {
    throw new TypeError('allReduceTensors: the first argument must be a Communicator');
  }
  const named = !Array.isArray(tensors);
  if (tensors === null || typeof tensors !== 'object') {
    throw new TypeError('allReduceTensors: "tensors" must be an array of tf.Tensor or a map of name to tf.Tensor (e.g. the grads of tf.variableGrads)');
  }
  const entries: Array<[string, TF.Tensor]> = named ? Object.entries(tensors as TF.NamedTensorMap) : (tensors as TF.Tensor[]).map((t, i) => [String(i), t]);
  let total = 0;
  for (const [name, t] of entries) {
    if (t === null || typeof t !== 'object' || typeof (t as TF.Tensor).dataSync !== 'function') {
      throw new TypeError(`allReduceTensors: tensors[${JSON.stringify(name)}] is not a tf.Tensor`);
    }
    if (t.isDisposed) throw new Error(`allReduceTensors: tensors[${JSON.stringify(name)}] is disposed`);
    if (t.dtype !== 'float32') {
      throw new TypeError(`allReduceTensors: tensors[${JSON.stringify(name)}] has dtype ${t.dtype}; only float32 is supported (cast it with tf.cast(t, 'float32'))`);
    }
    total += t.size;
  }
  if (total === 0) throw new RangeError('allReduceTensors: no tensor elements to reduce (the list is empty or every tensor has size 0)');
  const input = new Float32Array(total);
  let o = 0;
  for (const [, t] of entries) {
    input.set(t.dataSync() as Float32Array, o);
    o += t.size;
  }
  if (options.disposeInputs) for (const [, t] of entries) t.dispose();
  // A fresh output per call: the returned tensors may keep views of it (the cpu backend does not copy).
  const output = new Float32Array(total);
  const [r] = await comm.allReduceMany([{ data: input, output, ...(options.tag !== undefined ? { tag: options.tag } : {}) }], {
    op: options.op ?? 'sum',
    ...(options.quantization ? { quantization: options.quantization } : {}),
  });
  const tf = tfjs();
  o = 0;
  const made = entries.map(([name, t]) => {
    const out = tf.tensor(output.subarray(o, o + t.size), t.shape, 'float32');
    o += t.size;
    return [name, out] as [string, TF.Tensor];
  });
  const result = (named ? Object.fromEntries(made) : made.map(([, t]) => t)) as T;
  return { tensors: result, worldSize: r.worldSize, bytesSent: r.bytesSent, bytesReceived: r.bytesReceived };
}

/** {@link allReduceTensors} with `op: 'avg'`: the data-parallel gradient average. */
export function allReduceGradients<T extends TensorList>(
  comm: TensorCommunicator,
  grads: T,
  options: Omit<TensorAllReduceOptions, 'op'> = {},
): Promise<TensorAllReduceResult<T>> {
  return allReduceTensors(comm, grads, { ...options, op: 'avg' });
}
