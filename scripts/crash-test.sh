#!/usr/bin/env bash
# Crash-consistency test: keel-tgt on a uring bdev over a sparse file, an lvstore with thin
# volumes exported over NVMe/TCP; keel-crashcheck writes verifying blocks while keel-tgt is
# killed with SIGKILL at a random moment; keel-tgt restarts from its saved config (the lvstore
# and volumes come back from disk by examine), keel-crashcheck verifies every acknowledged
# write and that never-written blocks read as zeroes, and the lvstore's allocation map must
# add up (free clusters + every volume's allocated clusters = data clusters).
#
#   scripts/crash-test.sh [--no-lvol] [--prove] [--keep] [ITERATIONS [SECONDS-PER-ITERATION]]
#
# --no-lvol  export the uring bdevs themselves (proves the harness without lvols)
# --prove    (with --no-lvol) at the end, zero an acknowledged block in the backing file behind
#            keel-tgt's back: the verify must then fail naming that LBA (the harness can fail)
# --keep     keep the work directory (journal, logs, config, the volumes' file)
# Defaults: 10 iterations, up to 3 s of writes each (the kill comes 0.2 s .. SECONDS after the
# writes start). Exit status 0 only if every iteration passed.
# Environment: CT_PORT (4431), CT_VOLS (2), CT_VOL_MIB (64), CT_CLUSTER_KIB (256), CT_QD (32),
# CT_TGT_ARGS ("-m 0x1 --interrupt-mode"), CT_PROFILE (debug|release), CARGO_TARGET_DIR,
# CT_BIN_DIR (use prebuilt keel-tgt, keel-rpc and keel-crashcheck from there), CT_CHECK_ARGS
# (more keel-crashcheck options for both modes, e.g. "--hdgst --ddgst").
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LVOL=1 KEEP=0 PROVE=0
while [ $# -gt 0 ]; do case $1 in
  --no-lvol) LVOL=0; shift;;
  --prove) PROVE=1; shift;;
  --keep) KEEP=1; shift;;
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
  -*) echo "crash-test: unknown option $1" >&2; exit 2;;
  *) break;;
