# Sourced by every guest script (bash, as root, inside the keel-guest VM; no python/perl there).
# The host's run.sh writes /host/env.sh with the test parameters; see run.sh for their meaning.
#   MODE=keel     the target is keel-tgt on the host, reached as $TADDR=10.0.2.2
#   MODE=selftest the target is the kernel's nvmet inside this guest on 127.0.0.1, set up here
#                 with the same NQNs, sizes and access rules, to prove the scripts themselves.
# Results: "ok   ..." / "FAIL ..." lines on stdout, the kernel log followed into /host/dmesg.txt,
# exit status 0 only if every check passed. Host <-> guest hand-shakes are files in /host/sync.
# shellcheck disable=SC2015  # "A && ok || bad": ok and bad always return 0
# shellcheck source=/dev/null
set -uo pipefail
. /host/env.sh
SYNC=/host/sync
T0=$SECONDS
PASS=0 FAILS=0

say()  { echo "$*"; }
step() { echo; echo "== [$(( SECONDS - T0 ))s] $*"; }
ok()   { echo "ok   $*"; PASS=$((PASS + 1)); }
bad()  { echo "FAIL $*"; FAILS=$((FAILS + 1)); }
# check NAME CMD...: run CMD, show its output indented, count it as passed if it exits 0.
check() {
  local name=$1 out rc=0; shift
  out=$("$@" 2>&1) || rc=$?
  [ -n "$out" ] && printf '%s\n' "$out" | head -n "${CHECK_LINES:-8}" | sed 's/^/     /'
  if [ $rc = 0 ]; then ok "$name"; else bad "$name (exit $rc)"; fi
  return $rc
}
# die MSG: a failure after which this script cannot go on.
die() { bad "$*"; finish; }

# The kernel log, followed into the share so it survives even a guest the host kills.
dmesg -w > /host/dmesg.txt 2>&1 &
DMESG_PID=$!

# Kernel messages that never belong in a clean run (the full log is kept for review): kernel
# faults anywhere, and errors from the nvme / block layers.
KERNEL_FAULT='Call Trace|BUG|Oops|WARNING:|usercopy|invalid opcode|general protection|hung_task|blocked for more than'
NVME_BAD='I/O error|I/O Cmd|timeout|timed out|resetting controller|Reconnecting|reconnect|[Dd]igest|recv failed|failed|error|TermReq|terminat|Buffer I/O|invalid|Invalid'
# dmesg_clean NAME [ALLOWED_REGEX]: no unexpected nvme/kernel message so far.
dmesg_clean() {
  local hits
  hits=$(dmesg | awk -v f="$KERNEL_FAULT" -v b="$NVME_BAD" '$0 ~ f || ($0 ~ /nvme|blk|Buffer I.O/ && $0 ~ b)' |
    { if [ -n "${2:-}" ]; then grep -vE "$2"; else cat; fi; } || true)
  if [ -z "$hits" ]; then ok "${1}: kernel log has no error"; else
    bad "${1}: unexpected kernel messages:"; printf '%s\n' "$hits" | head -20 | sed 's/^/     /'; fi
}

finish() {
  step "done: $PASS passed, $FAILS failed in $(( SECONDS - T0 )) s"
  sleep 0.3; kill "$DMESG_PID" 2>/dev/null
  [ "$FAILS" = 0 ] && [ "$PASS" -gt 0 ] && { echo "GUEST-OK"; exit 0; }
  exit 1
}

# wait_file FILE SECS: wait for FILE (written by the host); 0 if it appeared.
wait_file() {
  local i; for ((i = 0; i < $2 * 10; i++)); do [ -e "$1" ] && return 0; sleep 0.1; done; return 1
}
signal() { : > "$SYNC/$1"; }          # tell the host something happened

# fio_t SECS ARGS...: fio that cannot hang the test (killed after SECS s, exit 124).
fio_t() { local s=$1; shift; timeout -k 10 "$s" fio --eta=never "$@"; }

