#!/usr/bin/env bash
# Builds native/core and its C++ tests for Windows with Debian's mingw-w64 (posix threads, static runtime) through
# CMakeLists.txt, then runs them with ctest under Wine, so the Winsock code paths (loopback connections, a peer
# dropping mid-operation) really execute. Without wine it stops after the build and says so; without mingw-w64
# it skips. Used by .ci/run; prints one "windows: ..." result line at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
CXX=${CXX_WIN:-x86_64-w64-mingw32-g++-posix}
out=build-windows

if ! command -v "$CXX" >/dev/null 2>&1; then
  echo "SKIP windows: $CXX not found (Debian: apt-get install g++-mingw-w64-x86-64-posix)"
  exit 0
fi
emulator=()
command -v wine >/dev/null 2>&1 && emulator=(-DCMAKE_CROSSCOMPILING_EMULATOR=wine)

cmake -S . -B "$out" -DCMAKE_SYSTEM_NAME=Windows -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_BUILD_TYPE=Release \
  -DTCCL_TESTS=ON -DCMAKE_EXE_LINKER_FLAGS=-static "${emulator[@]}" >/dev/null || exit 1
cmake --build "$out" -j"$(nproc)" >/dev/null || { cmake --build "$out" -j1; exit 1; }
tests=$(ls "$out"/test_*.exe | wc -l)
echo "windows: native/core and $tests C++ test programs built with $CXX"

if [ ${#emulator[@]} -eq 0 ]; then
  echo "SKIP windows: wine not found, the $tests test programs were built but not run (Debian: apt-get install wine64)"
  exit 0
fi
# A fresh Wine prefix per run: nothing left over from an earlier run can change the result.
WINEPREFIX=$(mktemp -d /tmp/tccl-wine.XXXXXX)
export WINEPREFIX WINEDEBUG=-all
trap 'wineserver -k >/dev/null 2>&1; rm -rf "$WINEPREFIX"' EXIT
wineboot -i >/dev/null 2>&1
ctest --test-dir "$out" --output-on-failure --timeout 300
rc=$?
[ $rc -eq 0 ] && echo "windows: $tests C++ test programs passed under $(wine --version 2>/dev/null)" \
              || echo "windows: C++ tests FAILED under Wine"
exit $rc
