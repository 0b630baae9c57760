#!/bin/bash
# Guest half of the hostile test: while the host's hostile.py attacks the target with raw TCP
# (garbage, truncated PDUs, wrong lengths, out-of-range offsets, connection floods), this runs
# verifying fio passes on $NQN_MAIN until the host writes /host/sync/hostile-done. Every pass must
# be clean, and the controller must never be reset or reconnected.
# shellcheck disable=SC2015  # "A && ok || bad": ok and bad always return 0
. "$(dirname "$0")/lib.sh"
MAX_SECS=${MAX_SECS:-240}

step "connect to $NQN_MAIN"
connect_ok hostile "$NQN_MAIN" || finish
dev=$(wait_ns "$NQN_MAIN" 1 10) || die "no namespace on $NQN_MAIN"
cntlid=$(cat "/sys/class/nvme/$CTRL/cntlid")

signal fio-running
n=0 t0=$SECONDS
while :; do
  n=$((n + 1)); t=$SECONDS
  out=$(fio_t 120 --name=hostile-$n --filename="$dev" --rw=randrw --bsrange=512-256k --iodepth=32 \
    --ioengine=io_uring --direct=1 --offset=$(( (n % 4) * 32 ))m --size=24m --verify=crc32c \
    --verify_fatal=1 --verify_backlog=16 2>&1); rc=$?
  if [ $rc = 0 ] && ! grep -qE 'err= *[1-9]|verify: bad|verify failed' <<<"$out"; then
    ok "fio verify pass $n clean ($((SECONDS - t)) s, $(grep -oE 'IOPS=[0-9.k]+' <<<"$out" | tr '\n' ' '))"
  else bad "fio verify pass $n (exit $rc)"; echo "$out" | tail -30 | sed 's/^/     /'; fi
  [ -e "$SYNC/hostile-done" ] && break
  [ $((SECONDS - t0)) -gt "$MAX_SECS" ] && { bad "the host did not finish its attack within $MAX_SECS s"; break; }
done
[ "$(cat "/sys/class/nvme/$CTRL/state")" = live ] && ok "$CTRL still live" || bad "$CTRL is $(cat "/sys/class/nvme/$CTRL/state")"
[ "$(cat "/sys/class/nvme/$CTRL/cntlid")" = "$cntlid" ] && ok "same controller ($cntlid): no reconnect" ||
  bad "controller id changed from $cntlid: the host reconnected"
disconnect_ok hostile "$NQN_MAIN"
dmesg_clean hostile
finish
