#!/usr/bin/env bash
# raid5-rebuild: a raid5 bdev over three malloc members exported by keel-tgt over NVMe/TCP, used by
# the Linux kernel initiator (QEMU guest via tests/guest/keel-guest) under verifying fio while a member is removed,
# a fresh one added and rebuilt; then another original member is removed so that the data must
# come back through the rebuilt member. Self-contained: starts its own keel-tgt on KI_PORT.
#
#   tests/kernel-initiator/raid5-rebuild.sh [--results DIR] [--no-raid]
#
# --no-raid exports a malloc bdev instead and skips the member changes: proves the guest's part
# and the harness without RAID.
#
# Guest: fio writes region 1 (sequential, crc32c verify headers); then verifying randrw passes on
# region 2 run back to back. Host, meanwhile: bdev_raid_remove_base_bdev of member 1 (array must
# stay online, degraded), bdev_raid_add_base_bdev of a fresh malloc, then bdev_raid_get_bdevs is
# polled until the rebuild is done (progress is printed). Guest: one more pass, region 1 verified
# (fio --verify_only). Host: member 0 removed (degraded again: member 0's strips are rebuilt from
# parity and the rebuilt member). Guest: region 1 verified again, one more degraded pass.
# Every fio run must end with zero errors and a clean verify; the guest's kernel log must show no
# I/O error, reset or reconnect.
# Results in DIR (default target/kernel-initiator/raid5-rebuild): guest.log, dmesg.txt, host.log,
# keel-tgt.log. Last line "raid5-rebuild: PASS" or "raid5-rebuild: FAIL ..."; exit 0 on PASS.
# Environment: KEEL_GUEST (guest harness, default tests/guest/keel-guest), KI_PORT (4420),
# KI_TGT_ARGS ("-m 0x1 --interrupt-mode"), KI_TGT_BIN (use this
# keel-tgt; keel-rpc must be beside it), KI_TIMEOUT (guest time limit, 420 s), KI_RAID_SB
# (superblock: false), KI_REBUILD_SECS (rebuild time limit, 180), KI_REBUILD_MBPS (rebuild rate
# limit set with bdev_raid_set_options, 16 MB/s: about 4 s for a 64 MiB member).
# shellcheck disable=SC2015  # "A && ok || bad": ok and bad always return 0
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HARNESS=${KEEL_GUEST:-${KINIT:-$ROOT/tests/guest/keel-guest}}   # the guest harness (tests/guest/README.md)
PORT=${KI_PORT:-4420}
TGT_ARGS=${KI_TGT_ARGS:--m 0x1 --interrupt-mode}
GUEST_TIMEOUT=${KI_TIMEOUT:-420}
REBUILD_SECS=${KI_REBUILD_SECS:-180}
REBUILD_MBPS=${KI_REBUILD_MBPS:-16}
SB=${KI_RAID_SB:-false}
RESULTS=${KI_RESULTS:-$ROOT/target/kernel-initiator}/raid5-rebuild
NQN=nqn.2016-06.io.keel:kinit-raid5
RAID=KiRaid5 MEMBER_MIB=64 STRIP_KB=64 RAIDED=1
while [ $# -gt 0 ]; do case $1 in
  --results) RESULTS=$2; shift 2;;
  --no-raid) RAIDED=0; shift;;
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
  *) echo "raid5-rebuild: unknown argument $1" >&2; exit 2;;
esac; done

log()  { echo "raid5-rebuild: $*"; }
hok()  { echo "ok   host: $*"; }
hbad() { echo "FAIL host: $*"; }
fatal() { log "FAIL: $*"; exit 1; }

# keel-tgt and the guest: built, started, and cleaned up on exit
# shellcheck source=standalone-target.sh
source "$HERE/standalone-target.sh"

