#!/usr/bin/env bash
# Build every fuzz target in fuzz/ and run each for N seconds (default 30) on the stable
# toolchain (libFuzzer without sanitizers). A crash leaves its input in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd fuzz
targets=$(cargo fuzz list)
for t in $targets; do
  echo "== fuzz $t for ${secs}s"
  mkdir -p "corpus/$t"
  seeds=(); [ -d "seeds/$t" ] && seeds=("seeds/$t")   # hand-written starting inputs, kept in git
  cargo fuzz run --sanitizer none "$t" "corpus/$t" "${seeds[@]}" -- -max_total_time="$secs" 2>&1 | tail -n 3
done
echo "fuzz: $(echo $targets | wc -w) targets ran clean"
