#!/bin/bash
# Guest: host access control on $NQN_DENY (allow_any_host false, only $ALLOWED_HOSTNQN allowed).
# This guest's own host NQN (/etc/nvme/hostnqn) must be refused with the status the Linux host
# reports as "not allowed", and must not see the subsystem in its discovery log; the allowed
# host NQN must see it and connect.
# shellcheck disable=SC2015  # "A && ok || bad": ok and bad always return 0
. "$(dirname "$0")/lib.sh"
me=$(cat /etc/nvme/hostnqn)
allowed=(--hostnqn="$ALLOWED_HOSTNQN" --hostid="$ALLOWED_HOSTID")

step "discovery as this host ($me)"
out=$(nvme discover -t tcp -a "$TADDR" -s "$TPORT" 2>&1) || bad "nvme discover failed: $out"
if grep -q "subnqn: *$NQN_DENY\$" <<<"$out"; then bad "the discovery log shows $NQN_DENY to a host it refuses"
else ok "the discovery log hides $NQN_DENY from this host"; fi

step "connect as this host must be refused"
out=$(nvme connect -t tcp -a "$TADDR" -s "$TPORT" -n "$NQN_DENY" 2>&1); rc=$?
echo "$out" | sed 's/^/     nvme connect: /'
[ $rc != 0 ] && ok "nvme connect failed (exit $rc)" || bad "nvme connect to $NQN_DENY succeeded for a host not allowed"
sleep 0.5
log=$(dmesg | grep -E "Connect|not allowed|$NQN_DENY" | tail -5); echo "$log" | sed 's/^/     dmesg: /'
if grep -q "Connect for subsystem $NQN_DENY is not allowed, hostnqn: $me" <<<"$log"; then
  ok "the kernel reports: Connect for subsystem ... is not allowed (status Connect Invalid Host)"
else bad "the kernel does not report 'Connect for subsystem $NQN_DENY is not allowed' (wrong Connect status?)"; fi
ctrl_for "$NQN_DENY" >/dev/null && bad "a controller exists for $NQN_DENY after the refused connect" ||
  ok "no controller for $NQN_DENY"

step "the allowed host NQN ($ALLOWED_HOSTNQN)"
out=$(nvme discover -t tcp -a "$TADDR" -s "$TPORT" "${allowed[@]}" 2>&1) || bad "nvme discover (allowed host) failed: $out"
grep -q "subnqn: *$NQN_DENY\$" <<<"$out" && ok "the discovery log lists $NQN_DENY to the allowed host" ||
  bad "the discovery log hides $NQN_DENY from the allowed host"
if connect_ok allowed "$NQN_DENY" "${allowed[@]}"; then
  [ "$(cat "/sys/class/nvme/$CTRL/hostnqn")" = "$ALLOWED_HOSTNQN" ] && ok "$CTRL uses host NQN $ALLOWED_HOSTNQN" ||
    bad "$CTRL host NQN is $(cat "/sys/class/nvme/$CTRL/hostnqn")"
  dev=$(wait_ns "$NQN_DENY" 1 10) && ok "namespace 1 is $dev" || bad "no namespace on $NQN_DENY"
  [ -n "${dev:-}" ] && check "read 1 MiB from $dev" dd if="$dev" of=/dev/null bs=64k count=16 iflag=direct status=none
  disconnect_ok allowed "$NQN_DENY"
fi
dmesg_clean refused "Connect for subsystem $NQN_DENY is not allowed|Connect Invalid Host|failed to connect|Failed to connect"
finish
