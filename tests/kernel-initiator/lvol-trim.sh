#!/usr/bin/env bash
# lvol-trim: a thin logical volume exported by keel-tgt over NVMe/TCP, used by the Linux kernel
# initiator (QEMU guest via tests/guest/keel-guest) with ext4: clusters are allocated as files are written and given
# back when they are deleted and trimmed (fstrim), and all of them when the whole device is
# discarded (blkdiscard). Self-contained: starts its own keel-tgt on KI_PORT.
#
#   tests/kernel-initiator/lvol-trim.sh [--results DIR] [--no-lvol]
#
# --no-lvol exports the malloc bdev itself: proves the guest's part and the harness without
# lvols (the allocation checks are skipped).
# Host: keel-tgt --no-default, then by RPC a malloc base bdev, an lvstore with 1 MiB clusters,
# one thin 256 MiB lvol, a subsystem exporting it. Guest: nvme connect, mkfs.ext4 (the guest
# image's e2fsprogs and ext4 module), mount, 64 MiB of files with dd, sync, rm, fstrim, umount,
# blkdiscard, disconnect.
# The host reads num_allocated_clusters (bdev_lvol_get_lvols) at each step:
#   fresh volume 0; after the files >= +60 over the empty file system; after rm + fstrim
#   <= empty file system + 8 and <= files - 56; after blkdiscard 0, and the lvstore's free
#   clusters back to all of them. The guest checks the files' contents (after dropping caches)
#   and that the discarded device reads as zeroes; its kernel log must show no error.
# Results in DIR (default target/kernel-initiator/lvol-trim): guest.log, dmesg.txt, host.log,
# keel-tgt.log. Last line "lvol-trim: PASS" or "lvol-trim: FAIL ..."; exit status 0 on PASS.
# Environment: KEEL_GUEST (guest harness, default tests/guest/keel-guest), KI_PORT (4420),
# KI_TGT_ARGS ("-m 0x1 --interrupt-mode"), KI_TGT_BIN (use this keel-tgt; keel-rpc must be
# beside it), KI_TIMEOUT (guest time limit, 300 s).
# shellcheck disable=SC2015  # "A && ok || bad": ok and bad always return 0
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
HARNESS=${KEEL_GUEST:-${KINIT:-$ROOT/tests/guest/keel-guest}}   # the guest harness (tests/guest/README.md)
PORT=${KI_PORT:-4420}
TGT_ARGS=${KI_TGT_ARGS:--m 0x1 --interrupt-mode}
GUEST_TIMEOUT=${KI_TIMEOUT:-300}
RESULTS=${KI_RESULTS:-$ROOT/target/kernel-initiator}/lvol-trim
NQN=nqn.2016-06.io.keel:kinit-lvol-trim
VOL_MIB=256 CLUSTER_KIB=1024 BASE_MIB=320 FILE_MIB=64 LVOL=1
while [ $# -gt 0 ]; do case $1 in
  --results) RESULTS=$2; shift 2;;
  --no-lvol) LVOL=0; shift;;
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
  *) echo "lvol-trim: unknown argument $1" >&2; exit 2;;
esac; done

FAILS=0
log()  { echo "lvol-trim: $*"; }
hok()  { echo "ok   host: $*"; }
hbad() { echo "FAIL host: $*"; FAILS=$((FAILS + 1)); }
fatal() { log "FAIL: $*"; exit 1; }

# keel-tgt and the guest: built, started, and cleaned up on exit
# shellcheck source=standalone-target.sh
source "$HERE/standalone-target.sh"

