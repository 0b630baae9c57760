#!/usr/bin/env bash
# The socket-layer measurement behind nvmf-target/src/tcp/SOCKET_LAYER.md: epoll vs io_uring
# for the NVMe/TCP poll group, on 127.0.0.1, server pinned to core 0 and client to core 1,
# both busy-polling. Builds nvmf-target/examples/socket_layer.rs in release and prints the
# table (medians over interleaved rounds, and each io_uring variant's ops/s against epoll).
#   perf/socket-layer.sh                      # 30 rounds of 0.5 s per variant and load (~4 min)
#   perf/socket-layer.sh --rounds 5 --secs 2  # any option of the example (see --help)
# Environment: CARGO_TARGET_DIR as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores (server on 0, client on 1)" >&2; exit 2; }
echo "kernel $(uname -r), $(nproc) cores" >&2
cargo build --quiet --release -p keel-nvmf --example socket_layer
bin="${CARGO_TARGET_DIR:-target}/release/examples/socket_layer"
if [ "$#" -eq 0 ]; then
  set -- --rounds 30 --secs 0.5 --warmup 0.1
fi
exec "$bin" "$@"
