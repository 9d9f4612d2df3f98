#!/usr/bin/env bash
# Checks what packaging/build.sh put in target/dist. CI runs it right after build.sh.
#
#   packaging/check.sh [--install-deps] [--no-install-tests]
#
#   --install-deps      first apt-get install the tools below (Debian/Ubuntu, as root)
#   --no-install-tests  skip the steps that install chatd on this machine (they need root and a
#                       machine where chatd is not installed; CI runs them)
#
# 1. shellcheck on every packaging script.
# 2. Each binary is a static, stripped executable for its architecture.
# 3. tests/cross.rs against each binary: x86_64 natively, aarch64 under qemu-aarch64-static,
#    armv7 under qemu-arm-static (accounts, /healthz, log-in, a message over the WebSocket that
#    is still there after a restart).
# 3b. On an x86_64 machine, the unit and integration tests (`--lib --test it`) built for
#    x86_64-unknown-linux-musl: the libc and allocator (mimalloc) of the shipped binaries, under
#    the whole suite, not only the smoke test. Needs musl-gcc (musl-tools) and the rustup target,
#    which build.sh --install-deps installs.
# 4. The .deb and .rpm of each architecture: metadata, file lists, conffiles, scripts, the
#    binary inside is the one in target/dist; lintian on the .debs (no errors or warnings).
# 5. Install tests, as root: the host's .deb with dpkg -i (the chatd user, /var/lib/chatd, the
#    unit enabled but not started without systemd), reinstalled keeping an edited
#    /etc/default/chatd, dpkg -r keeps /var/lib/chatd, dpkg -P deletes it; the same life cycle
#    with the host's .rpm (rpm -i, -U, -e; on Debian with --nodeps --force-debian); then
#    install.sh run twice (an upgrade keeps settings and data) and its --uninstall and
#    --uninstall --purge. Everything installed is removed again, also when a step fails.
#
# Needs: file, binutils (readelf), qemu-user-static, dpkg-dev tools, rpm, lintian, shellcheck,
# and systemd's systemd-analyze when present (optional).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DIST=$ROOT/target/dist

die() {
    echo "check.sh: FAILED: $*" >&2
    exit 1
}
step() { printf '\n=== %s\n' "$*"; }
ok() { echo "  ok: $*"; }

install_deps=0
install_tests=1
while [ $# -gt 0 ]; do
    case $1 in
    --install-deps) install_deps=1 ;;
    --no-install-tests) install_tests=0 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

if [ "$install_deps" = 1 ]; then
    [ "$(id -u)" = 0 ] || die "--install-deps runs apt-get and needs root"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y --no-install-recommends file binutils qemu-user-static rpm lintian \
        shellcheck
fi

missing=()
for tool in file:file readelf:binutils qemu-aarch64-static:qemu-user-static \
    qemu-arm-static:qemu-user-static dpkg-deb:dpkg rpm:rpm rpm2archive:rpm lintian:lintian \
    shellcheck:shellcheck; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool%%:*} (apt-get install ${tool#*:})")
done
if [ ${#missing[@]} -gt 0 ]; then
    printf 'check.sh: missing:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    die "install them, or rerun as root with --install-deps"
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || die "cannot read the version from Cargo.toml"
host_machine=$(uname -m)

# Per architecture: dist name, `file` description, qemu runner, Debian and RPM architecture.
ARCHES=(x86_64 aarch64 armv7)
dist_name_of() {
    case $1 in
    x86_64) echo chatd-x86_64-linux-musl ;;
    aarch64) echo chatd-aarch64-linux-musl ;;
    armv7) echo chatd-armv7-linux-gnueabihf ;;
    esac
}
file_desc_of() {
    case $1 in
    x86_64) echo "x86-64" ;;
    aarch64) echo "ARM aarch64" ;;
    armv7) echo "ARM, EABI5" ;;
    esac
}
runner_of() { # empty when this machine runs the binary natively
    case $1 in
    x86_64) [ "$host_machine" = x86_64 ] || echo qemu-x86_64-static ;;
    aarch64) [ "$host_machine" = aarch64 ] || echo qemu-aarch64-static ;;
    armv7) [[ $host_machine == armv7* ]] || echo qemu-arm-static ;;
    esac
}
deb_arch_of() {
    case $1 in
    x86_64) echo amd64 ;;
    aarch64) echo arm64 ;;
    armv7) echo armhf ;;
    esac
}
rpm_arch_of() {
    case $1 in
    x86_64) echo x86_64 ;;
    aarch64) echo aarch64 ;;
    armv7) echo armv7hl ;;
    esac
}

