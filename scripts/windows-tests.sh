#!/usr/bin/env bash
# Compiles every native/core source for Windows with Debian's mingw-w64 (posix threads) and links the C++ unit
# tests, proving the core has no POSIX-only code outside the socket layer. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX_WIN:-x86_64-w64-mingw32-g++-posix}
out=build/windows-check
mkdir -p "$out"
core=$(grep -E '^native/core/.*\.cpp$' native/sources.txt)
objs=()
for src in $core; do
  obj="$out/$(basename "${src%.cpp}").o"
  "$CXX" -std=c++20 -O2 -Wall -Inative/core -c "$src" -o "$obj"
  objs+=("$obj")
done
for t in native/test/test_*.cpp; do
  "$CXX" -std=c++20 -O2 -Inative/core "$t" "${objs[@]}" -o "$out/$(basename "${t%.cpp}").exe" -static -lws2_32
done
echo "native/core and $(ls native/test/test_*.cpp | wc -l) C++ test programs compile and link for Windows (x86_64-w64-mingw32)"
