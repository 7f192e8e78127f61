/**
 * Streaming DiLoCo (Douillard et al., 2025): the parameters are split into fragments that sync at staggered
 * times, each all-reduce overlapping further inner steps, so the peak bandwidth is divided by the fragment count.
 */
import type { QuantizationOptions } from '../collective';
import { checkConstructorArgs, checkQuantization, emptyStats, gather, mixInto, pseudoGradient, resilience, Retrying, scatter, yieldToEventLoop, type ResilienceOptions } from './common';
import { countElements, fragmentOffsets, fragmentsDueAt, normalizeParams, partitionTensors, type FragmentPattern, type NamedTensor } from './fragments';
import { createOuterOptimizer, type OuterOptimizer, type OuterOptimizerOptions } from './outer-optimizer';
import { plainStateFactory, type Collective, type CommStats, type ParamsInput, type StateBinding, type StateFactory, type SyncStrategy } from './types';
import { checkInt, checkNumber, checkOneOf } from '../validate';
import { checkRoundOptions, stepWeight, type InnerStepInfo, type Weighting } from './rounds';

/** Options of {@link StreamingDiLoCo}. */
export interface StreamingDiLoCoOptions<S = unknown> extends ResilienceOptions {
  /** The model's parameter tensors (views; at least `fragments` of them). */
  params: ParamsInput;
  /** Number of fragments P (default 4). */
  fragments?: number;
  /** How tensors are grouped into fragments: 'sequential' (default, contiguous layers) or 'strided'. */
  fragmentPattern?: FragmentPattern;
  /** Inner steps between two syncs of the same fragment, H (default 100). */
  innerSteps?: number;
  /** Inner steps each fragment's all-reduce overlaps before it is applied, tau (default 1; 0 = wait at once). */
  overlapSteps?: number;
  /** Mixing factor: local = alpha * local + (1 - alpha) * global when a fragment lands (default 0.5). */
  alpha?: number;
  /** Outer optimizer (default Nesterov, lr 0.7, momentum 0.9). */
  outer?: OuterOptimizerOptions;
  /** Send the outer gradients quantized (uint8, uint4, float16, bfloat16); accumulation stays float32. */
  quantization?: QuantizationOptions;
  /** Builds the communicator's shared-state object over the optimizer's entries (default: a plain object). */
  stateFactory?: StateFactory<S>;
  /**
   * Weight each fragment's pseudo-gradient by the tokens passed to `step({ tokens })` since that fragment's last
   * sync ('tokens'), or by the inner steps ('steps'); default 'steps' with innerSeconds, else 'none'.
   */
  weighting?: Weighting;
  /**
   * A period of the schedule (innerSteps positions) also lasts at most this many seconds: a worker behind the
   * clock moves through several positions in one step (syncing what is due there), so a slow worker does fewer
   * inner steps instead of holding the fast ones at each landing.
   */
  innerSeconds?: number;
}

/** What a step that synced at least one fragment reports. */
export interface FragmentStepReport {
  innerStep: number;
  /** Fragments whose all-reduce started in this step. */
  launched: number[];
  /** Fragments whose result was applied in this step. */
  landed: number[];
  worldSize: number;
  bytesSent: number;
  bytesReceived: number;
  commSeconds: number;
  revision: number;
}

interface Fragment {
  index: number;
  tensors: NamedTensor[];
  size: number;
  delta: Float32Array;
  pending?: Promise<number>;
  landAt: number;
  /** Tokens (or steps) since this fragment's last launch: its weight in the next average. */
  weight: number;
}

const OPTION_KEYS = [
  'params', 'fragments', 'fragmentPattern', 'innerSteps', 'overlapSteps', 'alpha', 'outer', 'quantization',
  'stateFactory', 'maxRetries', 'tagBase', 'weighting', 'innerSeconds',
];