setup() {
  local m bdev=$RAID
  for m in KiR5m0 KiR5m1 KiR5m2 KiR5spare; do
    rpc bdev_malloc_create "{\"name\": \"$m\", \"num_blocks\": $((MEMBER_MIB * 256)), \"block_size\": 4096}" >/dev/null || return 1
  done
  if [ "$RAIDED" = 1 ]; then
    rpc bdev_raid_create "{\"name\": \"$RAID\", \"raid_level\": \"raid5\", \"base_bdevs\": [\"KiR5m0\", \"KiR5m1\", \"KiR5m2\"], \"strip_size_kb\": $STRIP_KB, \"superblock\": $SB}" >/dev/null ||
      return 1
  else bdev=KiR5m0; fi
  rpc nvmf_create_transport '{"trtype": "TCP"}' >/dev/null &&
  rpc nvmf_create_subsystem "{\"nqn\": \"$NQN\", \"allow_any_host\": true, \"serial_number\": \"KEELKIRAID5\"}" >/dev/null &&
  rpc nvmf_subsystem_add_ns "{\"nqn\": \"$NQN\", \"namespace\": {\"bdev_name\": \"$bdev\"}}" >/dev/null &&
  rpc nvmf_subsystem_add_listener "{\"nqn\": \"$NQN\", \"listen_address\": {\"trtype\": \"TCP\", \"adrfam\": \"IPv4\", \"traddr\": \"127.0.0.1\", \"trsvcid\": \"$PORT\"}}" >/dev/null &&
  if [ "$RAIDED" = 1 ]; then
    log "raid5 $RAID over KiR5m0..2 ($MEMBER_MIB MiB malloc each, strip $STRIP_KB KiB, superblock $SB; spare KiR5spare) exported as $NQN on port $PORT"
  else log "--no-raid: malloc KiR5m0 exported as $NQN on port $PORT"; fi
}
setup > "$RESULTS/setup.log" 2>&1 || { cat "$RESULTS/setup.log"; fatal "target setup by RPC failed (raid RPCs missing?)"; }
cat "$RESULTS/setup.log"

raid_json() { rpc bdev_raid_get_bdevs '{"category": "all"}' | jq -e -c ".[] | select(.name == \"$RAID\")"; }
# raid_state: "STATE DISCOVERED/TOTAL PROCESS" for the log.
raid_state() {
  raid_json | jq -r '"\(.state) \(.num_base_bdevs_discovered)/\(.num_base_bdevs) members" +
    (if .process then " \(.process.type // "process") to \(.process.target // "?"): \(.process.progress.percent // "?")%" else "" end) +
    " [" + ([.base_bdevs_list[]? | "\(.name // "-")\(if .is_configured then "" else "(unconfigured)" end)"] | join(" ")) + "]"'
}
# degraded_ok NAME: online with two of three members.
degraded_ok() {
  local j
  j=$(raid_json) || { hbad "$1: $RAID missing from bdev_raid_get_bdevs"; return; }
  if [ "$(jq -r '"\(.state) \(.num_base_bdevs_discovered)"' <<<"$j")" = "online 2" ]; then hok "$1: $RAID online, degraded ($(raid_state))"
  else hbad "$1: $RAID is $(raid_state), expected online with 2 of 3 members"; fi
}

