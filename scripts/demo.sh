#!/usr/bin/env bash
# ethflow demo: two hosts (network namespaces) joined by a veth pair, irmd and
# an eth IPCP in each, then oecho and a short oping across. Everything it
# creates is removed at the end, also on Ctrl-C or an error. Run as root.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (namespaces need it)" >&2; exit 1; }

BIN=$ROOT/target/release
if command -v cargo >/dev/null 2>&1 || { [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"; }; then
    echo "==> building (cargo build --release; quick when up to date)"
    cargo build --release --workspace -q
fi
for p in irmd irm ipcpd-eth oecho oping; do
    [ -x "$BIN/$p" ] || { echo "demo.sh: $BIN/$p missing; run scripts/setup.sh" >&2; exit 1; }
done

PREFIX=efdemo$$
WORK=$(mktemp -d /tmp/ethflow-demo.XXXXXX)
PIDS=()
RIG_UP=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    echo "==> cleaning up"
    # Only the processes this script started...
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 20); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    # ...and what they started (ipcpd-eth) inside this script's own namespaces.
    if [ "$RIG_UP" -eq 1 ]; then
        for ns in "${PREFIX}a" "${PREFIX}b"; do
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        done
        bash "$ROOT/scripts/rig.sh" down "$PREFIX" >/dev/null
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# on HOST PROGRAM ARGS...: run one of our programs inside host a or b.
on() {
    local h=$1 prog=$2
    shift 2
    echo "[$h]\$ $prog $*"
    IRM_SOCKET=$WORK/$h.sock timeout 30 ip netns exec "$PREFIX$h" "$BIN/$prog" "$@"
}

# bg HOST LOG PROGRAM ARGS...: start one in the background, remembering its pid.
bg() {
    local h=$1 log=$2 prog=$3
    shift 3
    IRM_SOCKET=$WORK/$h.sock ip netns exec "$PREFIX$h" "$BIN/$prog" "$@" >"$WORK/$log" 2>&1 &
    PIDS+=($!)
}

echo "==> two hosts, one veth pair"
RIG_UP=1
bash scripts/rig.sh up "$PREFIX"

for h in a b; do
    echo "==> host $h: irmd and IPCP eth-$h on interface $PREFIX$h"
    bg "$h" "irmd-$h.log" irmd
    for _ in $(seq 100); do [ -S "$WORK/$h.sock" ] && break; sleep 0.1; done
    [ -S "$WORK/$h.sock" ] || { echo "irmd on $h did not start:"; cat "$WORK/irmd-$h.log"; exit 1; }
    on "$h" irm ipcp bootstrap type eth name "eth-$h" layer eth dev "$PREFIX$h"
done

echo "==> host b: oecho and oping servers, registered by name"
for prog in oecho oping; do
    on b irm bind program "$prog" name "$prog"
    on b irm name register "$prog" layer eth
    bg b "$prog-server.log" "$prog" --listen
done
sleep 0.3
on a irm ipcp list
on b irm name list

echo "==> oecho from a to b"
on a oecho -n oecho -m "Hello from host a"

echo "==> oping from a to b (10 pings); flows while it runs:"
IRM_SOCKET=$WORK/a.sock timeout 30 ip netns exec "${PREFIX}a" "$BIN/oping" -n oping -c 10 -i 100 >"$WORK/oping.out" 2>&1 &
OPING=$!
PIDS+=("$OPING")
sleep 0.4
on a irm flow list
on b irm flow list
wait "$OPING" || { echo "oping failed:"; cat "$WORK/oping.out"; exit 1; }
cat "$WORK/oping.out"

echo "==> plain ping over the same veth, for comparison"
ip netns exec "${PREFIX}a" ping -c 10 -i 0.1 -q 10.77.0.2 | tail -2

echo "==> irmd log of host b"
cat "$WORK/irmd-b.log"
echo "==> demo done"
