#!/usr/bin/env bash
# Installs what ethflow needs on a fresh Debian machine, then builds it.
# Run as root (a fresh machine may have no sudo): bash scripts/setup.sh
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (apt-get needs it)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Another apt run (e.g. unattended upgrades) may hold the lock: wait, bounded.
wait_for_apt() {
    local waited=0
    while fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock >/dev/null 2>&1; do
        if [ "$waited" -ge 600 ]; then
            echo "setup.sh: apt is still locked after 10 minutes" >&2
            exit 1
        fi
        [ "$waited" -eq 0 ] && echo "setup.sh: waiting for another apt run to finish..."
        sleep 5
        waited=$((waited + 5))
    done
}

packages=(
    iproute2        # ip netns, veth, bridge, tc
    clang llvm      # the XDP program (clang -target bpf)
    bpftool
    libelf-dev
    iperf3          # baseline throughput for benchmarks
    time            # CPU time and context switches of benchmark runs (/usr/bin/time)
    openssl         # the benchmark's certificates for secure flows
    iputils-ping    # baseline RTT next to oping
    tshark          # decoding frames (dist/wireshark/ethflow.lua is tested with it)
    systemd         # systemd-analyze verify/security of dist/systemd (check-units.sh)
    ethtool
    linux-perf
    procps
    psmisc          # fuser, for the apt lock wait above
    gcc libc6-dev pkg-config  # C programs built against libouroboros-dev (capi/)
    valgrind        # memory checks of the C examples (tests/tests/capi.rs)
    g++ groff-base  # the headers' C++ check; rendering the manual pages
)

wait_for_apt
apt-get -o DPkg::Lock::Timeout=600 update -q
wait_for_apt
# tshark asks whether non-root users may capture; the preseed answers no.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${packages[@]}"

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup.sh: cargo not found (install Rust from rustup, or put cargo on PATH)" >&2
    exit 1
fi

# The Debian package builder (scripts/deb.sh, scripts/deb-test.sh).
if ! cargo deb --version >/dev/null 2>&1; then
    cargo install cargo-deb --locked
fi

cargo build --release --workspace
echo "setup.sh: done; binaries are in target/release/"
