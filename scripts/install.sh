#!/bin/bash
# Install pi-agent as a systemd service on Raspberry Pi OS (Bookworm or
# Trixie, 64-bit or 32-bit). Safe to run again: it upgrades the code, keeps
# your config and key, and restarts the service.
#
#   sudo scripts/install.sh [--camera] [--key-file FILE] [--source DIR]
#                           [--mqtt HOST [--mqtt-user USER]]
#   scripts/install.sh --dry-run ...      (prints the plan; no root needed)
#
# Options:
#   --dry-run        print every action instead of doing it (any Linux, any user)
#   --camera         also install python3-picamera2 (libcamera)
#   --source DIR     the pi-agent source tree (default: the one this script is in)
#   --key-file FILE  copy the Gemini API key from FILE (first line)
#   --no-key         install without a key (e.g. live.token_command is used)
#   --no-start       enable the service but do not (re)start it now
#   --mqtt HOST      Home Assistant over MQTT: set mqtt.enabled, mqtt.host (and
#                    mqtt.username) in /etc/pi-agent/config.yaml
#   --mqtt-user USER the broker user; its password is asked for (see below)
#                    and stored as the systemd credential mqtt-password
#   -h, --help       this text
#
# Without --key-file the key is kept if /etc/pi-agent/gemini-api-key exists;
# otherwise it is asked for on the terminal (not echoed) or read from standard
# input (sudo scripts/install.sh < keyfile). The MQTT password is read the same
# way, after the key: from standard input it is the next line (the first one
# when the key is not asked for). Secrets never appear on a command line, on the
# screen or in a log.
set -eu
set -o pipefail

APP=pi-agent
PREFIX=/opt/pi-agent
VENV=$PREFIX/venv
ETC=/etc/pi-agent
CONFIG=$ETC/config.yaml
KEY=$ETC/gemini-api-key
MQTT_PASSWORD=$ETC/mqtt-password
UNIT=/etc/systemd/system/pi-agent.service
# Drop-in for the unit: the MQTT password as a credential, only when it is used
# (LoadCredential= of a missing file stops the service from starting).
DROPIN_DIR=/etc/systemd/system/pi-agent.service.d
DROPIN=$DROPIN_DIR/mqtt-password.conf
LINK=/usr/local/bin/pi-agent
# Debian's Python: the one python3-pyaudio, python3-lgpio and python3-picamera2
# are built for (not a pyenv or /usr/local python that may come first in PATH).
PYTHON=/usr/bin/python3

