#!/usr/bin/env bash
# Installs ethflow: the daemons and tools, the C library libouroboros-dev
# (shared and static), its headers, its manual pages and the pkg-config file
# ouroboros-dev.pc; the systemd unit irmd.service (for this prefix), an example
# configuration and the Wireshark dissector.
#
#   scripts/install.sh [--prefix P] [--debug] [--no-build] [--from DIR]
#
# --prefix P   install under P (default /usr/local): P/bin, P/lib,
#              P/include/ouroboros, P/lib/pkgconfig, P/share/man/man3
# --debug      install the debug build (target/debug) instead of release
# --no-build   do not run cargo; install what is already built
# --from DIR   install the build output in DIR (implies --no-build)
#
# Also: P/lib/systemd/system/irmd.service (ExecStart under P/bin; with the
# default prefix run `systemctl daemon-reload`), P/share/doc/ethflow/
# irmd.toml.example (copy to /etc/ethflow/irmd.toml), P/share/ethflow/
# wireshark/ethflow.lua (load with tshark -X lua_script:FILE), manual pages
# irmd(8), ipcpd-eth(8), irm(1), irm-*(1), oecho(1), oping(1), operf(1) and
# completions under P/share.
#
# Then: cc app.c $(pkg-config --cflags --libs ouroboros-dev)
# (with PKG_CONFIG_PATH=P/lib/pkgconfig, and LD_LIBRARY_PATH=P/lib at run
# time unless P/lib is a directory the dynamic linker searches).
set -euo pipefail

cd "$(dirname "$0")/.."

prefix=/usr/local
profile=release
build=1
from=
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix)
            [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }
            prefix="$2"
            shift 2
            ;;
        --prefix=*)
            prefix="${1#--prefix=}"
            shift
            ;;
        --debug)
            profile=debug
            shift
            ;;
        --no-build)
            build=0
            shift
            ;;
        --from)
            [ $# -ge 2 ] || { echo "install.sh: --from needs a directory" >&2; exit 2; }
            from="$2"
            build=0
            shift 2
            ;;
        -h | --help)
            sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "install.sh: unknown argument: $1 (see --help)" >&2
            exit 2
            ;;
    esac
done
case "$prefix" in
    /*) ;;
    *) prefix="$(pwd)/$prefix" ;;
esac

if [ "$build" = 1 ]; then
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    if [ "$profile" = release ]; then
        cargo build --release --workspace
    else
        cargo build --workspace
    fi
fi

out="${from:-target/$profile}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
bindir="$prefix/bin"
libdir="$prefix/lib"
incdir="$prefix/include/ouroboros"
pcdir="$libdir/pkgconfig"
mandir="$prefix/share/man/man3"

for f in libouroboros_dev.so libouroboros_dev.a irmd irm ipcpd-eth oecho oping operf; do
    [ -f "$out/$f" ] || { echo "install.sh: $out/$f is missing (build first, or drop --no-build)" >&2; exit 1; }
done

install -d "$bindir" "$libdir" "$incdir" "$pcdir" "$mandir"
for b in irmd irm ipcpd-eth oecho oping operf; do
    install -m 0755 "$out/$b" "$bindir/$b"
done
install -m 0755 "$out/libouroboros_dev.so" "$libdir/libouroboros-dev.so.0"
ln -sfn libouroboros-dev.so.0 "$libdir/libouroboros-dev.so"
install -m 0644 "$out/libouroboros_dev.a" "$libdir/libouroboros-dev.a"
install -m 0644 capi/include/ouroboros/*.h "$incdir/"
install -m 0644 capi/man/*.3 "$mandir/"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" \
    capi/ouroboros-dev.pc.in >"$pcdir/ouroboros-dev.pc"
chmod 0644 "$pcdir/ouroboros-dev.pc"

# The service, for this prefix's irmd, an example configuration, the dissector.
unitdir="$prefix/lib/systemd/system"
docdir="$prefix/share/doc/ethflow"
install -d "$unitdir" "$docdir"
sed -e "s|/usr/local/bin/irmd|$bindir/irmd|g" dist/systemd/irmd.service >"$unitdir/irmd.service"
chmod 0644 "$unitdir/irmd.service"
install -m 0644 dist/ethflow/irmd.toml "$docdir/irmd.toml.example"
install -m 0644 docs/deploy.md "$docdir/deploy.md"
install -m 0644 docs/json.md "$docdir/json.md"
# Manual pages (irmd.8, ipcpd-eth.8, irm.1 and one per irm command, oecho.1,
# oping.1, operf.1) and bash/zsh/fish completions, generated from the
# programs' own command-line definitions.
# shellcheck source=scripts/gen-pages.sh
. scripts/gen-pages.sh
gen_pages "$bindir" "$prefix/share"
if [ -f dist/wireshark/ethflow.lua ]; then
    install -d "$prefix/share/ethflow/wireshark"
    install -m 0644 dist/wireshark/ethflow.lua "$prefix/share/ethflow/wireshark/ethflow.lua"
fi

# A system-wide install: tell the dynamic linker about the new library.
if [ "$(id -u)" -eq 0 ] && command -v ldconfig >/dev/null 2>&1; then
    case "$libdir" in
        /usr/lib | /usr/local/lib) ldconfig ;;
    esac
fi

echo "install.sh: installed under $prefix"
echo "  build C programs with: PKG_CONFIG_PATH=$pcdir cc app.c \$(pkg-config --cflags --libs ouroboros-dev)"
