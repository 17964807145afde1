#!/bin/bash
# Remove what scripts/install.sh installed. Safe to run again.
#
#   sudo scripts/uninstall.sh [--purge]
#   scripts/uninstall.sh --dry-run [--purge]   (prints the plan; no root needed)
#
# Options:
#   --dry-run   print every action instead of doing it
#   --purge     also remove /etc/pi-agent (config, API key, MQTT password),
#               the pi-agent system user and group, and, if mqtt is enabled in
#               the config, the device from Home Assistant (pi-agent mqtt-clear)
#   -h, --help  this text
#
# By default the configuration and the key in /etc/pi-agent and the user are
# kept, so a later install.sh picks them up again. Debian packages (PyAudio,
# numpy, lgpio, picamera2 ...) are left alone: other programs may use them.
set -eu
set -o pipefail

APP=pi-agent
PREFIX=/opt/pi-agent
ETC=/etc/pi-agent
UNIT=/etc/systemd/system/pi-agent.service
DROPIN_DIR=/etc/systemd/system/pi-agent.service.d
LINK=/usr/local/bin/pi-agent

DRY_RUN=0
PURGE=0

usage() {
    sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

PROG=uninstall.sh
# shellcheck source-path=SCRIPTDIR source=install-lib.sh
. "$(dirname -- "$0")/install-lib.sh"

while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --purge) PURGE=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
    shift
done

if [ "$DRY_RUN" = 1 ]; then
    say "dry run: nothing is changed; each action is printed with a leading +"
else
    [ "$(id -u)" = 0 ] || die "run as root: sudo $0 $*"
fi

say "service $APP"
if have systemctl && { [ -e "$UNIT" ] || [ "$DRY_RUN" = 1 ]; }; then
    run systemctl disable --now "$APP.service" || true
fi
if [ -e "$UNIT" ] || [ "$DRY_RUN" = 1 ]; then
    run rm -f "$UNIT"
fi
# install.sh's drop-in (the MQTT credential); a directory left empty goes too, yours stay.
if [ -e "$DROPIN_DIR/mqtt-password.conf" ] || [ "$DRY_RUN" = 1 ]; then
    run rm -f "$DROPIN_DIR/mqtt-password.conf"
    run rmdir --ignore-fail-on-non-empty "$DROPIN_DIR"
fi
if have systemctl; then
    run systemctl daemon-reload || true
    run systemctl reset-failed "$APP.service" 2>/dev/null || true
fi

# Before the program goes: it is what talks to the broker. The service is stopped, so
# nothing publishes the device again. The password file has the credential's name, so
# the same lookup as under systemd finds it.
if [ "$PURGE" = 1 ]; then
    clear=(env "CREDENTIALS_DIRECTORY=$ETC" "$PREFIX/venv/bin/pi-agent" mqtt-clear
        --config "$ETC/config.yaml")
    if mqtt_enabled "$ETC/config.yaml"; then
        say "Home Assistant: removing this device from the MQTT broker"
        if [ ! -x "$PREFIX/venv/bin/pi-agent" ] && [ "$DRY_RUN" = 0 ]; then
            echo "    $PREFIX is gone already: delete the device in Home Assistant by hand" >&2
        elif ! run "${clear[@]}"; then
            echo "    could not reach the broker: delete the device in Home Assistant by hand" \
                "(Settings > Devices & services > MQTT)" >&2
        fi
    elif [ "$DRY_RUN" = 1 ]; then
        echo "    (only if mqtt is enabled in $ETC/config.yaml:)"
        run "${clear[@]}"
    fi
fi

say "program $PREFIX and $LINK"
# Only our own link: never a pi-agent that something else put there.
if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$PREFIX/venv/bin/pi-agent" ]; then
    run rm -f "$LINK"
elif [ "$DRY_RUN" = 1 ]; then
    echo "    (would remove $LINK if it links into $PREFIX)"
fi
run rm -rf "$PREFIX"

if [ "$PURGE" = 1 ]; then
    say "purge: $ETC (configuration, API key, MQTT password), user and group $APP"
    run rm -rf "$ETC"
    if getent passwd "$APP" >/dev/null || [ "$DRY_RUN" = 1 ]; then
        run userdel "$APP"
    fi
    if getent group "$APP" >/dev/null; then
        run groupdel "$APP"
    fi
    echo "    (the gpio, audio and video groups stay: other programs use them)"
else
    say "kept $ETC (configuration and API key) and the user $APP; --purge removes them"
fi
say "done"
