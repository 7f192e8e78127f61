/** `tccl demo`, `tccl bench <name>` and `tccl stress`: the repository's scripts, with their arguments checked here. */
import { Command } from 'commander';
import { UsageError, intArg, runRepoScript } from './common';

/** Benchmark name -> its script. */
export const BENCHES: Record<string, { script: string; what: string }> = {
  allreduce: { script: 'bench/allreduce/run.ts', what: 'ring all-reduce throughput on loopback against raw TCP' },
  wan: { script: 'bench/wan/run.ts', what: 'all-reduce over an emulated WAN (40 ms RTT, capped connections)' },
  churn: { script: 'bench/churn/run.ts', what: 'recovery time after a peer is killed or frozen' },
  'shared-state': { script: 'bench/shared-state/run.ts', what: 'shared-state transfer to a joiner' },
  quantization: { script: 'bench/quantization/run.ts', what: 'codec speed and quantized all-reduce error' },
  diloco: { script: 'bench/diloco/run.ts', what: 'DiLoCo variants training MNIST' },
  gpu: { script: 'bench/gpu/run.ts', what: 'device buffers and NCCL (needs a GPU)' },
};

/** Sets the exit code a script ended with. */
async function run(script: string, args: string[]): Promise<void> {
  process.exitCode = await runRepoScript(script, args);
}

export function demoCommand(): Command {
  return new Command('demo')
    .description('the embedded demo: a master, peers that all-reduce, one killed, one joining, then DiLoCo on MNIST')
    .option('--no-train', 'skip the DiLoCo training part')
    .option('--http-port <n>', 'dashboard port (default 0: any free port; the URL is printed)', intArg(0, 65535))
    .action((flags: { train: boolean; httpPort?: number }) => {
      const args = [...(flags.train ? [] : ['--no-train']), ...(flags.httpPort !== undefined ? ['--http-port', String(flags.httpPort)] : [])];
      return run('examples/demo.ts', args);
    });
}

export function benchCommand(): Command {
  const names = Object.keys(BENCHES);
  return new Command('bench')
    .description('run a benchmark (results in bench/results/)')
    .argument('<name>', names.join(' | '))
    .argument('[args...]', 'passed to the benchmark (e.g. --quick)')
    .allowUnknownOption()
    .helpOption('-h, --help', 'show this help (a benchmark\'s own options: see the head of its script)')
    .addHelpText('after', `\nBenchmarks:\n${names.map((n) => `  ${n.padEnd(14)}${BENCHES[n].what} (${BENCHES[n].script})`).join('\n')}`)
    .action((name: string, args: string[]) => {
      const b = BENCHES[name];
      if (!b) throw new UsageError(`unknown benchmark ${JSON.stringify(name)}: choose one of ${names.join(', ')}`);
      return run(b.script, args);
    });
}

export function stressCommand(): Command {
  return new Command('stress')
    .description('churn stress: peers spawned and SIGKILLed at random, every result checked')
    .option('--duration <s>', 'seconds to run', intArg(1, 86_400), 60)
    .option('--max-peers <n>', 'most peers alive at once', intArg(3, 64), 6)
    .option('--seed <n>', 'random seed (default: from the clock)', intArg(0, 2 ** 31 - 1))
    .option('--elements <n>', 'float32 elements per all-reduce', intArg(2, 1 << 26), 4096)
    .option('--json <file>', 'also write the summary to this file')
    .action((f: { duration: number; maxPeers: number; seed?: number; elements: number; json?: string }) => {
      const args = ['--duration', String(f.duration), '--max-peers', String(f.maxPeers), '--elements', String(f.elements)];
      if (f.seed !== undefined) args.push('--seed', String(f.seed));
      if (f.json !== undefined) args.push('--json', f.json);
      return run('scripts/stress.ts', args);
    });
}
