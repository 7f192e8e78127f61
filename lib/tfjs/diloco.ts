/**
 * DiLoCo, async DiLoCo and Streaming DiLoCo driving tfjs variables. The optimizers themselves are TCCL's
 * framework-agnostic ones (lib/diloco); this layer copies the variables to their host views just before an
 * outer step (or a fragment's sync) reads them and assigns them back just after it writes them. Inner steps
 * cost nothing: no copy, no tensor.
 */
import {
  DiLoCo, StreamingDiLoCo, fragmentsDueAt,
  type Collective, type CommStats, type DiLoCoOptions, type FragmentStepReport, type InnerStepInfo, type OuterStepReport, type StreamingDiLoCoOptions,
  type SyncStrategy,
} from '../index';
import { TfjsParameters, type TfjsModelInput } from './parameters';

/** Options of {@link TfjsDiLoCo}: those of DiLoCo, with `model` instead of `params`. */
export interface TfjsDiLoCoOptions<S = unknown> extends Omit<DiLoCoOptions<S>, 'params'> {
  /** A tf.LayersModel (its trainable weights), a list of tf.Variable, or variables grouped by layer. */
  model: TfjsModelInput;
}

/** Options of {@link TfjsStreamingDiLoCo}: those of StreamingDiLoCo, with `model` instead of `params`. */
export interface TfjsStreamingDiLoCoOptions<S = unknown> extends Omit<StreamingDiLoCoOptions<S>, 'params'> {
  /** The model; each fragment is a group of whole layers (consecutive ones with the default 'sequential' pattern). */
  model: TfjsModelInput;
}

function checkOptions(what: string, options: unknown): void {
  if (options === null || typeof options !== 'object') throw new TypeError(`${what}: options must be an object with at least { model }`);
  if ('params' in options) throw new TypeError(`${what}: pass the tfjs model as "model" (a tf.LayersModel, tf.Variable[] or layers), not "params"`);
  if (!('model' in options)) throw new TypeError(`${what}: the "model" option is required (a tf.LayersModel, tf.Variable[] or layers)`);
}

/**
 * DiLoCo (or async DiLoCo with `async: true`) over a tfjs model: call `step()` after every inner optimizer
 * step; every `innerSteps` calls the group averages its progress and every peer's variables are set to the
 * same outer parameters (bit-identical on every peer). A newcomer's `join({ strategy: 'receiveOnly' })` sets
 * its variables to the group's.
 *
 * @example
 * ```ts
 * import * as tf from '@tensorflow/tfjs';
 * import { Communicator } from 'tccl';
 * import { TfjsDiLoCo } from 'tccl/tfjs';
 *
 * const comm = await Communicator.connect({ master: 'master.example.org:48148', token });
 * const model = tf.sequential({ layers: [tf.layers.dense({ units: 10, inputShape: [784] })] });
 * const optimizer = tf.train.adam(1e-3);
 * const diloco = new TfjsDiLoCo(comm, { model, innerSteps: 50 });
 * await diloco.join();
 * for (let step = 0; step < 5000; step++) {
 *   const [x, y] = nextBatch();
 *   tf.dispose(optimizer.minimize(() => tf.losses.softmaxCrossEntropy(y, model.predict(x) as tf.Tensor), true));
 *   await diloco.step();
 * }
 * await diloco.finish();
 * ```
 */
export class TfjsDiLoCo<S = unknown> {
  /** The framework-agnostic optimizer this class drives (its state, counters and options). */
  readonly optimizer: DiLoCo<S>;
  /** Host copies of the variables (the optimizer's parameters). */
  readonly parameters: TfjsParameters;

  constructor(comm: Collective<S>, options: TfjsDiLoCoOptions<S>) {
    checkOptions('TfjsDiLoCo', options);
    const { model, ...rest } = options;
    this.parameters = new TfjsParameters(model);
    this.parameters.read(); // the optimizer takes its first outer parameters from the views
    this.optimizer = new DiLoCo(comm, { ...rest, params: this.parameters.views });
  }

  get stats(): CommStats {
    return this.optimizer.stats;
  }

  get innerStep(): number {
    return this.optimizer.innerStep;
  }

  get outerStep(): number {
    return this.optimizer.outerStep;
  }

  /** Syncs the shared state and sets the variables to the group's outer parameters (see DiLoCo.join). */
  async join(options: { strategy?: SyncStrategy } = {}): Promise<void> {
    await this.optimizer.join(options);
    this.parameters.write();
  }

