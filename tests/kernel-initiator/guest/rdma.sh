#!/usr/bin/env bash
# NVMe/RDMA against keel-tgt running INSIDE this guest, next to Soft-RoCE on eth0 (rxe on lo does
# not work with this kernel). The host's rdma.sh ships keel-tgt, keel-rpc, cm_probe and the
# target config in /host. Checks: discovery over RDMA (with RDMA TSAS), connect with several I/O
# queues, fio --verify=crc32c over mixed sizes and depths, the same namespace over TCP and RDMA at
# once (written through one, verified through the other, both ways), malformed CM requests and
# a QP that vanishes mid-command (cm_probe) while a verifying fio runs, disconnect / reconnect,
# no queue pair left in the target, a clean kernel log, and a clean target exit. Then 4 KiB
# randread QD32 over RDMA and over TCP for the relative figure (the guest is emulated: ratios
# only).
# shellcheck disable=SC2015  # "A && ok || bad": ok and bad always return 0
# shellcheck source=/dev/null
. /host/lib.sh
NQN=nqn.2016-06.io.keel:kinit-rdma
ADDR=10.0.2.15
SOCK=/tmp/keel.sock
rpc() { /host/keel-rpc -s "$SOCK" -t 10 call "$@"; }

# dev_via TRANSPORT: the namespace-1 block device of $NQN reached over TRANSPORT (rdma|tcp).
dev_via() {
  local b; for b in /sys/block/nvme*; do
    [[ $(basename "$b") =~ ^nvme[0-9]+n1$ ]] || continue
    [ "$(cat "$b/device/subsysnqn" 2>/dev/null)" = "$NQN" ] || continue
    [ "$(cat "$b/device/transport" 2>/dev/null)" = "$1" ] && { echo "/dev/$(basename "$b")"; return 0; }
  done; return 1
}
wait_dev() { local i d; for ((i = 0; i < 100; i++)); do d=$(dev_via "$1") && [ -b "$d" ] && { echo "$d"; return 0; }; sleep 0.1; done; return 1; }
qpairs() { rpc nvmf_subsystem_get_qpairs "{\"nqn\":\"$NQN\"}" | grep -c '"cntlid"'; }

step "Soft-RoCE and the target"
modprobe rdma_rxe && modprobe rdma_ucm && modprobe nvme-rdma &&
  modprobe nvme-tcp || die "modprobe"
check "rdma link add rxe0 on eth0" rdma link add rxe0 type rxe netdev eth0 || finish
RUST_LOG=info ALLOC_COUNT_FILE=/tmp/allocs LD_PRELOAD=/host/alloc-count.so /host/keel-tgt -m 0x1 -c /host/rdma.json -r "$SOCK" > /host/keel-tgt.log 2>&1 &
TGT=$!
for ((i = 0; i < 300; i++)); do rpc spdk_get_version >/dev/null 2>&1 && break; sleep 0.1; done
check "keel-tgt serves RPC inside the guest" rpc spdk_get_version || die "no target"
check "nvmf_get_transports lists RDMA with its options" \
  bash -c "/host/keel-rpc -s $SOCK call nvmf_get_transports | grep -q '\"max_srq_depth\"'"

step "discovery over RDMA"
out=$(nvme discover -t rdma -a $ADDR -s 4420 2>&1); echo "$out" | sed 's/^/     /' | head -40
[[ $out == *"subnqn:  $NQN"* && $out == *"trtype:  rdma"* && $out == *"trtype:  tcp"* ]] &&
  ok "discovery lists $NQN over rdma and tcp" || bad "discovery log"
[[ $out == *"rdma_qptype: connected"* && $out == *"rdma_cms:    rdma-cm"* ]] &&
  ok "RDMA entries carry the RDMA TSAS" || bad "RDMA TSAS (qptype/cms)"

step "connect over RDMA with 2 I/O queues"
check "nvme connect -t rdma -i 2" nvme connect -t rdma -a $ADDR -s 4420 -n $NQN -i 2 || die "connect"
RDEV=$(wait_dev rdma) || { ls /sys/block; nvme list; die "no RDMA namespace device"; }
ok "namespace over RDMA is $RDEV"
CHECK_LINES=3 check "nvme id-ctrl over RDMA" nvme id-ctrl "${RDEV%n1}"
sgls=$(nvme id-ctrl "${RDEV%n1}" | awk '/^sgls/ {print $3}')
(( sgls & 4 )) && ok "SGLS $sgls has Keyed SGL Data Blocks (bit 2)" || bad "SGLS $sgls lacks keyed SGLs"
for qd in 1 16 32; do
  CHECK_LINES=4 check "fio verify randrw 512B-128KiB QD$qd over RDMA" fio_t 240 --name=rd$qd \
    --filename="$RDEV" --direct=1 --ioengine=libaio --rw=randrw --bsrange=512-128k \
    --iodepth=$qd --size=24M --verify=crc32c --verify_fatal=1 --output-format=terse --minimal
