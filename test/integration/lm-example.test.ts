// The language-model example end to end, shrunk: two worker processes (examples/lm/train.ts) train a tiny
// transformer with TfjsDiLoCo through an embedded master, on this repository's README as the text.
import t from 'tap';
import * as path from 'node:path';
import { runWorkers } from '../../examples/lm/local';

const root = path.join(__dirname, '..', '..');

t.test('two LM worker processes through a real master end with bit-identical weights', async (t) => {
  const { results, exitCodes } = await runWorkers({
    workers: 2,
    args: [
      '--mode', 'diloco', '--steps', '6', '--inner-steps', '3', '--wait-peers', '2', '--log-every', '3',
      '--d-model', '16', '--heads', '2', '--layers', '1', '--context', '16', '--batch', '2', '--eval-seqs', '4', '--lr-schedule', 'cosine', '--warmup', '2',
      '--text', path.join(root, 'README.md'), '--backend', 'cpu', '--connections', '1',
    ],
    timeoutMs: 90_000,
  });
  t.same(exitCodes, { 0: 0, 1: 0 }, 'both workers exit cleanly');
  t.equal(results.length, 2);
  t.equal(results[0].paramsHash, results[1].paramsHash, 'bit-identical weights after the last outer step');
  t.ok(results.every((r) => Number.isFinite(r.heldOutLoss) && r.heldOutLoss > 0));
  t.ok(results.every((r) => Number.isFinite(r.validLoss) && r.validLoss > 0), 'validation loss reported too');
  t.ok(results.every((r) => r.bytesSent > 0), 'the outer steps went over the network');
  t.equal(results[0].curve.length, 2);
  t.equal(results[0].tensorsAtEnd, results[1].tensorsAtEnd);
});