for a in "${ARCHES[@]}"; do
    [ -f "$DIST/$(dist_name_of "$a")" ] || die "$DIST/$(dist_name_of "$a") is missing: run packaging/build.sh first"
done

step "shellcheck"
shellcheck -x packaging/build.sh packaging/check.sh packaging/install.sh \
    packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm
shellcheck -s sh packaging/rpm/pre packaging/rpm/post packaging/rpm/preun packaging/rpm/postun
ok "no findings"

step "static binaries"
for a in "${ARCHES[@]}"; do
    bin=$DIST/$(dist_name_of "$a")
    desc=$(file -b "$bin")
    [[ $desc == *"$(file_desc_of "$a")"* ]] || die "$bin: not $(file_desc_of "$a"): $desc"
    [[ $desc == *"statically linked"* || $desc == *"static-pie linked"* ]] ||
        die "$bin is not statically linked: $desc"
    [[ $desc == *", stripped"* ]] || die "$bin is not stripped: $desc"
    ! readelf -lW "$bin" | grep -q 'Requesting program interpreter' || die "$bin has an interpreter"
    ! readelf -dW "$bin" | grep -q '(NEEDED)' || die "$bin needs shared libraries"
    ok "$(basename "$bin"): $(stat -c %s "$bin") bytes, $(file -b "$bin" | sed 's/BuildID[^ ]* //')"
done

step "cross smoke test (tests/cross.rs) of each binary"
cargo test --locked --test cross --no-run
for a in "${ARCHES[@]}"; do
    bin=$DIST/$(dist_name_of "$a")
    runner=$(runner_of "$a")
    if [ -n "$runner" ] && ! command -v "$runner" >/dev/null; then
        die "$runner not found (apt-get install qemu-user-static)"
    fi
    log=$(mktemp)
    if ! CHATD_CROSS_BIN=$bin CHATD_CROSS_RUNNER=$runner \
        cargo test --locked --test cross -- --nocapture 2>&1 | tee "$log"; then
        rm -f "$log"
        die "tests/cross.rs failed for $bin"
    fi
    # The test skips (and passes) without CHATD_CROSS_BIN; make sure it really ran.
    grep -q '^passed in ' "$log" || { rm -f "$log"; die "tests/cross.rs did not run for $bin"; }
    rm -f "$log"
    ok "$(basename "$bin")${runner:+ under $runner}"
done

if [ "$host_machine" = x86_64 ]; then
    step "unit and integration tests built for x86_64-unknown-linux-musl (the shipped libc and allocator)"
    command -v musl-gcc >/dev/null || die "musl-gcc not found (apt-get install musl-tools)"
    # The same C compiler and linker settings as build.sh uses for this target.
    CC_x86_64_unknown_linux_musl=musl-gcc AR_x86_64_unknown_linux_musl=ar \
        CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=cc \
        cargo test --locked --target x86_64-unknown-linux-musl --lib --test it ||
        die "the test suite failed on x86_64-unknown-linux-musl"
    ok "unit and integration tests pass on musl with mimalloc"
fi

step "packages"
changelog_version=$(sed -n '1s/^chatd (\([^)]*\)).*/\1/p' packaging/deb/changelog)
[ "$changelog_version" = "$version-1" ] ||
    die "packaging/deb/changelog starts with $changelog_version, Cargo.toml says $version: add a changelog entry for $version-1"
