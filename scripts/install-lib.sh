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

# Read one line (a secret) into the variable named $2: from a terminal with echo off
# after printing the prompt $1 on stderr, else from standard input (sudo install.sh <
# file). The value never appears on a command line or on the screen.
read_secret() {
    local line=
    if [ -t 0 ]; then
        # Echo off before the prompt: what is typed (or pasted) ahead must not show.
        trap 'stty echo; exit 130' INT TERM
        stty -echo
        printf '%s' "$1" >&2
        IFS= read -r line || true
        stty echo
        trap - INT TERM
        printf '\n' >&2
    else
        IFS= read -r line || true
    fi
    line=${line%$'\r'}
    printf -v "$2" '%s' "$line"
}

# Write the secret $2 to the file $1 (0600, owned by whoever runs this: root on an
# install) through FILE.new and a rename, so no reader ever sees half a file. printf
# is a shell builtin: the secret is never an argument of a process.
write_secret() {
    (umask 077 && printf '%s\n' "$2" >"$1.new")
    mv -f -- "$1.new" "$1"
}

# "value" as a YAML double-quoted scalar (backslashes and quotes escaped).
yaml_quote() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# Print the pi-agent config FILE with the top-level mqtt: section set to enabled: true,
# host: $MQTT_HOST_YAML and username: $MQTT_USER_YAML (exported variables holding YAML
# scalars, e.g. from yaml_quote; null for anonymous). Every other line and every comment stays:
# those three keys are replaced in place (a trailing comment kept), missing ones are
# added under "mqtt:" at the section's own indentation, a missing section is appended.
# Fails (status 3, nothing printed) for an mqtt: written on one line ({...}): edit by hand.
#   set_mqtt_config FILE > NEW
set_mqtt_config() {
    awk '
    function key_of(line,    rest) {
        if (substr(line, 1, indent) != pad || substr(line, indent + 1, 1) ~ /[ \t#]/)
            return ""
        rest = substr(line, indent + 1)
        if (match(rest, /^(enabled|host|username):/))
            return substr(rest, 1, RLENGTH - 1)
        return ""
    }
    function setting(key,    value, comment, rest) {
        value = key == "enabled" ? "true" : (key == "host" ? ENVIRON["MQTT_HOST_YAML"] : ENVIRON["MQTT_USER_YAML"])
        return pad key ": " value
    }
    function section_start(line) { return line ~ /^mqtt:[ \t]*(#.*)?$/ }
    function top_level(line) { return line ~ /^[^ \t#]/ }
    # First pass: where the section is, its indentation, which keys it has.
    FNR == NR {
        if ($0 ~ /^mqtt[ \t]*:/ && !section_start($0)) { flow = 1; exit 3 }
        if (section_start($0)) { found = 1; inside = 1; next }
        if (inside && top_level($0)) inside = 0
        if (inside && !indent && $0 ~ /^[ ]+[^ #]/) {
            match($0, /^[ ]+/); indent = RLENGTH; pad = substr($0, 1, indent)
        }
        if (inside && indent) { k = key_of($0); if (k != "") has[k] = 1 }
        next
    }
    FNR == 1 { if (!indent) { indent = 2; pad = "  " }; inside = 0 }
    {
        if (section_start($0)) {
            print
            inside = 1
            split("enabled host username", order, " ")
            for (i = 1; i <= 3; i++) if (!has[order[i]]) print setting(order[i])
            next
        }
        if (inside && top_level($0)) inside = 0
        k = inside ? key_of($0) : ""
        if (k == "") { print; next }
        comment = ""
        if (match($0, /[ \t]+#.*$/)) comment = substr($0, RSTART)
        print setting(k) comment
    }
    END {
        if (flow) exit 3
        if (!found) {
            print "mqtt:"
            print setting("enabled"); print setting("host"); print setting("username")
        }
    }
    ' "$1" "$1"
}

# True if the pi-agent config FILE enables the top-level mqtt: section (enabled: true).
mqtt_enabled() {
    [ -r "$1" ] || return 1
    awk '
    /^mqtt:[ \t]*(#.*)?$/ { inside = 1; next }
    inside && /^[^ \t#]/ { inside = 0 }
    inside && !indent && /^[ ]+[^ #]/ { match($0, /^[ ]+/); indent = RLENGTH }
    inside && indent && substr($0, indent + 1, 1) !~ /[ \t]/ &&
        $0 ~ /^[ ]+enabled:[ \t]*(true|True|TRUE|yes|Yes|YES|on|On|ON)[ \t]*(#.*)?$/ { on = 1 }
    END { exit on ? 0 : 1 }
    ' "$1"
}