/**
 * Streaming DiLoCo. Fragment p syncs after inner steps p*H/P, p*H/P + H, ... : its pseudo-gradient
 * (outer_p - local_p) is all-reduced (optionally quantized) while `overlapSteps` (tau) more inner steps run; when
 * it lands, the outer optimizer updates outer_p and the local fragment becomes
 * `alpha * local + (1 - alpha) * outer_p`. Outer parameters and momentum of every fragment live in the shared
 * state (entries `streaming.outer.<p>`, `streaming.momentum.<p>`); the state is synced (revision + 1) after each
 * landing that leaves no fragment in flight, which is also when pending peers are admitted. A newcomer receives
 * the outer state and the step counter, starts from local = outer, and contributes a zero pseudo-gradient to the
 * fragments launched in the step it joins.
 *
 * @example
 * ```ts
 * const sd = new StreamingDiLoCo(comm, {
 *   params: model.tensors(), fragments: 4, innerSteps: 100, overlapSteps: 5,
 *   quantization: { codec: 'uint8' },
 * });
 * await sd.join();
 * for (let i = 0; i < steps; i++) { innerOptimizer.step(model, batch()); await sd.step(); }
 * await sd.finish();
 * ```
 */
export class StreamingDiLoCo<S = unknown> {
  readonly fragmentCount: number;
  readonly innerSteps: number;
  readonly overlapSteps: number;
  readonly alpha: number;
  readonly optimizer: OuterOptimizer;
  readonly stats: CommStats = emptyStats();
  /** Tensor names of each fragment. */
  readonly fragmentTensors: string[][];
  /** Inner step (mod innerSteps) at which each fragment syncs. */
  readonly offsets: number[];
  readonly weighting: Weighting;

  private readonly frags: Fragment[];
  private readonly binding: StateBinding<S>;
  private readonly net: Retrying<S>;
  private readonly tagBase: number;
  private inner = 0;
  private joined = false;
  /** innerSeconds: a position of the schedule lasts `slotMs`; position 0 was at `origin` (performance.now()). */
  private readonly clock?: { slotMs: number; origin: number };
  /** The target position nextPositions() promised the next step. */
  private planned?: number;

  constructor(
    readonly comm: Collective<S>,
    options: StreamingDiLoCoOptions<S>,
  ) {
    checkConstructorArgs('StreamingDiLoCo', comm, options, OPTION_KEYS);
    const tensors = normalizeParams(options.params);
    this.fragmentCount = checkInt('fragments', options.fragments ?? 4, 1);
    const pattern = checkOneOf('fragmentPattern', options.fragmentPattern ?? 'sequential', ['sequential', 'strided'] as const);
    this.innerSteps = checkInt('innerSteps', options.innerSteps ?? 100, 1);
    if (this.innerSteps < this.fragmentCount) {
      throw new RangeError(
        `StreamingDiLoCo option "innerSteps" (${this.innerSteps}) must be >= "fragments" (${this.fragmentCount}) so each fragment gets its own sync step`,
      );
    }
    this.overlapSteps = checkInt('overlapSteps', options.overlapSteps ?? 1, 0);
    const spacing = Math.floor(this.innerSteps / this.fragmentCount);
    if (this.overlapSteps >= spacing && this.fragmentCount > 1 || this.overlapSteps >= this.innerSteps) {
      throw new RangeError(
        `StreamingDiLoCo option "overlapSteps" (${this.overlapSteps}) must be < innerSteps / fragments (${spacing}): ` +
          'a fragment must land before the next one starts, so the group has points with nothing in flight to admit peers',
      );
    }
    this.alpha = checkNumber('alpha', options.alpha ?? 0.5, 0, 1);
    this.optimizer = createOuterOptimizer(options.outer ?? {});
    const rounds = checkRoundOptions('StreamingDiLoCo', options);
    this.weighting = rounds.weighting;
    if (rounds.innerSeconds !== undefined) this.clock = { slotMs: (rounds.innerSeconds * 1000) / this.innerSteps, origin: performance.now() };
    if (this.weighting !== 'none' && options.quantization !== undefined) {
      throw new TypeError('StreamingDiLoCo: a weighted average cannot be quantized: leave "quantization" out or use weighting: \'none\'');
    }
    const { maxRetries, tagBase } = resilience(options);
    this.tagBase = tagBase;
    this.net = new Retrying(comm, this.stats, maxRetries, checkQuantization(options.quantization));
    const groups = partitionTensors(tensors, this.fragmentCount, pattern);
    this.offsets = fragmentOffsets(this.fragmentCount, this.innerSteps);
    const entries: Record<string, Float32Array> = { 'streaming.meta': new Float32Array(1) };
    this.frags = groups.map((idx, p) => {
      const ts = idx.map((i) => tensors[i]);
      const size = countElements(ts);
      const outer = new Float32Array(size);
      gather(ts, outer);
      entries[`streaming.outer.${p}`] = outer;
      if (this.optimizer.hasMomentum) entries[`streaming.momentum.${p}`] = new Float32Array(size);
      return { index: p, tensors: ts, size, delta: new Float32Array(size), landAt: -1, weight: 0 };
    });
    this.fragmentTensors = this.frags.map((f) => f.tensors.map((t) => t.name));
    const factory = options.stateFactory ?? (plainStateFactory as unknown as StateFactory<S>);
    if (typeof factory !== 'function') throw new TypeError('StreamingDiLoCo option "stateFactory" must be a function');
    this.binding = factory(entries, 0);
  }

