#!/usr/bin/env bash
# A fresh malloc bdev's first I/Os against its steady state, in one run (issue 11 item 3).
#
# keel-perf loads a JSON config whose bdev_malloc_create goes through the path keel-tgt's own
# config replay and rpc.py take (the RPC handler), then starts 4 KiB random writes as soon as
# it returns. The per-second timeline of that one run gives the IOPS of the first 2 s after
# creation and of the last 2 s (steady state: by then every page has been written at least
# once, so a lazily faulted bdev is warm too). A ratio near 1 means the bdev served at full
# speed from its first I/O.
#
#   perf/malloc-first-io.sh
#   KEEL_PERF=/path/to/keel-perf SIZE_MB=1024 CORE=1 SECS=8 QD=32 perf/malloc-first-io.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KEEL_PERF=${KEEL_PERF:-}
SIZE_MB=${SIZE_MB:-1024}
CORE=${CORE:-1}
SECS=${SECS:-8}
QD=${QD:-32}
if [ -z "$KEEL_PERF" ]; then
  cargo build -q --release -p keel-perf
  KEEL_PERF=${CARGO_TARGET_DIR:-target}/release/keel-perf
fi
[ "$SECS" -ge 5 ] || { echo "SECS must be at least 5 (2 s first, 2 s steady)" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/malloc.json" <<JSON
{"subsystems": [{"subsystem": "bdev", "config": [
  {"method": "bdev_malloc_create",
   "params": {"name": "Malloc0", "num_blocks": $((SIZE_MB * 256)), "block_size": 4096}}]}]}
JSON
echo "== $KEEL_PERF -q $QD -o 4096 -w randwrite -t $SECS -c [$CORE] --config <${SIZE_MB} MiB malloc> --json" >&2
RUST_LOG=${RUST_LOG:-warn,keel_bdev::modules::malloc=info} "$KEEL_PERF" -q "$QD" -o 4096 \
  -w randwrite -t "$SECS" -c "[$CORE]" --config "$dir/malloc.json" --bdev-name Malloc0 \
  --json --no-progress > "$dir/run.json" 2> "$dir/run.log" || { cat "$dir/run.log" >&2; exit 1; }
grep -h "populated" "$dir/run.log" >&2 || true
python3 - "$dir/run.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
tl = [s for s in r["keel"]["timeline"] if not s["ramp"]]
first = [s["iops"] for s in tl[:2]]
steady = [s["iops"] for s in tl[-2:]]
f, st = sum(first) / len(first), sum(steady) / len(steady)
print("per second:", " ".join(f"{s['iops']:.0f}" for s in tl))
print(f"first 2 s after creation: {f:.0f} IOPS; steady state (last 2 s): {st:.0f} IOPS; "
      f"ratio {f / st:.3f}")
PY
