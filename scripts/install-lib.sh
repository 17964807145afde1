# Helpers shared by scripts/install.sh and scripts/uninstall.sh (sourced, not run).
# The caller sets PROG (its name, for messages) and DRY_RUN (0 or 1).
# shellcheck shell=bash

die() {
    echo "$PROG: $*" >&2
    exit 1
}

say() {
    printf '==> %s\n' "$*"
}

# Run a command, or print it (shell-quoted) in --dry-run mode.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

have() {
    command -v "$1" >/dev/null 2>&1
}