setup() {
  local out lvol
  rpc bdev_malloc_create "{\"name\": \"LtBase\", \"num_blocks\": $((BASE_MIB * 256)), \"block_size\": 4096}" >/dev/null || return 1
  if [ "$LVOL" = 0 ]; then lvol=LtBase; else
    rpc bdev_lvol_create_lvstore "{\"bdev_name\": \"LtBase\", \"lvs_name\": \"lvs_trim\", \"cluster_sz\": $((CLUSTER_KIB * 1024))}" >/dev/null &&
      out=$(rpc bdev_lvol_create "{\"lvol_name\": \"trimvol\", \"size_in_mib\": $VOL_MIB, \"thin_provision\": true, \"lvs_name\": \"lvs_trim\"}") &&
      lvol=$(tr -d '"[:space:]' <<<"$out") || return 1
  fi
  rpc nvmf_create_transport '{"trtype": "TCP"}' >/dev/null &&
  rpc nvmf_create_subsystem "{\"nqn\": \"$NQN\", \"allow_any_host\": true, \"serial_number\": \"KEELKITRIM1\"}" >/dev/null &&
  rpc nvmf_subsystem_add_ns "{\"nqn\": \"$NQN\", \"namespace\": {\"bdev_name\": \"$lvol\"}}" >/dev/null &&
  rpc nvmf_subsystem_add_listener "{\"nqn\": \"$NQN\", \"listen_address\": {\"trtype\": \"TCP\", \"adrfam\": \"IPv4\", \"traddr\": \"127.0.0.1\", \"trsvcid\": \"$PORT\"}}" >/dev/null &&
  log "$([ "$LVOL" = 0 ] && echo "--no-lvol: the malloc bdev itself instead of a ")thin lvol $lvol (lvs_trim/trimvol, $VOL_MIB MiB, $CLUSTER_KIB KiB clusters on a $BASE_MIB MiB malloc) exported as $NQN on port $PORT"
}
setup > "$RESULTS/setup.log" 2>&1 || { cat "$RESULTS/setup.log"; fatal "target setup by RPC failed (lvol RPCs missing?)"; }
cat "$RESULTS/setup.log"

allocated() { rpc bdev_lvol_get_lvols '{"lvs_name": "lvs_trim"}' | jq -e '.[] | select(.name == "trimvol") | .num_allocated_clusters'; }
lvs_free() { rpc bdev_lvol_get_lvstores '{"lvs_name": "lvs_trim"}' | jq -e -r '.[0] | "\(.free_clusters) \(.total_data_clusters)"'; }

# ---------------------------------------------------------------- the guest's part
SHARE=$RESULTS
mkdir -p "$SHARE/guest"
cp "$HERE/guest/lib.sh" "$SHARE/guest/"
cat > "$SHARE/env.sh" <<EOF
MODE=keel TADDR=10.0.2.2 TPORT=$PORT NQN=$NQN FILE_MIB=$FILE_MIB
EOF

cat > "$SHARE/guest/lvol-trim.sh" <<'GUEST'
#!/bin/bash
# Guest half of lvol-trim (written by tests/kernel-initiator/lvol-trim.sh).
# shellcheck disable=SC2015
. "$(dirname "$0")/lib.sh"
MNT=/mnt/lt
# ask STEP: tell the host, wait for its check of the allocation (it prints the verdict).
ask() { signal "$1"; wait_file "$SYNC/$1.done" 60 && ok "host checked the allocation after $1" || die "the host did not answer $1"; }

step "connect to $NQN"
connect_ok lvol "$NQN" || finish
dev=$(wait_ns "$NQN" 1 10) || die "no namespace 1 on $NQN"
b=$(basename "$dev")
say "     $dev: $(cat /sys/block/$b/size) sectors, logical block $(cat /sys/block/$b/queue/logical_block_size), discard_max_bytes $(cat /sys/block/$b/queue/discard_max_bytes), discard_granularity $(cat /sys/block/$b/queue/discard_granularity)"
[ "$(cat /sys/block/$b/queue/discard_max_bytes)" -gt 0 ] && ok "the namespace supports deallocate (discard)" ||
  die "the namespace does not support deallocate (ONCS DSM not set?)"
ask connected

step "ext4 on the thin volume"
# The guest image (tests/guest/keel-guest) has the ext4 module and e2fsprogs.
modprobe ext4 || die "the guest kernel has no ext4 module"
command -v mkfs.ext4 >/dev/null || die "the guest has no mkfs.ext4 (e2fsprogs)"
check "mkfs.ext4 (discard, inode tables and journal initialised now)" \
  mkfs.ext4 -q -F -b 4096 -E lazy_itable_init=0,lazy_journal_init=0 "$dev" || finish
mkdir -p $MNT
check "mount" mount -t ext4 -o noinit_itable "$dev" $MNT || finish
ask mkfs
step "write ${FILE_MIB} MiB of files"
check "dd ${FILE_MIB} MiB into 4 files" bash -c "for i in 1 2 3 4; do dd if=/dev/urandom of=$MNT/f\$i bs=1M count=$((FILE_MIB / 4)) status=none || exit 1; done; sync"
sums=$(cd $MNT && md5sum f1 f2 f3 f4)
echo 3 > /proc/sys/vm/drop_caches
[ "$(cd $MNT && md5sum f1 f2 f3 f4)" = "$sums" ] && ok "the files read back intact after dropping caches" ||
  bad "the files changed when read back from the volume"
