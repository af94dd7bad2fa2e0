#!/usr/bin/env bash
# Runs every test: unit and property tests of all crates, then the end-to-end
# tests, which start the real daemons in network namespaces (root needed;
# without root they fail loudly unless ETHFLOW_SKIP_NETNS=1).
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

# The end-to-end tests run the binaries of the profile they were built with
# (target/debug here): build them all first, so irmd, ipcpd-eth, oecho...
# are fresh next to the test executables.
cargo build --workspace --all-targets

# Unit and property tests in parallel; the namespace tests one at a time,
# since their timing assertions must not compete for the machine's cores.
# Both always run (and every test binary, --no-fail-fast), so one report
# shows every failure; the exit status says whether any happened.
status=0
cargo test --workspace --exclude ethflow-tests --no-fail-fast || status=1
# The systemd unit: installed into a temporary prefix, then verified and scored.
echo "==> systemd unit checks"
bash scripts/check-units.sh || status=1
# The Debian package: built with cargo-deb, installed, run, removed.
echo "==> Debian package"
bash scripts/deb-test.sh --no-build || status=1
# The end-to-end suite includes tests/tests/capi.rs: it installs this build
# with scripts/install.sh into a temporary prefix, compiles the C examples in
# capi/examples/ with pkg-config, and runs them (also under valgrind).
echo "==> end-to-end tests, backend raw"
ETHFLOW_BACKEND=raw cargo test -p ethflow-tests --no-fail-fast -- --test-threads=1 || status=1
# The same flow, liveness, segment and layer-key suites over the XDP fast path (tests/tests/xdp.rs
# already ran above: it bootstraps xdp itself, multi-buffer at MTU 9000 included; here the flow
# suite's jumbo case runs multi-buffer AF_XDP too, decision 0042).
echo "==> end-to-end tests, backend xdp"
ETHFLOW_BACKEND=xdp cargo test -p ethflow-tests --no-fail-fast --test flows --test liveness --test segment --test layer_key --test mtu -- --test-threads=1 || status=1
# The flow and liveness suites again with four receive queues per veth end and
# `queues 4` on every IPCP (docs/decisions/0031; about 40 s): a worker thread per
# queue. tests/tests/queues.rs (above) floods eight flows over four queues on both
# backends; here the flow suite runs over xdp's per-queue sockets too.
echo "==> end-to-end tests, queues 4"
ETHFLOW_TEST_QUEUES=4 ETHFLOW_BACKEND=raw cargo test -p ethflow-tests --no-fail-fast --test flows --test liveness -- --test-threads=1 || status=1
ETHFLOW_TEST_QUEUES=4 ETHFLOW_BACKEND=xdp cargo test -p ethflow-tests --no-fail-fast --test flows -- --test-threads=1 || status=1
# Benchmark smoke run (root + namespaces, about 15-40 s once built): every
# figure of scripts/bench.sh is produced and positive.
if [ "${ETHFLOW_SKIP_NETNS:-0}" != 1 ]; then
    echo "==> benchmark smoke run"
    bash scripts/bench.sh --smoke || status=1
fi
if [ "$status" -ne 0 ]; then
    echo "test.sh: some tests failed (see above)" >&2
fi
exit "$status"
