#!/bin/bash
# Guest: the kernel initiator's whole life cycle against $NQN_MAIN, twice: without and with
# header + data digests. discover, connect, list, id-ctrl, id-ns, list-ns, ns-descs, get-log
# (error, SMART, firmware), a verifying fio mix (randrw, 512 B..1 MiB, QD 1..64, five jobs on
# disjoint ranges, crc32c, verify_fatal), disconnect.
# usage: basic.sh [plain|digest]...   (default: plain digest)
# shellcheck disable=SC2015  # "A && ok || bad": ok and bad always return 0
. "$(dirname "$0")/lib.sh"
FIO_PCT=${FIO_PCT:-100}   # scales the fio sizes (CI budget knob)

mb() { echo $(( $1 * FIO_PCT / 100 < 1 ? 1 : $1 * FIO_PCT / 100 ))m; }
fio_job() {  # DEV: jobs on disjoint ranges (verification needs each job to own its blocks)
  cat <<EOF
[global]
filename=$1
ioengine=io_uring
direct=1
rw=randrw
rwmixread=50
verify=crc32c
verify_fatal=1
verify_backlog=16
do_verify=1
[qd1-512b-64k]
iodepth=1
bsrange=512-64k
offset=0m
size=$(mb 16)
[qd4-64k-1m]
iodepth=4
bsrange=64k-1m
offset=16m
size=$(mb 64)
[qd16-512b-1m]
iodepth=16
bsrange=512-1m
offset=80m
size=$(mb 64)
[qd32-split]
iodepth=32
bssplit=512/10:4k/50:8k/10:64k/15:256k/10:1m/5
offset=144m
size=$(mb 64)
[qd64-512b-16k]
iodepth=64
bsrange=512-16k
offset=208m
size=$(mb 32)
EOF
}

one_pass() {  # LABEL [nvme connect/discover args]
  local label=$1 out dev blocks nsze t; shift
  step "$label: nvme discover -t tcp -a $TADDR -s $TPORT $*"
  out=$(nvme discover -t tcp -a "$TADDR" -s "$TPORT" "$@" 2>&1); echo "$out" | sed 's/^/     /'
  if grep -q "subnqn: *$NQN_MAIN\$" <<<"$out"; then ok "$label: discovery log lists $NQN_MAIN"
  else bad "$label: discovery log lacks $NQN_MAIN"; fi

  step "$label: connect"
  connect_ok "$label" "$NQN_MAIN" "$@" || return
  dev=$(wait_ns "$NQN_MAIN" 1 10) || { bad "$label: namespace 1 has no block device"; return; }
  ok "$label: controller $CTRL, namespace 1 is $dev ($(cat "/sys/class/nvme/$CTRL/queue_count") queues incl. admin)"
  check "$label: nvme list shows $dev" bash -c "nvme list | grep -E '^$dev '"

  step "$label: identify"
  out=$(nvme id-ctrl "/dev/$CTRL" 2>&1) && ok "$label: nvme id-ctrl" || bad "$label: nvme id-ctrl"
  echo "$out" | grep -E '^(vid|sn|mn|fr|mdts|cntlid|ver|oacs|aerl|lpa|elpe|kas|sqes|cqes|nn|oncs|sgls|ioccsz|iorcsz|icdoff|msdbd|subnqn) ' | sed 's/^/     /'
  grep -q "^subnqn *: $NQN_MAIN\$" <<<"$out" && ok "$label: id-ctrl subnqn is $NQN_MAIN" || bad "$label: id-ctrl subnqn"
  grep -qE '^sn *: *[^ ]' <<<"$out" && ok "$label: id-ctrl has a serial number" || bad "$label: id-ctrl serial number empty"
  out=$(nvme id-ns "$dev" 2>&1) && ok "$label: nvme id-ns" || bad "$label: nvme id-ns"
  echo "$out" | grep -E '^(nsze|ncap|nuse|nlbaf|flbas|lbaf .*in use)' | sed 's/^/     /'
  blocks=$(( MAIN_MB * 1024 * 1024 / 512 )); nsze=$(awk '/^nsze/{print $3}' <<<"$out")
  [ "$((nsze))" = "$blocks" ] && ok "$label: nsze = $blocks blocks of 512 B" || bad "$label: nsze $nsze, want $blocks"
  check "$label: nvme list-ns" nvme list-ns "/dev/$CTRL"
  check "$label: nvme ns-descs" nvme ns-descs "$dev"
  check "$label: nvme get-log error (log 0x01)" nvme get-log "/dev/$CTRL" --log-id=1 --log-len=64
  check "$label: nvme get-log SMART (log 0x02)" nvme get-log "/dev/$CTRL" --log-id=2 --log-len=512
  check "$label: nvme get-log firmware slot (log 0x03)" nvme get-log "/dev/$CTRL" --log-id=3 --log-len=512
  check "$label: nvme smart-log" nvme smart-log "/dev/$CTRL"
  check "$label: nvme error-log" bash -c "nvme error-log /dev/$CTRL -e 4 | head -20"
  check "$label: nvme fw-log" nvme fw-log "/dev/$CTRL"

  step "$label: fio verify on $dev (randrw, 512 B..1 MiB, QD 1/4/16/32/64, crc32c)"
  fio_job "$dev" > /tmp/basic.fio; t=$SECONDS
  out=$(fio_t 300 /tmp/basic.fio 2>&1); rc=$?
  echo "$out" | grep -E '^[a-z0-9-]+: \(groupid|^  (read|write)|verify|err=|error|Run status|READ:|WRITE:' | sed 's/^/     /'
  if [ $rc = 0 ] && ! grep -qE 'err= *[1-9]|verify: bad|verify failed|fio: .*error' <<<"$out"; then
    ok "$label: fio verify clean in $((SECONDS - t)) s"
  else bad "$label: fio verify (exit $rc)"; echo "$out" | tail -40 | sed 's/^/     /'; fi

  step "$label: disconnect"
  disconnect_ok "$label" "$NQN_MAIN"
}

[ $# -gt 0 ] || set -- plain digest
for pass in "$@"; do
  case $pass in
    plain) one_pass plain;;
    digest) one_pass digest -g -G;;
    *) die "unknown pass $pass";;
  esac
done
dmesg_clean basic
finish