ok "packaging/deb/changelog is at $version-1"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for a in "${ARCHES[@]}"; do
    bin=$DIST/$(dist_name_of "$a")
    deb=$DIST/chatd_${version}-1_$(deb_arch_of "$a").deb
    [ -f "$deb" ] || die "$deb is missing"
    dpkg-deb -I "$deb" >"$tmp/info"
    dpkg-deb -c "$deb" >"$tmp/list"
    grep -qx " Package: chatd" "$tmp/info" || die "$deb: wrong Package"
    grep -qx " Version: $version-1" "$tmp/info" || die "$deb: wrong Version"
    grep -qx " Architecture: $(deb_arch_of "$a")" "$tmp/info" || die "$deb: wrong Architecture"
    grep -qx " Depends: adduser" "$tmp/info" || die "$deb: unexpected Depends"
    for f in ./usr/bin/chatd ./lib/systemd/system/chatd.service ./etc/default/chatd \
        ./usr/share/doc/chatd/copyright ./usr/share/doc/chatd/changelog.Debian.gz \
        ./usr/share/doc/chatd/README.md ./usr/share/lintian/overrides/chatd; do
        grep -q " $f\$" "$tmp/list" || die "$deb lacks $f"
    done
    grep -Eq '^-rwxr-xr-x (root/root|0/0) .* \./usr/bin/chatd$' "$tmp/list" ||
        die "$deb: mode/owner of /usr/bin/chatd"
    [ "$(dpkg-deb -f "$deb" Package)" = chatd ] || die "$deb: control"
    dpkg-deb --ctrl-tarfile "$deb" | tar -x -C "$tmp" ./conffiles ./postinst ./prerm ./postrm
    [ "$(cat "$tmp/conffiles")" = /etc/default/chatd ] || die "$deb: conffiles: $(cat "$tmp/conffiles")"
    grep -q 'adduser --system' "$tmp/postinst" || die "$deb: postinst creates no user"
    grep -q 'rm -rf /var/lib/chatd' "$tmp/postrm" || die "$deb: postrm does not purge the data"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/chatd | cmp -s - "$bin" ||
        die "$deb does not contain $(basename "$bin")"
    ok "$(basename "$deb"): $(stat -c %s "$deb") bytes"

    rpmf=$DIST/chatd-${version}-1.$(rpm_arch_of "$a").rpm
    [ -f "$rpmf" ] || die "$rpmf is missing"
    [ "$(rpm -qp --qf '%{NAME} %{VERSION}-%{RELEASE} %{ARCH}' "$rpmf")" = "chatd $version-1 $(rpm_arch_of "$a")" ] ||
        die "$rpmf: wrong name/version/arch: $(rpm -qp --qf '%{NAME} %{VERSION}-%{RELEASE} %{ARCH}' "$rpmf")"
    rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\n]' "$rpmf" >"$tmp/rpmlist"
    for f in "/usr/bin/chatd  -rwxr-xr-x" "/usr/lib/systemd/system/chatd.service  -rw-r--r--" \
        "/etc/sysconfig/chatd cn -rw-r--r--"; do
        grep -qx "$f" "$tmp/rpmlist" || die "$rpmf lacks '$f' (path, config flags, mode)"
    done
    rpm -qp --scripts "$rpmf" >"$tmp/scripts"
    for s in "preinstall scriptlet" "useradd -r" "postinstall scriptlet" "systemctl enable" \
        "preuninstall scriptlet" "systemctl disable" "postuninstall scriptlet" "try-restart"; do
        grep -q "$s" "$tmp/scripts" || die "$rpmf: scriptlets lack '$s'"
    done
    rpm2archive - <"$rpmf" | tar -xzO ./usr/bin/chatd | cmp -s - "$bin" ||
        die "$rpmf does not contain $(basename "$bin")"
    ok "$(basename "$rpmf"): $(stat -c %s "$rpmf") bytes"
done

step "lintian"
# Errors and warnings fail the check; informational tags are listed (docs/PACKAGING.md).
for a in "${ARCHES[@]}"; do
    deb=$DIST/chatd_${version}-1_$(deb_arch_of "$a").deb
    rc=0
    lintian --fail-on error,warning --pedantic --display-info "$deb" >"$tmp/lintian" 2>&1 || rc=$?
    grep -v '^running with root privileges' "$tmp/lintian" | sed 's/^/  /' || true
    [ "$rc" = 0 ] || die "lintian: errors or warnings in $(basename "$deb")"
    ok "$(basename "$deb"): no errors or warnings"
done

if command -v systemd-analyze >/dev/null; then
    step "systemd-analyze security (offline) of packaging/chatd.service"
    systemd-analyze security --offline=true packaging/chatd.service | tail -n 1
fi

if [ "$install_tests" = 0 ]; then
    step "install tests skipped (--no-install-tests)"
    exit 0
