#!/usr/bin/env bash
# Run the same workloads through fio and keel-perf and print one table with the ratios
# (docs/ARCHITECTURE.md §8.3: compare through fio, absolute figures move ±30% on shared machines).
#   perf/compare-fio.sh            # 10 s per run
#   perf/compare-fio.sh --short    # 2 s per run (CI)
# Environment: CORE (the core both tools are pinned to; default: the last one),
#   DIR (where the test file goes; default /dev/shm), KEEL_PERF (a prebuilt binary).
# Needs fio and python3. Rows:
#   (a) null: keel-perf null bdev vs fio --ioengine=null, 4 KiB randread QD 128, one core
#   (b) file: keel-perf uring bdev vs fio --ioengine=io_uring on the same file, 4 KiB randread
#       QD 32 (--direct=1 when the filesystem supports O_DIRECT; tmpfs does not)
#   (c) NVMe/TCP: keel-perf -r against keel-tgt (1 GiB malloc namespace), 4 KiB randread QD 32,
#       keel-tgt on TGT_CORE (default 0, -m) and keel-perf on CORE (-c); fio has no userspace
#       NVMe/TCP engine, so its columns show the calibration of this session (row a) and
#       the row's ratio is left out. Skipped on a one-core machine.
# More environment for (c): KEEL_TGT (a prebuilt keel-tgt), TGT_CORE, TCP_PORT (default 4430).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=10
case "${1:-}" in
  --short) secs=2 ;;
  "") ;;
  *) echo "usage: $0 [--short]" >&2; exit 2 ;;
esac
command -v fio >/dev/null || { echo "fio is not installed (apt-get install fio)" >&2; exit 2; }
core=${CORE:-$(( $(nproc) - 1 ))}
dir=${DIR:-/dev/shm}
tgt_core=${TGT_CORE:-0}
port=${TCP_PORT:-4430}
if [[ -z "${KEEL_PERF:-}" || -z "${KEEL_TGT:-}" ]]; then
  cargo build -q --release -p keel-perf -p keel-tgt
  tdir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  KEEL_PERF=${KEEL_PERF:-"$tdir/release/keel-perf"}
  KEEL_TGT=${KEEL_TGT:-"$tdir/release/keel-tgt"}
fi
out=$(mktemp -d)
file="$dir/keel-perf-compare.$$"
tgt_pid=
cleanup() {
  if [[ -n "$tgt_pid" ]]; then kill "$tgt_pid" 2>/dev/null || true; wait "$tgt_pid" 2>/dev/null || true; fi
  rm -rf "$out" "$file"
}
trap cleanup EXIT

# Sum of read IOPS over the jobs, and the mean latency (µs) weighted by I/Os.
summary() {
  python3 - "$1" <<'PY'
import json, sys
jobs = json.load(open(sys.argv[1]))["jobs"]
iops = sum(j["read"]["iops"] for j in jobs)
n = sum(j["read"]["lat_ns"]["N"] for j in jobs) if "N" in jobs[0]["read"]["lat_ns"] else len(jobs)
lat = sum(j["read"]["lat_ns"]["mean"] * j["read"]["lat_ns"].get("N", 1) for j in jobs) / max(n, 1)
print(f"{iops:.0f} {lat/1000:.2f}")
PY
}

run_fio() { # name, fio args...
  local name=$1; shift
  fio --name="$name" --rw=randread --bs=4k --time_based --runtime="$secs" \
      --cpus_allowed="$core" --output-format=json "$@" > "$out/fio-$name.json"
  summary "$out/fio-$name.json"
}

run_keel() { # name, keel-perf args...
  local name=$1; shift
  "$KEEL_PERF" -w randread -o 4096 -t "$secs" -c "[$core]" --json --no-progress "$@" \
      > "$out/keel-$name.json"
  summary "$out/keel-$name.json"
}

echo "== (a) null: 4 KiB randread QD 128, core $core, ${secs}s each" >&2
read -r fio_null fio_null_lat < <(run_fio null --ioengine=null --iodepth=128 --size=1g)
read -r keel_null keel_null_lat < <(run_keel null -q 128 --bdev null)

echo "== (b) file: 4 KiB randread QD 32 on a 256 MiB file in $dir" >&2
dd if=/dev/urandom of="$file" bs=1M count=256 status=none
direct=0
if dd if="$file" of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null; then direct=1; fi
read -r fio_file fio_file_lat < <(run_fio file --ioengine=io_uring --iodepth=32 \
    --filename="$file" --size=256m --direct="$direct")
read -r keel_file keel_file_lat < <(run_keel file -q 32 --bdev "uring:$file")

tcp_iops=0 tcp_lat=0
if [[ "$tgt_core" != "$core" ]]; then
  echo "== (c) NVMe/TCP: keel-tgt on core $tgt_core, keel-perf -r on core $core, 4 KiB randread QD 32" >&2
  nqn=nqn.2016-06.io.keel:compare
  "$KEEL_TGT" --print-default-config | python3 -c '
import json, sys
c = json.load(sys.stdin)
s = json.dumps(c).replace("nqn.2016-06.io.keel:default", sys.argv[1]).replace("\"4420\"", "\"" + sys.argv[2] + "\"")
print(s)' "$nqn" "$port" > "$out/tgt.json"
  "$KEEL_TGT" -m "[$tgt_core]" -c "$out/tgt.json" -r "$out/keel.sock" > "$out/tgt.log" 2>&1 &
  tgt_pid=$!
  for _ in $(seq 600); do  # 60 s: the default config populates its 1 GiB malloc first
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  read -r tcp_iops tcp_lat < <(run_keel tcp -q 32 \
      -r "trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:$port subnqn:$nqn")
  kill "$tgt_pid"; wait "$tgt_pid" 2>/dev/null || true; tgt_pid=
else
  echo "== (c) skipped: keel-tgt and keel-perf need two cores (TGT_CORE=$tgt_core CORE=$core)" >&2
fi

python3 - "$fio_null" "$keel_null" "$fio_null_lat" "$keel_null_lat" \
          "$fio_file" "$keel_file" "$fio_file_lat" "$keel_file_lat" "$direct" "$dir" \
          "$tcp_iops" "$tcp_lat" "$tgt_core" "$core" <<'PY'
import sys
a = sys.argv[1:]
f = lambda i: float(a[i])
def row(name, fio, keel, flat, klat):
    print(f"| {name} | {fio/1e6:.2f}M | {keel/1e6:.2f}M | {keel/fio:.2f}x | {flat:.2f} | {klat:.2f} |")
print("| workload (one core) | fio IOPS | keel-perf IOPS | keel/fio | fio avg lat (us) | keel-perf avg lat (us) |")
print("|---|---|---|---|---|---|")
row("(a) null: fio null engine vs keel null bdev, 4 KiB randread QD 128", f(0), f(1), f(2), f(3))
row(f"(b) file in {a[9]}: fio io_uring vs keel uring bdev, 4 KiB randread QD 32, direct={a[8]}",
    f(4), f(5), f(6), f(7))
if f(10) > 0:
    print(f"| (c) NVMe/TCP loopback: keel-perf -r vs keel-tgt (core {a[12]} target, core {a[13]} "
          f"initiator), 4 KiB randread QD 32 | (calibration: row a) | {f(10)/1e6:.2f}M | — | — | "
          f"{f(11):.2f} |")
else:
    print("| (c) NVMe/TCP: keel-perf vs keel-tgt | skipped (needs two cores) | | | | |")
PY
