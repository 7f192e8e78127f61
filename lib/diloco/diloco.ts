/**
 * DiLoCo (Douillard et al., 2023) and its asynchronous variant over a TCCL communicator.
 */
import type { QuantizationOptions } from '../collective';
import { countElements, normalizeParams, type NamedTensor } from './fragments';
import { checkConstructorArgs, checkQuantization, emptyStats, gather, pseudoGradient, resilience, Retrying, scatter, yieldToEventLoop, type ResilienceOptions } from './common';
import { createOuterOptimizer, type OuterOptimizer, type OuterOptimizerOptions } from './outer-optimizer';
import { plainStateFactory, type Collective, type CommStats, type ParamsInput, type StateBinding, type StateFactory, type SyncStrategy } from './types';
import { checkInt, describeValue } from '../validate';
import { checkRoundOptions, Round, stepWeight, type InnerStepInfo, type RoundOptions, type Weighting } from './rounds';

/** Options of {@link DiLoCo}. */
export interface DiLoCoOptions<S = unknown> extends ResilienceOptions, RoundOptions {
  /** The model's parameters (views into the model; the optimizer reads and writes them in place). */
  params: ParamsInput;
  /** Inner steps between outer steps, H (default 500, as in the paper; 10 to 1000 is common). */
  innerSteps?: number;
  /** Outer optimizer (default Nesterov, lr 0.7, momentum 0.9). */
  outer?: OuterOptimizerOptions;
  /** Send pseudo-gradients quantized (e.g. `{ codec: 'uint8' }`); outer state stays float32. */
  quantization?: QuantizationOptions;
  /**
   * Overlap the all-reduce of outer step t with the inner steps of t+1 and apply it one outer step late
   * (default false). See {@link DiLoCo} for the exact rule.
   */
  async?: boolean;
  /** Builds the communicator's shared-state object over the optimizer's entries (default: a plain object). */
  stateFactory?: StateFactory<S>;
}

/** What one outer step reports. */
export interface OuterStepReport {
  /** Outer steps done so far (this one included). */
  outerStep: number;
  /** Inner steps done so far. */
  innerStep: number;
  /** Peers that contributed to the all-reduce applied in this step (1 when alone). */
  worldSize: number;
  /** Inner steps this worker did in the phase this outer step ended (fewer than innerSteps when innerSeconds ended it). */
  roundSteps: number;
  /** This worker's weight in the average launched by this step (its tokens or inner steps; undefined: unweighted). */
  weight?: number;
  /** Bytes this peer sent / received during this outer step. */
  bytesSent: number;
  bytesReceived: number;
  /** Seconds this call spent waiting on communication. */
  commSeconds: number;
  /** Shared-state revision after the step. */
  revision: number;
}

const OPTION_KEYS = ['params', 'innerSteps', 'innerSeconds', 'weighting', 'outer', 'quantization', 'async', 'stateFactory', 'maxRetries', 'tagBase'];

/**
 * DiLoCo: every `innerSteps` (H) inner optimizer steps, each peer computes the pseudo-gradient
 * `outer - local`, the group averages it (an all-reduce, optionally quantized), every peer applies the same outer
 * optimizer step to the outer parameters and resets its local parameters to them. The outer parameters and the
 * momentum live in the shared state: a newcomer receives them, and the revision advances once per outer step.
 *
 * Asynchronous mode (`async: true`): at the end of round t the pseudo-gradient of round t (its own progress,
 * start - local) is launched and runs while round t+1 trains; at the end of round t+1 its average is applied to
 * the outer parameters (one outer step late). Meanwhile each peer keeps its own progress of the round in flight:
 * round t+1 starts from `outer - own delta of round t`, so no inner step is wasted and no average is applied
 * twice. The outer parameters are bit-identical on every peer; the local ones differ by each peer's own
 * in-flight progress until `finish()` applies the last average and resets them. A newcomer syncs after the landed result has been applied
 * (so it never receives a stale state) and contributes a zero pseudo-gradient to the round that is in flight
 * when it joins; that round's average is then taken over one more peer.
 *
 * Workers of different speeds: with `innerSeconds` an inner phase also ends after that many seconds, so a slow
 * worker does fewer inner steps instead of holding the fast ones at the outer sync, and each pseudo-gradient is
 * weighted by the inner steps behind it (`weighting: 'steps'`, the default then) or by the tokens passed to
 * `step({ tokens })` (`weighting: 'tokens'`): the group averages `sum(w_i delta_i) / sum(w_i)`.
 *
 * Churn: an all-reduce that fails with a retryable error (PeerLostError) is retried after `updateTopology()` with
 * the survivors, from the same input (a failed all-reduce leaves its input intact). Pending peers are admitted
 * at each outer step, just before the state sync.
 *
 * @example
 * ```ts
 * const comm = await Communicator.connect({ master: 'master.example.org:48148', token });
 * const diloco = new DiLoCo(comm, { params: model.parameters(), innerSteps: 50 });
 * await diloco.join();
 * for (let step = 0; step < 5000; step++) {
 *   const batch = nextBatch();
 *   innerOptimizer.step(model, batch);          // any local optimizer, e.g. AdamW
 *   const report = await diloco.step({ tokens: batch.tokens }); // an outer step every 50 calls
 *   if (report) console.log(report.outerStep, report.bytesSent);
 * }
 * await diloco.finish();
 * ```
 */
