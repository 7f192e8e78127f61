#!/usr/bin/env bash
# GPU check for a CUDA machine (one command from the repository root): bash test/gpu/run.sh
# Builds the CUDA variant of the addon (npm run build:cuda; needs nvcc) unless TCCL_GPU_SKIP_BUILD=1, then runs
# test/gpu/check.ts. NCCL is used when libnccl.so.2 is found (TCCL_NCCL_PATH, LD_LIBRARY_PATH, or the
# nvidia-nccl-cu13 Python package, which this script looks for).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${TCCL_GPU_SKIP_BUILD:-0}" != 1 ]; then
  [ -d node_modules ] || npm ci --ignore-scripts
  PATH="$PATH:/usr/local/cuda/bin" npm run build:cuda
fi
if [ -z "${TCCL_NCCL_PATH:-}" ] && command -v python3 >/dev/null; then
  lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null || true)
  [ -n "$lib" ] && [ -f "$lib" ] && export TCCL_NCCL_PATH="$lib"
fi
exec node --import tsx test/gpu/check.ts "$@"
