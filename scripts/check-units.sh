#!/usr/bin/env bash
# Checks the systemd unit in dist/systemd: installs the debug build into a
# temporary prefix with scripts/install.sh (so ExecStart names a binary that
# exists), then `systemd-analyze verify` must be clean and
# `systemd-analyze security` must rate its exposure at most 4.0 ("OK").
#
#   scripts/check-units.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

build=(--debug)
[ "${1:-}" = --no-build ] && build+=(--no-build)
command -v systemd-analyze >/dev/null || { echo "check-units.sh: systemd-analyze is missing (scripts/setup.sh installs systemd)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
bash scripts/install.sh "${build[@]}" --prefix "$tmp/p" >/dev/null
unit="$tmp/p/lib/systemd/system/irmd.service"
grep -q "^ExecStart=$tmp/p/bin/irmd\$" "$unit" || { echo "check-units.sh: ExecStart not rewritten for the prefix" >&2; exit 1; }
# The installed binary's configuration check must work as ExecStartPre runs it.
"$tmp/p/bin/irmd" --check-config --config "$tmp/p/share/doc/ethflow/irmd.toml.example" >/dev/null

# verify prints problems on stderr but may exit 0 on some: any output fails.
out="$(systemd-analyze verify --man=no "$unit" 2>&1)" || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then
    echo "check-units.sh: systemd-analyze verify:" >&2
    echo "$out" >&2
    exit 1
fi
systemd-analyze security --offline=true --threshold=40 "$unit" | tail -n 1
echo "check-units.sh: irmd.service verified"