export class DiLoCo<S = unknown> {
  readonly innerSteps: number;
  /** Seconds after which an inner phase ends even before innerSteps (undefined: steps only). */
  readonly innerSeconds: number | undefined;
  readonly weighting: Weighting;
  readonly optimizer: OuterOptimizer;
  readonly async: boolean;
  /** Counters since construction. */
  readonly stats: CommStats = emptyStats();

  private readonly tensors: NamedTensor[];
  private readonly binding: StateBinding<S>;
  private readonly net: Retrying<S>;
  private readonly tagBase: number;
  private readonly size: number;
  private delta: Float32Array;
  private spare: Float32Array;
  /** Async mode: where the current round started (outer params minus the own progress still in flight). */
  private start: Float32Array;
  private pending: Promise<number> | undefined;
  private pendingBuf: Float32Array | undefined;
  private inner = 0;
  private outerSteps = 0;
  private joined = false;
  private readonly round: Round;

  constructor(
    readonly comm: Collective<S>,
    options: DiLoCoOptions<S>,
  ) {
    checkConstructorArgs('DiLoCo', comm, options, OPTION_KEYS);
    this.tensors = normalizeParams(options.params);
    this.innerSteps = checkInt('innerSteps', options.innerSteps ?? 500, 1);
    this.optimizer = createOuterOptimizer(options.outer ?? {});
    if (options.async !== undefined && typeof options.async !== 'boolean') {
      throw new TypeError(`DiLoCo option "async" must be a boolean, got ${describeValue(options.async)}`);
    }
    this.async = options.async ?? false;
    ({ innerSeconds: this.innerSeconds, weighting: this.weighting } = checkRoundOptions('DiLoCo', options));
    if (this.weighting !== 'none' && options.quantization !== undefined) {
      throw new TypeError('DiLoCo: a weighted average (weighting or innerSeconds) cannot be quantized: leave "quantization" out or use weighting: \'none\'');
    }
    this.round = new Round(this.innerSteps, this.innerSeconds);
    const { maxRetries, tagBase } = resilience(options);
    this.tagBase = tagBase;
    this.net = new Retrying(comm, this.stats, maxRetries, checkQuantization(options.quantization));
    this.size = countElements(this.tensors);
    const outer = new Float32Array(this.size);
    gather(this.tensors, outer);
    const entries: Record<string, Float32Array> = { 'diloco.outer': outer, 'diloco.meta': new Float32Array(2) };
    if (this.optimizer.hasMomentum) entries['diloco.momentum'] = new Float32Array(this.size);
    const factory = options.stateFactory ?? (plainStateFactory as unknown as StateFactory<S>);
    if (typeof factory !== 'function') throw new TypeError('DiLoCo option "stateFactory" must be a function');
    this.binding = factory(entries, 0);
    this.delta = new Float32Array(this.size);
    this.spare = new Float32Array(this.size);
    this.start = new Float32Array(this.async ? this.size : 0);
  }

  /** The shared-state object (outer parameters, momentum, step counters) as the communicator syncs it. */
  get state(): S {
    return this.binding.state;
  }

  /** The outer parameters (flat, in tensor order). Identical on every peer after each outer step. */
  get outerParams(): Float32Array {
    return this.binding.entries()['diloco.outer'];
  }

  /** Inner steps done so far (as counted by the group; a newcomer takes it from the shared state). */
  get innerStep(): number {
    return this.inner;
  }

  get outerStep(): number {
    return this.outerSteps;
  }

  /** Number of parameters (elements). */
  get parameterCount(): number {
    return this.size;
  }

