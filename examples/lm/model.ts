/**
 * A small decoder-only transformer (GPT-style, pre-norm) written with TensorFlow.js ops and tf.Variables,
 * character level. tfjs-layers has no attention layer, so the blocks are plain functions over variables; the
 * variables are grouped by layer (`layers`), which is what tccl/tfjs maps Streaming DiLoCo fragments to.
 */
import * as tf from '@tensorflow/tfjs';

export interface LmConfig {
  /** Number of distinct tokens (characters). */
  vocab: number;
  /** Context length T (tokens per sequence). */
  context: number;
  /** Model width d. */
  dModel: number;
  heads: number;
  /** Transformer blocks. */
  layers: number;
  /** Hidden width of the MLP (default 4 d). */
  mlp?: number;
}

export interface LmLayer {
  name: string;
  variables: tf.Variable[];
}

/** A seeded normal initializer: the same seed gives the same weights on every worker. */
function normal(shape: number[], std: number, seed: number, name: string): tf.Variable {
  return tf.tidy(() => tf.variable(tf.truncatedNormal(shape, 0, std, 'float32', seed), true, name));
}

const zeros = (shape: number[], name: string) => tf.variable(tf.zeros(shape), true, name);
const ones = (shape: number[], name: string) => tf.variable(tf.ones(shape), true, name);

interface Block {
  ln1g: tf.Variable; ln1b: tf.Variable;
  wqkv: tf.Variable; wo: tf.Variable;
  ln2g: tf.Variable; ln2b: tf.Variable;
  w1: tf.Variable; b1: tf.Variable; w2: tf.Variable; b2: tf.Variable;
}

export class CharTransformer {
  readonly config: Required<LmConfig>;
  /** The variables, grouped by layer, in model order: embed, block0/attn, block0/mlp, ..., head. */
  readonly layers: LmLayer[];
  private readonly tokEmb: tf.Variable;
  private readonly posEmb: tf.Variable;
  private readonly blocks: Block[];
  private readonly lnfg: tf.Variable;
  private readonly lnfb: tf.Variable;
  private readonly wout: tf.Variable;
  /** Additive causal mask [T, T]: 0 on and below the diagonal, -1e9 above. */
  private readonly mask: tf.Tensor2D;

  constructor(config: LmConfig, seed = 1) {
    const c = { mlp: 4 * config.dModel, ...config };
    if (c.dModel % c.heads !== 0) throw new RangeError(`dModel (${c.dModel}) must be a multiple of heads (${c.heads})`);
    this.config = c;
    const d = c.dModel;
    let s = seed * 1000;
    // GPT-2 style: N(0, 0.02), residual projections scaled down by sqrt(2 * layers).
    const proj = 0.02 / Math.sqrt(2 * c.layers);
    this.tokEmb = normal([c.vocab, d], 0.02, s++, 'embed/tok');
    this.posEmb = normal([c.context, d], 0.02, s++, 'embed/pos');
    this.blocks = [];
    for (let i = 0; i < c.layers; i++) {
      const p = `block${i}`;
      this.blocks.push({
        ln1g: ones([d], `${p}/ln1g`), ln1b: zeros([d], `${p}/ln1b`),
        wqkv: normal([d, 3 * d], 0.02, s++, `${p}/wqkv`), wo: normal([d, d], proj, s++, `${p}/wo`),
        ln2g: ones([d], `${p}/ln2g`), ln2b: zeros([d], `${p}/ln2b`),
        w1: normal([d, c.mlp], 0.02, s++, `${p}/w1`), b1: zeros([c.mlp], `${p}/b1`),
        w2: normal([c.mlp, d], proj, s++, `${p}/w2`), b2: zeros([d], `${p}/b2`),
      });
    }
    this.lnfg = ones([d], 'head/lnfg');
    this.lnfb = zeros([d], 'head/lnfb');
    this.wout = normal([d, c.vocab], 0.02, s++, 'head/wout');
    this.mask = tf.tidy(() => tf.mul(tf.sub(1, tf.linalg.bandPart(tf.ones([c.context, c.context]), -1, 0)), -1e9) as tf.Tensor2D);
    this.layers = [
      { name: 'embed', variables: [this.tokEmb, this.posEmb] },
      // attention and MLP of a block are separate layers, as in tfjs-layers: finer units for Streaming fragments
      ...this.blocks.flatMap((b, i) => [
        { name: `block${i}/attn`, variables: [b.ln1g, b.ln1b, b.wqkv, b.wo] },
        { name: `block${i}/mlp`, variables: [b.ln2g, b.ln2b, b.w1, b.b1, b.w2, b.b2] },
      ]),
      { name: 'head', variables: [this.lnfg, this.lnfb, this.wout] },
    ];
  }