fi

step "install tests on this machine"
[ "$(id -u)" = 0 ] || die "the install tests need root (or pass --no-install-tests)"
command -v dpkg >/dev/null || die "the install tests need dpkg (or pass --no-install-tests)"
# Never touch a machine where chatd is in use.
for p in /usr/bin/chatd /usr/local/bin/chatd /etc/systemd/system/chatd.service /var/lib/chatd \
    /etc/default/chatd /etc/sysconfig/chatd /etc/sysconfig/chatd.rpmsave; do
    [ ! -e "$p" ] || die "$p exists: refusing to run the install tests on a machine with chatd" \
        "installed (pass --no-install-tests)"
done
# dpkg's view of the chatd package: not-installed (or empty: never seen), installed, config-files...
deb_status() { dpkg-query -W -f '${db:Status-Status}' chatd 2>/dev/null || true; }
case $(deb_status) in
"" | not-installed) ;;
*) die "the chatd package is on this machine ($(deb_status)): refusing to run the install tests" ;;
esac
! rpm -q chatd >/dev/null 2>&1 || die "the chatd rpm is installed: refusing to run the install tests"
! getent passwd chatd >/dev/null || die "a chatd user exists: refusing to run the install tests"
! getent group chatd >/dev/null || die "a chatd group exists: refusing to run the install tests"

host_arch=
for a in "${ARCHES[@]}"; do
    [ "$(deb_arch_of "$a")" != "$(dpkg --print-architecture)" ] || host_arch=$a
done
[ -n "$host_arch" ] || die "no .deb for this machine's architecture ($(dpkg --print-architecture))"
deb=$DIST/chatd_${version}-1_$(deb_arch_of "$host_arch").deb
rpmf=$DIST/chatd-${version}-1.$(rpm_arch_of "$host_arch").rpm
host_bin=$DIST/$(dist_name_of "$host_arch")
# On this Debian machine rpm is not the package manager: its database knows no /bin/sh, and
# Debian's rpm wants --force-debian to install anything. The scriptlets run for real all the same.
rpm_flags=(--nodeps)
if rpm --help 2>&1 | grep -q -- --force-debian; then rpm_flags+=(--force-debian); fi
had_sysconfig=0
[ ! -d /etc/sysconfig ] || had_sysconfig=1
# rpm ARGS...: shows rpm's output without Debian's "use Alien instead" banner; fails with rpm.
rpm_run() {
    local out rc=0
    out=$(rpm "$@" 2>&1) || rc=$?
    [ -z "$out" ] || grep -v '^rpm: \(RPM should not be used directly\|However assuming\)' <<<"$out" || true
    [ "$rc" = 0 ] || die "rpm $* failed ($rc)"
}

cleanup() {
    local rc=$?
    set +e
    case $(deb_status) in
    "" | not-installed) ;;
    *) dpkg -P chatd >/dev/null 2>&1 ;;
    esac
    if rpm -q chatd >/dev/null 2>&1; then rpm -e "${rpm_flags[@]}" chatd >/dev/null 2>&1; fi
    [ ! -e /usr/local/bin/chatd ] || "$DIST/install.sh" --uninstall --purge >/dev/null 2>&1
    # None of these existed before the tests (checked above), so whatever is left is ours.
    rm -rf /usr/local/bin/chatd /etc/systemd/system/chatd.service /var/lib/chatd /etc/default/chatd \
        /etc/sysconfig/chatd /etc/sysconfig/chatd.rpmsave
    if [ "$had_sysconfig" = 0 ]; then rmdir /etc/sysconfig 2>/dev/null; fi
    if getent passwd chatd >/dev/null; then userdel chatd; fi
    if getent group chatd >/dev/null; then groupdel chatd; fi
    rm -rf "$tmp"
    [ "$rc" = 0 ] || echo "check.sh: cleaned up after the failure" >&2
    exit "$rc"
}
trap cleanup EXIT

# Runs chatd as the chatd user, as an admin would (`sudo -u chatd chatd ...`).
as_chatd() { runuser -u chatd -- "$@"; }
systemd_running() { [ -d /run/systemd/system ]; }
wants=/etc/systemd/system/multi-user.target.wants/chatd.service