  /**
   * Joins training: syncs the shared state so that every peer starts from the same outer parameters (a newcomer
   * receives the group's; use `strategy: 'receiveOnly'` for a peer that must not offer its own), and sets the
   * local parameters to them. In async mode a newcomer also takes part in the all-reduce in flight.
   */
  async join(options: { strategy?: SyncStrategy } = {}): Promise<void> {
    if (this.joined) throw new Error('DiLoCo.join() was already called');
    this.joined = true;
    await this.sync(options.strategy ?? 'enforcePopular', false);
    if (this.async) {
      this.delta.fill(0);
      this.restartFromOuter(this.delta);
      // At the very start every peer sends zeros (any equal weight); a newcomer's zeros must not dilute the others'.
      this.launch(this.weighting === 'none' ? undefined : this.inner === 0 ? 1 : 0);
    } else scatter(this.outerParams, this.tensors);
    this.round.restart();
  }

  /**
   * Whether the next step() runs an outer step (its inner-step count, or innerSeconds spent); the answer holds for
   * that step, so a wrapper can read its model's variables just before it (lib/tfjs).
   */
  outerStepDue(): boolean {
    return this.round.dueAfterNext();
  }

  /**
   * Call after every inner optimizer step (with `{ tokens }` when weighting by tokens). Every `innerSteps` calls,
   * or once `innerSeconds` passed, it runs an outer step (returns its report); otherwise it returns undefined.
   */
  async step(info?: InnerStepInfo): Promise<OuterStepReport | undefined> {
    if (!this.joined) throw new Error('Call DiLoCo.join() before the first step()');
    const w = stepWeight('DiLoCo', this.weighting, info);
    await yieldToEventLoop();
    this.inner++;
    if (!this.round.add(w)) return undefined;
    return this.runOuterStep();
  }

  /** Async mode: waits for the all-reduce in flight, applies it and resets the local parameters. No-op otherwise. */
  async finish(): Promise<void> {
    if (!this.pending) return;
    const p = this.pending;
    this.pending = undefined;
    await p;
    this.applyOuter(this.pendingBuf!);
    scatter(this.outerParams, this.tensors);
  }

  private async runOuterStep(): Promise<OuterStepReport> {
    const t0 = performance.now();
    const s0 = this.stats.bytesSent;
    const r0 = this.stats.bytesReceived;
    let worldSize = 1;
    const roundSteps = this.round.steps;
    const weight = this.weighting === 'none' ? undefined : this.round.weight;
    pseudoGradient(this.async ? this.start : this.outerParams, this.tensors, this.delta);
    if (!this.async) {
      worldSize = await this.net.average(this.delta, this.tagBase, weight);
      this.applyOuter(this.delta);
      this.outerSteps++;
      await this.sync('enforcePopular', true);
      scatter(this.outerParams, this.tensors);
    } else {
      // delta holds this round's own progress (start - local), computed above from `start`
      if (this.pending) {
        const p = this.pending;
        this.pending = undefined;
        worldSize = await p;
        this.applyOuter(this.pendingBuf!);
      }
      this.outerSteps++;
      await this.sync('enforcePopular', true);
      this.restartFromOuter(this.delta);
      this.launch(weight);
    }
    this.round.restart();
    return {
      outerStep: this.outerSteps,
      innerStep: this.inner,
      worldSize,
      roundSteps,
      weight,
      bytesSent: this.stats.bytesSent - s0,
      bytesReceived: this.stats.bytesReceived - r0,
      commSeconds: (performance.now() - t0) / 1000,
      revision: this.binding.revision,
    };
  }

  /** Async mode: local = start = outer - own (the own progress of the round in flight stays applied locally). */
  private restartFromOuter(own: Float32Array): void {
    const outer = this.outerParams;
    const start = this.start;
    for (let i = 0; i < start.length; i++) start[i] = outer[i] - own[i];
    scatter(start, this.tensors);
  }

  /** Starts averaging `delta` in the background (async mode); swaps the buffers so the next round can fill one. */
  private launch(weight: number | undefined): void {
    const buf = this.delta;
    this.delta = this.spare;
    this.spare = buf;
    this.pendingBuf = buf;
    const tag = this.tagBase + 1 + (this.outerSteps % 2);
    const p = this.net.average(buf, tag, weight);
    p.catch(() => undefined); // surfaced when awaited at the next outer step
    this.pending = p;
  }

  private applyOuter(avg: Float32Array): void {
    const e = this.binding.entries();
    this.optimizer.step(e['diloco.outer'], avg, e['diloco.momentum']);
  }

  private async sync(strategy: SyncStrategy, advance: boolean): Promise<void> {
    const e = this.binding.entries();
    if (advance) {
      this.binding.revision += 1;
      e['diloco.meta'][0] = this.inner;
      e['diloco.meta'][1] = this.outerSteps;
    }
    await this.net.syncState(this.binding, strategy, this.tagBase + 3, advance);
    const meta = this.binding.entries()['diloco.meta'];
    this.inner = meta[0];
    this.outerSteps = meta[1];
  }
}
