#!/usr/bin/env bash
# Foundation benchmarks in one run, with fio beside them for calibration (docs/ARCHITECTURE.md §8.3: compare
# through the fio rows, absolute figures move ±30% on shared machines).
#   perf/foundation.sh            # criterion benches of keel-reactor and keel-bdev + fio null engine
# Needs fio (apt-get install fio); prints one table with the ratio to fio's null engine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
crit() { # crate bench: run criterion, keep "name  ns/iter" lines
  cargo bench -q -p "$1" --bench "$2" -- --output-format bencher 2>/dev/null | grep '^test ' | tee -a "$out/crit.txt"
}
echo "== criterion (cargo bench, bencher format: ns per iteration)"
crit keel-reactor messages
crit keel-reactor pool
crit keel-bdev null_io

echo "== fio null engine, 4 KiB randread, QD 128, one job pinned to core 1 (calibration)"
fio --name=null --ioengine=null --rw=randread --bs=4k --iodepth=128 --size=1g --time_based \
    --runtime=5 --cpus_allowed=1 --output-format=json > "$out/fio.json"
fio_iops=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["jobs"][0]["read"]["iops"]))' "$out/fio.json")
echo "fio null engine: $fio_iops IOPS"

echo
echo "| benchmark | ns per op | ops/s (one core) | ratio to fio null engine IOPS |"
echo "|---|---|---|---|"
while read -r _ name _ _ ns _; do
  ns=${ns//,/}
  python3 - "$name" "$ns" "$fio_iops" <<'PY'
import sys
name, ns, fio = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
ops = 1e9 / ns
print(f"| {name} | {ns:.1f} | {ops/1e6:.2f}M | {ops/fio:.2f}x |")
PY
done < "$out/crit.txt"
echo "| fio null engine 4 KiB randread QD 128 | $(python3 -c "print(f'{1e9/$fio_iops:.1f}')") | $(python3 -c "print(f'{$fio_iops/1e6:.2f}M')") | 1.00x |"
rm -rf "$out"