echo "--- dpkg -i $(basename "$deb")"
dpkg -i "$deb" </dev/null
[ "$(/usr/bin/chatd --version)" = "$("$host_bin" --version)" ] || die "/usr/bin/chatd is not $host_bin"
getent passwd chatd | grep -q ':/var/lib/chatd:/usr/sbin/nologin$' || die "chatd user: $(getent passwd chatd)"
[ "$(stat -c '%U:%G %a' /var/lib/chatd)" = "chatd:chatd 750" ] || die "/var/lib/chatd: $(stat -c '%U:%G %a' /var/lib/chatd)"
[ -f /lib/systemd/system/chatd.service ] || die "no unit"
[ -f /etc/default/chatd ] || die "no /etc/default/chatd"
[ -L "$wants" ] || die "the unit was not enabled ($wants)"
if systemd_running; then
    systemctl is-active --quiet chatd || die "chatd is not running after dpkg -i"
else
    ! pgrep -f "^/usr/bin/chatd( |$)" >/dev/null || die "chatd was started without systemd"
fi
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /lib/systemd/system/chatd.service || die "systemd-analyze verify"
fi
echo 'a-password-1' | as_chatd chatd user add alice --password-stdin --data-dir /var/lib/chatd
[ -f /var/lib/chatd/chatd.redb ] || die "no database after chatd user add"
ok "installed: binary, chatd user, /var/lib/chatd, unit enabled, not started without systemd"

echo "--- dpkg -i again (upgrade path) with an edited /etc/default/chatd"
echo 'CHATD_PORT=8181 # edited by check.sh' >>/etc/default/chatd
dpkg -i "$deb" </dev/null
grep -q '^CHATD_PORT=8181 # edited by check.sh$' /etc/default/chatd || die "reinstall lost the edit"
as_chatd chatd user list --data-dir /var/lib/chatd | grep -q alice || die "reinstall lost the data"
ok "reinstall kept /etc/default/chatd and the data"

echo "--- dpkg -r chatd"
dpkg -r chatd </dev/null
[ ! -e /usr/bin/chatd ] || die "dpkg -r left /usr/bin/chatd"
[ ! -e /lib/systemd/system/chatd.service ] || die "dpkg -r left the unit"
[ -f /var/lib/chatd/chatd.redb ] || die "dpkg -r deleted /var/lib/chatd"
[ -f /etc/default/chatd ] || die "dpkg -r deleted the conffile"
ok "removed; /var/lib/chatd and /etc/default/chatd kept"

echo "--- dpkg -P chatd"
dpkg -P chatd </dev/null
[ ! -e /var/lib/chatd ] || die "dpkg -P left /var/lib/chatd"
[ ! -e /etc/default/chatd ] || die "dpkg -P left /etc/default/chatd"
[ ! -e "$wants" ] || die "dpkg -P left $wants"
case $(deb_status) in
"" | not-installed) ;;
*) die "dpkg still has chatd: $(deb_status)" ;;
esac
ok "purged: /var/lib/chatd, /etc/default/chatd and the enablement are gone (the chatd user stays)"
userdel chatd
! getent group chatd >/dev/null || groupdel chatd

echo "--- rpm -i $(basename "$rpmf") (${rpm_flags[*]})"
rpm_run -i "${rpm_flags[@]}" "$rpmf"
rpm -q chatd >/dev/null || die "rpm -i did not install chatd"
[ "$(/usr/bin/chatd --version)" = "$("$host_bin" --version)" ] || die "/usr/bin/chatd is not $host_bin"
getent passwd chatd | grep -q ':/var/lib/chatd:/sbin/nologin$' || die "chatd user: $(getent passwd chatd)"
[ "$(stat -c '%U:%G %a' /var/lib/chatd)" = "chatd:chatd 750" ] || die "/var/lib/chatd: $(stat -c '%U:%G %a' /var/lib/chatd)"
[ -f /usr/lib/systemd/system/chatd.service ] || die "no unit"
[ -f /etc/sysconfig/chatd ] || die "no /etc/sysconfig/chatd"
if command -v systemctl >/dev/null; then
    [ -L "$wants" ] || die "%post did not enable the unit ($wants)"
