#!/usr/bin/env bash
# The README's "A short tour", run command by command, in order, against a fresh keel-tgt.
#
#   scripts/tour.sh [--port-base N]
#
# The commands are read from README.md itself (the fenced ```sh block after "## A short tour"),
# so the tour and this check cannot drift apart. Each line runs as written, with only these
# substitutions so that the run collides with nothing on the machine:
#   - `keel-rpc` is the release binary talking to this script's own socket (`-s SOCK`): the
#     README's alias line is skipped, its default socket /var/tmp/keel.sock is not used;
#   - the target is started the way the README's first command starts it (the embedded default
#     configuration), with its own -r and `--listen` on a private port;
#   - the tour's listener port 4421 becomes a private one; paths under /var/tmp/ and
#     /tmp/keel.json are placed in a private directory.
# The first command that fails stops the script with that command and its output. The one line
# that needs hardware, `nvmf_create_transport -t RDMA`, passes when it works and also when it
# answers exactly one of the two documented errors of a host without RDMA ("this machine has
# no RDMA device", "rdma-core is not installed"). Some results are then checked (the bdevs,
# the lvol, the raid, the subsystem and its namespace and listener, save_config, a clean exit).
# Last line: "tour: PASS" (exit 0) or "tour: FAIL ..." (exit 1).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PORT_BASE=${TOUR_PORT_BASE:-}
while [ $# -gt 0 ]; do case $1 in
  --port-base) PORT_BASE=$2; shift 2;;
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
  *) echo "tour: unknown argument $1" >&2; exit 2;;
esac; done

fail() { echo "tour: FAIL: $*"; exit 1; }

# Two free TCP ports: the default export's and the tour listener's.
free_port() {
  python3 - "$1" <<'PY'
import socket, sys
start = int(sys.argv[1]) if sys.argv[1] else 0
for p in ([0] if start == 0 else range(start, start + 100)):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        print(s.getsockname()[1]); break
    except OSError:
        pass
    finally:
        s.close()
PY
}
PORT0=$(free_port "$PORT_BASE") || fail "no free port"
PORT1=$(free_port "$([ -n "$PORT_BASE" ] && echo $((PORT0 + 1)))") || fail "no free port"
[ -n "$PORT0" ] && [ -n "$PORT1" ] && [ "$PORT0" != "$PORT1" ] || fail "no free ports ($PORT0 $PORT1)"

echo "== tour: cargo build --release (keel-tgt, keel-rpc)"
cargo build --release -q -p keel-tgt 2>&1 || fail "cargo build"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

