# Helpers shared by scripts/install.sh, scripts/uninstall.sh and scripts/setup-env (sourced).
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

# Run a slow command quietly, but never leave the screen blank: MESSAGE first, then,
# on a terminal, one line redrawn every second with the time taken and the command's
# latest output line (pip's "Collecting ...", apt's "Unpacking ..."); elsewhere (CI, a
# log) such a line every 10 s. The output is kept in a temporary file and shown only if
# the command fails. Ends with "  done (N s)". In --dry-run mode (DRY_RUN=1) it prints
# the command like run().
#   progress MESSAGE COMMAND [ARGS...]
progress() {
    local message=$1 log pid status=0 start=$SECONDS last width shown=0
    shift
    if [ "${DRY_RUN:-0}" = 1 ]; then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
        return 0
    fi
    log=$(mktemp "${TMPDIR:-/tmp}/pi-agent-progress.XXXXXX")
    "$@" </dev/null >"$log" 2>&1 &
    pid=$!
    # shellcheck disable=SC2064 # expand now: the handler needs this pid and log
    trap "kill $pid 2>/dev/null; rm -f -- '$log'; exit 130" INT TERM
    printf '%s\n' "$message" >&2
    width=$(tput cols 2>/dev/null || echo 80)
    while kill -0 "$pid" 2>/dev/null; do
        sleep 0.25
        [ $((SECONDS - start)) -gt "$shown" ] || continue
        shown=$((SECONDS - start))
        last=$(tail -n 1 "$log" 2>/dev/null | tr -d '\r\033' | cut -c 1-$((width - 14)))
        if [ -t 2 ]; then
            printf '\r\033[K  %4d s  %s' "$shown" "$last" >&2
        elif [ $((shown % 10)) = 0 ]; then
            printf '  %4d s  %s\n' "$shown" "$last" >&2
        fi
    done
    wait "$pid" || status=$?
    trap - INT TERM
    if [ -t 2 ]; then
        printf '\r\033[K' >&2
    fi
    if [ "$status" != 0 ]; then
        cat -- "$log" >&2
        rm -f -- "$log"
        printf '%s: failed (exit status %d, its output is above)\n' "$message" "$status" >&2
        return "$status"
    fi
    rm -f -- "$log"
    printf '  done (%d s)\n' $((SECONDS - start)) >&2
}