esac; done
ITER=${1:-10} SECS=${2:-3}
[[ $ITER =~ ^[0-9]+$ && $ITER -gt 0 ]] || { echo "crash-test: ITERATIONS must be a positive integer" >&2; exit 2; }
[[ $SECS =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "crash-test: SECONDS must be a number" >&2; exit 2; }
[ "$PROVE" = 1 ] && [ "$LVOL" = 1 ] && { echo "crash-test: --prove needs --no-lvol (it edits the backing file)" >&2; exit 2; }
PORT=${CT_PORT:-4431} VOLS=${CT_VOLS:-2} VOL_MIB=${CT_VOL_MIB:-64} CLUSTER_KIB=${CT_CLUSTER_KIB:-256}
QD=${CT_QD:-32} TGT_ARGS=${CT_TGT_ARGS:--m 0x1 --interrupt-mode} PROFILE=${CT_PROFILE:-debug}
NQN=nqn.2016-06.io.keel:crash-test

log() { echo "crash-test: $*"; }
die() { log "FAIL: $*"; exit 1; }

if [ -n "${CT_BIN_DIR:-}" ]; then BIN=$CT_BIN_DIR
else
  flag=(); [ "$PROFILE" = release ] && flag=(--release)
  (cd "$ROOT" && cargo build -q "${flag[@]}" -p keel-tgt -p keel-perf --bin keel-tgt --bin keel-rpc --bin keel-crashcheck) ||
    die "cargo build failed"
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
fi
for b in keel-tgt keel-rpc keel-crashcheck; do [ -x "$BIN/$b" ] || die "no $BIN/$b"; done

DIR=$(mktemp -d /tmp/keel-crash-test.XXXXXX)
SOCK=$DIR/keel.sock CONFIG=$DIR/config.json JOURNAL=$DIR/journal TLOG=$DIR/keel-tgt.log
TGT_PID='' CHK_PID=''
# shellcheck disable=SC2317  # called from the trap
cleanup() {
  [ -n "$CHK_PID" ] && kill "$CHK_PID" 2>/dev/null
  [ -n "$TGT_PID" ] && { kill -TERM "$TGT_PID" 2>/dev/null; wait "$TGT_PID" 2>/dev/null; }
  if [ "$KEEP" = 1 ]; then log "work directory kept: $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

rpc() { "$BIN/keel-rpc" -s "$SOCK" -t 30 call "$@"; }
port_busy() { [ -n "$(ss -Hltn "sport = :$PORT" 2>/dev/null)" ]; }

# start_target --no-default | -c CONFIG: start keel-tgt and wait until it serves RPC (and, with
# a config, the NVMe/TCP listener).
start_target() {
  local i
  rm -f "$SOCK"
  echo "== $(date +%T.%N) keel-tgt $TGT_ARGS -r $SOCK $*" >> "$TLOG"
  # shellcheck disable=SC2086
  "$BIN/keel-tgt" $TGT_ARGS -r "$SOCK" "$@" >> "$TLOG" 2>&1 &
  TGT_PID=$!
  for ((i = 0; i < 300; i++)); do
    kill -0 "$TGT_PID" 2>/dev/null || { tail -20 "$TLOG"; TGT_PID=; return 1; }
    if [ -S "$SOCK" ] && rpc spdk_get_version >/dev/null 2>&1; then
      [ "${1:-}" != -c ] && return 0
      port_busy && return 0
    fi
    sleep 0.1
  done
  log "keel-tgt did not come up in 30 s"; tail -20 "$TLOG"; return 1
}

# check_alloc [VERIFY_LOG]: the lvstore's clusters add up (no cluster owned twice, none leaked);
# with the log of a verify run, each volume's allocated clusters lie between the clusters the
# reads found data in and those plus the empty clusters that saw writes of unknown outcome.
check_alloc() {
  [ "$LVOL" = 1 ] || return 0
  local lvs lvols subs line nsid d u bdev a bad=''
  lvs=$(rpc bdev_lvol_get_lvstores '{"lvs_name": "lvs0"}') || { echo "bdev_lvol_get_lvstores failed"; return 1; }
  lvols=$(rpc bdev_lvol_get_lvols '{"lvs_name": "lvs0"}') || { echo "bdev_lvol_get_lvols failed"; return 1; }
  jq -nr --argjson s "$lvs" --argjson v "$lvols" '
    ($s[0].total_data_clusters) as $t | ($s[0].free_clusters) as $f |
    ([$v[].num_allocated_clusters] | add // 0) as $a |
    "lvstore: \($t) data clusters, \($f) free, \($a) allocated" +
    (if $f + $a == $t and ($v | length) == '"$VOLS"' then "" else " MISMATCH (\($v | length) volumes)" end)' || return 1
  [ -n "${1:-}" ] || return 0
  subs=$(rpc nvmf_get_subsystems) || { echo "nvmf_get_subsystems failed"; return 1; }
  while read -r line; do
    read -r nsid d u < <(sed -n 's/.*ns \([0-9]*\) with data \([0-9]*\) maybe allocated \([0-9]*\).*/\1 \2 \3/p' <<<"$line")
    bdev=$(jq -r --arg q "$NQN" --argjson n "$nsid" '.[] | select(.nqn == $q) | .namespaces[] | select(.nsid == $n) | .bdev_name' <<<"$subs")
    a=$(jq -r --arg b "$bdev" '.[] | select(.uuid == $b or .alias == $b or .name == $b or "\(.lvs.name // "lvs0")/\(.name)" == $b) |
      .num_allocated_clusters' <<<"$lvols" | head -1)
    if [[ $a =~ ^[0-9]+$ ]] && [ "$a" -ge "$d" ] && [ "$a" -le $((d + u)) ]; then
      echo "ns $nsid: $a allocated ($d hold data, $u empty after uncertain writes)"
    else
      echo "ns $nsid ($bdev): ${a:-?} allocated, but $d clusters hold data and $u more may be allocated MISMATCH"; bad=1
    fi
  done < <(grep '^keel-crashcheck clusters:' "$1")
  [ -z "$bad" ]
}

log "work directory $DIR, port $PORT, $ITER iterations of up to $SECS s, $([ "$LVOL" = 1 ] && echo "lvol: $VOLS thin volumes of $VOL_MIB MiB, ${CLUSTER_KIB} KiB clusters" || echo "no lvol: $VOLS uring bdevs")"
port_busy && die "something already listens on port $PORT (set CT_PORT)"
start_target --no-default || die "keel-tgt does not start (see $TLOG)"

# ---------------------------------------------------------------- configuration by RPC
BDEVS=()
if [ "$LVOL" = 1 ]; then
  truncate -s $((VOLS * VOL_MIB + 64))M "$DIR/disk0.img"
  rpc bdev_uring_create "{\"filename\": \"$DIR/disk0.img\", \"name\": \"U0\", \"block_size\": 4096}" >/dev/null ||
    die "bdev_uring_create failed"
  rpc bdev_lvol_create_lvstore "{\"bdev_name\": \"U0\", \"lvs_name\": \"lvs0\", \"cluster_sz\": $((CLUSTER_KIB * 1024))}" >/dev/null ||
    die "bdev_lvol_create_lvstore failed"
  for ((v = 0; v < VOLS; v++)); do
    out=$(rpc bdev_lvol_create "{\"lvol_name\": \"vol$v\", \"size_in_mib\": $VOL_MIB, \"thin_provision\": true, \"lvs_name\": \"lvs0\"}") ||
      die "bdev_lvol_create vol$v failed: $out"
    BDEVS+=("$(tr -d '"[:space:]' <<<"$out")")
  done
else
  for ((v = 0; v < VOLS; v++)); do
    truncate -s "${VOL_MIB}M" "$DIR/disk$v.img"
    rpc bdev_uring_create "{\"filename\": \"$DIR/disk$v.img\", \"name\": \"U$v\", \"block_size\": 4096}" >/dev/null ||
      die "bdev_uring_create U$v failed"
    BDEVS+=("U$v")
  done
fi
rpc nvmf_create_transport '{"trtype": "TCP"}' >/dev/null || die "nvmf_create_transport failed"
rpc nvmf_create_subsystem "{\"nqn\": \"$NQN\", \"allow_any_host\": true, \"serial_number\": \"KEELCRASH01\"}" >/dev/null ||
  die "nvmf_create_subsystem failed"
for b in "${BDEVS[@]}"; do
  rpc nvmf_subsystem_add_ns "{\"nqn\": \"$NQN\", \"namespace\": {\"bdev_name\": \"$b\"}}" >/dev/null ||
    die "nvmf_subsystem_add_ns $b failed"
done
rpc nvmf_subsystem_add_listener "{\"nqn\": \"$NQN\", \"listen_address\": {\"trtype\": \"TCP\", \"adrfam\": \"IPv4\", \"traddr\": \"127.0.0.1\", \"trsvcid\": \"$PORT\"}}" >/dev/null ||
  die "nvmf_subsystem_add_listener failed"
rpc save_config > "$CONFIG" || die "save_config failed"
log "configured: namespaces ${BDEVS[*]}; config saved to $CONFIG"
a=$(check_alloc) || die "$a"; [ -n "$a" ] && log "$a"
case $a in *MISMATCH*) die "allocation map wrong before any write";; esac

CHECK=("$BIN/keel-crashcheck")
COMMON=(--addr 127.0.0.1 --port "$PORT" --nqn "$NQN" --journal "$JOURNAL" --qd "$QD" --cluster-kib "$CLUSTER_KIB")
# shellcheck disable=SC2206  # CT_CHECK_ARGS is a list of options
COMMON+=(${CT_CHECK_ARGS:-})
TOTAL_ACKED=0 TOTAL_CHECKED=0 TOTAL_LANDED=0 TOTAL_NOT_LANDED=0 FAILS=0
field() {  # field NAME LINE: the number after NAME in a keel-crashcheck summary line
  sed -n "s/.*$1 \([0-9][0-9]*\).*/\1/p" <<<"$2" | head -1
}

for ((it = 1; it <= ITER; it++)); do
  # --- write while keel-tgt gets killed at a random moment
  wlog=$DIR/write-$it.log
  "${CHECK[@]}" write "${COMMON[@]}" --duration $((${SECS%.*} + 30)) > "$wlog" 2>&1 &
  CHK_PID=$!
  for ((i = 0; i < 300; i++)); do
    grep -q '^keel-crashcheck: writing' "$wlog" && break
    kill -0 "$CHK_PID" 2>/dev/null || break
    sleep 0.05
  done
  grep -q '^keel-crashcheck: writing' "$wlog" || { cat "$wlog"; die "iteration $it: keel-crashcheck write did not start"; }
  delay=$(awk -v s="$SECS" -v r="$RANDOM" 'BEGIN { printf "%.3f", 0.2 + (s - 0.2) * r / 32767 }')
  sleep "$delay"
  kill -KILL "$TGT_PID"; wait "$TGT_PID" 2>/dev/null; TGT_PID=
  wait "$CHK_PID"; wrc=$?; CHK_PID=
  wsum=$(grep '^keel-crashcheck write:' "$wlog" | head -1)
  if [ $wrc != 0 ] || ! grep -q 'connection to the target lost' <<<"$wsum"; then
    cat "$wlog"; die "iteration $it: the writer failed (exit $wrc) or did not see the target die"
  fi
  acked=$(field "acknowledged" "$wsum")
  TOTAL_ACKED=$((TOTAL_ACKED + acked))

  # --- restart from the saved config, verify data and the allocation map
  start_target -c "$CONFIG" || die "iteration $it: keel-tgt does not restart from $CONFIG (see $TLOG)"
  vlog=$DIR/verify-$it.log
  "${CHECK[@]}" verify "${COMMON[@]}" > "$vlog" 2>&1; vrc=$?
  vsum=$(grep '^keel-crashcheck verify:' "$vlog" | head -1)
  alloc=$(check_alloc "$vlog") || alloc="$alloc; allocation check failed MISMATCH"
  alloc=${alloc//$'\n'/; }
  uncertain=$(field "uncertain" "$wsum")
  log "iteration $it: killed after ${delay} s: $acked writes acknowledged, ${uncertain:-?} in flight; verify: ${vsum#*reads * }${alloc:+; $alloc}"
  if [ $vrc != 0 ]; then
    grep -E '^(VIOLATION|ERROR|\.\.\.)' "$vlog" | head -20; [ -n "$vsum" ] || cat "$vlog"
    FAILS=$((FAILS + 1)); die "iteration $it: verify failed (exit $vrc; $vlog)"
  fi
  case $alloc in *MISMATCH*) FAILS=$((FAILS + 1)); die "iteration $it: allocation map does not add up";; esac
  TOTAL_CHECKED=$((TOTAL_CHECKED + $(field "blocks checked" "$vsum")))
  TOTAL_LANDED=$((TOTAL_LANDED + $(field "landed in-flight data" "$vsum")))
  TOTAL_NOT_LANDED=$((TOTAL_NOT_LANDED + $(field "in-flight data not landed" "$vsum")))
done

kill -TERM "$TGT_PID"; wait "$TGT_PID"; trc=$?; TGT_PID=
[ $trc = 0 ] || die "keel-tgt exited with status $trc on SIGTERM"
if [ "$PROVE" = 1 ]; then
  # The newest acknowledged write to namespace 1 holds data that must be there; zero one block.
  read -r lba < <(awk '$1 == "A" && $2 == 1 { l = $3 } END { print l }' "$JOURNAL")
  [ -n "$lba" ] || die "--prove: no acknowledged write to namespace 1 in the journal"
  dd if=/dev/zero of="$DIR/disk0.img" bs=4096 seek="$lba" count=1 conv=notrunc status=none || die "--prove: dd failed"
  start_target -c "$CONFIG" || die "--prove: keel-tgt does not restart"
  "${CHECK[@]}" verify "${COMMON[@]}" > "$DIR/verify-prove.log" 2>&1 && die "--prove: verify passed over a zeroed acknowledged block"
  grep -q "^VIOLATION LOST ACKNOWLEDGED WRITE (reads as zeroes): namespace 1 LBA $lba:" "$DIR/verify-prove.log" ||
    { cat "$DIR/verify-prove.log"; die "--prove: verify failed without naming LBA $lba"; }
  log "--prove: a zeroed acknowledged block is caught: $(grep -m1 '^VIOLATION' "$DIR/verify-prove.log")"
  kill -TERM "$TGT_PID"; wait "$TGT_PID"; TGT_PID=
fi
log "PASS: $ITER iterations, $TOTAL_ACKED acknowledged writes, $TOTAL_CHECKED blocks verified (in-flight blocks: $TOTAL_LANDED landed, $TOTAL_NOT_LANDED not), 0 violations"
