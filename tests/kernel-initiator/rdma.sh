#!/usr/bin/env bash
# rdma: keel-tgt's NVMe/RDMA transport against the Linux nvme-rdma initiator over Soft-RoCE. The
# target runs INSIDE the QEMU guest (tests/guest/keel-guest) (Soft-RoCE needs a real netdev: eth0, 10.0.2.15); this host
# script builds keel-tgt, keel-rpc and the cm_probe example (release), ships them with the config
# and the guest script guest/rdma.sh (see it for the checks) in a share, and boots one guest.
#
#   tests/kernel-initiator/rdma.sh [--results DIR]
#
# The config exports one 64 MiB malloc namespace at nqn.2016-06.io.keel:kinit-rdma over RDMA
# 10.0.2.15:4420 and TCP 10.0.2.15:4421 (and discovery over RDMA). Results in DIR (default
# target/kernel-initiator/rdma): guest.log, dmesg.txt, keel-tgt.log (the in-guest target's log),
# perf.txt (4 KiB randread QD32 IOPS over RDMA and TCP, two rounds each), allocs.txt (heap
# allocations of keel-tgt, counted by preload/alloc-count.c, over a steady-state fio run per
# transport: "transport allocations I/Os"; the test wants 0). Last line
# "rdma: PASS" or "rdma: FAIL"; exit status 0 on PASS.
# Environment: KEEL_GUEST (guest harness, default tests/guest/keel-guest), KI_TIMEOUT (guest
# time limit, 900 s), CARGO_TARGET_DIR.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HARNESS=${KEEL_GUEST:-${KINIT:-$ROOT/tests/guest/keel-guest}}   # the guest harness (tests/guest/README.md)
GUEST_TIMEOUT=${KI_TIMEOUT:-900}
RESULTS=${KI_RESULTS:-$ROOT/target/kernel-initiator}/rdma
while [ $# -gt 0 ]; do case $1 in
  --results) RESULTS=$2; shift 2;;
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
  *) echo "rdma: unknown argument $1" >&2; exit 2;;
esac; done
log() { echo "rdma: $*"; }
fatal() { log "FAIL: $*"; exit 1; }

rm -rf "$RESULTS"; mkdir -p "$RESULTS"; RESULTS=$(cd "$RESULTS" && pwd)
[ -x "$HARNESS" ] || fatal "no guest harness at $HARNESS (set KEEL_GUEST)"
(cd "$ROOT" && cargo build --release -p keel-tgt && cargo build --release -p keel-rdma --example cm_probe) \
  > "$RESULTS/cargo-build.log" 2>&1 || { tail -30 "$RESULTS/cargo-build.log"; fatal "cargo build failed"; }
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
cp "$BIN/keel-tgt" "$BIN/keel-rpc" "$BIN/examples/cm_probe" "$HERE/guest/lib.sh" "$HERE/guest/rdma.sh" "$RESULTS/" ||
  fatal "missing binaries in $BIN"
gcc -shared -fPIC -O2 -Wall -o "$RESULTS/alloc-count.so" "$HERE/preload/alloc-count.c" || fatal "gcc alloc-count.so"
echo "MODE=keel TADDR=10.0.2.15 TPORT=4420" > "$RESULTS/env.sh"
mkdir -p "$RESULTS/sync"
NQN=nqn.2016-06.io.keel:kinit-rdma
listener() { echo "{\"method\":\"nvmf_subsystem_add_listener\",\"params\":{\"nqn\":\"$1\",\"listen_address\":{\"trtype\":\"$2\",\"adrfam\":\"IPv4\",\"traddr\":\"10.0.2.15\",\"trsvcid\":\"$3\"}}}"; }
cat > "$RESULTS/rdma.json" <<JSON
{"subsystems":[
 {"subsystem":"bdev","config":[
  {"method":"bdev_malloc_create","params":{"name":"M0","num_blocks":131072,"block_size":512}}]},
 {"subsystem":"nvmf","config":[
  {"method":"nvmf_create_transport","params":{"trtype":"RDMA","max_srq_depth":256}},
  {"method":"nvmf_create_transport","params":{"trtype":"TCP"}},
  {"method":"nvmf_create_subsystem","params":{"nqn":"$NQN","allow_any_host":true,"serial_number":"KEELRDMA0001"}},
  {"method":"nvmf_subsystem_add_ns","params":{"nqn":"$NQN","namespace":{"bdev_name":"M0"}}},
  $(listener "$NQN" RDMA 4420),
  $(listener "$NQN" TCP 4421),
  $(listener nqn.2014-08.org.nvmexpress.discovery RDMA 4420)]}]}
JSON
"$HARNESS" build > "$RESULTS/guest-build.log" 2>&1 || { cat "$RESULTS/guest-build.log"; fatal "guest build failed ($HARNESS build)"; }
log "booting the guest (target and initiator inside it; results in $RESULTS)"
KEEL_GUEST_APPEND="${KEEL_GUEST_APPEND:-} nvme_core.multipath=N" KINIT_APPEND="${KINIT_APPEND:-} nvme_core.multipath=N" \
  "$HARNESS" run --share "$RESULTS" --smp 2 --timeout "$GUEST_TIMEOUT" -- 'bash /host/rdma.sh' \
  > "$RESULTS/guest.log" 2>&1
rc=$?
grep -E '^(ok|FAIL|==|PERF|ALLOC)' "$RESULTS/guest.log"
[ -s "$RESULTS/perf.txt" ] && log "4 KiB randread QD32 IOPS (emulated guest): $(cat "$RESULTS/perf.txt")"
if [ $rc = 0 ] && grep -q '^GUEST-OK' "$RESULTS/guest.log"; then log PASS; exit 0; fi
tail -20 "$RESULTS/keel-tgt.log" 2>/dev/null
log "FAIL (guest exit $rc)"; exit 1
