# Shell functions shared by the test scripts that need Debian itself: a stock kernel for QEMU
# guests, and a scratch Debian 12 root. Sourced, not run.

# debian_kernel DIR: downloads Debian's linux-image-6.1.0-N-amd64-unsigned with apt-get download,
# unpacks it (never installs it) into DIR/kernel and indexes its modules. Sets KVER and
# KERNEL_DIR.
debian_kernel() {
    local dir="$1" kpkg
    find_kernel() {
        apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' | awk '{print $1}' | sort -V | tail -n 1
    }
    kpkg="$(find_kernel)"
    if [ -z "$kpkg" ]; then
        apt-get update -qq
        kpkg="$(find_kernel)"
    fi
    [ -n "$kpkg" ] || { echo "no linux-image-6.1.0-N-amd64-unsigned package found (apt-get update?)" >&2; return 1; }
    KVER="${kpkg#linux-image-}"; KVER="${KVER%-unsigned}"
    KERNEL_DIR="$dir/kernel"
    if [ ! -f "$KERNEL_DIR/boot/vmlinuz-$KVER" ]; then
        rm -rf "$KERNEL_DIR" "$dir"/linux-image-*.deb
        (cd "$dir" && { apt-get download "$kpkg" >/dev/null 2>&1 || apt-get download "$kpkg"; })
        dpkg -x "$dir/$kpkg"_*.deb "$KERNEL_DIR"
        "$(command -v depmod || echo /sbin/depmod)" -b "$KERNEL_DIR" "$KVER"
    fi
}

# debian_root_tar DIR: a minimal Debian 12 root with systemd, udev, adduser and Mosquitto, made once
# by debootstrap and kept as DIR/bookworm-root.tar. Sets ROOT_TAR. CEUSD_DEBIAN_MIRROR picks
# the mirror.
debian_root_tar() {
    local dir="$1"
    ROOT_TAR="$dir/bookworm-root-v2.tar"
    [ -f "$ROOT_TAR" ] && return 0
    rm -rf "$dir/bootstrap"
    mkdir -p "$dir"
    if ! debootstrap --variant=minbase --include=systemd,udev,adduser,mosquitto,mosquitto-clients \
        bookworm "$dir/bootstrap" "${CEUSD_DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
        > "$dir/debootstrap.log" 2>&1; then
        tail -20 "$dir/debootstrap.log" >&2
        return 1
    fi
    tar -C "$dir/bootstrap" -cf "$ROOT_TAR.part" .
    mv "$ROOT_TAR.part" "$ROOT_TAR"
    rm -rf "$dir/bootstrap"
}

# deb_packages REPO DIR: the ceusd .deb as two versions (0.1.0-1, 0.1.0-2) of the binary that
# `cargo build` makes, in DIR. Sets DEB1 and DEB2.
deb_packages() {
    local repo="$1" dir="$2" version
    cargo build --manifest-path "$repo/Cargo.toml" --locked --bin ceusd
    rm -rf "$dir" && mkdir -p "$dir"
    for version in 0.1.0-1 0.1.0-2; do
        (cd "$repo" && cargo deb --no-build --profile dev --deb-version "$version" -o "$dir/") \
            2> >(grep -v "dev profile is not supported\|To enable debug symbols" >&2)
    done
    DEB1="$(ls "$dir"/ceusd_0.1.0-1_*.deb)"
    DEB2="$(ls "$dir"/ceusd_0.1.0-2_*.deb)"
}