WORK=$(mktemp -d /tmp/keel-tour.XXXXXX)
SOCK=$WORK/keel.sock
TGT_PID=
cleanup() {
  [ -n "$TGT_PID" ] && kill "$TGT_PID" 2>/dev/null && wait "$TGT_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# The tour's commands: the fenced sh block after "## A short tour".
mapfile -t LINES < <(awk '
  /^## A short tour/ { tour = 1; next }
  tour && /^## / { exit }
  tour && /^```sh/ { inblock = 1; next }
  inblock && /^```/ { exit }
  inblock && NF { print }
' README.md)
[ ${#LINES[@]} -ge 10 ] || fail "found ${#LINES[@]} commands in README.md's tour"

"$BIN/keel-tgt" -r "$SOCK" --listen "127.0.0.1:$PORT0" > "$WORK/keel-tgt.log" 2>&1 &
TGT_PID=$!
for _ in $(seq 200); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { cat "$WORK/keel-tgt.log"; fail "keel-tgt did not start"; }
echo "== tour: keel-tgt pid $TGT_PID on $SOCK, default export on 127.0.0.1:$PORT0, tour listener on $PORT1"

keel-rpc() { "$BIN/keel-rpc" -s "$SOCK" "$@"; }

# Output of the tour command whose line contains $1 (the checks name unique fragments).
declare -A OUT
out_of() {
  local k
  for k in "${!OUT[@]}"; do [[ $k == *"$1"* ]] && { printf '%s' "${OUT[$k]}"; return 0; }; done
  fail "no tour command contains '$1'"
}

n=0
for line in "${LINES[@]}"; do
  case $line in alias\ keel-rpc=*) continue;; esac
  n=$((n + 1))
  cmd=${line//\/var\/tmp\//$WORK/}
  cmd=${cmd//\/tmp\/keel.json/$WORK/keel.json}
  cmd=${cmd//4421/$PORT1}
  echo "\$ $line"
  out=$(set -e; eval "$cmd" 2>&1)
  rc=$?
  OUT[$line]=$out
  if [ $rc -ne 0 ]; then
    if [[ $line == *"nvmf_create_transport -t RDMA"* ]] &&
       grep -qE '"message": "RDMA transport: (this machine has no RDMA device|rdma-core is not installed)' <<<"$out"; then
      echo "   (no RDMA on this host, as the tour says: $(grep -o 'RDMA transport: [^(]*' <<<"$out" | head -1))"
      continue
    fi
    echo "$out"
    fail "command $n failed (exit $rc): $line"
  fi
done
echo "== tour: $n commands ran"

# Results worth checking.
check() { grep -qE -- "$2" <<<"$3" || { echo "$3"; fail "$1: no match for /$2/"; }; }
check "bdev_malloc_create" '^Malloc1$' "$(out_of 'bdev_malloc_create -b Malloc1')"
b=$(out_of 'bdev_get_bdevs -b Malloc1')
check "bdev_get_bdevs -b Malloc1" '"name": "Malloc1"' "$b"
check "bdev_get_bdevs -b Malloc1" '"block_size": 4096' "$b"
check "bdev_get_bdevs -b Malloc1" '"num_blocks": 16384' "$b"
check "bdev_lvol_get_lvols" '"name": "vol0"' "$(out_of bdev_lvol_get_lvols)"
r=$(out_of 'bdev_raid_get_bdevs all')
check "bdev_raid_get_bdevs" '"name": "Raid0"' "$r"
check "bdev_raid_get_bdevs" '"state": "online"' "$r"
s=$(out_of nvmf_get_subsystems)
check "nvmf_get_subsystems" '"nqn": "nqn.2016-06.io.keel:disk1"' "$s"
check "nvmf_get_subsystems" "\"trsvcid\": \"$PORT1\"" "$s"
ns=$(python3 -c '
import json, sys
subs = json.load(sys.stdin)
d = [s for s in subs if s["nqn"] == "nqn.2016-06.io.keel:disk1"][0]
print(" ".join(n["bdev_name"] for n in d["namespaces"]))' <<<"$s") || fail "nvmf_get_subsystems is not JSON"
[ -n "$ns" ] || fail "disk1 has no namespace"
echo "== tour: disk1 exports $ns"
python3 -c '
import json, sys
cfg = json.load(open(sys.argv[1]))
methods = [c["method"] for s in cfg["subsystems"] for c in (s.get("config") or [])]
for m in ("bdev_malloc_create", "bdev_raid_create", "nvmf_subsystem_add_ns"):
    assert m in methods, m + " missing from save_config"' "$WORK/keel.json" || fail "save_config output"
check "bdev_get_bdevs Null0" '"name": "Null0"' "$(out_of "call bdev_get_bdevs")"
# spdk_kill_instance was the last command: the target exits cleanly by itself.
for _ in $(seq 200); do kill -0 "$TGT_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$TGT_PID" 2>/dev/null && fail "keel-tgt still runs 20 s after spdk_kill_instance"
wait "$TGT_PID"; rc=$?; TGT_PID=
[ $rc -eq 0 ] || { tail -20 "$WORK/keel-tgt.log"; fail "keel-tgt exited with $rc"; }
echo "tour: PASS"
