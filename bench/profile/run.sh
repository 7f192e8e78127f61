#!/usr/bin/env bash
# Ring all-reduce on the native core alone (bench/profile/native_peer.cpp), N peer processes on loopback, with an
# optional CPU profile of all of them (Linux perf, software cpu-clock events; `apt-get install linux-perf`):
#   bash bench/profile/run.sh [--perf] N K MIB ITERS [outofplace]
# Prints each peer's JSON line; with --perf also the top symbols (build/profile/perf.data stays for `perf report`).
set -euo pipefail
cd "$(dirname "$0")/../.."
perf=0
if [ "${1:-}" = --perf ]; then perf=1; shift; fi
n=${1:?N}; k=${2:?K}; mib=${3:?MiB}; iters=${4:?iterations}; shift 4
out=build/profile
mkdir -p "$out"
exe=$out/native_peer
srcs=$(grep '^native/core/.*\.cpp$' native/sources.txt | tr '\n' ' ')
if [ ! -x "$exe" ] || [ -n "$(find bench/profile/native_peer.cpp native/core -newer "$exe" -print -quit)" ]; then
  g++ -std=c++20 -O3 -g -fno-omit-frame-pointer -ffp-contract=off -Inative/core bench/profile/native_peer.cpp $srcs -o "$exe" -lpthread
fi
ports=$(node -e "const s=require('net');Promise.all(Array.from({length:$n},()=>new Promise(r=>{const x=s.createServer().listen(0,'127.0.0.1',()=>{const p=x.address().port;x.close(()=>r(p))})}))).then(p=>console.log(p.join(',')))")
run() { for r in $(seq 0 $((n - 1))); do "$exe" "$r" "$ports" "$k" "$mib" "$iters" "$@" & done; wait; }
if [ $perf = 1 ]; then
  perf record -F 999 -g -o "$out/perf.data" -- bash -c "$(declare -f run); exe=$exe n=$n ports=$ports k=$k mib=$mib iters=$iters; run $*" 2>/dev/null
  perf report -i "$out/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null | grep '%' | grep -v '^#' | head -25
else
  run "$@"
fi
