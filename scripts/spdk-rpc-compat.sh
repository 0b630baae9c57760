#!/usr/bin/env bash
# Drive keel-tgt with SPDK's own rpc.py (the `spdk` package from PyPI, its `spdk-rpc` command) to
# prove SPDK tooling works unchanged. Prints "N passed, M failed" and exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/.."
SPDK_PY_VERSION=${SPDK_PY_VERSION:-26.9}
venv=target/venv-spdk
if [ ! -x "$venv/bin/spdk-rpc" ]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install -q "spdk==$SPDK_PY_VERSION" || {
    echo "cannot install SPDK's rpc.py (pip install spdk==$SPDK_PY_VERSION)"; exit 1; }
fi
cargo build -q -p keel-tgt
dir=$(mktemp -d); sock="$dir/keel.sock"
target/debug/keel-tgt -m 0x1 --interrupt-mode -r "$sock" >"$dir/tgt.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done

rpc() { "$venv/bin/spdk-rpc" -s "$sock" "$@"; }
pass=0 fail=0
check() { # check NAME COMMAND... : the command must succeed
  local name=$1; shift
  if out=$("$@" 2>&1); then pass=$((pass+1)); echo "ok   $name"; else fail=$((fail+1)); echo "FAIL $name"; echo "$out" | sed 's/^/     /'; fi
}
has() { grep -q -- "$2" <<<"$1"; }

check "spdk_get_version" rpc spdk_get_version
check "bdev_malloc_create -b M0 64 4096" bash -c "[ \"\$($venv/bin/spdk-rpc -s $sock bdev_malloc_create -b M0 64 4096)\" = M0 ]"
check "bdev_null_create N0 64 512" rpc bdev_null_create N0 64 512
out=$(rpc bdev_get_bdevs -b M0 2>&1)
check "bdev_get_bdevs -b M0 shows 16384 blocks" has "$out" '"num_blocks": 16384'
check "bdev_get_iostat" rpc bdev_get_iostat
check "bdev_set_qos_limit" rpc bdev_set_qos_limit M0 --rw_ios_per_sec 20000
check "framework_get_reactors" rpc framework_get_reactors
check "save_config" rpc save_config
check "bdev_malloc_delete M0" rpc bdev_malloc_delete M0
if rpc bdev_malloc_delete M0 >/dev/null 2>&1; then
  fail=$((fail+1)); echo "FAIL deleting a missing bdev must fail"
else pass=$((pass+1)); echo "ok   deleting a missing bdev fails"; fi
check "spdk_kill_instance SIGTERM" rpc spdk_kill_instance SIGTERM
for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $pid 2>/dev/null; then fail=$((fail+1)); echo "FAIL keel-tgt still running after spdk_kill_instance"
else pass=$((pass+1)); echo "ok   keel-tgt exited"; fi
[ -S "$sock" ] && { fail=$((fail+1)); echo "FAIL socket left behind"; } || { pass=$((pass+1)); echo "ok   socket removed"; }

echo "spdk-rpc compat: $pass passed, $fail failed"
[ "$fail" = 0 ] || { echo "--- keel-tgt log"; cat "$dir/tgt.log"; exit 1; }
