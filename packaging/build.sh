#!/usr/bin/env bash
# Builds chatd's release binaries for Linux on x86_64, aarch64 (Raspberry Pi OS 64-bit) and
# armv7 (Raspberry Pi OS 32-bit), fully static and stripped, and the .deb and .rpm package of
# each, into target/dist/. CI runs exactly this script (see .ci/run); docs/PACKAGING.md explains
# the choices.
#
#   packaging/build.sh [--install-deps] [--no-packages] [ARCH...]
#
#   ARCH            x86_64, aarch64 and/or armv7 (default: all three)
#   --install-deps  first install what the build needs (Debian/Ubuntu, as root): the C cross
#                   compilers, musl-tools, the rustup targets, and pinned cargo-deb and
#                   cargo-generate-rpm. Without it the script installs nothing and stops with
#                   a clear message when something is missing.
#   --no-packages   only the binaries, no .deb/.rpm
#
# Outputs (target/dist/):
#   chatd-x86_64-linux-musl        static-pie, musl libc
#   chatd-aarch64-linux-musl       static, musl libc
#   chatd-armv7-linux-gnueabihf    static, glibc (rustup has no armv7 musl std on this setup)
#   chatd_<version>-1_{amd64,arm64,armhf}.deb
#   chatd-<version>-1.{x86_64,aarch64,armv7hl}.rpm
#   install.sh, chatd.service, chatd.default   (for install.sh: target/dist is self-contained)
#   SHA256SUMS
#
# Linkers and C compilers are set through environment variables for the cross targets only, so
# a plain `cargo build` / `cargo test` for the host is not affected.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DIST=$ROOT/target/dist

# Pinned packaging tools (installed by --install-deps with `cargo install --locked`).
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

ALL_ARCHES=(x86_64 aarch64 armv7)

die() {
    echo "build.sh: error: $*" >&2
    exit 1
}
note() { echo "build.sh: $*" >&2; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# Per architecture: Rust target triple, dist name, C compiler / archiver for ring's build script,
# the Debian packages providing that compiler and the target's C headers (ring's C code includes
# <stdint.h>; without the headers the cross gcc falls through to the host's and fails).
triple_of() {
    case $1 in
    x86_64) echo x86_64-unknown-linux-musl ;;
    aarch64) echo aarch64-unknown-linux-musl ;;
    armv7) echo armv7-unknown-linux-gnueabihf ;;
    *) die "unknown architecture '$1' (expected one of: ${ALL_ARCHES[*]})" ;;
    esac
}
dist_name_of() {
    case $1 in
    x86_64) echo chatd-x86_64-linux-musl ;;
    aarch64) echo chatd-aarch64-linux-musl ;;
    armv7) echo chatd-armv7-linux-gnueabihf ;;
    esac
}
cc_of() {
    case $1 in
    x86_64) echo musl-gcc ;;
    aarch64) echo aarch64-linux-gnu-gcc ;;
    armv7) echo arm-linux-gnueabihf-gcc ;;
    esac
}
ar_of() {
    case $1 in
    x86_64) echo ar ;;
    aarch64) echo aarch64-linux-gnu-ar ;;
    armv7) echo arm-linux-gnueabihf-ar ;;
    esac
}
apt_pkg_of() {
    case $1 in
    x86_64) echo musl-tools ;;
    aarch64) echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross ;;
    armv7) echo gcc-arm-linux-gnueabihf libc6-dev-armhf-cross ;;
    esac
}

install_deps=0
packages=1
arches=()
while [ $# -gt 0 ]; do
    case $1 in
    --install-deps) install_deps=1 ;;
    --no-packages) packages=0 ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *)
        triple_of "$1" >/dev/null
        arches+=("$1")
        ;;
    esac
    shift
