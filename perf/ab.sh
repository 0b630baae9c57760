#!/usr/bin/env bash
# Two builds of Keel side by side in one run (ABBA), for "no slower after this change" claims.
#
#   perf/ab.sh DIR_A DIR_B            # each DIR holds keel-tgt and keel-perf (release builds)
#   SECS=5 ROUNDS=2 perf/ab.sh /work/bench/before target/release
#
# Five measurements, each taken in the order A B B A (ROUNDS=2 repeats that ABBA block):
#   local null     keel-perf --bdev null,   4 KiB randread QD 32 (each build's own keel-perf:
#                  the bdev layer under test is linked into it)
#   local malloc   keel-perf --bdev malloc, 4 KiB randread QD 32 (ditto)
#   tcp qd1 read   NVMe/TCP loopback, 4 KiB randread QD 1  } ONE client for both targets:
#   tcp qd32 read  NVMe/TCP loopback, 4 KiB randread QD 32 } DIR_A's keel-perf -r against each
#   tcp qd32 write NVMe/TCP loopback, 4 KiB randwrite QD 32} build's keel-tgt (its default 1 GiB
#                  malloc namespace, populated at creation, so reads touch real memory)
# The target runs on TGT_CORE (default 0), every client on CORE (default 1). Prints one table:
# mean IOPS per build, B/A ratio, and every run's IOPS so the spread is visible. This machine is
# shared and noisy: read the ratio, not the absolute figures.
set -euo pipefail
A=${1:?usage: perf/ab.sh DIR_A DIR_B}
B=${2:?usage: perf/ab.sh DIR_A DIR_B}
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-1}
TGT_CORE=${TGT_CORE:-0}
CORE=${CORE:-1}
PORT=${TCP_PORT:-4431}
for d in "$A" "$B"; do
  for b in keel-tgt keel-perf; do
    [ -x "$d/$b" ] || { echo "ab.sh: $d/$b is missing (give two directories of release builds)" >&2; exit 2; }
  done
done
out=$(mktemp -d)
tgt_pid=
cleanup() { [ -n "$tgt_pid" ] && kill "$tgt_pid" 2>/dev/null && wait "$tgt_pid" 2>/dev/null; rm -rf "$out"; }
trap cleanup EXIT
nqn=nqn.2016-06.io.keel:default

iops() { # keel-perf JSON on stdin -> total IOPS (read + write)
  python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(int(j["read"]["iops"]+j["write"]["iops"]))'
}
perf_run() { # label side perf-binary args...
  local label=$1 side=$2 bin=$3; shift 3
  local v
  v=$("$bin" -t "$SECS" -c "[$CORE]" --json --no-progress "$@" 2>>"$out/perf.log" | iops) \
    || { echo "ab.sh: $label ($side) failed; keel-perf log:" >&2; tail -20 "$out/perf.log" >&2; exit 1; }
  echo "$label $side $v" >> "$out/results"
  echo "  $label [$side] $v IOPS" >&2
}
start_tgt() { # dir
  local sock="$out/tgt.sock"
  rm -f "$sock"
  "$1/keel-tgt" -m "[$TGT_CORE]" -r "$sock" --listen "127.0.0.1:$PORT" > "$out/tgt.log" 2>&1 &
  tgt_pid=$!
  for _ in $(seq 600); do # the RPC socket opens once the default config (1 GiB malloc) is loaded
    [ -S "$sock" ] && return 0
    kill -0 "$tgt_pid" 2>/dev/null || { echo "ab.sh: $1/keel-tgt exited:" >&2; cat "$out/tgt.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "ab.sh: $1/keel-tgt not ready after 60 s" >&2; exit 1
}
stop_tgt() { kill "$tgt_pid"; wait "$tgt_pid" 2>/dev/null || true; tgt_pid=; }

round() { # side dir
  local side=$1 dir=$2 remote="trtype:tcp traddr:127.0.0.1 trsvcid:$PORT subnqn:$nqn"
  echo "== $side: $dir" >&2
  perf_run "local-null-randread-qd32" "$side" "$dir/keel-perf" --bdev null -q 32 -w randread
  perf_run "local-malloc-randread-qd32" "$side" "$dir/keel-perf" --bdev malloc -q 32 -w randread
  start_tgt "$dir"
  perf_run "tcp-randread-qd1" "$side" "$A/keel-perf" -r "$remote" -q 1 -w randread
  perf_run "tcp-randread-qd32" "$side" "$A/keel-perf" -r "$remote" -q 32 -w randread
  perf_run "tcp-randwrite-qd32" "$side" "$A/keel-perf" -r "$remote" -q 32 -w randwrite
  stop_tgt
}
for _ in $(seq "$ROUNDS"); do
  round A "$A"; round B "$B"; round B "$B"; round A "$A"
done

echo
echo "A = $A ($(cat "$A/REV" 2>/dev/null || echo unknown rev)), B = $B ($(cat "$B/REV" 2>/dev/null || echo unknown rev))"
echo "perf/ab.sh, SECS=$SECS ROUNDS=$ROUNDS, target core $TGT_CORE, client core $CORE, $(date -u +%F)"
python3 - "$out/results" <<'PY'
import sys
from collections import defaultdict
runs = defaultdict(lambda: {"A": [], "B": []})
order = []
for line in open(sys.argv[1]):
    label, side, v = line.split()
    if label not in order:
        order.append(label)
    runs[label][side].append(int(v))
print("| benchmark (4 KiB) | A mean IOPS | B mean IOPS | B/A | A runs | B runs |")
print("|---|---|---|---|---|---|")
for label in order:
    a, b = runs[label]["A"], runs[label]["B"]
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    print(f"| {label} | {ma:,.0f} | {mb:,.0f} | {mb / ma:.3f} | "
          f"{' '.join(str(x) for x in a)} | {' '.join(str(x) for x in b)} |")
PY