fi
systemd_running || ! pgrep -f "^/usr/bin/chatd( |$)" >/dev/null || die "chatd was started without systemd"
echo 'a-password-1' | as_chatd chatd user add carol --password-stdin --data-dir /var/lib/chatd
echo 'CHATD_PORT=8181 # edited by check.sh' >>/etc/sysconfig/chatd
ok "installed: binary, chatd user, /var/lib/chatd, unit enabled, not started without systemd"

echo "--- rpm -U --replacepkgs (upgrade path)"
rpm_run -U --replacepkgs "${rpm_flags[@]}" "$rpmf"
grep -q '^CHATD_PORT=8181 # edited by check.sh$' /etc/sysconfig/chatd || die "upgrade lost the edit"
as_chatd chatd user list --data-dir /var/lib/chatd | grep -q carol || die "upgrade lost the data"
ok "upgrade kept /etc/sysconfig/chatd and the data"

echo "--- rpm -e chatd"
rpm_run -e "${rpm_flags[@]}" chatd
! rpm -q chatd >/dev/null || die "rpm -e left chatd installed"
[ ! -e /usr/bin/chatd ] || die "rpm -e left /usr/bin/chatd"
[ ! -e /usr/lib/systemd/system/chatd.service ] || die "rpm -e left the unit"
[ ! -e "$wants" ] || die "%preun did not disable the unit"
[ ! -e /usr/share/doc/chatd ] || die "rpm -e left /usr/share/doc/chatd"
[ -f /var/lib/chatd/chatd.redb ] || die "rpm -e deleted /var/lib/chatd"
grep -q 'edited by check.sh' /etc/sysconfig/chatd.rpmsave || die "no /etc/sysconfig/chatd.rpmsave"
ok "erased; /var/lib/chatd kept, the edited settings saved as /etc/sysconfig/chatd.rpmsave"
rm -rf /var/lib/chatd /etc/sysconfig/chatd.rpmsave
if [ "$had_sysconfig" = 0 ]; then rmdir /etc/sysconfig; fi
userdel chatd
! getent group chatd >/dev/null || groupdel chatd

echo "--- install.sh (first run, from target/dist)"
"$DIST/install.sh"
cmp -s /usr/local/bin/chatd "$host_bin" || die "/usr/local/bin/chatd is not $host_bin"
grep -qx 'ExecStart=/usr/local/bin/chatd serve' /etc/systemd/system/chatd.service ||
    die "unit does not run /usr/local/bin/chatd"
[ -f /etc/default/chatd ] || die "no /etc/default/chatd"
getent passwd chatd >/dev/null || die "no chatd user"
[ "$(stat -c '%U:%G %a' /var/lib/chatd)" = "chatd:chatd 750" ] || die "/var/lib/chatd: $(stat -c '%U:%G %a' /var/lib/chatd)"
echo 'a-password-1' | as_chatd /usr/local/bin/chatd user add bob --password-stdin --data-dir /var/lib/chatd
echo 'CHATD_REGISTRATION=closed # edited by check.sh' >>/etc/default/chatd
ok "installed"

echo "--- install.sh (second run: upgrade in place)"
"$DIST/install.sh"
grep -q '^CHATD_REGISTRATION=closed # edited by check.sh$' /etc/default/chatd || die "install.sh overwrote /etc/default/chatd"
as_chatd /usr/local/bin/chatd user list --data-dir /var/lib/chatd | grep -q bob || die "install.sh lost the data"
ok "rerun kept /etc/default/chatd and the data"

echo "--- install.sh --uninstall"
"$DIST/install.sh" --uninstall
[ ! -e /usr/local/bin/chatd ] || die "--uninstall left /usr/local/bin/chatd"
[ ! -e /etc/systemd/system/chatd.service ] || die "--uninstall left the unit"
[ -f /var/lib/chatd/chatd.redb ] || die "--uninstall deleted the data"
[ -f /etc/default/chatd ] || die "--uninstall deleted /etc/default/chatd"
echo "--- install.sh --uninstall --purge"
"$DIST/install.sh" --uninstall --purge
[ ! -e /var/lib/chatd ] || die "--purge left /var/lib/chatd"
[ ! -e /etc/default/chatd ] || die "--purge left /etc/default/chatd"
! getent passwd chatd >/dev/null || die "--purge left the chatd user"
ok "uninstalled and purged"

step "all packaging checks passed"
