# shellcheck shell=bash
# Sourced by install.sh and deb.sh: writes every program's manual pages and
# bash/zsh/fish completions under a `share` directory, each program from its
# own command-line definition (`--generate DIR`, `irm generate DIR`).
#
#   gen_pages BINDIR SHAREDIR
#
# The daemons and irm must succeed. A tool (oecho, oping, operf) built before
# it had `--generate` is reported and skipped; any other failure stops.
gen_pages() {
    local bindir="$1" share="$2" t err
    "$bindir/irmd" --generate "$share"
    "$bindir/ipcpd-eth" --generate "$share"
    "$bindir/irm" generate "$share"
    err="$(mktemp)"
    for t in oecho oping operf; do
        if ! "$bindir/$t" --generate "$share" 2>"$err"; then
            if grep -q "unexpected argument '--generate'" "$err"; then
                echo "gen-pages: $t has no --generate yet: no manual page or completions for it" >&2
            else
                cat "$err" >&2
                rm -f "$err"
                echo "gen-pages: $t --generate $share failed" >&2
                return 1
            fi
        fi
    done
    rm -f "$err"
}