DRY_RUN=0
CAMERA=0
KEY_FILE=
NO_KEY=0
START=1
MQTT_HOST=
MQTT_USER=
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
        --mqtt)
            [ $# -ge 2 ] || die "--mqtt needs the broker's host name or address"
            MQTT_HOST=$2
            shift
            ;;
        --mqtt-user)
            [ $# -ge 2 ] || die "--mqtt-user needs a user name"
            MQTT_USER=$2
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
if [ -n "$MQTT_USER" ] && [ -z "$MQTT_HOST" ]; then
    die "--mqtt-user needs --mqtt HOST"
fi
if [ -n "$MQTT_HOST" ] && ! [[ $MQTT_HOST =~ ^[A-Za-z0-9]([A-Za-z0-9.:-]*[A-Za-z0-9])?$ ]]; then
    die "--mqtt: '$MQTT_HOST' is not a host name or address"
fi
if [[ $MQTT_USER == *[[:cntrl:]]* ]]; then
    die "--mqtt-user: the user name has control characters"
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
else
    key_action=ask
    read_secret 'Gemini API key (input hidden): ' key
fi
if [ "$key_action" = from-file ] && [ "$DRY_RUN" = 0 ]; then
    IFS= read -r key <"$KEY_FILE" || true
fi
if [ "$DRY_RUN" = 0 ] && { [ "$key_action" = ask ] || [ "$key_action" = from-file ]; }; then
    key=${key//[[:space:]]/}
    [ -n "$key" ] || die "no API key given: use --key-file FILE, pipe it on stdin, or --no-key"
fi

# The MQTT broker password, asked for in the same way (never on a command line).
mqtt_password=
mqtt_action=none
if [ -n "$MQTT_USER" ]; then
    mqtt_action=new
    if [ "$DRY_RUN" = 0 ]; then
        read_secret "MQTT password of $MQTT_USER at $MQTT_HOST (input hidden): " mqtt_password
        [ -n "$mqtt_password" ] || die "no MQTT password given for --mqtt-user $MQTT_USER"
    fi
elif [ -n "$MQTT_HOST" ]; then
    mqtt_action=anonymous
elif [ -s "$MQTT_PASSWORD" ] || { [ "$DRY_RUN" = 1 ] && [ -e "$MQTT_PASSWORD" ]; }; then
    mqtt_action=keep
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
progress "    updating the package lists" apt-get update
# shellcheck disable=SC2086 # $packages is a list of words
progress "    installing the packages (this can take a few minutes on a Pi)" \
    env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages

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
    progress "    creating $VENV" "$PYTHON" -m venv --system-site-packages "$VENV"
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
# The mqtt extra (paho-mqtt, pure Python) always: enabling mqtt later needs no reinstall.
progress "    installing pi-agent and its Python packages (minutes on a Pi)" \
    "$VENV/bin/pip" install --disable-pip-version-check --no-cache-dir --progress-bar off \
    --upgrade "${build}[mqtt]"
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
            write_secret "$KEY" "$key"
            chown root:root "$KEY"
        fi
        ;;
esac
key=

# ---------------------------------------------------------------------- MQTT
install_dropin() {
    run install -d -m 0755 "$DROPIN_DIR"
    if [ "$DRY_RUN" = 1 ]; then
        echo "+ write $DROPIN: [Service] LoadCredential=mqtt-password:$MQTT_PASSWORD"
    else
        printf '[Service]\n# Written by scripts/install.sh --mqtt: the MQTT broker password.\n%s\n' \
            "LoadCredential=mqtt-password:$MQTT_PASSWORD" >"$DROPIN"
        chmod 0644 "$DROPIN"
    fi
}

if [ -n "$MQTT_HOST" ]; then
    say "MQTT: Home Assistant through the broker $MQTT_HOST as ${MQTT_USER:-an anonymous user}"
    if [ "$DRY_RUN" = 1 ]; then
        echo "+ set mqtt: enabled: true, host: $MQTT_HOST, username: ${MQTT_USER:-null} in" \
            "$CONFIG.new (comments kept), check it with pi_agent.config, mv -f it to $CONFIG"
    else
        manual="set mqtt.enabled, mqtt.host and mqtt.username in $CONFIG by hand"
        if ! (
            MQTT_HOST_YAML=$(yaml_quote "$MQTT_HOST")
            MQTT_USER_YAML=null
            if [ -n "$MQTT_USER" ]; then
                MQTT_USER_YAML=$(yaml_quote "$MQTT_USER")
            fi
            export MQTT_HOST_YAML MQTT_USER_YAML
            set_mqtt_config "$CONFIG" >"$CONFIG.new"
        ); then
            rm -f -- "$CONFIG.new"
            die "the mqtt section of $CONFIG is written on one line: $manual"
        fi
        if ! "$VENV/bin/python" - "$CONFIG.new" "$MQTT_HOST" "$MQTT_USER" <<'PY'; then
import sys

from pi_agent.config import load_config
from pi_agent.errors import ConfigError

path, host, user = sys.argv[1:]
try:
    mqtt = load_config(path).mqtt
except ConfigError as exc:
    for problem in exc.problems:
        print(f"install.sh: {problem}", file=sys.stderr)
    sys.exit(1)
if not (mqtt.enabled and mqtt.host == host and (mqtt.username or "") == user):
    sys.exit("install.sh: the mqtt section did not come out as asked")
PY
            rm -f -- "$CONFIG.new"
            die "could not set the mqtt section of $CONFIG (see above), it is unchanged: $manual"
        fi
        chown root:"$APP" "$CONFIG.new"
        chmod 0640 "$CONFIG.new"
        mv -f -- "$CONFIG.new" "$CONFIG"
    fi
fi
case $mqtt_action in
    new)
        say "MQTT password: into $MQTT_PASSWORD (0600 root:root), the systemd credential mqtt-password"
        if [ "$DRY_RUN" = 1 ]; then
            echo "+ write the password to $MQTT_PASSWORD.new (umask 077, shell builtin printf)," \
                "mv -f it to $MQTT_PASSWORD"
        else
            write_secret "$MQTT_PASSWORD" "$mqtt_password"
            chown root:root "$MQTT_PASSWORD"
        fi
        install_dropin
        ;;
    keep)
        say "MQTT password: keeping $MQTT_PASSWORD (the systemd credential mqtt-password)"
        run chown root:root "$MQTT_PASSWORD"
        run chmod 0600 "$MQTT_PASSWORD"
        install_dropin
        ;;
    anonymous)
        say "MQTT password: none (no --mqtt-user)"
        run rm -f "$MQTT_PASSWORD" "$DROPIN"
        ;;
    none)
        # A drop-in whose file is gone would keep the service from starting.
        if [ -e "$DROPIN" ]; then
            run rm -f "$DROPIN"
        fi
        ;;
esac
mqtt_password=

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
if [ -n "$MQTT_HOST" ]; then
    echo "Home Assistant: the device appears once the agent reaches $MQTT_HOST" \
        "(sudo pi-agent check tests the broker; see docs/home-assistant.md)"
fi
