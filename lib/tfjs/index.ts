/**
 * tccl/tfjs: TensorFlow.js integration. All-reduce of tensors and gradient maps, and DiLoCo, async DiLoCo and
 * Streaming DiLoCo driving a `tf.LayersModel` or tf.Variables. `@tensorflow/tfjs` is an optional peer
 * dependency, loaded on first use; the main entry (`tccl`) never loads it.
 *
 * @example
 * ```ts
 * import * as tf from '@tensorflow/tfjs';
 * import { Communicator } from 'tccl';
 * import { allReduceGradients } from 'tccl/tfjs';
 *
 * const comm = await Communicator.connect({ master: '127.0.0.1:48148' });
 * const { value, grads } = tf.variableGrads(() => loss(model, batch));
 * const { tensors: avg } = await allReduceGradients(comm, grads, { disposeInputs: true });
 * optimizer.applyGradients(avg);
 * tf.dispose([value, avg]);
 * ```
 */
export { allReduceTensors, allReduceGradients } from './all-reduce';
export type { TensorAllReduceOptions, TensorAllReduceResult, TensorCommunicator } from './all-reduce';
export { TfjsParameters, collectLayers } from './parameters';
export type { TfjsLayer, TfjsModelInput } from './parameters';
export { TfjsDiLoCo, TfjsStreamingDiLoCo } from './diloco';
export type { TfjsDiLoCoOptions, TfjsStreamingDiLoCoOptions } from './diloco';
