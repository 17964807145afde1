#!/bin/bash
# Install pi-agent as a systemd service on Raspberry Pi OS (Bookworm or
# Trixie, 64-bit or 32-bit). Safe to run again: it upgrades the code, keeps
# your config and key, and restarts the service.
#
#   sudo scripts/install.sh [--camera] [--key-file FILE] [--source DIR]
#   scripts/install.sh --dry-run ...      (prints the plan; no root needed)
#
# Options:
#   --dry-run        print every action instead of doing it (any Linux, any user)
#   --camera         also install python3-picamera2 (libcamera)
#   --source DIR     the pi-agent source tree (default: the one this script is in)
#   --key-file FILE  copy the Gemini API key from FILE (first line)
#   --no-key         install without a key (e.g. live.token_command is used)
#   --no-start       enable the service but do not (re)start it now
#   -h, --help       this text
#
# Without --key-file the key is kept if /etc/pi-agent/gemini-api-key exists;
# otherwise it is asked for on the terminal (not echoed) or read from standard
# input (sudo scripts/install.sh < keyfile). It never appears on a command line.
set -eu
set -o pipefail

APP=pi-agent
PREFIX=/opt/pi-agent
VENV=$PREFIX/venv
ETC=/etc/pi-agent
CONFIG=$ETC/config.yaml
KEY=$ETC/gemini-api-key
UNIT=/etc/systemd/system/pi-agent.service
LINK=/usr/local/bin/pi-agent
# Debian's Python: the one python3-pyaudio, python3-lgpio and python3-picamera2
# are built for (not a pyenv or /usr/local python that may come first in PATH).
PYTHON=/usr/bin/python3

DRY_RUN=0
CAMERA=0
KEY_FILE=
NO_KEY=0
START=1
SOURCE=$(cd -- "$(dirname -- "$0")/.." && pwd)

usage() {
    sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

PROG=install.sh
# shellcheck source-path=SCRIPTDIR source=install-lib.sh
. "$(dirname -- "$0")/install-lib.sh"

# Is a Debian package known to apt? Without apt (a dry run elsewhere) assume yes.
apt_has() {
    if have apt-cache; then
        apt-cache show "$1" >/dev/null 2>&1
    else
        return 0
    fi
}

while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --camera) CAMERA=1 ;;
        --no-key) NO_KEY=1 ;;
        --no-start) START=0 ;;
        --source)
            [ $# -ge 2 ] || die "--source needs a directory"
            SOURCE=$2
            shift
            ;;
        --key-file)
            [ $# -ge 2 ] || die "--key-file needs a file"
            KEY_FILE=$2
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
done

SOURCE=$(cd -- "$SOURCE" 2>/dev/null && pwd) || die "--source: no such directory"
if [ ! -f "$SOURCE/setup.cfg" ] || [ ! -d "$SOURCE/pi_agent" ]; then
    die "$SOURCE does not look like the pi-agent source tree (no setup.cfg / pi_agent)"
fi
[ -f "$SOURCE/systemd/pi-agent.service" ] || die "missing $SOURCE/systemd/pi-agent.service"
if [ ! -f "$SOURCE/config/pi-agent.yaml" ]; then
    [ "$DRY_RUN" = 1 ] || die "missing $SOURCE/config/pi-agent.yaml (the example configuration)"
    echo "install.sh: warning: $SOURCE/config/pi-agent.yaml is missing" >&2
fi
if [ -n "$KEY_FILE" ]; then
    [ "$NO_KEY" = 0 ] || die "--key-file and --no-key exclude each other"
    if [ ! -f "$KEY_FILE" ] || [ ! -r "$KEY_FILE" ]; then
        die "--key-file: cannot read $KEY_FILE"
    fi
fi

if [ "$DRY_RUN" = 1 ]; then
    say "dry run: nothing is changed; each action is printed with a leading +"
else
    [ "$(id -u)" = 0 ] || die "run as root: sudo $0 $*"
    have apt-get || die "apt-get not found: this installer is for Raspberry Pi OS / Debian"
    have systemctl || die "systemctl not found: the service needs systemd"
fi

# ------------------------------------------------------------------ the system
codename=unknown
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-unknown}")
fi
arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
case $codename in
    bookworm | trixie) say "system: $codename on $arch" ;;
    *) say "system: $codename on $arch (untested: written for Raspberry Pi OS bookworm/trixie)" ;;
esac

# --------------------------------------------------------------- the API key
# Collected first, so nobody waits through apt and pip to be asked. Kept in an
# unexported shell variable: not visible in ps or any child's environment.
key=
key_action=keep
if [ "$NO_KEY" = 1 ]; then
    key_action=none
elif [ -n "$KEY_FILE" ]; then
    key_action=from-file
elif [ -s "$KEY" ] || { [ "$DRY_RUN" = 1 ] && [ -e "$KEY" ]; }; then
    key_action=keep
elif [ "$DRY_RUN" = 1 ]; then
    key_action=ask
elif [ -t 0 ]; then
    key_action=ask
    printf 'Gemini API key (input hidden): ' >&2
    trap 'stty echo; exit 130' INT TERM
    stty -echo
    IFS= read -r key || true
    stty echo
    trap - INT TERM
    printf '\n' >&2
else
    key_action=ask
    IFS= read -r key || true
fi
if [ "$key_action" = from-file ] && [ "$DRY_RUN" = 0 ]; then
    IFS= read -r key <"$KEY_FILE" || true