  /** Every variable, in layer order. */
  get variables(): tf.Variable[] {
    return this.layers.flatMap((l) => l.variables);
  }

  get parameterCount(): number {
    return this.variables.reduce((n, v) => n + v.size, 0);
  }

  /** Logits [B*T, vocab] for token ids x [B, T] (int32). */
  logits(x: tf.Tensor2D): tf.Tensor2D {
    const [B, T] = x.shape;
    const { dModel: d, heads: h } = this.config;
    const dh = d / h;
    // One-hot times the table rather than tf.gather: gather's gradient (UnsortedSegmentSum) has no wasm kernel.
    const tok = mm(tf.oneHot(x.reshape([B * T]), this.config.vocab), this.tokEmb).reshape([B, T, d]);
    let hdn = tf.add(tok, this.posEmb.slice([0, 0], [T, d])) as tf.Tensor3D; // [B,T,d]
    const mask = T === this.config.context ? this.mask : this.mask.slice([0, 0], [T, T]);
    for (const b of this.blocks) {
      const a = layerNorm(hdn, b.ln1g, b.ln1b).reshape([B * T, d]);
      const [q, k, v] = tf.split(mm(a, b.wqkv), 3, 1).map((z) => z.reshape([B, T, h, dh]));
      // q [B,h,T,dh] times k^T [B,h,dh,T]: k is transposed straight into place
      const scores = mm(q.transpose([0, 2, 1, 3]), k.transpose([0, 2, 3, 1]));
      const att = tf.softmax(tf.add(tf.mul(scores, 1 / Math.sqrt(dh)), mask)); // [B,h,T,T]
      const y = mm(att, v.transpose([0, 2, 1, 3])).transpose([0, 2, 1, 3]).reshape([B * T, d]);
      hdn = tf.add(hdn, mm(y, b.wo).reshape([B, T, d]));
      const m = layerNorm(hdn, b.ln2g, b.ln2b).reshape([B * T, d]);
      const f = tf.add(mm(tf.relu(tf.add(mm(m, b.w1), b.b1)), b.w2), b.b2);
      hdn = tf.add(hdn, f.reshape([B, T, d]));
    }
    return mm(layerNorm(hdn, this.lnfg, this.lnfb).reshape([B * T, d]), this.wout) as tf.Tensor2D;
  }

  /** Mean cross-entropy (nats per character) of predicting y [B, T] from x [B, T]. */
  loss(x: tf.Tensor2D, y: tf.Tensor2D): tf.Scalar {
    return tf.tidy(() => {
      const logp = tf.logSoftmax(this.logits(x));
      const target = tf.oneHot(y.reshape([-1]), this.config.vocab);
      return tf.neg(tf.mean(tf.sum(tf.mul(logp, target), -1))) as tf.Scalar;
    });
  }

  dispose(): void {
    for (const v of this.variables) v.dispose();
    this.mask.dispose();
  }
}

/** Swaps the last two axes. */
function swapLast(t: tf.Tensor): tf.Tensor {
  const perm = [...Array(t.rank).keys()];
  [perm[t.rank - 2], perm[t.rank - 1]] = [perm[t.rank - 1], perm[t.rank - 2]];
  return tf.transpose(t, perm);
}

/**
 * a @ b (batched over leading axes) whose gradient transposes explicitly: the wasm backend's matMul with
 * transposeA / transposeB falls back to a slow loop (22 ms against 2 ms for a transpose and a plain matMul of
 * [512,64]^T x [512,256] here), and tf.matMul's own gradient uses those flags.
 */
const mm = tf.customGrad(((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a, b),
    gradFunc: (dy: tf.Tensor, [sa, sb]: tf.Tensor[]) => [tf.matMul(dy, swapLast(sb)), tf.matMul(swapLast(sa), dy)],
  };
}) as never) as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor;

function layerNorm(x: tf.Tensor3D, g: tf.Variable, b: tf.Variable): tf.Tensor3D {
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-5))), g), b) as tf.Tensor3D;
}
