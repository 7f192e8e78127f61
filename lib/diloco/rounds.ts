/**
 * What a worker contributes to an outer step, and when its inner phase ends: rounds bounded by time as well as
 * steps (`innerSeconds`: a slow worker does fewer inner steps instead of holding the fast ones at the outer
 * sync), and the weight of its pseudo-gradient (`weighting`: the tokens or the inner steps it did since its last
 * contribution), averaged with `allReduce(x, { op: 'avg', weight })`.
 */
import { InvalidArgumentError } from '../errors';
import { checkNumber, checkOneOf, describeValue } from '../validate';

/** How pseudo-gradients are weighted in the average: not at all, by inner steps, or by tokens given to step(). */
export type Weighting = 'none' | 'steps' | 'tokens';

/** What a caller of step() may say about the inner step just taken. */
export interface InnerStepInfo {
  /** Tokens (or samples) this inner step processed; required with `weighting: 'tokens'`. */
  tokens?: number;
}

export interface RoundOptions {
  /** End an inner phase after this many seconds even before `innerSteps` (checked after each inner step). */
  innerSeconds?: number;
  /** Default 'steps' with innerSeconds, else 'none' (a plain average, as with equal workers). */
  weighting?: Weighting;
}

export function checkRoundOptions(what: string, o: RoundOptions): { innerSeconds?: number; weighting: Weighting } {
  const innerSeconds = o.innerSeconds === undefined ? undefined : checkNumber('innerSeconds', o.innerSeconds, 0, 1e7, true, `${what} option "innerSeconds"`);
  const weighting = checkOneOf('weighting', o.weighting ?? (innerSeconds !== undefined ? 'steps' : 'none'), ['none', 'steps', 'tokens'] as const);
  return { innerSeconds, weighting };
}

/** The amount one inner step adds to a contribution's weight (1 per step, or its tokens). */
export function stepWeight(what: string, weighting: Weighting, info: InnerStepInfo | undefined): number {
  if (weighting !== 'tokens') return 1;
  const tokens = info?.tokens;
  if (typeof tokens !== 'number' || !Number.isFinite(tokens) || tokens < 0) {
    throw new InvalidArgumentError(
      `${what}.step(): with weighting 'tokens', pass the tokens of this inner step as step({ tokens }) (a finite number >= 0), got ${describeValue(tokens)}`,
    );
  }
  return tokens;
}

/** One worker's inner phase: its steps, its weight, its clock. */
export class Round {
  steps = 0;
  weight = 0;
  private started = performance.now();
  /** A decision taken by {@link Round.dueAfterNext} for the step about to be taken. */
  private decided?: boolean;

  constructor(readonly innerSteps: number, readonly innerSeconds: number | undefined) {}

  /**
   * Whether the next inner step ends the phase (counting steps, or time already spent); the answer holds for
   * that step, so a caller may prepare for the outer step (e.g. read its model's variables) before it.
   */
  dueAfterNext(): boolean {
    this.decided ??= this.steps + 1 >= this.innerSteps || this.timeUp();
    return this.decided;
  }

  /** Counts an inner step of `weight`; returns whether the phase is over. */
  add(weight: number): boolean {
    this.steps++;
    this.weight += weight;
    const due = this.decided ?? (this.steps >= this.innerSteps || this.timeUp());
    this.decided = undefined;
    return due;
  }

  /** A new phase starts now. */
  restart(): void {
    this.steps = 0;
    this.weight = 0;
    this.decided = undefined;
    this.started = performance.now();
  }

  private timeUp(): boolean {
    return this.innerSeconds !== undefined && performance.now() - this.started >= this.innerSeconds * 1000;
  }
}
