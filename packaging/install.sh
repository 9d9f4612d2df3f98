#!/usr/bin/env bash
# Installs chatd as a systemd service on a Raspberry Pi or any Linux machine without using a
# package manager (for Debian/Ubuntu/Raspberry Pi OS and Fedora/RHEL/openSUSE the .deb and .rpm
# are the better choice). Run as root:
#
#   packaging/install.sh [DIST_DIR]            install or upgrade
#   packaging/install.sh --uninstall [DIST_DIR]         remove binary and unit; keep data and config
#   packaging/install.sh --uninstall --purge [DIST_DIR] also delete /var/lib/chatd, /etc/default/chatd
#                                                       and the chatd user
#
# DIST_DIR holds the binaries packaging/build.sh makes (chatd-x86_64-linux-musl,
# chatd-aarch64-linux-musl, chatd-armv7-linux-gnueabihf); default: the directory this script is
# in. build.sh copies this script, chatd.service and chatd.default into target/dist, so that
# directory alone can be copied to the target machine:
#
#   scp -r target/dist pi@raspberrypi:chatd && ssh pi@raspberrypi sudo chatd/install.sh
#
# What it does: picks the binary for `uname -m` (x86_64, aarch64/arm64, armv7l; armv6l gets the
# armv7 binary with a warning), checks that it runs here, installs it as /usr/local/bin/chatd,
# the unit as /etc/systemd/system/chatd.service, the settings file /etc/default/chatd only if it
# does not exist yet (an admin's edits are never overwritten), creates the chatd system user
# and /var/lib/chatd, then runs systemctl daemon-reload, enable and restart. Each systemctl step
# is skipped, with a note, when systemd is not running. Running it again upgrades the binary and
# unit in place and keeps the data and the settings.
set -euo pipefail

BIN=/usr/local/bin/chatd
UNIT=/etc/systemd/system/chatd.service
ENV_FILE=/etc/default/chatd
DATA=/var/lib/chatd

die() {
    echo "install.sh: error: $*" >&2
    exit 1
}
note() { echo "install.sh: $*"; }
warn() { echo "install.sh: warning: $*" >&2; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

uninstall=0
purge=0
dist=
while [ $# -gt 0 ]; do
    case $1 in
    --uninstall) uninstall=1 ;;
    --purge) purge=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *)
        [ -z "$dist" ] || die "only one DIST_DIR, please"
        dist=$1
        ;;
    esac
    shift
done
[ "$purge" = 0 ] || [ "$uninstall" = 1 ] || die "--purge goes with --uninstall"

script_dir=$(cd "$(dirname "$0")" && pwd)
[ -n "$dist" ] || dist=$script_dir
[ -d "$dist" ] || die "$dist is not a directory"

[ "$(id -u)" = 0 ] || die "run as root (sudo $0 ...)"

if [ -d /run/systemd/system ]; then
    systemd=1
else
    systemd=0
fi

# systemctl_step ARGS...: runs `systemctl ARGS...` when systemd is running, else says so.
systemctl_step() {
    if [ "$systemd" = 1 ]; then
        systemctl "$@"
    else
        note "systemd is not running: skipped 'systemctl $*'"
    fi
}

# Whether a package manager owns $1 (then the package, not this script, manages chatd).
owned_by_package() {
    { command -v dpkg-query >/dev/null && dpkg-query -S "$1" >/dev/null 2>&1; } ||
        { command -v rpm >/dev/null && rpm -qf "$1" >/dev/null 2>&1; }
}

if [ "$uninstall" = 1 ]; then
    if [ -e "$UNIT" ]; then
        systemctl_step disable --now chatd.service
        rm -f "$UNIT"
        systemctl_step daemon-reload
        note "removed $UNIT"
    fi
    if [ -e "$BIN" ]; then
        rm -f "$BIN"
        note "removed $BIN"
    fi
    if [ "$purge" = 1 ]; then
        rm -rf "$DATA"
        rm -f "$ENV_FILE"
        if getent passwd chatd >/dev/null; then
            userdel chatd
        fi
        if getent group chatd >/dev/null; then
            groupdel chatd
        fi
        note "purged $DATA, $ENV_FILE and the chatd user"
    else
        note "kept the data in $DATA, the settings in $ENV_FILE and the chatd user" \
            "(--uninstall --purge deletes them)"
    fi
    exit 0
