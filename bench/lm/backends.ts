/**
 * Per-step time of one training step of the language model (forward, backward, Adam) on the TensorFlow.js
 * backends that install offline: `wasm` (@tensorflow/tfjs-backend-wasm, SIMD; its threaded build needs Web
 * Workers and does not run under Node) and `cpu` (pure JavaScript). One child process per backend, so each
 * starts clean; median of the timed steps after warm-up, wall time and the process's CPU time.
 *
 *   node --import tsx bench/lm/backends.ts [--steps 8] [--layers 2 --context 32 --batch 8 --d-model 64]
 */
import { execFileSync } from 'node:child_process';
import { median, parseArgs } from '../common';

export interface BackendTiming {
  backend: string;
  simd: boolean;
  threads: boolean;
  parameters: number;
  /** Median over the timed steps, ms. */
  stepWallMs: number;
  stepCpuMs: number;
  samplesWallMs: number[];
}

export interface ModelShape {
  layers: number;
  context: number;
  batch: number;
  dModel: number;
}

/** Runs in the child: times `steps` training steps after 2 warm-up steps. */
async function child(backend: string, shape: ModelShape, steps: number): Promise<void> {
  const tf = await import('@tensorflow/tfjs');
  const { useBackend, backendInfo } = await import('../../examples/lm/backend');
  const { CharTransformer } = await import('../../examples/lm/model');
  await useBackend(backend as 'wasm' | 'cpu');
  const model = new CharTransformer({ vocab: 73, context: shape.context, dModel: shape.dModel, heads: 4, layers: shape.layers }, 1);
  const opt = tf.train.adam(1e-3);
  const n = shape.batch * shape.context;
  const x = tf.tensor2d(Int32Array.from({ length: n }, (_, i) => (i * 7) % 73), [shape.batch, shape.context], 'int32');
  const y = tf.tensor2d(Int32Array.from({ length: n }, (_, i) => (i * 7 + 1) % 73), [shape.batch, shape.context], 'int32');
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < steps + 2; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const l = opt.minimize(() => model.loss(x, y), true, model.variables)!;
    l.dataSync();
    l.dispose();
    const c = process.cpuUsage(c0);
    if (i >= 2) {
      wall.push(performance.now() - t0);
      cpu.push((c.user + c.system) / 1000);
    }
  }
  const r: BackendTiming = { ...backendInfo(), parameters: model.parameterCount, stepWallMs: median(wall), stepCpuMs: median(cpu), samplesWallMs: wall.map((w) => Math.round(w)) };
  console.log(`TIMING ${JSON.stringify(r)}`);
}

/** Times every backend in its own process. */
export function measureBackends(shape: ModelShape, steps = 8): BackendTiming[] {
  return ['wasm', 'cpu'].map((b) => {
    const out = execFileSync(
      process.execPath,
      ['--import', 'tsx', __filename, '--child', b, '--steps', String(steps), '--layers', String(shape.layers), '--context', String(shape.context), '--batch', String(shape.batch), '--d-model', String(shape.dModel)],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 1 << 20 },
    );
    const line = out.split('\n').find((l) => l.startsWith('TIMING '));
    if (!line) throw new Error(`the ${b} backend timing produced no result`);
    return JSON.parse(line.slice(7)) as BackendTiming;
  });
}

if (require.main === module) {
  const a = parseArgs(process.argv.slice(2));
  const shape: ModelShape = { layers: Number(a.layers ?? 2), context: Number(a.context ?? 32), batch: Number(a.batch ?? 8), dModel: Number(a['d-model'] ?? 64) };
  const steps = Number(a.steps ?? 8);
  if (typeof a.child === 'string') {
    child(a.child, shape, steps).catch((err) => {
      console.error(err);
      process.exit(1);
    });
  } else {
    for (const t of measureBackends(shape, steps)) {
      console.log(`${t.backend.padEnd(5)} simd ${t.simd} threads ${t.threads}: ${t.stepWallMs.toFixed(0)} ms per step (CPU ${t.stepCpuMs.toFixed(0)} ms), ${t.parameters} parameters`);
    }
  }
}
