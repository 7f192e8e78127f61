/** DiLoCo family of outer optimizers (see docs/diloco.md). */
export { DiLoCo } from './diloco';
export type { DiLoCoOptions, OuterStepReport } from './diloco';
export { StreamingDiLoCo } from './streaming';
export type { StreamingDiLoCoOptions, FragmentStepReport } from './streaming';
export { createOuterOptimizer } from './outer-optimizer';
export type { OuterOptimizer, OuterOptimizerOptions } from './outer-optimizer';
export { partitionTensors, fragmentOffsets, fragmentsDueAt, normalizeParams } from './fragments';
export type { FragmentPattern, NamedTensor } from './fragments';
export { plainStateFactory } from './types';
export type { InnerStepInfo, RoundOptions, Weighting } from './rounds';
export type { Collective, CommStats, ParamsInput, PlainState, StateBinding, StateFactory } from './types';