# ctrl_for NQN: the first live controller (nvmeN) connected to NQN, or nothing.
ctrl_for() {
  local c; for c in /sys/class/nvme/nvme*; do
    [ -e "$c/subsysnqn" ] || continue
    [ "$(cat "$c/subsysnqn")" = "$1" ] && [ "$(cat "$c/state" 2>/dev/null)" = live ] && { basename "$c"; return 0; }
  done; return 1
}
# ns_dev NQN NSID: the block device (/dev/nvmeXnY, the multipath head) of namespace NSID of NQN.
ns_dev() {
  local b; for b in /sys/block/nvme*; do
    [[ $(basename "$b") =~ ^nvme[0-9]+n[0-9]+$ ]] || continue
    [ "$(cat "$b/nsid" 2>/dev/null)" = "$2" ] || continue
    [ "$(cat "$b/device/subsysnqn" 2>/dev/null)" = "$1" ] && { echo "/dev/$(basename "$b")"; return 0; }
  done; return 1
}
# wait_ns NQN NSID SECS: wait until the namespace's block device exists; prints it.
wait_ns() {
  local i d; for ((i = 0; i < $3 * 10; i++)); do
    d=$(ns_dev "$1" "$2") && [ -b "$d" ] && { echo "$d"; return 0; }; sleep 0.1; done; return 1
}
# wait_no_ns NQN NSID SECS: wait until the namespace is gone.
wait_no_ns() {
  local i; for ((i = 0; i < $3 * 10; i++)); do ns_dev "$1" "$2" >/dev/null || return 0; sleep 0.1; done; return 1
}
# wait_no_ctrl NQN SECS
wait_no_ctrl() {
  local i c found; for ((i = 0; i < $2 * 10; i++)); do
    found=; for c in /sys/class/nvme/nvme*; do
      [ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$1" ] && found=1; done
    [ -z "$found" ] && return 0; sleep 0.1; done; return 1
}

# connect_ok NAME NQN [nvme connect args]: connect, wait for the controller; sets CTRL.
# shellcheck disable=SC2034  # CTRL is for the calling script
connect_ok() {
  local name=$1 nqn=$2 i; shift 2
  check "$name: nvme connect -n $nqn $*" nvme connect -t tcp -a "$TADDR" -s "$TPORT" -n "$nqn" "$@" || return 1
  for ((i = 0; i < 100; i++)); do CTRL=$(ctrl_for "$nqn") && return 0; sleep 0.1; done
  bad "$name: no live controller for $nqn 10 s after connect"; return 1
}
# disconnect_ok NAME NQN: disconnect and check that no controller is left.
disconnect_ok() {
  local out
  out=$(nvme disconnect -n "$2" 2>&1); echo "     $out"
  if [[ $out == *"disconnected 1 controller"* ]]; then ok "$1: nvme disconnect"; else bad "$1: nvme disconnect"; fi
  if wait_no_ctrl "$2" 10; then ok "$1: no controller left for $2"; else bad "$1: a controller for $2 remains"; fi
}

# ---------------------------------------------------------------- selftest target (kernel nvmet)
NVMET=/sys/kernel/config/nvmet
# mkblk NAME MiB: a memory-backed null_blk disk with 512 B blocks (keeps data, unlike /dev/nullb0).
mkblk() {
  local d=/sys/kernel/config/nullb/$1
  mkdir "$d" && echo "$2" > "$d/size" && echo 512 > "$d/blocksize" && echo 1 > "$d/memory_backed" &&
    echo 1 > "$d/power" && udevadm settle 2>/dev/null; [ -b "/dev/$1" ]
}
nvmet_subsys() {  # NQN SERIAL ALLOW_ANY
  mkdir "$NVMET/subsystems/$1" && echo "$2" > "$NVMET/subsystems/$1/attr_serial" &&
    echo "$3" > "$NVMET/subsystems/$1/attr_allow_any_host"
}
nvmet_ns_add() {  # NQN NSID DEVICE
  local n=$NVMET/subsystems/$1/namespaces/$2
  mkdir "$n" && echo "$3" > "$n/device_path" && echo 1 > "$n/enable"
}
nvmet_ns_remove() {  # NQN NSID
  local n=$NVMET/subsystems/$1/namespaces/$2
  echo 0 > "$n/enable" && rmdir "$n"
}
# The host's run.sh forwards target-side actions (namespace add/remove) as files cmd-*; this
# background loop plays keel-rpc's part for nvmet and answers with cmd-*.done.
selftest_agent() {
  while :; do
    if [ -e "$SYNC/cmd-add-ns" ] && [ ! -e "$SYNC/cmd-add-ns.done" ]; then
      nvmet_ns_add "$NQN_HOT" "$HOT_NSID" /dev/kihot > "$SYNC/cmd-add-ns.out" 2>&1; : > "$SYNC/cmd-add-ns.done"; fi
    if [ -e "$SYNC/cmd-remove-ns" ] && [ ! -e "$SYNC/cmd-remove-ns.done" ]; then
      nvmet_ns_remove "$NQN_HOT" "$HOT_NSID" > "$SYNC/cmd-remove-ns.out" 2>&1; : > "$SYNC/cmd-remove-ns.done"; fi
    sleep 0.2
  done
}
# selftest_target: the same subsystems keel-tgt gets from run.sh, served by nvmet on 127.0.0.1.
selftest_target() {
  local s
  # Linux 6.1's nvmet-tcp receiving, over loopback, data the initiator sent from fio buffers in
  # transparent huge pages trips hardened usercopy ("kernel BUG at mm/usercopy.c:101", seen here
  # with bsrange up to 1 MiB). Only the in-guest loopback target has that path; keep THP off.
  echo never > /sys/kernel/mm/transparent_hugepage/enabled
  modprobe -a nvmet nvmet-tcp && modprobe null_blk nr_devices=0 || return 1
  mkblk kimain "$MAIN_MB" && mkblk kihot0 "$HOT_MB" && mkblk kihot "$HOT_MB" &&
    mkblk kideny 16 && mkblk kikato 64 || return 1
  nvmet_subsys "$NQN_MAIN" KEEL-KI-MAIN 1 && nvmet_ns_add "$NQN_MAIN" 1 /dev/kimain &&
    nvmet_subsys "$NQN_HOT" KEEL-KI-HOT 1 && nvmet_ns_add "$NQN_HOT" 1 /dev/kihot0 &&
    nvmet_subsys "$NQN_KATO" KEEL-KI-KATO 1 && nvmet_ns_add "$NQN_KATO" 1 /dev/kikato &&
    nvmet_subsys "$NQN_DENY" KEEL-KI-DENY 0 && nvmet_ns_add "$NQN_DENY" 1 /dev/kideny || return 1
  mkdir "$NVMET/hosts/$ALLOWED_HOSTNQN" &&
    ln -s "$NVMET/hosts/$ALLOWED_HOSTNQN" "$NVMET/subsystems/$NQN_DENY/allowed_hosts/$ALLOWED_HOSTNQN" || return 1
  mkdir "$NVMET/ports/1" && echo tcp > "$NVMET/ports/1/addr_trtype" && echo ipv4 > "$NVMET/ports/1/addr_adrfam" &&
    echo 127.0.0.1 > "$NVMET/ports/1/addr_traddr" && echo "$TPORT" > "$NVMET/ports/1/addr_trsvcid" || return 1
  for s in "$NQN_MAIN" "$NQN_HOT" "$NQN_KATO" "$NQN_DENY"; do
    ln -s "$NVMET/subsystems/$s" "$NVMET/ports/1/subsystems/$s" || return 1; done
  selftest_agent & disown
}

modprobe nvme-tcp || die "modprobe nvme-tcp"
if [ "$MODE" = selftest ]; then
  step "selftest: kernel nvmet on 127.0.0.1:$TPORT serves the test subsystems"
  selftest_target || die "selftest: cannot set up nvmet"
fi