done
CHECK_LINES=4 check "fio verify 1 MiB sequential writes over RDMA" fio_t 240 --name=big --filename="$RDEV" \
  --direct=1 --ioengine=libaio --rw=write --bs=1M --iodepth=4 --size=32M --verify=crc32c --verify_fatal=1 --minimal

step "the same namespace over TCP at the same time"
check "nvme connect -t tcp" nvme connect -t tcp -a $ADDR -s 4421 -n $NQN || die "tcp connect"
TDEV=$(wait_dev tcp) || die "no TCP namespace device"
ok "namespace over TCP is $TDEV (RDMA: $RDEV)"
pass() { # NAME WRITE_DEV VERIFY_DEV OFFSET
  fio_t 120 --name=w --filename="$2" --direct=1 --ioengine=libaio --rw=randwrite --bs=4k --iodepth=16 \
    --offset="$4" --size=8M --verify=crc32c --do_verify=0 --randseed=7 --minimal >/dev/null &&
  fio_t 120 --name=w --filename="$3" --direct=1 --ioengine=libaio --rw=randwrite --bs=4k --iodepth=16 \
    --offset="$4" --size=8M --verify=crc32c --verify_only --randseed=7 --verify_fatal=1 --minimal >/dev/null
}
check "written over RDMA, verified over TCP" pass r2t "$RDEV" "$TDEV" 40M
check "written over TCP, verified over RDMA" pass t2r "$TDEV" "$RDEV" 48M

step "heap allocations per I/O in steady state (keel-tgt under alloc-count.so)"
ops() { rpc bdev_get_iostat '{"name":"M0"}' | awk -F'[:,]' '/"num_(read|write)_ops"/ {s += $2} END {print s + 0}'; }
allocs() { kill -USR2 "$TGT"; sleep 0.3; cat /tmp/allocs; }
alloc_phase() { # NAME DEV: allocations during a warm 8 s randrw 512 B-128 KiB QD32 run
  local o1 a1 a2 o2
  fio_t 60 --name=warm --filename="$2" --direct=1 --ioengine=libaio --rw=randrw --bsrange=512-128k \
    --iodepth=32 --size=16M --time_based --runtime=3 --minimal >/dev/null
  o1=$(ops); a1=$(allocs)
  fio_t 60 --name=steady --filename="$2" --direct=1 --ioengine=libaio --rw=randrw --bsrange=512-128k \
    --iodepth=32 --size=16M --time_based --runtime=8 --minimal >/dev/null
  a2=$(allocs); o2=$(ops)
  say "ALLOC $1: $((a2 - a1)) heap allocations over $((o2 - o1)) I/Os"
  echo "$1 $((a2 - a1)) $((o2 - o1))" >> /host/allocs.txt
  # Zero is what the I/O path does; a buffer-pool page mapped at a new peak of buffers in use
  # (and registered with the device) costs a couple of allocations once, so the bound is
  # one per thousand I/Os, far below anything per-I/O.
  [ $((o2 - o1)) -gt 1000 ] && [ $((1000 * (a2 - a1))) -lt $((o2 - o1)) ] &&
    ok "$1: $((a2 - a1)) heap allocations over $((o2 - o1)) I/Os" ||
    bad "$1: $((a2 - a1)) heap allocations over $((o2 - o1)) I/Os"
}
alloc_phase rdma "$RDEV"
alloc_phase tcp "$TDEV"

step "hostile CM requests and a vanishing QP while fio verifies"
fio_t 300 --name=bg --filename="$RDEV" --direct=1 --ioengine=libaio --rw=randrw --bsrange=4k-64k \
  --iodepth=8 --size=16M --offset=8M --verify=crc32c --verify_fatal=1 --loops=3 --minimal > /tmp/bg.out 2>&1 &
BG=$!
CHECK_LINES=20 check "cm_probe: malformed requests rejected, vanishing QP survived" \
  /host/cm_probe $ADDR 4420 $NQN
if wait $BG; then ok "background fio verify over RDMA clean during the probe"; else bad "background fio"; cat /tmp/bg.out | head; fi
kill -0 $TGT 2>/dev/null && ok "keel-tgt still running" || die "keel-tgt died"

step "disconnect, reconnect, disconnect"
out=$(nvme disconnect -n $NQN 2>&1); echo "     $out"
[[ $out == *"disconnected 2 controller"* ]] && ok "disconnect both controllers" || bad "disconnect both"
wait_no_ctrl $NQN 10 && ok "no controller left" || bad "a controller remains"
check "reconnect over RDMA" nvme connect -t rdma -a $ADDR -s 4420 -n $NQN || die "reconnect"
RDEV=$(wait_dev rdma) || die "no RDMA device after reconnect"
CHECK_LINES=4 check "fio verify after reconnect" fio_t 120 --name=again --filename="$RDEV" --direct=1 \
  --ioengine=libaio --rw=randrw --bs=4k --iodepth=32 --size=8M --verify=crc32c --verify_fatal=1 --minimal

