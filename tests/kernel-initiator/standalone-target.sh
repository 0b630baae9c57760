# Sourced by the self-contained guest tests (lvol-trim.sh, raid5-rebuild.sh): builds keel-tgt
# (or takes KI_TGT_BIN), builds the guest image (tests/guest/keel-guest build), starts keel-tgt --no-default on its own RPC
# socket in $RESULTS, and kills the guest and the target on exit.
# Needs from the caller: ROOT, HARNESS (the guest harness CLI), PORT, TGT_ARGS, RESULTS, and the functions log and fatal.
# Gives: rpc METHOD [JSON], qemu_of PID, TGT_PID, KPID (set it to a running harness's pid so that
# cleanup kills that guest), SOCK, KEEL_TGT, KEEL_RPC.
# shellcheck shell=bash disable=SC2034  # TGT_PID, KPID are the caller's
TGT_PID='' KPID='' SOCK=''
rpc() { "$KEEL_RPC" -s "$SOCK" -t 10 call "$@"; }
port_busy() { [ -n "$(ss -Hltn "sport = :$PORT" 2>/dev/null)" ]; }
# shellcheck disable=SC2317  # called from the trap
cleanup() {  # the running guest (its QEMU, then the harness), then keel-tgt
  local q
  if [ -n "$KPID" ]; then q=$(qemu_of "$KPID") && kill -KILL "$q" 2>/dev/null; kill "$KPID" 2>/dev/null; fi
  [ -n "$TGT_PID" ] && kill -KILL "$TGT_PID" 2>/dev/null
}
# qemu_of PID: the QEMU process under a harness run (keel-guest -> timeout -> qemu-system-x86_64).
qemu_of() {
  local q=("$1") p c
  while [ ${#q[@]} -gt 0 ]; do
    p=${q[0]}; q=("${q[@]:1}")
    for c in $(ps -o pid= --ppid "$p"); do
      [[ $(ps -o comm= -p "$c") == qemu-system* ]] && { echo "$c"; return 0; }; q+=("$c"); done
  done; return 1
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

rm -rf "$RESULTS"; mkdir -p "$RESULTS/sync"; RESULTS=$(cd "$RESULTS" && pwd)
[ -x "$HARNESS" ] || fatal "no guest harness at $HARNESS (set KEEL_GUEST)"
command -v jq >/dev/null || fatal "jq is needed on the host"
if [ -n "${KI_TGT_BIN:-}" ]; then KEEL_TGT=$KI_TGT_BIN
else
  (cd "$ROOT" && cargo build --release -p keel-tgt) > "$RESULTS/cargo-build.log" 2>&1 ||
    { tail -30 "$RESULTS/cargo-build.log"; fatal "cargo build --release -p keel-tgt failed"; }
  KEEL_TGT=${CARGO_TARGET_DIR:-$ROOT/target}/release/keel-tgt
fi
KEEL_RPC=$(dirname "$KEEL_TGT")/keel-rpc
{ [ -x "$KEEL_TGT" ] && [ -x "$KEEL_RPC" ]; } || fatal "no keel-tgt / keel-rpc at $KEEL_TGT"
"$HARNESS" build > "$RESULTS/guest-build.log" 2>&1 || { cat "$RESULTS/guest-build.log"; fatal "guest build failed ($HARNESS build)"; }

port_busy && fatal "something already listens on 127.0.0.1:$PORT (set KI_PORT)"
SOCK=$RESULTS/keel.sock
# shellcheck disable=SC2086
"$KEEL_TGT" $TGT_ARGS --no-default -r "$SOCK" > "$RESULTS/keel-tgt.log" 2>&1 &
TGT_PID=$!
for ((i = 0; i < 100; i++)); do [ -S "$SOCK" ] && rpc spdk_get_version >/dev/null 2>&1 && break; sleep 0.1; done
rpc spdk_get_version >/dev/null 2>&1 || { tail "$RESULTS/keel-tgt.log"; fatal "keel-tgt does not serve RPC"; }