  get state(): S {
    return this.binding.state;
  }

  get innerStep(): number {
    return this.inner;
  }

  /** Element count of each fragment. */
  get fragmentSizes(): number[] {
    return this.frags.map((f) => f.size);
  }

  /** Outer parameters of fragment p (identical on every peer after each landing of p). */
  outerParams(p: number): Float32Array {
    checkInt('fragment', p, 0, this.fragmentCount - 1);
    return this.binding.entries()[`streaming.outer.${p}`];
  }

  /** Syncs the shared state, sets local = outer, and takes part in the fragments due at the current step. */
  async join(options: { strategy?: SyncStrategy } = {}): Promise<void> {
    if (this.joined) throw new Error('StreamingDiLoCo.join() was already called');
    this.joined = true;
    await this.sync(options.strategy ?? 'enforcePopular', false);
    for (const f of this.frags) scatter(this.outerParams(f.index), f.tensors);
    if (this.inner > 0 && this.overlapSteps > 0) this.launchDue();
  }

  /**
   * The schedule positions the next step() goes through: the next one, or with `innerSeconds` every position the
   * clock passed (a slow worker catches up in one step). The answer holds for that step (lib/tfjs reads the
   * variables of the fragments they touch before it).
   */
  nextPositions(): number[] {
    this.planned ??= this.target();
    return Array.from({ length: this.planned - this.inner }, (_, i) => this.inner + 1 + i);
  }

  /**
   * Call after every inner optimizer step (with `{ tokens }` when weighting by tokens); returns a report when
   * fragments were launched or landed.
   */
  async step(info?: InnerStepInfo): Promise<FragmentStepReport | undefined> {
    if (!this.joined) throw new Error('Call StreamingDiLoCo.join() before the first step()');
    const w = stepWeight('StreamingDiLoCo', this.weighting, info);
    await yieldToEventLoop();
    for (const f of this.frags) f.weight += w;
    const target = this.planned ?? this.target();
    this.planned = undefined;
    const t0 = performance.now();
    const s0 = this.stats.bytesSent;
    const r0 = this.stats.bytesReceived;
    const landed: number[] = [];
    const launched: number[] = [];
    let worldSize = 0;
    while (this.inner < target) {
      this.inner++;
      worldSize = Math.max(worldSize, await this.atPosition(landed, launched));
    }
    if (landed.length === 0 && launched.length === 0) return undefined;
    return {
      innerStep: this.inner,
      launched,
      landed,
      worldSize,
      bytesSent: this.stats.bytesSent - s0,
      bytesReceived: this.stats.bytesReceived - r0,
      commSeconds: (performance.now() - t0) / 1000,
      revision: this.binding.revision,
    };
  }

