#!/usr/bin/env bash
# Builds the Debian package target/debian/ethflow_<version>-1_<arch>.deb with
# cargo-deb (`cargo install cargo-deb` once): the programs, the C library, the
# systemd unit (ExecStart=/usr/bin/irmd), the example configuration, manual
# pages, completions and the Wireshark dissector. No maintainer scripts: the
# unit is installed, not enabled (`systemctl enable --now irmd` after writing
# /etc/ethflow/irmd.toml).
#
#   scripts/deb.sh [--debug] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
for a in "$@"; do
    case "$a" in
        --debug) profile=debug ;;
        --no-build) build=0 ;;
        *) echo "deb.sh: unknown argument: $a" >&2; exit 2 ;;
    esac
done
cargo deb --version >/dev/null 2>&1 || { echo "deb.sh: cargo-deb is missing (cargo install cargo-deb)" >&2; exit 1; }
cargo_profile=release
flags=(--release)
if [ "$profile" = debug ]; then
    cargo_profile=dev
    flags=()
fi
[ "$build" = 1 ] && cargo build "${flags[@]}" --workspace

out="target/$profile"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
stage=target/deb-assets
rm -rf "$stage"
mkdir -p "$stage"
sed -e "s|/usr/local/bin/irmd|/usr/bin/irmd|g" dist/systemd/irmd.service >"$stage/irmd.service"
sed -e "s|@PREFIX@|/usr|" -e "s|@VERSION@|$version|" capi/ouroboros-dev.pc.in >"$stage/ouroboros-dev.pc"
# shellcheck source=scripts/gen-pages.sh
. scripts/gen-pages.sh
gen_pages "$out" "$stage/share"
cargo deb -p irmd --no-build --profile "$cargo_profile" --output target/debian/
