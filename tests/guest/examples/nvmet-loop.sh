#!/bin/bash
# The kernel's own NVMe-oF target as a baseline, inside the test guest: Linux nvmet exporting a
# null_blk device, the Linux initiator connected to it over loopback (TCP) or Soft-RoCE (RDMA),
# then fio 4 KiB random reads at QD 32 with io_uring. Keel's figures measured in the same guest
# are read against this one (ratios only: the guest's CPU is emulated; see
# rdma-transport/README.md and docs/ARCHITECTURE.md §8.3).
#
# Runs in the guest, as root (not on the host: it loads kernel modules and changes configfs):
#   nvmet-loop.sh tcp|rdma [FIO_SECONDS]      default: tcp, 10 s
# Environment:
#   NETDEV  the interface Soft-RoCE binds to for rdma (default eth0; rxe does not work on lo)
#   PORT    the NVMe-oF service port (default 4420)
#   NQN     the subsystem NQN (default nqn.2016-06.io.keel:nvmet-baseline)
#   REPEAT  run the whole set-up, fio, teardown cycle this many times (default 1)
# Everything it sets up (connection, configfs port and subsystem, rxe link) is torn down after
# each run and on exit, also on failure, so it can be called again in the same guest: e.g.
# `for t in tcp rdma rdma tcp; do nvmet-loop.sh $t 5; done` for an ABBA order.
set -euo pipefail

TRANSPORT=${1:-tcp}
SECONDS_PER_RUN=${2:-10}
NETDEV=${NETDEV:-eth0}
PORT=${PORT:-4420}
NQN=${NQN:-nqn.2016-06.io.keel:nvmet-baseline}
REPEAT=${REPEAT:-1}
CFG=/sys/kernel/config/nvmet
PORT_ID=1
RXE=rxe-baseline

die() { echo "nvmet-loop: $*" >&2; exit 1; }
case $TRANSPORT in tcp|rdma) ;; *) die "transport must be tcp or rdma, not '$TRANSPORT'";; esac
[[ $SECONDS_PER_RUN =~ ^[1-9][0-9]*$ ]] || die "FIO_SECONDS must be a positive integer"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer"
[ "$(id -u)" = 0 ] || die "must run as root (in the test guest)"
for tool in nvme fio modprobe; do command -v $tool >/dev/null || die "$tool is missing"; done

CREATED_RXE=0
teardown() {
  nvme disconnect -n "$NQN" >/dev/null 2>&1 || true
  rm -f "$CFG/ports/$PORT_ID/subsystems/$NQN" 2>/dev/null || true
  rmdir "$CFG/ports/$PORT_ID" 2>/dev/null || true
  if [ -d "$CFG/subsystems/$NQN/namespaces/1" ]; then
    echo 0 > "$CFG/subsystems/$NQN/namespaces/1/enable" 2>/dev/null || true
    rmdir "$CFG/subsystems/$NQN/namespaces/1" 2>/dev/null || true
  fi
  rmdir "$CFG/subsystems/$NQN" 2>/dev/null || true
  if [ "$CREATED_RXE" = 1 ]; then rdma link delete "$RXE" 2>/dev/null || true; CREATED_RXE=0; fi
}
trap teardown EXIT

# The block device of namespace 1 of $NQN once the initiator has connected. With native
# multipath the per-path disks (nvmeXcYn1) are hidden and the subsystem's head disk is the one
# to use; without it the controller's disk is. Either way the disk's device has subsysnqn.
namespace_dev() {
  local b
  for b in /sys/block/nvme*n1; do
    [ -e "$b" ] || continue
    [ "$(cat "$b/hidden" 2>/dev/null)" = 1 ] && continue
    [ "$(cat "$b/device/subsysnqn" 2>/dev/null)" = "$NQN" ] && { echo "/dev/${b##*/}"; return 0; }
  done
  return 1
}

one_run() {
  local addr=127.0.0.1 dev=''
  modprobe -a null_blk nvmet "nvmet-$TRANSPORT" "nvme-$TRANSPORT"
  [ -b /dev/nullb0 ] || die "null_blk did not create /dev/nullb0"
  if [ "$TRANSPORT" = rdma ]; then
    modprobe rdma_rxe
    if ! rdma link show "$RXE/1" >/dev/null 2>&1; then
      rdma link add "$RXE" type rxe netdev "$NETDEV"
      CREATED_RXE=1
    fi
    addr=$(ip -4 -o addr show dev "$NETDEV" | awk '{sub("/.*", "", $4); print $4; exit}')
    [ -n "$addr" ] || die "$NETDEV has no IPv4 address for Soft-RoCE"
  fi

  mkdir "$CFG/subsystems/$NQN"
  echo 1 > "$CFG/subsystems/$NQN/attr_allow_any_host"
  mkdir "$CFG/subsystems/$NQN/namespaces/1"
  echo /dev/nullb0 > "$CFG/subsystems/$NQN/namespaces/1/device_path"
  echo 1 > "$CFG/subsystems/$NQN/namespaces/1/enable"
  mkdir "$CFG/ports/$PORT_ID"
  echo "$TRANSPORT" > "$CFG/ports/$PORT_ID/addr_trtype"
  echo ipv4 > "$CFG/ports/$PORT_ID/addr_adrfam"
  echo "$addr" > "$CFG/ports/$PORT_ID/addr_traddr"
  echo "$PORT" > "$CFG/ports/$PORT_ID/addr_trsvcid"
  ln -s "$CFG/subsystems/$NQN" "$CFG/ports/$PORT_ID/subsystems/$NQN"

  echo "== nvmet-loop: nvme connect -t $TRANSPORT -a $addr -s $PORT -n $NQN"
  nvme connect -t "$TRANSPORT" -a "$addr" -s "$PORT" -n "$NQN"
  for _ in $(seq 50); do dev=$(namespace_dev) && break; sleep 0.1; done
  [ -n "$dev" ] || die "no block device appeared for $NQN"
  echo "== nvmet-loop: $dev, fio 4 KiB randread QD 32 io_uring for ${SECONDS_PER_RUN}s"
  fio --name="nvmet-$TRANSPORT" --filename="$dev" --rw=randread --bs=4k --iodepth=32 \
      --ioengine=io_uring --direct=1 --runtime="$SECONDS_PER_RUN" --time_based \
      --group_reporting
  teardown
}

for _ in $(seq "$REPEAT"); do one_run; done
echo "nvmet-loop: $TRANSPORT OK"