  /** The schedule's work at position `inner`: landings, launches, the quiet-point sync; returns the world size seen. */
  private async atPosition(landed: number[], launched: number[]): Promise<number> {
    let worldSize = 0;
    let landedHere = 0;
    // a) results that were in flight for tau steps
    for (const f of this.frags) {
      if (f.pending && f.landAt === this.inner) {
        const p = f.pending;
        f.pending = undefined;
        worldSize = Math.max(worldSize, await p);
        this.apply(f);
        landed.push(f.index);
        landedHere++;
      }
    }
    // b) tau = 0: launch and land at once
    if (this.overlapSteps === 0) {
      for (const p of fragmentsDueAt(this.inner, this.innerSteps, this.offsets)) {
        const f = this.frags[p];
        pseudoGradient(this.outerParams(p), f.tensors, f.delta);
        worldSize = Math.max(worldSize, await this.net.average(f.delta, this.tagBase + p, this.takeWeight(f)));
        this.apply(f);
        launched.push(p);
        landed.push(p);
        landedHere++;
      }
    }
    // c) a quiet point: sync the state (and admit peers)
    if (landedHere > 0 && this.frags.every((f) => !f.pending)) await this.sync('enforcePopular', true);
    // d) tau > 0: launch the fragments due now
    if (this.overlapSteps > 0) launched.push(...this.launchDue());
    return worldSize;
  }

  /**
   * The position the next step reaches: one further, or with innerSeconds as far as the clock went, but never past
   * the end of the current period, so that workers that stop at a multiple of innerSteps all stop at the same one.
   */
  private target(): number {
    const next = this.inner + 1;
    if (!this.clock) return next;
    const periodEnd = Math.ceil(next / this.innerSteps) * this.innerSteps;
    return Math.min(periodEnd, Math.max(next, Math.floor((performance.now() - this.clock.origin) / this.clock.slotMs)));
  }

  /** Waits for every fragment in flight and applies it. */
  async finish(): Promise<void> {
    for (const f of this.frags) {
      if (!f.pending) continue;
      const p = f.pending;
      f.pending = undefined;
      await p;
      this.apply(f);
    }
  }

  private launchDue(): number[] {
    const due = fragmentsDueAt(this.inner, this.innerSteps, this.offsets);
    for (const p of due) {
      const f = this.frags[p];
      pseudoGradient(this.outerParams(p), f.tensors, f.delta);
      const pr = this.net.average(f.delta, this.tagBase + p, this.takeWeight(f));
      pr.catch(() => undefined); // surfaced when awaited
      f.pending = pr;
      f.landAt = this.inner + this.overlapSteps;
    }
    return due;
  }

  /** The fragment's weight in the average being launched (undefined: unweighted); it starts counting again. */
  private takeWeight(f: Fragment): number | undefined {
    const w = f.weight;
    f.weight = 0;
    return this.weighting === 'none' ? undefined : w;
  }

  private apply(f: Fragment): void {
    const e = this.binding.entries();
    const outer = e[`streaming.outer.${f.index}`];
    this.optimizer.step(outer, f.delta, e[`streaming.momentum.${f.index}`]);
    mixInto(f.tensors, outer, this.alpha);
  }

  private async sync(strategy: SyncStrategy, advance: boolean): Promise<void> {
    const e = this.binding.entries();
    if (advance) {
      this.binding.revision += 1;
      e['streaming.meta'][0] = this.inner;
    }
    await this.net.syncState(this.binding, strategy, this.tagBase + this.fragmentCount, advance);
    this.inner = this.binding.entries()['streaming.meta'][0];
    // Every worker leaves a sync at the same position: the clocks start again from there, so they never drift apart.
    if (this.clock) this.clock.origin = performance.now() - this.inner * this.clock.slotMs;
  }
}
