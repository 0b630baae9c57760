#!/usr/bin/env bash
# Keel's NVMe/TCP target against the Linux kernel initiator (Debian 12, Linux 6.1, nvme-cli, fio)
# in a QEMU guest driven by tests/guest/keel-guest. The guest reaches the host's
# 127.0.0.1:4420 as 10.0.2.2; all traffic stays on loopback / inside QEMU's user-mode network.
#
#   tests/kernel-initiator/run.sh [--selftest] [--only basic,hotplug,...] [--results DIR]
#
# Tests (guest scripts in guest/, each one fresh guest boot):
#   basic      discover / connect / list / id-ctrl / id-ns / get-log / fio verify mix / disconnect,
#              without and with header + data digests
#   refused    a host NQN not in the allowed list is refused (and hidden from discovery); an
#              allowed one connects
#   hotplug    namespace hot add and remove by RPC while connected, seen by the host via AEN
#   hostile    hostile.py attacks the target with raw TCP while the guest runs fio verify passes
#   kato-stop  the guest is frozen (SIGSTOP, sockets stay open) mid-fio: the target must drop
#              the controller after the 5 s keep-alive timeout
#   kato-kill  the guest is killed (SIGKILL, sockets close) mid-fio: no controller may remain
# --selftest runs the same guest scripts against the kernel's own nvmet target inside the guest
# (same NQNs, sizes and access rules) to prove the harness without keel-tgt; host-side target
# checks (RPCs) are skipped there and hostile.py runs against its built-in mock targets.
#
# Results: DIR (default target/kernel-initiator) holds, per test, guest.log (guest stdout and
# stderr), dmesg.txt (the guest kernel log), host.log, plus keel-tgt.log, keel.json, summary.txt.
# The last line is "kernel-initiator: N passed, M failed"; the exit status is 0 only if M is 0.
#
# Environment: KEEL_GUEST (the guest harness, default tests/guest/keel-guest; KINIT is also
# read), KI_PORT (4420), KI_TGT_ARGS ("-m 0x1 --interrupt-mode"), KI_TGT_BIN (use this keel-tgt
# instead of building one), CARGO_TARGET_DIR, KI_FIO_PCT (100: scales basic.sh's fio sizes),
# KI_HOSTILE_SECS (20), KI_KATO (5), KI_TIMEOUT (guest time limit, default 480 s for basic,
# 300 s for the others).
# shellcheck disable=SC2015  # "A && echo ok || echo FAIL": echo does not fail
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HARNESS=${KEEL_GUEST:-${KINIT:-$ROOT/tests/guest/keel-guest}}   # the guest harness (tests/guest/README.md)
PORT=${KI_PORT:-4420}
TGT_ARGS=${KI_TGT_ARGS:--m 0x1 --interrupt-mode}
HOSTILE_SECS=${KI_HOSTILE_SECS:-20}
KATO=${KI_KATO:-5}
GUEST_TIMEOUT=${KI_TIMEOUT:-}   # default: per test, below
ALL_TESTS="basic refused hotplug hostile kato-stop kato-kill"

MODE=keel ONLY='' RESULTS=${KI_RESULTS:-$ROOT/target/kernel-initiator}
while [ $# -gt 0 ]; do case $1 in
  --selftest) MODE=selftest; shift;;
  --only) ONLY=${2//,/ }; shift 2;;
  --results) RESULTS=$2; shift 2;;
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
  *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2;;
esac; done
TESTS=${ONLY:-$ALL_TESTS}
for t in $TESTS; do [[ " $ALL_TESTS " == *" $t "* ]] || { echo "run.sh: unknown test $t" >&2; exit 2; }; done

# The target's configuration (keel mode) and the guests' view of it (env.sh).
NQN_MAIN=nqn.2016-06.io.keel:kinit-main
NQN_HOT=nqn.2016-06.io.keel:kinit-hotplug
NQN_DENY=nqn.2016-06.io.keel:kinit-restricted
NQN_KATO=nqn.2016-06.io.keel:kinit-kato
ALLOWED_HOSTNQN=nqn.2016-06.io.keel:kinit-allowed-host
ALLOWED_HOSTID=6b656c00-0000-4000-8000-000000000001
HOSTILE_HOSTNQN=nqn.2016-06.io.keel:kinit-hostile   # hostile.py's Connects
MAIN_MB=256 HOT_MB=32 HOT_NSID=2

