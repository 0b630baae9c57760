#!/usr/bin/env bash
# What an idle keel-tgt costs in --interrupt-mode: system calls per second (strace -c -f on the
# running target) and CPU (every thread's time on a CPU from /proc/PID/task/*/schedstat,
# measured in its own window, without strace attached). Three targets, one after the other:
#   (a) default   the embedded default config (1 GiB malloc namespace, NVMe/TCP listener),
#                 no host
#   (b) host      the same with a host connected and idle: admin + I/O queue, KATO 5 s, Keep
#                 Alive every 2.5 s, as a Linux host sends (nvmf-target/examples/idle_host.rs)
#   (c) empty     --no-default: nothing configured
#   perf/idle.sh              # 10 s per window
#   perf/idle.sh --short      # 3 s per window
# Environment: KEEL_TGT (a prebuilt keel-tgt), IDLE_HOST (a prebuilt idle_host example),
#   TCP_PORT (default 5500; the default config's 4420 is replaced by it), CORE (default 0).
# Needs strace and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=10
case "${1:-}" in
  --short) secs=3 ;;
  "") ;;
  *) echo "usage: $0 [--short]" >&2; exit 2 ;;
esac
command -v strace >/dev/null || { echo "strace is not installed (apt-get install strace)" >&2; exit 2; }
port=${TCP_PORT:-5500}
core=${CORE:-0}
if [[ -z "${KEEL_TGT:-}" || -z "${IDLE_HOST:-}" ]]; then
  cargo build -q --release -p keel-tgt
  cargo build -q --release -p keel-nvmf --example idle_host
  tdir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  KEEL_TGT=${KEEL_TGT:-"$tdir/release/keel-tgt"}
  IDLE_HOST=${IDLE_HOST:-"$tdir/release/examples/idle_host"}
fi
out=$(mktemp -d)
sock="$out/rpc.sock"
tgt_pid=
host_pid=
cleanup() {
  [[ -n "$host_pid" ]] && kill "$host_pid" 2>/dev/null || true
  [[ -n "$tgt_pid" ]] && kill -INT "$tgt_pid" 2>/dev/null && wait "$tgt_pid" 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT

"$KEEL_TGT" --print-default-config | sed "s/\"4420\"/\"$port\"/" >"$out/default.json"
nqn=nqn.2016-06.io.keel:default

# CPU seconds of every thread of process $1 (the first field of /proc/PID/task/*/schedstat:
# time on a CPU in ns; finer than utime+stime's clock ticks).
cpu_secs() {
  python3 - "$1" <<'EOF'
import glob, sys
print(sum(int(open(p).read().split()[0]) for p in glob.glob(f"/proc/{sys.argv[1]}/task/*/schedstat")) / 1e9)
EOF
}

start_tgt() {
  rm -f "$sock"
  "$KEEL_TGT" -m "[$core]" -r "$sock" --interrupt-mode "$@" >"$out/tgt.log" 2>&1 &
  tgt_pid=$!
  for _ in $(seq 600); do
    [[ -S "$sock" ]] && break
    kill -0 "$tgt_pid" 2>/dev/null || { cat "$out/tgt.log" >&2; echo "keel-tgt exited" >&2; exit 1; }
    sleep 0.1
  done
  [[ -S "$sock" ]] || { echo "keel-tgt did not start" >&2; exit 1; }
  sleep 1 # let start-up work (e.g. populating the malloc bdev) finish
}

stop_tgt() {
  kill -INT "$tgt_pid"
  wait "$tgt_pid" 2>/dev/null || true
  tgt_pid=
}

# Measure the running target: CPU over $secs, then strace over $secs. Prints one row.
measure() {
  local name=$1
  local c0 c1
  c0=$(cpu_secs "$tgt_pid")
  sleep "$secs"
  c1=$(cpu_secs "$tgt_pid")
  timeout -s INT "$secs" strace -c -f -q -p "$tgt_pid" -o "$out/strace.$name" >/dev/null 2>&1 || true
  python3 - "$name" "$secs" "$c0" "$c1" "$out/strace.$name" <<'EOF'
import sys
name, secs, c0, c1, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
calls = {}
for line in open(path):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
        calls[f[-1]] = int(f[3])
total = sum(calls.values())
top = sorted(calls.items(), key=lambda kv: -kv[1])[:4]
detail = ", ".join(f"{k} {v / secs:.1f}" for k, v in top) or "-"
cpu = 100 * (c1 - c0) / secs
print(f"{name:<8} {total / secs:>10.1f} {cpu:>9.4f}%   {detail}")
EOF
}

echo "keel-tgt --interrupt-mode -m [$core], idle, ${secs} s windows ($KEEL_TGT)"
printf '%-8s %10s %10s   %s\n' case "syscalls/s" "CPU" "top system calls per second"

start_tgt -c "$out/default.json"
measure default
stop_tgt

start_tgt -c "$out/default.json"
"$IDLE_HOST" "127.0.0.1:$port" "$nqn" $(( 2 * secs + 5 )) 5000 >"$out/host.out" 2>"$out/host.err" &
host_pid=$!
for _ in $(seq 100); do
  grep -q connected "$out/host.out" 2>/dev/null && break
  kill -0 "$host_pid" 2>/dev/null || { cat "$out/host.err" >&2; echo "idle_host failed" >&2; exit 1; }
  sleep 0.1
done
grep -q connected "$out/host.out" || { echo "idle_host did not connect" >&2; exit 1; }
sleep 1
measure host
kill "$host_pid" 2>/dev/null || true
wait "$host_pid" 2>/dev/null || true
host_pid=
stop_tgt

start_tgt --no-default
measure empty
stop_tgt