# ---------------------------------------------------------------- the guest's part
SHARE=$RESULTS
mkdir -p "$SHARE/guest"
cp "$HERE/guest/lib.sh" "$SHARE/guest/"
echo "MODE=keel TADDR=10.0.2.2 TPORT=$PORT NQN=$NQN RAIDED=$RAIDED" > "$SHARE/env.sh"
cat > "$SHARE/guest/raid5-rebuild.sh" <<'GUEST'
#!/bin/bash
# Guest half of raid5-rebuild (written by tests/kernel-initiator/raid5-rebuild.sh).
# shellcheck disable=SC2015
. "$(dirname "$0")/lib.sh"
MAX_SECS=${MAX_SECS:-300}
# fio_ok NAME ARGS...: a fio run that must end with status 0, no error and no verify failure.
fio_ok() {
  local name=$1 out rc t=$SECONDS; shift
  out=$(fio_t 180 --name="$name" --filename="$dev" --ioengine=io_uring --direct=1 --iodepth=16 \
    --verify=crc32c --verify_fatal=1 "$@" 2>&1); rc=$?
  if [ $rc = 0 ] && ! grep -qE 'err= *[1-9]|verify: bad|verify failed|[Ii]/[Oo] error' <<<"$out"; then
    ok "$name clean ($((SECONDS - t)) s$(grep -oE '(READ|WRITE): bw=[0-9.]+[KMG]i?B/s' <<<"$out" | sed 's/^/, /' | tr -d '\n'))"
  else bad "$name (exit $rc)"; echo "$out" | tail -25 | sed 's/^/     /'; fi
}
step "connect to $NQN"
connect_ok raid5 "$NQN" || finish
dev=$(wait_ns "$NQN" 1 10) || die "no namespace 1 on $NQN"
mib=$(( $(cat "/sys/block/$(basename "$dev")/size") / 2048 ))
r1=$(( mib * 2 / 5 ))            # region 1: written first, verified after the rebuild
r2o=$(( r1 + 4 )) r2=$(( (mib - r1 - 8) / 4 ))
say "     $dev: $mib MiB; region 1 [0, ${r1} MiB), region 2 passes of $r2 MiB from $r2o MiB"
region1=(--rw=write --bs=64k --offset=0 --size="${r1}m")
cntlid=$(cat "/sys/class/nvme/$CTRL/cntlid")

step "write region 1"
fio_ok region1-write "${region1[@]}" --do_verify=1
signal fio-running
step "verifying passes on region 2 while the host removes, adds and rebuilds a member"
n=0 t0=$SECONDS
while :; do
  n=$((n + 1))
  [ -e "$SYNC/removed" ] && tag=" (member removed$([ -e "$SYNC/added" ] && echo ", spare added"))" || tag=
  fio_ok "region2-pass-$n$tag" --rw=randrw --bsrange=4k-256k --offset=$(( r2o + (n % 4) * r2 ))m --size="${r2}m" \
    --verify_backlog=16
  [ -e "$SYNC/rebuilt" ] && break
  [ $((SECONDS - t0)) -gt "$MAX_SECS" ] && { bad "the host did not finish the rebuild within $MAX_SECS s"; break; }
done
[ "$RAIDED" = 0 ] || [ $n -ge 2 ] && ok "$n passes ran across the member changes" || bad "only $n pass ran: the member changes did not overlap the I/O"
fio_ok "region2-after-rebuild" --rw=randrw --bsrange=4k-256k --offset="${r2o}m" --size="${r2}m" --verify_backlog=16
echo 3 > /proc/sys/vm/drop_caches
fio_ok region1-verify-after-rebuild "${region1[@]}" --verify_only
signal verified-rebuilt
wait_file "$SYNC/second-removed" 60 || bad "the host did not remove the second member"
step "degraded again: another original member removed"
fio_ok region1-verify-through-rebuilt-member "${region1[@]}" --verify_only
fio_ok "region2-degraded" --rw=randrw --bsrange=4k-256k --offset="${r2o}m" --size="${r2}m" --verify_backlog=16
[ "$(cat "/sys/class/nvme/$CTRL/state")" = live ] && ok "$CTRL still live" || bad "$CTRL is $(cat "/sys/class/nvme/$CTRL/state")"
[ "$(cat "/sys/class/nvme/$CTRL/cntlid")" = "$cntlid" ] && ok "same controller ($cntlid): no reset or reconnect" ||
  bad "controller id changed from $cntlid: the host reconnected"
disconnect_ok raid5 "$NQN"
dmesg_clean raid5-rebuild
finish
GUEST