fi

# The binary for this machine.
machine=$(uname -m)
case $machine in
x86_64 | amd64) name=chatd-x86_64-linux-musl ;;
aarch64 | arm64) name=chatd-aarch64-linux-musl ;;
armv7* | armv8l | armhf) name=chatd-armv7-linux-gnueabihf ;;
armv6*)
    warn "this is an ARMv6 machine ($machine: Raspberry Pi 1 or Zero); the binary is built" \
        "for ARMv7 and will most likely not run here (illegal instruction)"
    name=chatd-armv7-linux-gnueabihf
    ;;
*) die "no chatd build for this architecture ($machine); build from source, see README.md" ;;
esac
src=$dist/$name
[ -f "$src" ] || die "$src not found (build it with packaging/build.sh, or pass the directory" \
    "that holds it: $0 DIST_DIR)"

find_file() { # the first of DIST_DIR/$1 and the script's directory/$1
    local f
    for f in "$dist/$1" "$script_dir/$1"; do
        if [ -f "$f" ]; then
            echo "$f"
            return
        fi
    done
    die "$1 not found in $dist or $script_dir"
}
unit_src=$(find_file chatd.service)
env_src=$(find_file chatd.default)

if [ -e /usr/bin/chatd ] && owned_by_package /usr/bin/chatd; then
    die "chatd is installed from a package here (/usr/bin/chatd); upgrade the package instead," \
        "or remove it first"
fi

# Refuse a binary that does not run on this machine before touching anything.
chmod 0755 "$src" 2>/dev/null || true
if ! version=$("$src" --version 2>&1); then
    die "$src does not run on this machine ($machine): $version"
fi
note "installing $version for $machine"

# The system user and group the service runs as.
if ! getent group chatd >/dev/null; then
    groupadd --system chatd
    note "created group chatd"
fi
if ! getent passwd chatd >/dev/null; then
    nologin=/usr/sbin/nologin
    [ -x "$nologin" ] || nologin=/sbin/nologin
    useradd --system --gid chatd --home-dir "$DATA" --no-create-home --shell "$nologin" \
        --comment "chatd chat server" chatd
    note "created system user chatd"
fi
if [ ! -d "$DATA" ]; then
    install -d -o chatd -g chatd -m 0750 "$DATA"
    note "created $DATA"
fi

# The binary: copied next to the old one and renamed over it, so a running server keeps its
# (old) file and the switch is atomic.
install -d /usr/local/bin
install -m 0755 "$src" "$BIN.new"
mv -f "$BIN.new" "$BIN"
note "installed $BIN"

# The unit, pointing at /usr/local/bin (its documentation link names a file only packages
# install). Local changes belong in a drop-in: systemctl edit chatd.
tmp_unit=$(mktemp)
trap 'rm -f "$tmp_unit"' EXIT
sed -e "s|^ExecStart=/usr/bin/chatd |ExecStart=$BIN |" -e '/^Documentation=file:/d' \
    "$unit_src" >"$tmp_unit"
grep -q "^ExecStart=$BIN " "$tmp_unit" || die "unexpected ExecStart= in $unit_src"
install -d /etc/systemd/system
if [ -f "$UNIT" ] && cmp -s "$tmp_unit" "$UNIT"; then
    note "$UNIT is up to date"
else
    install -m 0644 "$tmp_unit" "$UNIT"
    note "installed $UNIT"
fi

if [ -e "$ENV_FILE" ]; then
    note "kept the existing $ENV_FILE"
else
    install -d "$(dirname "$ENV_FILE")"
    install -m 0644 "$env_src" "$ENV_FILE"
    note "installed $ENV_FILE (settings: edit it, then systemctl restart chatd)"
fi

systemctl_step daemon-reload
systemctl_step enable chatd.service
systemctl_step restart chatd.service

if [ "$systemd" = 1 ]; then
    note "chatd is running: systemctl status chatd; logs: journalctl -u chatd"
else
    note "installed, but systemd is not running here, so chatd was not started"
fi
note "open http://$(uname -n):8080/ (the port is CHATD_PORT in $ENV_FILE); the first account" \
    "registered there becomes the admin"