T_START=$SECONDS
PASSED=0 FAILED=0 SUMMARY=()
log() { echo "kernel-initiator: $*"; }
record() {  # NAME ok|FAIL SECONDS [NOTE]
  if [ "$2" = ok ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
  SUMMARY+=("$(printf '%-4s %-10s %4ss  %s' "$2" "$1" "$3" "${4:-}")")
  echo "$(printf '%-4s' "$2") $1 ($3 s)${4:+: $4}"
}
finish() {
  echo; log "summary (mode $MODE, results in $RESULTS)"
  printf '  %s\n' "${SUMMARY[@]}" | tee "$RESULTS/summary.txt"
  echo "kernel-initiator: $PASSED passed, $FAILED failed ($((SECONDS - T_START)) s)" | tee -a "$RESULTS/summary.txt"
  [ "$FAILED" = 0 ] && [ "$PASSED" -gt 0 ]; exit $?
}
fatal() { log "FAIL: $*"; record setup FAIL 0 "$*"; finish; }

# ---------------------------------------------------------------- target control (keel mode)
TGT_PID='' SOCK='' KEEL_TGT='' KEEL_RPC=''
rpc() { "$KEEL_RPC" -s "$SOCK" -t 10 call "$@"; }
write_config() {  # SPDK-format JSON config for keel-tgt -c
  local listen='"listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "'$PORT'"}'
  local sub nqn serial bdev any; local subs=()
  for sub in "$NQN_MAIN KEELKI0001 KiMain true" "$NQN_HOT KEELKI0002 KiHot0 true" \
             "$NQN_KATO KEELKI0003 KiKato true" "$NQN_DENY KEELKI0004 KiDeny false"; do
    read -r nqn serial bdev any <<<"$sub"
    subs+=("{\"method\": \"nvmf_create_subsystem\", \"params\": {\"nqn\": \"$nqn\", \"allow_any_host\": $any, \"serial_number\": \"$serial\"}}"
           "{\"method\": \"nvmf_subsystem_add_listener\", \"params\": {\"nqn\": \"$nqn\", $listen}}"
           "{\"method\": \"nvmf_subsystem_add_ns\", \"params\": {\"nqn\": \"$nqn\", \"namespace\": {\"bdev_name\": \"$bdev\"}}}")
  done
  subs+=("{\"method\": \"nvmf_subsystem_add_host\", \"params\": {\"nqn\": \"$NQN_DENY\", \"host\": \"$ALLOWED_HOSTNQN\"}}")
  local IFS=,
  cat <<EOF
{"subsystems": [
 {"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create", "params": {"name": "KiMain", "num_blocks": $((MAIN_MB * 2048)), "block_size": 512}},
  {"method": "bdev_malloc_create", "params": {"name": "KiHot0", "num_blocks": $((HOT_MB * 2048)), "block_size": 512}},
  {"method": "bdev_malloc_create", "params": {"name": "KiHot1", "num_blocks": $((HOT_MB * 2048)), "block_size": 512}},
  {"method": "bdev_malloc_create", "params": {"name": "KiKato", "num_blocks": $((64 * 2048)), "block_size": 512}},
  {"method": "bdev_malloc_create", "params": {"name": "KiDeny", "num_blocks": $((16 * 2048)), "block_size": 512}}]},
 {"subsystem": "nvmf", "config": [
  {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
  ${subs[*]}]}]}
EOF
}
port_busy() { [ -n "$(ss -Hltn "sport = :$PORT" 2>/dev/null)" ]; }
start_target() {
  port_busy && { log "something already listens on 127.0.0.1:$PORT:"; ss -ltnp "sport = :$PORT"; return 1; }
  rm -f "$SOCK"
  echo "== $(date +%T) $KEEL_TGT $TGT_ARGS -r $SOCK -c $RESULTS/keel.json" >> "$RESULTS/keel-tgt.log"
  # shellcheck disable=SC2086
  "$KEEL_TGT" $TGT_ARGS -r "$SOCK" -c "$RESULTS/keel.json" >> "$RESULTS/keel-tgt.log" 2>&1 &
  TGT_PID=$!
  local i out
  for ((i = 0; i < 300; i++)); do
    kill -0 "$TGT_PID" 2>/dev/null || { log "keel-tgt exited during start-up:"; tail -20 "$RESULTS/keel-tgt.log"; TGT_PID=; return 1; }
    if [ -S "$SOCK" ] && out=$(rpc nvmf_get_subsystems 2>&1) && port_busy; then
      grep -q "$NQN_DENY" <<<"$out" && return 0
      log "keel-tgt is up but nvmf_get_subsystems lacks the configured subsystems:"; echo "$out" | head -30; return 1
    fi
    sleep 0.1
  done
  log "keel-tgt does not serve nvmf_get_subsystems and TCP $PORT after 30 s (last answer: ${out:-none})"
  tail -20 "$RESULTS/keel-tgt.log"; return 1
}
# stop_target: SIGTERM, then wait; 0 only if it exited by itself with status 0.
stop_target() {
  [ -n "$TGT_PID" ] || return 0
  local i rc; kill -TERM "$TGT_PID" 2>/dev/null
  for ((i = 0; i < 150; i++)); do kill -0 "$TGT_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$TGT_PID" 2>/dev/null; then
    kill -KILL "$TGT_PID"; wait "$TGT_PID" 2>/dev/null; TGT_PID=; log "keel-tgt ignored SIGTERM for 15 s (killed)"; return 1
  fi
  wait "$TGT_PID"; rc=$?; TGT_PID=
  [ $rc = 0 ] || log "keel-tgt exited with status $rc after SIGTERM"
  return $rc
}
# controllers NQN [HOSTNQN]: how many controllers keel-tgt reports (for one host NQN if given);
# qpairs NQN: how many queue pairs.
controllers() { count_of nvmf_subsystem_get_controllers "$@"; }
qpairs() { count_of nvmf_subsystem_get_qpairs "$@"; }
count_of() {
  rpc "$1" "{\"nqn\": \"$2\"}" | python3 -c '
import json, sys
c = json.load(sys.stdin)
print(len([x for x in c if len(sys.argv) < 2 or x.get("hostnqn") == sys.argv[1]]))' ${3:+"$3"}
}
# wait_controllers NQN WANT SECS [HOSTNQN]: poll until the count is WANT; prints the seconds it took.
wait_controllers() {
  local t0=$SECONDS n i
  for ((i = 0; i < $3 * 5; i++)); do
    n=$(controllers "$1" ${4:+"$4"}) && [ "$n" = "$2" ] && { echo $((SECONDS - t0)); return 0; }
    sleep 0.2; done
  echo "still ${n:-unknown} after $3 s"; return 1
}

