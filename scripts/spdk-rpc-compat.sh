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
"${CARGO_TARGET_DIR:-target}/debug/keel-tgt" -m 0x1 --interrupt-mode --no-default -r "$sock" >"$dir/tgt.log" 2>&1 &
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
check "bdev_set_qos_limit" rpc bdev_set_qos_limit M0 --rw-ios-per-sec 20000
check "framework_get_reactors" rpc framework_get_reactors
truncate -s 16M "$dir/disk.img"
check "bdev_uring_create FILE U0 4096" rpc bdev_uring_create "$dir/disk.img" U0 4096
check "bdev_aio_create FILE A0 512 (read-only)" rpc bdev_aio_create -r "$dir/disk.img" A0 512
check "bdev_delay_create" rpc bdev_delay_create -b N0 -d D0 -r 10 -t 20 -w 30 -n 40
check "bdev_delay_update_latency" rpc bdev_delay_update_latency D0 avg_read 5
check "bdev_error_create M0" rpc bdev_error_create M0
check "bdev_error_inject_error" rpc bdev_error_inject_error EE_M0 write failure -n 3
check "bdev_wait_for_examine" rpc bdev_wait_for_examine
# RDMA options parse; without an RDMA device the transport is refused with a clear message
# (and the target keeps serving), with one it is listed with them.
rdma_out=$(rpc nvmf_create_transport -t RDMA -s 512 -r -d 1024 -l 64 2>&1)
check "nvmf_create_transport -t RDMA (options parsed; refused only for lack of a device)" bash -c \
  "grep -q 'no RDMA device' <<<\"\$0\" || $venv/bin/spdk-rpc -s $sock nvmf_get_transports --trtype RDMA | grep -q '\"max_srq_depth\": 512'" "$rdma_out"
check "rpc_get_methods" rpc rpc_get_methods
check "framework_get_subsystems" rpc framework_get_subsystems
check "save_config" bash -c "$venv/bin/spdk-rpc -s $sock save_config > $dir/saved.json"
check "save_config lists the delay bdev" grep -q bdev_delay_create "$dir/saved.json"
check "bdev_error_delete" rpc bdev_error_delete EE_M0
check "bdev_delay_delete" rpc bdev_delay_delete D0
check "bdev_aio_delete" rpc bdev_aio_delete A0
check "bdev_uring_delete" rpc bdev_uring_delete U0
check "bdev_null_delete" rpc bdev_null_delete N0
check "bdev_malloc_delete M0" rpc bdev_malloc_delete M0
check "load_config (replays the saved config)" bash -c "$venv/bin/spdk-rpc -s $sock load_config -j $dir/saved.json"
check "bdev_get_bdevs -b EE_M0 after load_config" rpc bdev_get_bdevs -b EE_M0
check "save_config after load_config matches" bash -c "$venv/bin/spdk-rpc -s $sock save_config | diff - $dir/saved.json"
check "bdev_error_delete" rpc bdev_error_delete EE_M0
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
