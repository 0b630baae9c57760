#!/usr/bin/env bash
# Keel's test command (README.md): unit + end-to-end tests, SPDK's own rpc.py against keel-tgt,
# then the README's tour command by command (scripts/tour.sh).
# Installs what it needs (SPDK's Python client from PyPI into target/venv-spdk).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --workspace"
cargo test --workspace --all-targets 2>&1

echo "== SPDK rpc.py against keel-tgt"
bash scripts/spdk-rpc-compat.sh

echo "== README tour, command by command: scripts/tour.sh"
bash scripts/tour.sh