step "relative throughput (emulated guest: ratios only)"
check "nvme connect -t tcp (for the comparison)" nvme connect -t tcp -a $ADDR -s 4421 -n $NQN
TDEV=$(wait_dev tcp) || die "no TCP device"
perf() { fio --name=p --filename="$1" --direct=1 --ioengine=libaio --rw=randread --bs=4k --iodepth=32 \
  --time_based --runtime=5 --size=32M --minimal | awk -F';' '{print $8}'; }
# ABBA order, twice: the emulated guest speeds up over a run, so alternating A/B would favour B.
R=0 T=0 runs=''
for d in rdma tcp tcp rdma rdma tcp tcp rdma; do
  if [ $d = rdma ]; then v=$(perf "$RDEV"); R=$((R + v)); else v=$(perf "$TDEV"); T=$((T + v)); fi
  runs="$runs $d=$v"
done
say "PERF 4k randread QD32 IOPS (5 s runs, ABBA):$runs; rdma/tcp = $((100 * R / (T > 0 ? T : 1)))%"
echo "runs:$runs rdma_sum=$R tcp_sum=$T rdma/tcp=$((100 * R / (T > 0 ? T : 1)))%" > /host/perf.txt
[ "$R" -gt 0 ] && [ "$T" -gt 0 ] && ok "throughput measured" || bad "throughput"
out=$(nvme disconnect -n $NQN 2>&1); echo "     $out"
[[ $out == *"disconnected 2 controller"* ]] && ok "final disconnect of both" || bad "final disconnect"
wait_no_ctrl $NQN 10 && ok "no controller left" || bad "a controller remains"
for ((i = 0; i < 50; i++)); do [ "$(qpairs)" = 0 ] && break; sleep 0.1; done
[ "$(qpairs)" = 0 ] && ok "no queue pair left in the target" || bad "queue pairs left: $(qpairs)"
dmesg_clean "rdma" 'rdma_rxe: (loaded|set rxe0)'

step "target shutdown"
rpc spdk_kill_instance '{"sig_name":"SIGTERM"}' >/dev/null 2>&1
for ((i = 0; i < 100; i++)); do kill -0 $TGT 2>/dev/null || break; sleep 0.1; done
wait $TGT; rc=$?
[ $rc = 0 ] && ok "keel-tgt exited 0 on SIGTERM" || bad "keel-tgt exit status $rc"
grep -E "panicked|ERROR" /host/keel-tgt.log | head -5
grep -q "panicked" /host/keel-tgt.log && bad "keel-tgt log has a panic" || ok "keel-tgt log has no panic"

step "interrupt mode: the reactor sleeps between RDMA completions"
RUST_LOG=info /host/keel-tgt -m 0x1 --interrupt-mode -c /host/rdma.json -r "$SOCK" > /host/keel-tgt-intr.log 2>&1 &
TGT=$!
for ((i = 0; i < 300; i++)); do rpc spdk_get_version >/dev/null 2>&1 && break; sleep 0.1; done
check "nvme connect -t rdma (target in interrupt mode)" nvme connect -t rdma -a $ADDR -s 4420 -n $NQN -i 2 || die "connect"
RDEV=$(wait_dev rdma) || die "no RDMA device (interrupt mode)"
CHECK_LINES=4 check "fio verify over RDMA, target in interrupt mode" fio_t 120 --name=intr --filename="$RDEV" \
  --direct=1 --ioengine=libaio --rw=randrw --bsrange=512-128k --iodepth=16 --size=8M --verify=crc32c \
  --verify_fatal=1 --minimal
cpu() { awk '{print $14 + $15}' "/proc/$TGT/stat"; }
c1=$(cpu); sleep 3; c2=$(cpu)
# A busy-polling reactor uses all 300 ticks; what is left is timers (keep-alive, TCP accept)
# in an emulated CPU.
[ $((c2 - c1)) -lt 100 ] && ok "idle with RDMA queues connected: $((c2 - c1)) CPU ticks in 3 s" ||
  bad "busy while idle in interrupt mode: $((c2 - c1)) CPU ticks in 3 s"
out=$(nvme disconnect -n $NQN 2>&1); echo "     $out"
wait_no_ctrl $NQN 10 && ok "disconnected (interrupt mode)" || bad "a controller remains (interrupt mode)"
rpc spdk_kill_instance '{"sig_name":"SIGTERM"}' >/dev/null 2>&1
wait $TGT && ok "keel-tgt (interrupt mode) exited 0" || bad "keel-tgt (interrupt mode) exit status"
finish
