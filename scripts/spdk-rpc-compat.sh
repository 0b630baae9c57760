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

# ---- BEGIN log_* and framework_* (--wait-for-rpc) checks (issue 11 items 5, 6) ----
# A second target started with --wait-for-rpc: SPDK's startup state, the log methods, then
# framework_start_init (explicitly, and through rpc.py's load_config on a third target).
wsock="$dir/keel-w.sock"
tgt_bin="${CARGO_TARGET_DIR:-target}/debug/keel-tgt"
"$tgt_bin" -m 0x1 --interrupt-mode --wait-for-rpc --no-default -L nvmf -r "$wsock" >"$dir/tgt-w.log" 2>&1 &
wpid=$!
trap 'kill $pid $wpid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -S "$wsock" ] && break; sleep 0.1; done
wrpc() { "$venv/bin/spdk-rpc" -s "$wsock" "$@"; }
refused() { # refused NAME COMMAND... : the command must fail
  local name=$1; shift
  if "$@" >/dev/null 2>&1; then fail=$((fail+1)); echo "FAIL $name (it succeeded)"; else pass=$((pass+1)); echo "ok   $name"; fi
}
out=$(wrpc rpc_get_methods --current 2>&1)
check "rpc_get_methods --current (startup) lists framework_start_init" has "$out" '"framework_start_init"'
check "rpc_get_methods --current (startup) leaves out bdev_malloc_create" bash -c "! grep -q '\"bdev_malloc_create\"' <<<\"\$0\"" "$out"
refused "bdev_get_bdevs refused before framework_start_init" wrpc bdev_get_bdevs
out=$(wrpc bdev_get_bdevs 2>&1)
check "... with SPDK's invalid-state error (-1)" has "$out" 'after framework is initialized'
flags=$(wrpc log_get_flags 2>&1)  # (check overwrites $out)
check "log_get_flags shows -L nvmf on" has "$flags" '"nvmf": true'
check "log_get_flags lists bdev_raid off" has "$flags" '"bdev_raid": false'
check "log_set_flag nvmf_tcp" wrpc log_set_flag nvmf_tcp
out=$(wrpc log_get_flags 2>&1)
check "log_get_flags shows nvmf_tcp on" has "$out" '"nvmf_tcp": true'
check "log_clear_flag nvmf_tcp" wrpc log_clear_flag nvmf_tcp
out=$(wrpc log_get_flags 2>&1)
check "log_get_flags shows nvmf_tcp off" has "$out" '"nvmf_tcp": false'
refused "log_set_flag of an unknown flag fails" wrpc log_set_flag nvmf2
check "log_set_level DEBUG" wrpc log_set_level DEBUG
out=$(wrpc log_get_level 2>&1)
check "log_get_level is DEBUG" has "$out" '"DEBUG"'
check "log_set_print_level NOTICE" wrpc log_set_print_level NOTICE
out=$(wrpc log_get_print_level 2>&1)
check "log_get_print_level is NOTICE" has "$out" '"NOTICE"'
refused "log_set_level of an unknown level fails" wrpc log_set_level TRACE
check "log_set_level INFO" wrpc log_set_level INFO
"$venv/bin/spdk-rpc" -s "$wsock" framework_wait_init >"$dir/wait.out" 2>&1 &
waitpid=$!
sleep 0.5
check "framework_wait_init still waiting before framework_start_init" kill -0 $waitpid
check "framework_start_init" wrpc framework_start_init
check "framework_wait_init returned once initialised" bash -c "for _ in \$(seq 100); do kill -0 $waitpid 2>/dev/null || exit 0; sleep 0.1; done; exit 1"
wait $waitpid; check "framework_wait_init succeeded" test $? = 0
check "framework_wait_init when initialised" wrpc framework_wait_init
check "bdev_malloc_create after framework_start_init" wrpc bdev_malloc_create -b W0 8 512
refused "framework_start_init a second time fails" wrpc framework_start_init
out=$(wrpc framework_start_init 2>&1)
check "... with SPDK's invalid-state message" has "$out" 'before framework is initialized'
check "spdk_kill_instance (wait-for-rpc target)" wrpc spdk_kill_instance SIGTERM
for _ in $(seq 100); do kill -0 $wpid 2>/dev/null || break; sleep 0.1; done
# rpc.py's load_config on a --wait-for-rpc target calls framework_start_init itself.
cat >"$dir/w.json" <<'JSON'
{"subsystems": [{"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "L0", "num_blocks": 2048, "block_size": 512}}]}]}
JSON
"$tgt_bin" -m 0x1 --interrupt-mode --wait-for-rpc --no-default -r "$wsock" >"$dir/tgt-l.log" 2>&1 &
wpid=$!
for _ in $(seq 100); do [ -S "$wsock" ] && break; sleep 0.1; done
check "load_config on a --wait-for-rpc target (runs framework_start_init)" wrpc load_config -j "$dir/w.json"
check "bdev_get_bdevs -b L0 after that load_config" wrpc bdev_get_bdevs -b L0
check "framework_wait_init after that load_config" wrpc framework_wait_init
check "spdk_kill_instance (load_config target)" wrpc spdk_kill_instance SIGTERM
for _ in $(seq 100); do kill -0 $wpid 2>/dev/null || break; sleep 0.1; done
if kill -0 $wpid 2>/dev/null; then fail=$((fail+1)); echo "FAIL --wait-for-rpc target still running"
else pass=$((pass+1)); echo "ok   --wait-for-rpc targets exited"; fi
[ "$fail" = 0 ] || { echo "--- keel-tgt --wait-for-rpc logs"; cat "$dir/tgt-w.log" "$dir/tgt-l.log"; }
# ---- END log_* and framework_* checks ----

echo "spdk-rpc compat: $pass passed, $fail failed"
[ "$fail" = 0 ] || { echo "--- keel-tgt log"; cat "$dir/tgt.log"; exit 1; }