fi
if [ "$DRY_RUN" = 0 ] && { [ "$key_action" = ask ] || [ "$key_action" = from-file ]; }; then
    key=${key//[[:space:]]/}
    [ -n "$key" ] || die "no API key given: use --key-file FILE, pipe it on stdin, or --no-key"
fi

# ---------------------------------------------------------------- packages
packages="python3-venv python3-pip python3-numpy python3-yaml"
if apt_has python3-pyaudio; then
    # Prebuilt on Raspberry Pi OS: no compiler, no headers.
    packages="$packages python3-pyaudio"
else
    # Fallback: pip builds PyAudio against PortAudio.
    packages="$packages portaudio19-dev gcc python3-dev"
fi
if apt_has python3-lgpio; then
    packages="$packages python3-lgpio"
else
    echo "install.sh: warning: python3-lgpio is not in apt (not Raspberry Pi OS?);" \
        "GPIO will need another gpiozero pin factory" >&2
fi
if [ "$CAMERA" = 1 ]; then
    if ! apt_has python3-picamera2; then
        [ "$DRY_RUN" = 1 ] || die "--camera: python3-picamera2 is not in apt (not Raspberry Pi OS?)"
        echo "install.sh: warning: python3-picamera2 is not in apt here (not Raspberry Pi OS?)" >&2
    fi
    packages="$packages python3-picamera2"
fi
say "apt packages: $packages"
run apt-get update
# shellcheck disable=SC2086 # $packages is a list of words
run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages

# ------------------------------------------------------------ user and groups
say "system user $APP (groups audio video gpio)"
for group in audio video gpio; do
    if ! getent group "$group" >/dev/null; then
        run groupadd --system "$group"
    fi
done
if getent passwd "$APP" >/dev/null; then
    echo "    user $APP exists"
elif have adduser; then
    run adduser --system --group --no-create-home --home /nonexistent \
        --shell /usr/sbin/nologin --gecos "pi-agent service" "$APP"
else
    run useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "pi-agent service" "$APP"
fi
run usermod --append --groups audio,video,gpio "$APP"

# ------------------------------------------------------------- venv and code
say "virtual environment $VENV (with the system's packages) and pi-agent from $SOURCE"
if [ ! -x "$VENV/bin/python" ]; then
    run install -d -m 0755 "$PREFIX"
    run "$PYTHON" -m venv --system-site-packages "$VENV"
fi
# Build from a copy, so pip leaves no root-owned build files in $SOURCE.
if [ "$DRY_RUN" = 1 ]; then
    build=/tmp/pi-agent-build.XXXXXX
else
    build=$(mktemp -d /tmp/pi-agent-build.XXXXXX)
    trap 'rm -rf -- "$build"' EXIT
fi
run cp -R "$SOURCE/setup.cfg" "$SOURCE/pi_agent" "$build/"
for extra in setup.py pyproject.toml README.md LICENSE MANIFEST.in; do
    if [ -e "$SOURCE/$extra" ]; then
        run cp "$SOURCE/$extra" "$build/"
    fi
done
run "$VENV/bin/pip" install --disable-pip-version-check --no-cache-dir --upgrade "$build"
run ln -sfn "$VENV/bin/pi-agent" "$LINK"

# --------------------------------------------------------------- /etc/pi-agent
say "configuration in $ETC (0750 root:$APP)"
run install -d -m 0750 -o root -g "$APP" "$ETC"
run chown root:"$APP" "$ETC"
run chmod 0750 "$ETC"
if [ -e "$CONFIG" ]; then
    echo "    keeping your $CONFIG (the new example is $ETC/config.example.yaml)"
else
    run install -m 0640 -o root -g "$APP" "$SOURCE/config/pi-agent.yaml" "$CONFIG"
fi
run install -m 0640 -o root -g "$APP" "$SOURCE/config/pi-agent.yaml" "$ETC/config.example.yaml"
run chown root:"$APP" "$CONFIG"
run chmod 0640 "$CONFIG"

case $key_action in
    none) say "API key: none installed (--no-key)" ;;
    keep)
        say "API key: keeping $KEY"
        run chown root:root "$KEY"
        run chmod 0600 "$KEY"
        ;;
    from-file | ask)
        if [ "$key_action" = from-file ]; then
            say "API key: from $KEY_FILE into $KEY (0600 root:root, read by systemd's LoadCredential=)"
        else
            say "API key: from the terminal or standard input into $KEY (0600 root:root)"
        fi
        if [ "$DRY_RUN" = 1 ]; then
            echo "+ write the key to $KEY.new (umask 077, shell builtin printf), mv -f it to $KEY"
        else
            # printf is a shell builtin: the key is never an argument of a process.
            (umask 077 && printf '%s\n' "$key" >"$KEY.new")
            chown root:root "$KEY.new"
            mv -f "$KEY.new" "$KEY"
        fi
        ;;
esac
key=

# ------------------------------------------------------------------ the unit
say "systemd unit $UNIT"
run install -m 0644 "$SOURCE/systemd/pi-agent.service" "$UNIT"
run systemctl daemon-reload
run systemctl enable "$APP.service"
if [ "$START" = 1 ]; then
    say "starting $APP (waits until it reports READY, up to 2 minutes)"
    run systemctl reset-failed "$APP.service" || true
    if ! run systemctl restart "$APP.service"; then
        echo "install.sh: the service did not start; see: journalctl -u $APP -b --no-pager | tail -50" >&2
        exit 1
    fi
else
    say "not starting $APP (--no-start): sudo systemctl start $APP"
fi

cat <<'EOF'

pi-agent is installed. To check on it:
    systemctl status pi-agent       state, and what the agent is doing right now
    journalctl -u pi-agent -f       follow its log
    sudo pi-agent check             validate /etc/pi-agent/config.yaml and the devices
    sudo pi-agent ctl status        ask the running agent over its control socket
After editing /etc/pi-agent/config.yaml: sudo systemctl restart pi-agent
To use 'pi-agent ctl' without sudo: sudo adduser $USER pi-agent (then log in again)
EOF
