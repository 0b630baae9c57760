#!/bin/bash
# Guest: namespace hot add and hot remove while connected to $NQN_HOT. The guest cannot call the
# target's RPCs, so the host does it on a signal through the share:
#   guest: /host/sync/ready-add    -> host: nvmf_subsystem_add_ns (nsid $HOT_NSID) -> /host/sync/added
#   guest: /host/sync/ready-remove -> host: nvmf_subsystem_remove_ns               -> /host/sync/removed
# (the host writes add-failed / remove-failed, with the RPC's answer, if its call failed).
# The new namespace must show up, and the removed one go away, through the target's Namespace
# Attribute Changed event within $AEN_SECS seconds, without a manual rescan.
# shellcheck disable=SC2015  # "A && ok || bad": ok and bad always return 0
. "$(dirname "$0")/lib.sh"
AEN_SECS=${AEN_SECS:-10}

# host_action SIGNAL DONE FAILED: ask the host to act, wait for its answer.
host_action() {
  signal "$1"
  local i; for ((i = 0; i < 600; i++)); do
    [ -e "$SYNC/$2" ] && { ok "host answered $2"; return 0; }
    [ -e "$SYNC/$3" ] && { bad "host could not act on $1: $(head -c 2000 "$SYNC/$3")"; return 1; }
    sleep 0.1; done
  bad "no answer from the host to $1 in 60 s"; return 1
}

step "connect to $NQN_HOT"
connect_ok hotplug "$NQN_HOT" || finish
ns1=$(wait_ns "$NQN_HOT" 1 10) || die "namespace 1 of $NQN_HOT has no block device"
ok "namespace 1 is $ns1 on $CTRL"
ns_dev "$NQN_HOT" "$HOT_NSID" >/dev/null && die "namespace $HOT_NSID exists before the hot add"
check "nvme list-ns before" nvme list-ns "/dev/$CTRL"

step "hot add: the host adds namespace $HOT_NSID"
host_action ready-add added add-failed || finish
t=$SECONDS
if dev=$(wait_ns "$NQN_HOT" "$HOT_NSID" "$AEN_SECS"); then
  ok "namespace $HOT_NSID appeared as $dev about $((SECONDS - t)) s after the add (AEN + rescan by the kernel)"
else
  bad "namespace $HOT_NSID not seen within $AEN_SECS s of the add (no Namespace Attribute Changed AEN?)"
  nvme ns-rescan "/dev/$CTRL"
  if dev=$(wait_ns "$NQN_HOT" "$HOT_NSID" 5); then say "     (after a manual 'nvme ns-rescan' it is there: $dev, so the AEN is missing)"
  else say "     (not even after a manual 'nvme ns-rescan')"; fi
fi
if [ -n "${dev:-}" ]; then
  want=$(( HOT_MB * 1024 * 1024 / 512 )); got=$(cat "/sys/block/$(basename "$dev")/size")
  [ "$got" = "$want" ] && ok "$dev has $want sectors" || bad "$dev has $got sectors, want $want"
  check "nvme list shows $dev" bash -c "nvme list | grep -E '^$dev '"
  check "nvme list-ns lists nsid $HOT_NSID" bash -c "nvme list-ns /dev/$CTRL | grep -E ':0x0*$HOT_NSID\$'"
  check "nvme id-ns $dev" nvme id-ns "$dev"
  check "nvme get-log changed namespace list (log 0x04)" nvme get-log "/dev/$CTRL" --log-id=4 --log-len=4096
  check "fio verify on the new namespace" fio_t 120 --name=hot --filename="$dev" --rw=randrw \
    --bsrange=512-128k --iodepth=8 --ioengine=io_uring --direct=1 --size=8m --verify=crc32c --verify_fatal=1
fi

step "hot remove: the host removes namespace $HOT_NSID"
host_action ready-remove removed remove-failed || finish
t=$SECONDS
if wait_no_ns "$NQN_HOT" "$HOT_NSID" "$AEN_SECS"; then
  ok "namespace $HOT_NSID gone about $((SECONDS - t)) s after the removal"
else
  bad "namespace $HOT_NSID still there $AEN_SECS s after the removal (no AEN?)"
  nvme ns-rescan "/dev/$CTRL"
  wait_no_ns "$NQN_HOT" "$HOT_NSID" 5 && say "     (a manual 'nvme ns-rescan' removes it, so the AEN is missing)"
fi
check "namespace 1 still reads" dd if="$ns1" of=/dev/null bs=64k count=64 iflag=direct status=none
check "nvme list-ns lists only nsid 1" bash -c "[ \"\$(nvme list-ns /dev/$CTRL | grep -c :0x)\" = 1 ]"

step "disconnect"
disconnect_ok hotplug "$NQN_HOT"
dmesg_clean hotplug
finish