# ---------------------------------------------------------------- host agent and run
wait_sync() {  # FILE: wait for the guest's signal while the guest runs
  while [ ! -e "$SHARE/sync/$1" ]; do kill -0 "$KPID" 2>/dev/null || return 1; sleep 0.2; done
}
agent() {
  local t0 last='' s out seen=
  wait_sync fio-running || { hbad "the guest never started the passes"; return; }
  if [ "$RAIDED" = 0 ]; then
    sleep 4; : > "$SHARE/sync/removed"; sleep 4; : > "$SHARE/sync/added"; sleep 4; : > "$SHARE/sync/rebuilt"
    wait_sync verified-rebuilt; : > "$SHARE/sync/second-removed"; return
  fi
  log "before: $(raid_state)"
  sleep 2
  if out=$(rpc bdev_raid_remove_base_bdev '{"name": "KiR5m1"}' 2>&1); then hok "bdev_raid_remove_base_bdev KiR5m1 under I/O"
  else hbad "bdev_raid_remove_base_bdev KiR5m1: $out"; fi
  : > "$SHARE/sync/removed"
  sleep 0.5; degraded_ok "after removing KiR5m1"
  sleep 3
  # Slow the rebuild down (64 MiB at REBUILD_MBPS) so that it surely runs under the guest's I/O.
  if out=$(rpc bdev_raid_set_options "{\"process_max_bandwidth_mb_sec\": $REBUILD_MBPS}" 2>&1); then
    hok "bdev_raid_set_options process_max_bandwidth_mb_sec $REBUILD_MBPS"
  else hbad "bdev_raid_set_options: $out"; fi
  if out=$(rpc bdev_raid_add_base_bdev "{\"raid_bdev\": \"$RAID\", \"base_bdev\": \"KiR5spare\"}" 2>&1); then
    hok "bdev_raid_add_base_bdev $RAID KiR5spare under I/O"
  else hbad "bdev_raid_add_base_bdev: $out"; fi
  : > "$SHARE/sync/added"
  t0=$SECONDS
  while :; do
    s=$(raid_state) || s="(bdev_raid_get_bdevs failed)"
    [ "$s" != "$last" ] && log "  $((SECONDS - t0)) s: $s"; last=$s
    [[ $s == *"rebuild to KiR5spare"* ]] && seen=1
    if raid_json | jq -e '.state == "online" and .num_base_bdevs_discovered == 3 and (.process | not) and
         ([.base_bdevs_list[]? | select(.name == "KiR5spare" and .is_configured)] | length == 1)' >/dev/null 2>&1; then
      hok "rebuild onto KiR5spare finished in $((SECONDS - t0)) s: $(raid_state)"
      [ -n "$seen" ] && hok "bdev_raid_get_bdevs showed the rebuild's progress" ||
        hbad "bdev_raid_get_bdevs never showed a rebuild process for KiR5spare"
      break
    fi
    [ $((SECONDS - t0)) -gt "$REBUILD_SECS" ] && { hbad "rebuild not finished after $REBUILD_SECS s: $s"; break; }
    sleep 0.5
  done
  : > "$SHARE/sync/rebuilt"
  wait_sync verified-rebuilt || { hbad "the guest did not verify after the rebuild"; return; }
  if out=$(rpc bdev_raid_remove_base_bdev '{"name": "KiR5m0"}' 2>&1); then hok "bdev_raid_remove_base_bdev KiR5m0"
  else hbad "bdev_raid_remove_base_bdev KiR5m0: $out"; fi
  sleep 0.5; degraded_ok "after removing KiR5m0"
  : > "$SHARE/sync/second-removed"
}

"$HARNESS" run --share "$SHARE" --timeout "$GUEST_TIMEOUT" -- "bash /host/guest/raid5-rebuild.sh" > "$SHARE/guest.log" 2>&1 &
KPID=$!
agent | tee "$SHARE/host.log"
FAILS=$(grep -c '^FAIL host' "$SHARE/host.log")
wait "$KPID"; grc=$?; KPID=
grep -E '^(ok|FAIL|==) |^     ' "$SHARE/guest.log" | sed 's/^/  guest: /'
grep -q '^GUEST-OK$' "$SHARE/guest.log" || { FAILS=$((FAILS + 1)); log "the guest reported failures (guest harness exit $grc)"; }
kill -0 "$TGT_PID" 2>/dev/null || { FAILS=$((FAILS + 1)); log "keel-tgt died"; tail -20 "$RESULTS/keel-tgt.log"; }
kill -TERM "$TGT_PID" 2>/dev/null; wait "$TGT_PID" 2>/dev/null; TGT_PID=
if [ "$FAILS" = 0 ]; then log PASS; else log "FAIL ($FAILS failed checks; see $RESULTS)"; exit 1; fi