  /**
   * Call after every inner step (with `{ tokens }` when weighting by tokens); runs an outer step (and returns its
   * report) every `innerSteps` calls or once `innerSeconds` passed.
   */
  async step(info?: InnerStepInfo): Promise<OuterStepReport | undefined> {
    if (!this.optimizer.outerStepDue()) return this.optimizer.step(info);
    this.parameters.read();
    const report = await this.optimizer.step(info);
    this.parameters.write();
    return report;
  }

  /** Async mode: applies the average still in flight and sets the variables to the outer parameters. */
  async finish(): Promise<void> {
    await this.optimizer.finish();
    if (this.optimizer.async) this.parameters.write();
  }
}

/**
 * Streaming DiLoCo over a tfjs model: the layers are grouped into `fragments` fragments of about equal size,
 * which sync at staggered inner steps, each all-reduce overlapping `overlapSteps` inner steps; only the layers
 * of the fragments that sync or land at a step are copied, at that step. Outer parameters are bit-identical on
 * every peer; local ones mix them in (`alpha`), so local variables differ between peers by design.
 *
 * @example
 * ```ts
 * const sd = new TfjsStreamingDiLoCo(comm, { model, fragments: 4, innerSteps: 100, overlapSteps: 5, quantization: { codec: 'uint4' } });
 * await sd.join();
 * for (let i = 0; i < steps; i++) { trainOneStep(); await sd.step(); }
 * await sd.finish();
 * console.log(sd.fragmentLayers); // [['embed', 'block0'], ['block1'], ...]
 * ```
 */
export class TfjsStreamingDiLoCo<S = unknown> {
  readonly optimizer: StreamingDiLoCo<S>;
  readonly parameters: TfjsParameters;
  /** Layer indices of each fragment. */
  private readonly fragmentIndices: number[][];

  constructor(comm: Collective<S>, options: TfjsStreamingDiLoCoOptions<S>) {
    checkOptions('TfjsStreamingDiLoCo', options);
    const { model, ...rest } = options;
    this.parameters = new TfjsParameters(model);
    const layers = this.parameters.layers.length;
    const fragments = rest.fragments ?? 4;
    if (typeof fragments === 'number' && fragments > layers) {
      throw new RangeError(
        `TfjsStreamingDiLoCo option "fragments" (${fragments}) exceeds the number of layers with trainable weights (${layers}); ` +
          'fragments are made of whole layers: use fewer fragments or group the variables into more layers',
      );
    }
    this.parameters.read();
    this.optimizer = new StreamingDiLoCo(comm, { ...rest, params: this.parameters.views });
    this.fragmentIndices = this.optimizer.fragmentTensors.map((names) => names.map((n) => this.parameters.layerIndex(n)));
  }

  /** Layer names of each fragment. */
  get fragmentLayers(): string[][] {
    return this.optimizer.fragmentTensors.map((f) => [...f]);
  }

  get stats(): CommStats {
    return this.optimizer.stats;
  }

  get innerStep(): number {
    return this.optimizer.innerStep;
  }

  async join(options: { strategy?: SyncStrategy } = {}): Promise<void> {
    await this.optimizer.join(options);
    this.parameters.write();
  }

  /** Call after every inner step (with `{ tokens }` when weighting by tokens); returns a report when fragments were launched or landed. */
  async step(info?: InnerStepInfo): Promise<FragmentStepReport | undefined> {
    const o = this.optimizer;
    // Fragments launched now read their local parameters; those landing now (launched tau steps ago) are
    // mixed into them. Both are functions of the schedule positions this step goes through.
    const positions = o.nextPositions();
    const touched = new Set<number>();
    for (const q of positions) {
      for (const p of fragmentsDueAt(q, o.innerSteps, o.offsets)) touched.add(p);
      if (o.overlapSteps > 0 && q - o.overlapSteps >= 1) for (const p of fragmentsDueAt(q - o.overlapSteps, o.innerSteps, o.offsets)) touched.add(p);
    }
    if (touched.size === 0) return o.step(info);
    const layersOf = (ps: Iterable<number>) => [...ps].flatMap((p) => this.fragmentIndices[p]);
    this.parameters.read(layersOf(touched));
    const report = await o.step(info);
    if (report) {
      for (const p of [...report.landed, ...report.launched]) {
        if (!touched.has(p)) throw new Error(`TfjsStreamingDiLoCo: fragment ${p} synced at step ${o.innerStep} unexpectedly (internal schedule mismatch)`);
      }
      this.parameters.write(layersOf(report.landed));
    }
    return report;
  }

  /** Waits for the fragments in flight, applies them and sets the variables. */
  async finish(): Promise<void> {
    this.parameters.read();
    await this.optimizer.finish();
    this.parameters.write();
  }
}