# ---------------------------------------------------------------- guests
KPID=
# shellcheck disable=SC2317  # called from the trap
cleanup() {  # on exit or interrupt: the running guest (its QEMU, then the harness), then keel-tgt
  local q
  if [ -n "$KPID" ]; then q=$(qemu_of "$KPID") && kill -KILL "$q" 2>/dev/null; kill "$KPID" 2>/dev/null; fi
  [ -n "$TGT_PID" ] && kill -KILL "$TGT_PID" 2>/dev/null
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# new_share TEST: a fresh share dir with the guest scripts and env.sh; sets SHARE.
new_share() {
  SHARE=$RESULTS/$1; rm -rf "$SHARE"; mkdir -p "$SHARE/sync"; cp -r "$HERE/guest" "$SHARE/"
  local taddr=10.0.2.2; [ "$MODE" = selftest ] && taddr=127.0.0.1
  cat > "$SHARE/env.sh" <<EOF
MODE=$MODE TADDR=$taddr TPORT=$PORT
NQN_MAIN=$NQN_MAIN NQN_HOT=$NQN_HOT NQN_DENY=$NQN_DENY NQN_KATO=$NQN_KATO
ALLOWED_HOSTNQN=$ALLOWED_HOSTNQN ALLOWED_HOSTID=$ALLOWED_HOSTID
MAIN_MB=$MAIN_MB HOT_MB=$HOT_MB HOT_NSID=$HOT_NSID KATO_SECS=$KATO FIO_PCT=${KI_FIO_PCT:-100}
EOF
}
# guest_bg SECS SCRIPT ARGS...: boot a guest running guest/SCRIPT (killed after SECS s), its output
# into $SHARE/guest.log; sets KPID.
guest_bg() {
  local secs=${GUEST_TIMEOUT:-$1}; shift
  "$HARNESS" run --share "$SHARE" --timeout "$secs" -- "bash /host/guest/$*" > "$SHARE/guest.log" 2>&1 &
  KPID=$!
}
guest_wait() {  # wait for KPID; returns the guest's status
  local rc; wait "$KPID"; rc=$?; KPID=
  grep -E '^(ok|FAIL|==) |^     \(' "$SHARE/guest.log" | sed 's/^/  guest: /'
  return $rc
}
guest_ok() { grep -q '^GUEST-OK$' "$SHARE/guest.log"; }
# wait_sync FILE SECS: wait for the guest's signal file while the guest still runs.
wait_sync() {
  local i; for ((i = 0; i < $2 * 10; i++)); do
    [ -e "$SHARE/sync/$1" ] && return 0; kill -0 "$KPID" 2>/dev/null || return 1; sleep 0.1; done; return 1
}
host_wait() {  # FILE SECS: like wait_sync, for the hotplug agent (no guest pid check)
  local i; for ((i = 0; i < $2 * 10; i++)); do [ -e "$SHARE/sync/$1" ] && return 0; sleep 0.1; done; return 1
}
# guest_conns QEMU_PID: that QEMU's established TCP connections to the target port.
guest_conns() { ss -Htnp state established "( dport = :$PORT )" | grep -c "pid=$1,"; }
# qemu_of PID: the QEMU process under a harness run (keel-guest -> timeout -> qemu-system-x86_64).
qemu_of() {
  local q=("$1") p c
  while [ ${#q[@]} -gt 0 ]; do
    p=${q[0]}; q=("${q[@]:1}")
    for c in $(ps -o pid= --ppid "$p"); do
      [[ $(ps -o comm= -p "$c") == qemu-system* ]] && { echo "$c"; return 0; }; q+=("$c"); done
  done; return 1
}

# Target-side namespace actions for hotplug: keel-rpc, or (selftest) forwarded to the guest's agent.
tgt_ns() {  # add|remove
  if [ "$MODE" = keel ]; then
    if [ "$1" = add ]; then rpc nvmf_subsystem_add_ns "{\"nqn\": \"$NQN_HOT\", \"namespace\": {\"bdev_name\": \"KiHot1\", \"nsid\": $HOT_NSID}}"
    else rpc nvmf_subsystem_remove_ns "{\"nqn\": \"$NQN_HOT\", \"nsid\": $HOT_NSID}"; fi
  else
    : > "$SHARE/sync/cmd-$1-ns"
    host_wait "cmd-$1-ns.done" 30 || { echo "the guest's nvmet agent did not answer"; return 1; }
    [ ! -s "$SHARE/sync/cmd-$1-ns.out" ] || { cat "$SHARE/sync/cmd-$1-ns.out"; return 1; }
  fi
}
hotplug_agent() {
  local out
  host_wait ready-add 300 || return
  if out=$(tgt_ns add 2>&1); then echo "host: namespace $HOT_NSID added"; : > "$SHARE/sync/added"
  else echo "host: add failed: $out"; printf '%s\n' "$out" > "$SHARE/sync/add-failed"; return; fi
  host_wait ready-remove 300 || return
  if out=$(tgt_ns remove 2>&1); then echo "host: namespace $HOT_NSID removed"; : > "$SHARE/sync/removed"
  else echo "host: remove failed: $out"; printf '%s\n' "$out" > "$SHARE/sync/remove-failed"; fi
}

# ---------------------------------------------------------------- tests: each prints why it failed, returns 0/1
t_basic()   { guest_bg 480 basic.sh plain digest; guest_wait && guest_ok; }
t_refused() { guest_bg 300 refused.sh; guest_wait && guest_ok; }
t_hotplug() {
  local apid rc=0
  hotplug_agent > "$SHARE/host.log" 2>&1 & apid=$!
  guest_bg 300 hotplug.sh; guest_wait && guest_ok || rc=1
  kill "$apid" 2>/dev/null; wait "$apid" 2>/dev/null
  sed 's/^/  /' "$SHARE/host.log"
  return $rc
}
t_hostile() {
  local hrc grc=0 took
  guest_bg 300 hostile-fio.sh
  wait_sync fio-running 180 || { echo "  the guest never started fio"; guest_wait; return 1; }
  if [ "$MODE" = keel ]; then
    python3 "$HERE/hostile.py" --host 127.0.0.1 --port "$PORT" --nqn "$NQN_MAIN" --duration "$HOSTILE_SECS" > "$SHARE/hostile.log" 2>&1
  else
    python3 "$HERE/hostile.py" --selftest > "$SHARE/hostile.log" 2>&1
  fi
  hrc=$?
  : > "$SHARE/sync/hostile-done"
  grep -E '^(FAIL|hostile)' "$SHARE/hostile.log" | sed 's/^/  hostile.py: /'
  guest_wait && guest_ok || grc=1
  [ $hrc = 0 ] || echo "  hostile.py failed (exit $hrc, see $SHARE/hostile.log)"
  if [ "$MODE" = keel ]; then
    if took=$(wait_controllers "$NQN_MAIN" 0 15 "$HOSTILE_HOSTNQN"); then echo "  ok: no controller of $HOSTILE_HOSTNQN left (${took} s)"
    else echo "  FAIL: controllers of $HOSTILE_HOSTNQN remain on $NQN_MAIN: $took"; grc=1; fi
  fi
  [ $hrc = 0 ] && [ $grc = 0 ]
}
t_kato() {  # stop|kill
  local how=$1 q n i took rc=0 grc
  guest_bg 300 kato.sh
  wait_sync fio-running 180 || { echo "  the guest never got fio running"; guest_wait; return 1; }
  if [ "$MODE" = keel ]; then
    n=$(controllers "$NQN_KATO") || { echo "  FAIL: nvmf_subsystem_get_controllers $NQN_KATO failed"; rc=1; }
    [ "${n:-0}" -ge 1 ] && echo "  ok: keel-tgt has $n controller(s) on $NQN_KATO before the $how" ||
      { echo "  FAIL: keel-tgt lists no controller on $NQN_KATO while the guest runs I/O"; rc=1; }
  fi
  q=$(qemu_of "$KPID") || { echo "  FAIL: cannot find the guest's QEMU process"; guest_wait; return 1; }
  sleep 1   # mid-fio
  if [ "$how" = stop ]; then
    n=$(guest_conns "$q"); echo "  host: the guest has $n TCP connection(s) to port $PORT"
    [ "$MODE" = keel ] && [ "$n" = 0 ] && { echo "  FAIL: ss -p shows no connection of QEMU $q"; rc=1; }
    kill -STOP "$q"; echo "  host: QEMU $q frozen (SIGSTOP): its TCP connections stay open, silent"
  else
    kill -KILL "$q"; echo "  host: QEMU $q killed (SIGKILL): its TCP connections close"
  fi
  if [ "$MODE" = keel ]; then
    if took=$(wait_controllers "$NQN_KATO" 0 $((KATO + 15))); then
      echo "  ok: no controller on $NQN_KATO ${took} s after the $how (keep-alive timeout $KATO s)"
    else echo "  FAIL: controller(s) on $NQN_KATO after the $how: $took"; rc=1; fi
    n=$(qpairs "$NQN_KATO") && [ "$n" = 0 ] && echo "  ok: no queue pair left on $NQN_KATO" ||
      { echo "  FAIL: nvmf_subsystem_get_qpairs $NQN_KATO lists ${n:-?} queue pairs"; rc=1; }
    if [ "$how" = stop ]; then   # the frozen QEMU cannot close its sockets: keel-tgt must have
      for ((i = 0; i < 25; i++)); do n=$(guest_conns "$q"); [ "$n" = 0 ] && break; sleep 0.2; done
      [ "$n" = 0 ] && echo "  ok: keel-tgt closed the frozen guest's TCP connections" ||
        { echo "  FAIL: $n TCP connection(s) of the frozen guest still established"; rc=1; }
    fi
  else
    echo "  (selftest: the target died with the guest; the target-side check runs against keel-tgt only)"
  fi
  [ "$how" = stop ] && kill -KILL "$q" 2>/dev/null
  guest_wait; grc=$?
  # the harness reports a guest whose QEMU was killed as 125 (no status) or, if it was killed at
  # the time limit, 124
  [ $grc = 124 ] || [ $grc = 125 ] || { echo "  FAIL: the guest harness exited $grc; the guest was not killed mid-run"; rc=1; }
  grep -q '^GUEST-FIO-RUNNING$' "$SHARE/guest.log" && ! grep -q '^FAIL' "$SHARE/guest.log" ||
    { echo "  FAIL: the guest reported a failure before the $how"; rc=1; }
  return $rc
}

# ---------------------------------------------------------------- main
rm -rf "$RESULTS"; mkdir -p "$RESULTS"; RESULTS=$(cd "$RESULTS" && pwd)
log "mode $MODE, tests: $TESTS; results in $RESULTS"
[ -x "$HARNESS" ] || fatal "no guest harness at $HARNESS (set KEEL_GUEST)"
command -v python3 >/dev/null || fatal "python3 is needed on the host (hostile.py, RPC output)"
t=$SECONDS
"$HARNESS" build > "$RESULTS/guest-build.log" 2>&1 || { cat "$RESULTS/guest-build.log"; fatal "guest build failed ($HARNESS build)"; }
log "guest build: $((SECONDS - t)) s ($(tail -1 "$RESULTS/guest-build.log"))"

if [ "$MODE" = keel ]; then
  if [ -n "${KI_TGT_BIN:-}" ]; then
    KEEL_TGT=$KI_TGT_BIN; KEEL_RPC=$(dirname "$KI_TGT_BIN")/keel-rpc
  else
    t=$SECONDS
    (cd "$ROOT" && cargo build --release -p keel-tgt) > "$RESULTS/cargo-build.log" 2>&1 ||
      { tail -30 "$RESULTS/cargo-build.log"; fatal "cargo build --release -p keel-tgt failed"; }
    log "cargo build --release -p keel-tgt: $((SECONDS - t)) s"
    KEEL_TGT=${CARGO_TARGET_DIR:-$ROOT/target}/release/keel-tgt; KEEL_RPC=$(dirname "$KEEL_TGT")/keel-rpc
  fi
  [ -x "$KEEL_TGT" ] && [ -x "$KEEL_RPC" ] || fatal "no keel-tgt / keel-rpc binaries next to $KEEL_TGT"
  SOCK=$RESULTS/keel.sock
  write_config > "$RESULTS/keel.json"
  python3 -m json.tool "$RESULTS/keel.json" > /dev/null || fatal "run.sh wrote an invalid keel.json"
  start_target || fatal "keel-tgt does not serve the NVMe-oF configuration (see $RESULTS/keel-tgt.log)"
  log "keel-tgt $TGT_ARGS (pid $TGT_PID) serves $NQN_MAIN etc. on 127.0.0.1:$PORT"
fi

for t in $TESTS; do
  echo; log "=== $t"
  new_share "$t"; t0=$SECONDS; note=
  case $t in
    basic) t_basic;; refused) t_refused;; hotplug) t_hotplug;; hostile) t_hostile;;
    kato-stop) t_kato stop;; kato-kill) t_kato kill;;
  esac
  rc=$?
  if [ "$MODE" = keel ] && ! kill -0 "$TGT_PID" 2>/dev/null; then
    rc=1; note="keel-tgt died during this test"; log "FAIL: $note; its log ends with:"; tail -20 "$RESULTS/keel-tgt.log"
    wait "$TGT_PID" 2>/dev/null; TGT_PID=
    start_target || { record "$t" FAIL $((SECONDS - t0)) "$note"; fatal "cannot restart keel-tgt"; }
  fi
  if [ $rc = 0 ]; then record "$t" ok $((SECONDS - t0))
  else record "$t" FAIL $((SECONDS - t0)) "${note:-see $SHARE/guest.log}"; fi
done

if [ "$MODE" = keel ]; then
  echo; t0=$SECONDS
  if stop_target; then record shutdown ok $((SECONDS - t0)) "keel-tgt exited 0 on SIGTERM"
  else record shutdown FAIL $((SECONDS - t0)) "keel-tgt did not exit cleanly on SIGTERM"; fi
  [ -S "$SOCK" ] && { record socket FAIL 0 "keel-tgt left its RPC socket behind"; }
fi
finish
