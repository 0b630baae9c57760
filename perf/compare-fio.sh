#!/usr/bin/env bash
# Run the same workloads through fio and keel-perf and print one table with the ratios
# (DESIGN.md §8: compare through fio, absolute figures move ±30% on shared machines).
#   perf/compare-fio.sh            # 10 s per run
#   perf/compare-fio.sh --short    # 2 s per run (CI)
# Environment: CORE (the core both tools are pinned to; default: the last one),
#   DIR (where the test file goes; default /dev/shm), KEEL_PERF (a prebuilt binary).
# Needs fio and python3. Rows:
#   (a) null: keel-perf null bdev vs fio --ioengine=null, 4 KiB randread QD 128, one core
#   (b) file: keel-perf uring bdev vs fio --ioengine=io_uring on the same file, 4 KiB randread
#       QD 32 (--direct=1 when the filesystem supports O_DIRECT; tmpfs does not)
#   (c) NVMe/TCP vs keel-tgt: pending the initiator
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
if [[ -z "${KEEL_PERF:-}" ]]; then
  cargo build -q --release -p keel-perf
  tdir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  KEEL_PERF="$tdir/release/keel-perf"
fi
out=$(mktemp -d)
file="$dir/keel-perf-compare.$$"
trap 'rm -rf "$out" "$file"' EXIT

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

python3 - "$fio_null" "$keel_null" "$fio_null_lat" "$keel_null_lat" \
          "$fio_file" "$keel_file" "$fio_file_lat" "$keel_file_lat" "$direct" "$dir" <<'PY'
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
print("| (c) NVMe/TCP: keel-perf vs keel-tgt | pending the initiator | | | | |")
PY
