/**
 * The bridge between tfjs variables and TCCL's framework-agnostic optimizers, which read and write Float32Array
 * views in place: one flat host buffer holds every variable, laid out layer by layer, and is copied from and to
 * the variables only when an optimizer needs them (at outer steps, not at inner steps).
 */
import type * as TF from '@tensorflow/tfjs';
import { backendCopiesOnWrite, tfjs } from './tf';

/** A named group of variables: the unit Streaming DiLoCo fragments are made of. */
export interface TfjsLayer {
  name: string;
  variables: TF.Variable[];
}

/** What the tfjs optimizers train: a `tf.LayersModel`, a list of `tf.Variable`s, or variables grouped by layer. */
export type TfjsModelInput = TF.LayersModel | TF.Variable[] | TfjsLayer[];

interface Slot {
  variable: TF.Variable;
  view: Float32Array;
}

interface LayerSlots {
  name: string;
  view: Float32Array;
  slots: Slot[];
}

/** A tfjs-layers LayerVariable (what `layer.trainableWeights` holds). */
interface LayerVariableLike {
  read(): TF.Variable;
}

function isLayersModel(m: unknown): m is { layers: Array<{ name: string; trainableWeights: LayerVariableLike[] }> } {
  return (
    typeof m === 'object' && m !== null && !Array.isArray(m) && Array.isArray((m as { layers?: unknown }).layers) &&
    (m as { layers: unknown[] }).layers.every((l) => typeof l === 'object' && l !== null && Array.isArray((l as { trainableWeights?: unknown }).trainableWeights))
  );
}

function isVariable(v: unknown): v is TF.Variable {
  return typeof v === 'object' && v !== null && typeof (v as TF.Variable).assign === 'function' && typeof (v as TF.Variable).dataSync === 'function';
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  return typeof v === 'object' ? `an object (${(v as object).constructor?.name ?? 'Object'})` : typeof v;
}

/** Normalizes the accepted inputs into layers of variables; rejects what the optimizers cannot train. */
export function collectLayers(model: TfjsModelInput): TfjsLayer[] {
  let layers: TfjsLayer[];
  let dedupe = false;
  if (isLayersModel(model)) {
    // A weight shared by two layers is listed by both; it is trained once, in the first.
    dedupe = true;
    layers = model.layers.map((l) => ({ name: l.name, variables: l.trainableWeights.map((w) => w.read()) }));
  } else if (Array.isArray(model) && model.length > 0 && model.every(isVariable)) {
    layers = (model as TF.Variable[]).map((v) => ({ name: v.name, variables: [v] }));
  } else if (
    Array.isArray(model) && model.length > 0 &&
    model.every((l) => typeof l === 'object' && l !== null && typeof (l as TfjsLayer).name === 'string' && Array.isArray((l as TfjsLayer).variables))
  ) {
    layers = model as TfjsLayer[];
  } else {
    throw new TypeError(
      `tccl/tfjs: "model" must be a tf.LayersModel, a non-empty array of tf.Variable or an array of { name, variables }, got ${describe(model)}`,
    );
  }
  const seen = new Set<number>();
  const names = new Set<string>();
  const out: TfjsLayer[] = [];
  for (const layer of layers) {
    const vars: TF.Variable[] = [];
    for (const v of layer.variables) {
      if (!isVariable(v)) throw new TypeError(`tccl/tfjs: layer "${layer.name}" holds ${describe(v)}, not a tf.Variable`);
      if (v.isDisposed) throw new Error(`tccl/tfjs: variable "${v.name}" of layer "${layer.name}" is disposed`);
      if (v.dtype !== 'float32') {
        throw new TypeError(`tccl/tfjs: variable "${v.name}" has dtype ${v.dtype}; only float32 variables can be trained (keep others out of "model")`);
      }
      if (seen.has(v.id)) {
        if (dedupe) continue;
        throw new RangeError(`tccl/tfjs: variable "${v.name}" is listed twice; list every variable once`);
      }
      seen.add(v.id);
      vars.push(v);
    }
    if (names.has(layer.name)) throw new RangeError(`tccl/tfjs: two layers are named "${layer.name}"; layer names must be unique`);
    names.add(layer.name);
    if (vars.length > 0 && vars.some((v) => v.size > 0)) out.push({ name: layer.name, variables: vars });
  }
  if (out.length === 0) throw new RangeError('tccl/tfjs: the model has no trainable float32 variables');
  return out;
}

/**
 * Host copies of a model's variables: one flat Float32Array, with a view per layer (what the optimizers
 * see) and per variable. `read` copies variables into the views, `write` assigns the views to the variables.
 *
 * @example
 * ```ts
 * const params = new TfjsParameters(model);   // a tf.LayersModel
 * params.read();                               // views := variables
 * params.views['dense_1'][0] += 1;             // ... an optimizer works on the views ...
 * params.write();                              // variables := views
 * ```
 */
export class TfjsParameters {
  /** The layers, in order, with the variables each holds. */
  readonly layers: readonly TfjsLayer[];
  /** Every parameter, layer after layer, variable after variable. */
  readonly flat: Float32Array;
  /** One view into `flat` per layer, by layer name, in layer order. */
  readonly views: Record<string, Float32Array>;
  private readonly slots: LayerSlots[];
  private readonly byName = new Map<string, number>();

  constructor(model: TfjsModelInput) {
    this.layers = collectLayers(model);
    const total = this.layers.reduce((n, l) => n + l.variables.reduce((m, v) => m + v.size, 0), 0);
    this.flat = new Float32Array(total);
    this.views = {};
    this.slots = [];
    let o = 0;
    for (const layer of this.layers) {
      const start = o;
      const slots: Slot[] = layer.variables.map((variable) => {
        const view = this.flat.subarray(o, o + variable.size);
        o += variable.size;
        return { variable, view };
      });
      const view = this.flat.subarray(start, o);
      this.byName.set(layer.name, this.slots.length);
      this.slots.push({ name: layer.name, view, slots });
      this.views[layer.name] = view;
    }
  }

  /** Number of parameters (elements). */
  get size(): number {
    return this.flat.length;
  }

  /** Index of a layer by name (throws for an unknown name). */
  layerIndex(name: string): number {
    const i = this.byName.get(name);
    if (i === undefined) throw new RangeError(`tccl/tfjs: no layer named "${name}"`);
    return i;
  }

  /** Copies the variables of the given layers (default: all) into the views. */
  read(layers: Iterable<number> = this.slots.keys()): void {
    for (const i of layers) {
      for (const { variable, view } of this.slots[i].slots) {
        if (variable.size !== view.length) {
          throw new RangeError(`tccl/tfjs: variable "${variable.name}" changed size from ${view.length} to ${variable.size} elements during training`);
        }
        view.set(variable.dataSync() as Float32Array);
      }
    }
  }

  /** Assigns the views of the given layers (default: all) to their variables. Leaves no tensor behind. */
  write(layers: Iterable<number> = this.slots.keys()): void {
    const tf = tfjs();
    // Backends that keep a reference to the array would see the optimizer's later writes: give them a copy.
    const copy = !backendCopiesOnWrite();
    for (const i of layers) {
      for (const { variable, view } of this.slots[i].slots) {
        const t = tf.tensor(copy ? view.slice() : view, variable.shape, 'float32');
        variable.assign(t);
        t.dispose();
      }
    }
  }
}