ask written
step "rm and fstrim"
check "rm the files" rm -f $MNT/f1 $MNT/f2 $MNT/f3 $MNT/f4
check "sync" sync
check "fstrim -v $MNT" fstrim -v $MNT
ask trimmed
check "umount" umount $MNT

step "blkdiscard the whole device"
check "blkdiscard $dev" blkdiscard "$dev"
echo 3 > /proc/sys/vm/drop_caches
check "the discarded device reads as zeroes" cmp -n "$(( $(cat /sys/block/$b/size) * 512 ))" /dev/zero "$dev"
ask discarded
disconnect_ok lvol "$NQN"
dmesg_clean lvol-trim
finish
GUEST

# ---------------------------------------------------------------- host agent and run
# host_check STEP: the host's verdict on the allocation after the guest's STEP.
A_MKFS=0 A_WRITTEN=0
host_check() {
  local a fr
  [ "$LVOL" = 0 ] && { log "after $1: (--no-lvol: no allocation to check)"; return; }
  a=$(allocated) || { hbad "$1: bdev_lvol_get_lvols gives no num_allocated_clusters for trimvol"; return; }
  log "after $1: trimvol has $a allocated clusters of $VOL_MIB"
  case $1 in
    connected) [ "$a" = 0 ] && hok "a fresh thin volume has no cluster allocated" || hbad "fresh thin volume has $a clusters";;
    mkfs) A_MKFS=$a; [ "$a" -gt 0 ] && [ "$a" -lt $((VOL_MIB / 2)) ] && hok "an empty ext4 allocates $a clusters" ||
            hbad "an empty ext4 allocated $a clusters (expected some, far fewer than $VOL_MIB)";;
    written) A_WRITTEN=$a; [ "$a" -ge $((A_MKFS + FILE_MIB - 4)) ] && hok "$FILE_MIB MiB of files raised the allocation from $A_MKFS to $a" ||
            hbad "allocation after $FILE_MIB MiB of files is $a (was $A_MKFS; expected >= $((A_MKFS + FILE_MIB - 4)))";;
    trimmed) [ "$a" -le $((A_MKFS + 8)) ] && [ "$a" -le $((A_WRITTEN - FILE_MIB + 8)) ] &&
            hok "rm + fstrim gave clusters back: $A_WRITTEN -> $a (empty file system: $A_MKFS)" ||
            hbad "after rm + fstrim $a clusters remain (files: $A_WRITTEN, empty file system: $A_MKFS)";;
    discarded) [ "$a" = 0 ] && hok "blkdiscard of the whole device gave every cluster back" || hbad "$a clusters remain after blkdiscard"
      fr=$(lvs_free) && read -r f t <<<"$fr" && [ "$f" = "$t" ] && hok "lvstore: $f of $t clusters free" ||
        hbad "lvstore free/total clusters: ${fr:-unknown}";;
  esac
}
agent() {
  local s
  for s in connected mkfs written trimmed discarded; do
    while [ ! -e "$SHARE/sync/$s" ]; do kill -0 "$KPID" 2>/dev/null || return; sleep 0.2; done
    host_check "$s"; : > "$SHARE/sync/$s.done"
  done
}

log "guest: ext4 + fstrim + blkdiscard"
"$HARNESS" run --share "$SHARE" --timeout "$GUEST_TIMEOUT" -- "bash /host/guest/lvol-trim.sh" > "$SHARE/guest.log" 2>&1 &
KPID=$!
agent | tee "$SHARE/host.log"
FAILS=$(grep -c '^FAIL host' "$SHARE/host.log")
wait "$KPID"; grc=$?; KPID=
grep -E '^(ok|FAIL|==) |^     ' "$SHARE/guest.log" | sed 's/^/  guest: /'
grep -q '^GUEST-OK$' "$SHARE/guest.log" || { FAILS=$((FAILS + 1)); log "the guest reported failures (guest harness exit $grc)"; }
kill -0 "$TGT_PID" 2>/dev/null || { FAILS=$((FAILS + 1)); log "keel-tgt died"; tail -20 "$RESULTS/keel-tgt.log"; }
kill -TERM "$TGT_PID" 2>/dev/null; wait "$TGT_PID" 2>/dev/null; TGT_PID=
if [ "$FAILS" = 0 ]; then log PASS; else log "FAIL ($FAILS failed checks; see $RESULTS)"; exit 1; fi