done
[ ${#arches[@]} -gt 0 ] || arches=("${ALL_ARCHES[@]}")

if [ "$install_deps" = 1 ]; then
    [ "$(id -u)" = 0 ] || die "--install-deps runs apt-get and needs root"
    command -v apt-get >/dev/null || die "--install-deps supports Debian/Ubuntu (apt-get) only"
    pkgs=(file binutils)
    for a in "${arches[@]}"; do
        read -ra more <<<"$(apt_pkg_of "$a")"
        pkgs+=("${more[@]}")
    done
    note "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y --no-install-recommends "${pkgs[@]}"
    targets=()
    for a in "${arches[@]}"; do targets+=("$(triple_of "$a")"); done
    rustup target add "${targets[@]}"
    if [ "$packages" = 1 ]; then
        # `cargo install` skips a tool that is already installed at this version.
        cargo install --locked "cargo-deb@$CARGO_DEB_VERSION"
        cargo install --locked "cargo-generate-rpm@$CARGO_GENERATE_RPM_VERSION"
    fi
fi

# Check every prerequisite before spending minutes on a build.
missing=()
installed_targets=$(rustup target list --installed 2>/dev/null || true)
for a in "${arches[@]}"; do
    t=$(triple_of "$a")
    grep -qx "$t" <<<"$installed_targets" || missing+=("rustup target $t (rustup target add $t)")
    command -v "$(cc_of "$a")" >/dev/null ||
        missing+=("$(cc_of "$a") (apt-get install $(apt_pkg_of "$a"))")
done
command -v file >/dev/null || missing+=("file (apt-get install file)")
if [ "$packages" = 1 ]; then
    cargo deb --version >/dev/null 2>&1 ||
        missing+=("cargo-deb (cargo install --locked cargo-deb@$CARGO_DEB_VERSION)")
    cargo generate-rpm --version >/dev/null 2>&1 ||
        missing+=("cargo-generate-rpm (cargo install --locked cargo-generate-rpm@$CARGO_GENERATE_RPM_VERSION)")
fi
if [ ${#missing[@]} -gt 0 ]; then
    printf 'build.sh: missing:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    die "install them, or rerun as root with --install-deps"
fi

# Fails unless $1 is a statically linked executable for the expected machine.
check_static() {
    local bin=$1 arch=$2 desc want
    desc=$(file -b "$bin")
    case $arch in
    x86_64) want="x86-64" ;;
    aarch64) want="ARM aarch64" ;;
    armv7) want="ARM, EABI5" ;;
    esac
    [[ $desc == *"$want"* ]] || die "$bin is not a $want binary: $desc"
    [[ $desc == *"statically linked"* || $desc == *"static-pie linked"* ]] ||
        die "$bin is not statically linked: $desc"
    [[ $desc == *", stripped"* ]] || die "$bin is not stripped: $desc"
    # No program interpreter and no shared-library dependencies at all.
    if command -v readelf >/dev/null; then
        ! readelf -lW "$bin" | grep -q 'Requesting program interpreter' ||
            die "$bin has a program interpreter (dynamic loader)"
        ! readelf -dW "$bin" | grep -q '(NEEDED)' || die "$bin needs shared libraries"
    fi
    echo "$desc"
}

mkdir -p "$DIST"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || die "cannot read the version from Cargo.toml"

for a in "${arches[@]}"; do
    t=$(triple_of "$a")
    T=$(echo "$t" | tr 'a-z-' 'A-Z_') # CARGO_TARGET_<TRIPLE>_...
    t_=${t//-/_}                       # CC_<triple>
    cc=$(cc_of "$a")
    note "building chatd for $t"
    start=$(date +%s)
    (
        # The C compiler ring's build script uses for this target, and its archiver.
        export "CC_$t_=$cc" "AR_$t_=$(ar_of "$a")"
        case $a in
        x86_64)
            # Rust ships musl's startup files and libc.a for this target and links a
            # static-pie with the host's cc; ring's C/asm is compiled with musl-gcc.
            export "CARGO_TARGET_${T}_LINKER=cc"
            ;;
        aarch64)
            # Self-contained musl (crt objects and libc.a come with the rustup target), linked
            # by rust-lld: no aarch64 musl sysroot needed.
            export "CARGO_TARGET_${T}_LINKER=rust-lld"
            ;;
        armv7)
            # rustup has no armv7-unknown-linux-musleabihf std here, so link glibc statically
            # with Debian's cross gcc. chatd resolves no host names and looks up no users, so
            # glibc's NSS (which static binaries cannot load) is never needed.
            export "CARGO_TARGET_${T}_LINKER=$cc"
            export "CARGO_TARGET_${T}_RUSTFLAGS=-C target-feature=+crt-static"
            ;;
        esac
        cargo build --locked --release --target "$t" --bin chatd
    )
    end=$(date +%s)
    out=$ROOT/target/$t/release/chatd
    [ -x "$out" ] || die "cargo produced no $out"
    check_static "$out" "$a" >/dev/null
    cp -f "$out" "$DIST/$(dist_name_of "$a")"
    note "built $(dist_name_of "$a") in $((end - start)) s: $(stat -c %s "$out") bytes"

    if [ "$packages" = 1 ]; then
        # The .deb and .rpm take the binary just built (target/<triple>/release/chatd).
        cargo deb --locked --no-build --no-strip --target "$t" --output "$DIST/"
        # RPM names the 32-bit hard-float ARM architecture armv7hl (the tool would say armv7).
        rpm_arch=()
        [ "$a" != armv7 ] || rpm_arch=(--arch armv7hl)
        cargo generate-rpm --target "$t" "${rpm_arch[@]}" --output "$DIST/"
    fi
done

# What install.sh needs besides a binary, so that target/dist alone can be copied to a machine.
install -m 0755 packaging/install.sh "$DIST/install.sh"
install -m 0644 packaging/chatd.service packaging/chatd.default "$DIST/"

echo
echo "target/dist:"
for a in "${arches[@]}"; do
    f=$DIST/$(dist_name_of "$a")
    printf '  %-32s %9s bytes  %s\n' "$(basename "$f")" "$(stat -c %s "$f")" "$(check_static "$f" "$a")"
done
if [ "$packages" = 1 ]; then
    for f in "$DIST"/chatd_"$version"*.deb "$DIST"/chatd-"$version"*.rpm; do
        [ -e "$f" ] || continue
        printf '  %-40s %9s bytes\n' "$(basename "$f")" "$(stat -c %s "$f")"
    done
fi
(
    cd "$DIST"
    find . -maxdepth 1 -type f ! -name 'SHA256SUMS*' -printf '%f\n' | LC_ALL=C sort |
        xargs sha256sum >SHA256SUMS.tmp
    mv -f SHA256SUMS.tmp SHA256SUMS
)
