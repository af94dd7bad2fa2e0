#!/usr/bin/env bash
# Checks the Debian package end to end (root): builds it (debug profile,
# fast), installs it with dpkg -i, checks the installed files, starts irmd
# from /usr/bin with the installed example configuration checked and its
# socket in a temporary directory (no IPCP, nothing on any network), stops it
# with SIGTERM, removes the package with dpkg -r and checks nothing is left.
#
#   scripts/deb-test.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "deb-test.sh: run as root (dpkg -i)" >&2; exit 1; }
if dpkg -s ethflow >/dev/null 2>&1; then
    echo "deb-test.sh: package ethflow is already installed; not touching it" >&2
    exit 1
fi
bash scripts/deb.sh --debug "$@"
deb="$(ls -t target/debian/ethflow_*.deb | head -n 1)"
tmp="$(mktemp -d)"
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    dpkg -r ethflow >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

dpkg -i "$deb"
for f in /usr/bin/irmd /usr/bin/irm /usr/bin/ipcpd-eth /usr/bin/oecho /usr/bin/oping /usr/bin/operf \
    /lib/systemd/system/irmd.service /usr/share/man/man8/irmd.8.gz /usr/share/man/man1/irm.1.gz \
    /usr/share/doc/ethflow/irmd.toml.example /usr/share/doc/ethflow/json.md /usr/share/ethflow/wireshark/ethflow.lua \
    /usr/lib/libouroboros-dev.so.0 /usr/lib/pkgconfig/ouroboros-dev.pc \
    /usr/share/bash-completion/completions/irm; do
    [ -e "$f" ] || { echo "deb-test.sh: $f not installed" >&2; exit 1; }
done
# Every program's manual page and completions; every irm command's page.
for p in man8/irmd.8 man8/ipcpd-eth.8 man1/irm.1 man1/irm-ipcp-bootstrap.1 man1/irm-ipcp-list.1 \
    man1/irm-ipcp-destroy.1 man1/irm-name-create.1 man1/irm-name-register.1 man1/irm-bind-program.1 \
    man1/irm-flow-list.1; do
    [ -e "/usr/share/man/$p.gz" ] || { echo "deb-test.sh: manual page $p not installed" >&2; exit 1; }
done
for b in irmd ipcpd-eth irm; do
    for f in "bash-completion/completions/$b" "zsh/vendor-completions/_$b" "fish/vendor_completions.d/$b.fish"; do
        [ -e "/usr/share/$f" ] || { echo "deb-test.sh: completion $f not installed" >&2; exit 1; }
    done
done
# The tools' pages, for every tool that can write them (all, once they have
# --generate): the package must carry what the program offers.
for t in oecho oping operf; do
    if /usr/bin/"$t" --generate "$tmp/share" 2>/dev/null; then
        [ -e "/usr/share/man/man1/$t.1.gz" ] || { echo "deb-test.sh: manual page $t.1 not installed" >&2; exit 1; }
        [ -e "/usr/share/bash-completion/completions/$t" ] || { echo "deb-test.sh: completions for $t not installed" >&2; exit 1; }
    else
        echo "deb-test.sh: $t has no --generate yet; its manual page is not checked" >&2
    fi
done
zcat /usr/share/man/man8/ipcpd-eth.8.gz | grep -qF 'ctrl\-fd' ||
    { echo "deb-test.sh: ipcpd-eth.8 does not document its options" >&2; exit 1; }
grep -q '^ExecStart=/usr/bin/irmd$' /lib/systemd/system/irmd.service
/usr/bin/irmd --check-config --config /usr/share/doc/ethflow/irmd.toml.example

chmod 0755 "$tmp"
IRM_SOCKET="$tmp/irmd.sock" /usr/bin/irmd >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    [ -S "$tmp/irmd.sock" ] && break
    sleep 0.05
done
[ -S "$tmp/irmd.sock" ] || { cat "$tmp/log" >&2; echo "deb-test.sh: installed irmd did not start" >&2; exit 1; }
IRM_SOCKET="$tmp/irmd.sock" /usr/bin/irm ipcp list >/dev/null
kill -TERM "$pid"
wait "$pid" || true
pid=
[ ! -e "$tmp/irmd.sock" ] || { echo "deb-test.sh: irmd left its socket after SIGTERM" >&2; exit 1; }

dpkg -r ethflow
for f in /usr/bin/irmd /lib/systemd/system/irmd.service /usr/share/man/man8/irmd.8.gz \
    /usr/share/man/man8/ipcpd-eth.8.gz /usr/share/man/man1/irm-ipcp-bootstrap.1.gz; do
    [ ! -e "$f" ] || { echo "deb-test.sh: $f left after dpkg -r" >&2; exit 1; }
done
echo "deb-test.sh: $deb installs, runs and removes cleanly"
