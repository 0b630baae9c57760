#!/bin/bash
# Baseline inside the guest: the Linux kernel's own NVMe-oF target (nvmet, on a null_blk device)
# and the Linux host, both in the guest, then fio 4 KiB random reads at queue depth 32. It tells
# what the emulated guest itself can do, to compare keel-tgt's figures in the same guest with.
#
#   tests/guest/keel-guest run --share tests/guest/examples -- 'bash /host/nvmet-baseline.sh tcp 10'
#   bash nvmet-baseline.sh tcp|rdma [SECONDS]      (in the guest)
#
# tcp:  nvmet-tcp on 127.0.0.1:4420.
# rdma: Soft-RoCE (rdma_rxe) on eth0 and nvmet-rdma on eth0's address (10.0.2.15): Soft-RoCE
#       does not work on lo with Linux 6.1.
# The last line is "BASELINE <transport> IOPS=<n>"; everything is torn down at the end.
set -euo pipefail
TRANSPORT=${1:-tcp}
SECS=${2:-10}
NQN=nqn.2016-06.io.keel:guest-baseline
PORT=4420
case $TRANSPORT in tcp|rdma) ;; *) echo "usage: $0 tcp|rdma [SECONDS]" >&2; exit 2;; esac

modprobe null_blk nr_devices=1
modprobe -a nvmet "nvmet-$TRANSPORT" "nvme-$TRANSPORT"
ADDR=127.0.0.1
if [ "$TRANSPORT" = rdma ]; then
  rdma link add rxe0 type rxe netdev eth0
  ADDR=$(ip -4 -o addr show dev eth0 | awk '{ split($4, a, "/"); print a[1] }')
  echo "== Soft-RoCE: $(rdma link show rxe0/1)"
fi

# nvmet is configured through configfs: a subsystem with one namespace, a port, a link.
NVMET=/sys/kernel/config/nvmet
SUB=$NVMET/subsystems/$NQN
PORTDIR=$NVMET/ports/1
teardown() {
  nvme disconnect -n "$NQN" >/dev/null 2>&1 || true
  rm -f "$PORTDIR/subsystems/$NQN" 2>/dev/null || true
  rmdir "$PORTDIR" "$SUB/namespaces/1" "$SUB" 2>/dev/null || true
  if [ "$TRANSPORT" = rdma ]; then rdma link delete rxe0 2>/dev/null || true; fi
}
trap teardown EXIT
mkdir "$SUB"
echo 1 > "$SUB/attr_allow_any_host"
mkdir "$SUB/namespaces/1"
echo /dev/nullb0 > "$SUB/namespaces/1/device_path"
echo 1 > "$SUB/namespaces/1/enable"
mkdir "$PORTDIR"
echo "$TRANSPORT" > "$PORTDIR/addr_trtype"
echo ipv4 > "$PORTDIR/addr_adrfam"
echo "$ADDR" > "$PORTDIR/addr_traddr"
echo "$PORT" > "$PORTDIR/addr_trsvcid"
ln -s "$SUB" "$PORTDIR/subsystems/$NQN"

echo "== nvme connect -t $TRANSPORT -a $ADDR -s $PORT -n $NQN"
nvme connect -t "$TRANSPORT" -a "$ADDR" -s "$PORT" -n "$NQN"
DEV=
for _ in $(seq 50); do
  for b in /sys/block/nvme*n1; do
    case ${b##*/} in nvme*c*n*) continue;; esac   # a hidden multipath path, no /dev node
    [ -e "$b/device/subsysnqn" ] && [ "$(cat "$b/device/subsysnqn")" = "$NQN" ] && DEV=/dev/${b##*/}
  done
  [ -n "$DEV" ] && break; sleep 0.1
done
[ -n "$DEV" ] || { echo "no block device for $NQN" >&2; exit 1; }
echo "== fio 4k randread QD32 io_uring on $DEV for $SECS s"
fio --name="randread-$TRANSPORT" --filename="$DEV" --rw=randread --bs=4k --iodepth=32 \
  --ioengine=io_uring --direct=1 --runtime="$SECS" --time_based --output-format=terse --terse-version=3 > /tmp/fio.out
# terse v3: field 8 is the read IOPS
echo "BASELINE $TRANSPORT IOPS=$(awk -F';' '{ print $8 }' /tmp/fio.out)"
