#!/bin/bash
# Guest: connect to $NQN_KATO with a $KATO_SECS s keep-alive timeout, start fio, signal
# /host/sync/fio-running once I/O flows, and keep going. The host then freezes (SIGSTOP) or
# kills (SIGKILL) QEMU mid-I/O and checks on the target that the controller is torn down after
# the keep-alive timeout. This script only ends by itself if the host never does that (a failure).
# shellcheck disable=SC2015  # "A && ok || bad": ok and bad always return 0
. "$(dirname "$0")/lib.sh"

step "connect to $NQN_KATO with --keep-alive-tmo=$KATO_SECS"
connect_ok kato "$NQN_KATO" --keep-alive-tmo="$KATO_SECS" || finish
[ "$(cat "/sys/class/nvme/$CTRL/kato")" = "$KATO_SECS" ] && ok "$CTRL kato is $KATO_SECS s" ||
  bad "$CTRL kato is $(cat "/sys/class/nvme/$CTRL/kato"), want $KATO_SECS"
dev=$(wait_ns "$NQN_KATO" 1 10) || die "no namespace on $NQN_KATO"

step "fio on $dev until the host kills this guest"
fio_t 200 --name=kato --filename="$dev" --rw=randrw --bsrange=4k-64k --iodepth=16 \
  --ioengine=io_uring --direct=1 --time_based --runtime=150 > /tmp/fio.out 2>&1 &
fio_pid=$!
# I/O counts of the controller's path device (nvmeXcYnZ; the multipath head keeps no stats).
paths=("/sys/class/nvme/$CTRL"/nvme*n1); stat=${paths[0]}/stat
ios() { local a; read -ra a < "$stat"; echo $(( a[0] + a[4] )); }
start=$(ios) flowing='' t=$SECONDS
while [ $((SECONDS - t)) -lt 30 ]; do
  kill -0 $fio_pid 2>/dev/null || break
  [ "$(ios)" -gt $((start + 100)) ] && { flowing=1; break; }; sleep 0.2; done
[ -n "$flowing" ] || { cat /tmp/fio.out; die "fio does not get I/O through to $dev"; }
ok "I/O is flowing on $dev ($(( $(ios) - start )) I/Os so far)"
echo "GUEST-FIO-RUNNING"; sync
signal fio-running
wait $fio_pid; rc=$?
tail -15 /tmp/fio.out
bad "the host did not stop this guest while fio ran (fio exit $rc)"
finish
