#!/usr/bin/env bash
# Drive keel-tgt with SPDK's own rpc.py (the `spdk` package from PyPI, its `spdk-rpc` command) to
# prove SPDK tooling works unchanged. Prints "N passed, M failed" and exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/.."
SPDK_PY_VERSION=${SPDK_PY_VERSION:-26.9}
venv=target/venv-spdk
# A venv copied from another checkout keeps that checkout's path in its scripts' #! line.
if [ -x "$venv/bin/spdk-rpc" ] && ! "$venv/bin/spdk-rpc" --help >/dev/null 2>&1; then
  sed -i "1s|^#!.*|#!$PWD/$venv/bin/python3|" "$venv/bin/spdk-rpc"
fi
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
# ==== BEGIN issue-11 item 5 (rpcmethods): nvmf calls through rpc.py, the SPDK methods Keel added
# (nvmf_subsystem_get_listeners/_controllers/_qpairs, nvmf_get_stats, thread_get_stats,
# bdev_enable_histogram/bdev_get_histogram) with a real NVMe/TCP host (keel-perf), and -32601
# for an SPDK method Keel lacks.
nqn=nqn.2016-06.io.spdk:compat1
host=nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555
port=$("$venv/bin/python3" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
jcheck() { # jcheck NAME PYTHON-CONDITION-ON-d RPC-ARGS... : the answer must satisfy the condition
  local name=$1 cond=$2; shift 2
  check "$name" bash -c "out=\$($venv/bin/spdk-rpc -s $sock \"\$@\") || exit 1; $venv/bin/python3 -c \"import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if ($cond) else 1)\" \"\$out\" || { echo \"\$out\"; exit 1; }" _ "$@"
}
check "bdev_malloc_create -b H0 32 512" rpc bdev_malloc_create -b H0 32 512
check "nvmf_create_transport -t TCP" rpc nvmf_create_transport -t TCP
check "nvmf_create_subsystem -a -s -m" rpc nvmf_create_subsystem "$nqn" -a -s KEEL0001 -m 4
check "nvmf_subsystem_add_ns" rpc nvmf_subsystem_add_ns "$nqn" H0
check "nvmf_subsystem_add_listener -t tcp -a -s" rpc nvmf_subsystem_add_listener "$nqn" -t tcp -a 127.0.0.1 -s "$port"
check "nvmf_subsystem_add_host" rpc nvmf_subsystem_add_host "$nqn" "$host"
jcheck "nvmf_get_subsystems shows namespace, listener, host" \
  "d[0]['namespaces'][0]['bdev_name']=='H0' and d[0]['listen_addresses'][0]['trsvcid']=='$port' and d[0]['hosts'][0]['nqn']=='$host'" \
  nvmf_get_subsystems "$nqn"
check "nvmf_subsystem_remove_host" rpc nvmf_subsystem_remove_host "$nqn" "$host"
jcheck "nvmf_subsystem_get_listeners" \
  "d==[{'address':{'trtype':'TCP','adrfam':'IPv4','traddr':'127.0.0.1','trsvcid':'$port'}}]" \
  nvmf_subsystem_get_listeners "$nqn"
jcheck "nvmf_subsystem_get_controllers (none yet)" "d==[]" nvmf_subsystem_get_controllers "$nqn"
# Examiners read a new bdev's first blocks: count from after them.
check "bdev_wait_for_examine" rpc bdev_wait_for_examine
rpc bdev_get_iostat --names H0 >"$dir/iostat0.json" 2>&1
check "bdev_enable_histogram --histogram" rpc bdev_enable_histogram H0 --histogram
# A real host: keel-perf over NVMe/TCP on core 1 for 8 s (long enough for the checks below
# to see it connected on a loaded machine).
cargo build -q -p keel-perf
"${CARGO_TARGET_DIR:-target}/debug/keel-perf" -r "trtype:tcp traddr:127.0.0.1 trsvcid:$port subnqn:$nqn" \
  -c 0x2 -q 4 -t 8 -w randrw --no-progress >"$dir/perf.log" 2>&1 &
perf=$!
for _ in $(seq 100); do
  rpc nvmf_subsystem_get_qpairs "$nqn" 2>/dev/null | grep -q '"qid": 1' && break; sleep 0.1
done
jcheck "nvmf_subsystem_get_qpairs shows the host's admin and I/O queues" \
  "sorted(q['qid'] for q in d)==[0,1] and all(q['state']=='enabled' and q['thread']=='reactor_0' and q['listen_address']['trsvcid']=='$port' and q['peer_address']['traddr']=='127.0.0.1' and q['hostnqn'].startswith('nqn.') for q in d)" \
  nvmf_subsystem_get_qpairs "$nqn"
jcheck "nvmf_subsystem_get_controllers shows the host" \
  "len(d)==1 and d[0]['num_io_qpairs']==1 and d[0]['cntrltype']=='io' and d[0]['hostnqn'].startswith('nqn.')" \
  nvmf_subsystem_get_controllers "$nqn"
jcheck "nvmf_get_stats counts the connected queues" \
  "d['tick_rate']>0 and d['poll_groups'][0]['current_admin_qpairs']==1 and d['poll_groups'][0]['current_io_qpairs']==1 and {'trtype':'TCP'} in d['poll_groups'][0]['transports']" \
  nvmf_get_stats
wait $perf; perf_rc=$?
check "keel-perf ran against the target" bash -c '[ "$0" = 0 ] || { cat "$1"; exit 1; }' "$perf_rc" "$dir/perf.log"
jcheck "nvmf_get_stats: queues gone, completed I/O counted" \
  "d['poll_groups'][0]['io_qpairs']==1 and d['poll_groups'][0]['current_io_qpairs']==0 and d['poll_groups'][0]['completed_nvme_io']>0" \
  nvmf_get_stats
rpc bdev_get_iostat --names H0 >"$dir/iostat.json" 2>&1
check "bdev_get_iostat --names" grep -q '"name": "H0"' "$dir/iostat.json"
rpc bdev_get_histogram H0 >"$dir/hist.json" 2>&1
# Decoded the way SPDK's scripts/histogram.py does: little-endian u64 buckets, (1 << granularity)
# per range, max_range - min_range + 1 ranges; every read and write since enabling counted once.
check "bdev_get_histogram decodes to the I/O count" "$venv/bin/python3" -c '
import base64, json, sys
h = json.load(open(sys.argv[1]))
s, s0 = (json.load(open(f))["bdevs"][0] for f in sys.argv[2:4])
b = base64.b64decode(h["histogram"])
assert len(b) == 8 * ((h["max_range"] - h["min_range"] + 1) << h["granularity"]), "layout"
total = sum(int.from_bytes(b[i:i + 8], "little") for i in range(0, len(b), 8))
ios = sum(s[k] - s0[k] for k in ("num_read_ops", "num_write_ops"))
assert h["tsc_rate"] > 0 and total == ios > 0, (total, ios)' "$dir/hist.json" "$dir/iostat.json" "$dir/iostat0.json"
check "bdev_enable_histogram --no-histogram" rpc bdev_enable_histogram H0 --no-histogram
jcheck "thread_get_stats" \
  "d['tick_rate']>0 and d['threads'][0]['name']=='reactor_0' and d['threads'][0]['busy']>0 and 'timed_pollers_count' in d['threads'][0]" \
  thread_get_stats
missing=$(rpc bdev_nvme_attach_controller -b Nvme0 -t tcp -a 127.0.0.1 -s "$port" -f ipv4 -n "$nqn" 2>&1)
check "an SPDK method Keel lacks: -32601, 'Keel does not support'" bash -c \
  'grep -q -- "-32601" <<<"$0" && grep -q "Keel does not support the SPDK method bdev_nvme_attach_controller yet" <<<"$0"' "$missing"
check "nvmf_subsystem_remove_listener" rpc nvmf_subsystem_remove_listener "$nqn" -t tcp -a 127.0.0.1 -s "$port"
check "nvmf_subsystem_remove_ns" rpc nvmf_subsystem_remove_ns "$nqn" 1
check "nvmf_delete_subsystem" rpc nvmf_delete_subsystem "$nqn"
check "bdev_malloc_delete H0" rpc bdev_malloc_delete H0
# ==== END issue-11 item 5 (rpcmethods)
# ==== BEGIN issue-11 item 5 (spdkparams): every parameter rpc.py can send is accepted, honoured
# or refused by name (scripts/spdk-params-probe.py; set SPDK_SCHEMA to SPDK's schema/schema.yaml
# to compare with it too), and the flags that were refused before, through rpc.py itself.
schema_arg=(); [ -n "${SPDK_SCHEMA:-}" ] && schema_arg=(--schema "$SPDK_SCHEMA")
out=$("$venv/bin/python3" scripts/spdk-params-probe.py -s "$sock" "${schema_arg[@]}" 2>&1)
check "spdk-params-probe: no parameter of rpc.py refused as unknown" has "$out" ' 0 gaps$'
refused_with() { # refused_with NAME MESSAGE COMMAND... : the command must fail saying MESSAGE
  local name=$1 msg=$2; shift 2
  local o; if o=$("$@" 2>&1); then fail=$((fail+1)); echo "FAIL $name (it succeeded)"
  elif grep -q -- "$msg" <<<"$o"; then pass=$((pass+1)); echo "ok   $name"
  else fail=$((fail+1)); echo "FAIL $name"; echo "$o" | sed 's/^/     /'; fi
}
# bdev_raid_delete: rpc.py always sends clear_sb; -c wipes the members' superblocks.
truncate -s 8M "$dir/r0.img" "$dir/r1.img"
sb_zero() { [ -z "$(head -c 4096 "$1" | tr -d '\0')" ]; }
sb_set() { ! sb_zero "$1"; }
check "raid members on files" bash -c "$venv/bin/spdk-rpc -s $sock bdev_uring_create $dir/r0.img RU0 512 && $venv/bin/spdk-rpc -s $sock bdev_uring_create $dir/r1.img RU1 512"
check "bdev_raid_create -s (superblock)" rpc bdev_raid_create -n RR -r raid1 -b "RU0 RU1" -s
check "bdev_raid_delete (rpc.py sends clear_sb=false)" rpc bdev_raid_delete RR
check "... the superblocks stay" sb_set "$dir/r0.img"
check "bdev_raid_create -s again" rpc bdev_raid_create -n RR -r raid1 -b "RU0 RU1" -s
check "bdev_raid_delete -c" rpc bdev_raid_delete RR -c
check "... wiped the superblock of RU0" sb_zero "$dir/r0.img"
check "... and of RU1" sb_zero "$dir/r1.img"
check "bdev_uring_delete RU0 RU1" bash -c "$venv/bin/spdk-rpc -s $sock bdev_uring_delete RU0 && $venv/bin/spdk-rpc -s $sock bdev_uring_delete RU1"
# bdev_error_inject_error nvme_failure: a status the bdev layer carries, or a refusal naming it.
check "bdev_malloc_create -n -1 (numa_id any)" rpc bdev_malloc_create -b P0 8 512 -n -1
refused_with "bdev_malloc_create -f 1 (dif_pi_format) refused" "dif_pi_format 1 is not supported" rpc bdev_malloc_create -b P1 8 512 -f 1
refused_with "bdev_malloc_create -n 4095 (no such node) refused" "no NUMA node 4095" rpc bdev_malloc_create -b P1 8 512 -n 4095
check "bdev_error_create P0" rpc bdev_error_create P0
check "bdev_error_inject_error nvme_failure --nvme-sct 0 --nvme-sc 7" rpc bdev_error_inject_error EE_P0 all nvme_failure --nvme-sct 0 --nvme-sc 7
refused_with "bdev_error_inject_error nvme_failure --nvme-sc 11 refused" "nvme_sct=0 nvme_sc=11 is not supported" \
  rpc bdev_error_inject_error EE_P0 read nvme_failure --nvme-sct 0 --nvme-sc 11
check "bdev_error_delete EE_P0" rpc bdev_error_delete EE_P0
# lvstore metadata layout: Keel's only.
refused_with "bdev_lvol_create_lvstore -s 8192 refused" "md_page_size 8192 is not supported" rpc bdev_lvol_create_lvstore P0 PL -s 8192
refused_with "bdev_lvol_create_lvstore -m 50 refused" "num_md_pages_per_cluster_ratio 50" rpc bdev_lvol_create_lvstore P0 PL -m 50
check "bdev_lvol_create_lvstore -s 4096 -m 100" rpc bdev_lvol_create_lvstore P0 PL -s 4096 -m 100 -c 1048576
jcheck "bdev_lvol_get_lvstores has max_growable_size" "d[0]['max_growable_size']==d[0]['total_data_clusters']*d[0]['cluster_size']" bdev_lvol_get_lvstores -l PL
check "bdev_lvol_delete_lvstore" rpc bdev_lvol_delete_lvstore -l PL
check "bdev_malloc_delete P0" rpc bdev_malloc_delete P0
# bdev_null_create: size hints accepted, DIF format refused.
check "bdev_null_create -a -g -s -c -r (hints)" rpc bdev_null_create PN 8 512 -a 8 -g 8 -s 64 -c 8 -r 8
refused_with "bdev_null_create -f 2 refused" "dif_pi_format 2 is not supported" rpc bdev_null_create PN2 8 512 -f 2
jcheck "bdev_get_bdevs has SPDK's hint fields" "all(k in d[0] for k in ('preferred_write_alignment','optimal_write_size','preferred_unmap_granularity')) and len(d[0]['supported_io_types'])==22" bdev_get_bdevs -b PN
check "bdev_null_delete PN" rpc bdev_null_delete PN
# nvmf: the cntlid range honoured, what Keel lacks refused by name.
pnqn=nqn.2016-06.io.spdk:params1
check "nvmf_create_subsystem -i 10 -I 20" rpc nvmf_create_subsystem "$pnqn" -i 10 -I 20
jcheck "nvmf_get_subsystems shows the cntlid range" "d[0]['min_cntlid']==10 and d[0]['max_cntlid']==20 and d[0]['passthrough'] is False" nvmf_get_subsystems "$pnqn"
refused_with "nvmf_subsystem_add_listener -k (TLS) refused" "secure_channel=true is not supported" \
  rpc nvmf_subsystem_add_listener "$pnqn" -t tcp -a 127.0.0.1 -s "$port" -k
refused_with "nvmf_create_subsystem -p (passthrough) refused" "passthrough=true is not supported" rpc nvmf_create_subsystem nqn.2016-06.io.spdk:params2 -p
check "nvmf_delete_subsystem" rpc nvmf_delete_subsystem "$pnqn"
# ==== END issue-11 item 5 (spdkparams)
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

# ==== BEGIN issue-11 examine: bdev_set_options --no-auto-examine (--disable-auto-examine in
# older rpc.py) before framework_start_init, so that a disk holding its host's lvstore is not
# taken by examine and can be exported; bdev_examine loads it on request.
esock="$dir/keel-e.sock"
truncate -s 32M "$dir/lvs.img"
"$tgt_bin" -m 0x1 --interrupt-mode --no-default -r "$esock" >"$dir/tgt-e1.log" 2>&1 &
epid=$!
trap 'kill $pid $wpid $epid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -S "$esock" ] && break; sleep 0.1; done
erpc() { "$venv/bin/spdk-rpc" -s "$esock" "$@"; }
ejcheck() { local sock=$esock; jcheck "$@"; }  # jcheck on this target (bash scoping)
check "a first target writes an lvstore into a file" bash -c "$venv/bin/spdk-rpc -s $esock bdev_uring_create $dir/lvs.img E0 4096 && $venv/bin/spdk-rpc -s $esock bdev_lvol_create_lvstore E0 elvs"
refused_with "bdev_set_options after initialisation: invalid state" "before framework is initialized" erpc bdev_set_options --no-auto-examine
refused_with "bdev_examine with auto examine on: -EINVAL" "auto examine is on" erpc bdev_examine -b E0
erpc spdk_kill_instance SIGTERM >/dev/null 2>&1
for _ in $(seq 100); do kill -0 $epid 2>/dev/null || break; sleep 0.1; done
cat >"$dir/e.json" <<JSON
{"subsystems": [{"subsystem": "bdev", "config": [
  {"method": "bdev_uring_create", "params": {"filename": "$dir/lvs.img", "name": "E0", "block_size": 4096}},
  {"method": "bdev_wait_for_examine"}]}]}
JSON
"$tgt_bin" -m 0x1 --interrupt-mode --wait-for-rpc -c "$dir/e.json" -r "$esock" >"$dir/tgt-e2.log" 2>&1 &
epid=$!
for _ in $(seq 100); do [ -S "$esock" ] && break; sleep 0.1; done
out=$(erpc rpc_get_methods --current 2>&1)
check "rpc_get_methods --current (startup) lists bdev_set_options" has "$out" '"bdev_set_options"'
out=$("$venv/bin/python3" scripts/spdk-params-probe.py -s "$esock" "${schema_arg[@]}" 2>&1)
check "spdk-params-probe on the startup methods: 0 gaps" has "$out" ' 0 gaps$'
check "bdev_set_options --no-auto-examine (startup state)" erpc bdev_set_options --no-auto-examine
check "framework_start_init (replays the config: E0)" erpc framework_start_init
ejcheck "E0 not claimed: its lvstore not loaded" "d[0]['claimed'] is False" bdev_get_bdevs -b E0
ejcheck "bdev_lvol_get_lvstores is empty" "d==[]" bdev_lvol_get_lvstores
enqn=nqn.2016-06.io.spdk:examine1
check "nvmf_create_subsystem" erpc nvmf_create_subsystem "$enqn" -a
check "nvmf_subsystem_add_ns E0 (the disk holding the lvstore is exported)" erpc nvmf_subsystem_add_ns "$enqn" E0
check "nvmf_subsystem_remove_ns" erpc nvmf_subsystem_remove_ns "$enqn" 1
check "bdev_examine -b E0" erpc bdev_examine -b E0
check "bdev_wait_for_examine" erpc bdev_wait_for_examine
ejcheck "bdev_examine loaded the lvstore" "d[0]['name']=='elvs'" bdev_lvol_get_lvstores
ejcheck "E0 now claimed by lvol" "d[0]['claimed'] is True and d[0]['claimed_by']=='lvol'" bdev_get_bdevs -b E0
ejcheck "save_config starts the bdev section with bdev_set_options and bdev_examine" \
  "[s for s in d['subsystems'] if s['subsystem']=='bdev'][0]['config'][:2]==[{'method':'bdev_set_options','params':{'bdev_auto_examine':False}},{'method':'bdev_examine','params':{'name':'E0'}}]" \
  save_config
refused_with "bdev_examine -b E0 twice: -EEXIST" "given before" erpc bdev_examine -b E0
check "spdk_kill_instance (examine target)" erpc spdk_kill_instance SIGTERM
for _ in $(seq 100); do kill -0 $epid 2>/dev/null || break; sleep 0.1; done
if kill -0 $epid 2>/dev/null; then fail=$((fail+1)); echo "FAIL examine target still running"
else pass=$((pass+1)); echo "ok   examine target exited"; fi
[ "$fail" = 0 ] || { echo "--- keel-tgt examine logs"; cat "$dir/tgt-e1.log" "$dir/tgt-e2.log"; }
# ==== END issue-11 examine

echo "spdk-rpc compat: $pass passed, $fail failed"
[ "$fail" = 0 ] || { echo "--- keel-tgt log"; cat "$dir/tgt.log"; exit 1; }
