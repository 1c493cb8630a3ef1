#!/usr/bin/env bash
# The Jetson build (aarch64, CPU inference) from an x86_64 Debian 12 machine.
#
#   cross/build.sh            release binary: target/aarch64-unknown-linux-gnu/release/ceusd
#   cross/build.sh --test     also runs the aarch64 tests that need no other program, under
#                             qemu-user (the int8 kernels on NEON, the demo model's forward
#                             pass, pixel formats, layouts, replays, command parsing, the
#                             contract; CEUSD_CROSS_FULL=1 adds the network's and the model
#                             files' tests)
#   cross/build.sh --deb      also packages it: target/debian/ceusd_<version>_arm64.deb
#   cross/build.sh --build-only
#                             only compiles the binary and the aarch64 test binaries (CI runs
#                             this beside the x86_64 tests, then --test --deb on what it built)
#
# CARGO_TARGET_DIR, when set, holds the build (and the package) instead of target/.
#
# Needs: rustup target add aarch64-unknown-linux-gnu; apt-get install gcc-aarch64-linux-gnu
# libc6-dev-arm64-cross qemu-user; cargo install cargo-deb (for --deb).
# The CUDA build needs JetPack's CUDA toolkit: see cross/Dockerfile.jetpack.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
# JetPack 6 is Ubuntu 22.04 with glibc 2.35; this machine's cross glibc is 2.36. The binary
# must not ask for a symbol version newer than the package declares (Cargo.toml:
# libc6 (>= 2.34)), which the cart has.
MAX_GLIBC=2.34

run_tests=0
make_deb=0
build_only=0
for arg in "$@"; do
    case "$arg" in
        --test) run_tests=1 ;;
        --deb) make_deb=1 ;;
        --build-only) build_only=1 ;;
        *) echo "usage: cross/build.sh [--test] [--deb] [--build-only]" >&2; exit 2 ;;
    esac
done
target_dir="${CARGO_TARGET_DIR:-target}"

# The aarch64 tests that need no other program (see --test below).
tests=(--test demo_model --test pixel_formats --test layout --test commands
    --test dicom_decode --test replay --test asyncapi)
skip=(--skip the_demo_model_separates_held_out_synthetic_exams)
if [ "${CEUSD_CROSS_FULL:-0}" = 1 ]; then
    tests+=(--test network --test model_file)
    skip=()
fi

cargo build --locked --release --target "$TARGET" --bin ceusd
if [ "$build_only" = 1 ]; then
    cargo test --locked --release --target "$TARGET" --lib "${tests[@]}" --no-run
    cargo test --locked --release --target "$TARGET" -p v4l2-sys-mit --lib --no-run
    exit 0
fi
bin="$target_dir/$TARGET/release/ceusd"
file "$bin" 2>/dev/null || true

needed=$(aarch64-linux-gnu-objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
if [ "$(printf '%s\n%s\n' "$needed" "$MAX_GLIBC" | sort -V | tail -1)" != "$MAX_GLIBC" ]; then
    echo "FAIL: $bin needs glibc $needed; the package declares libc6 (>= $MAX_GLIBC)" >&2
    aarch64-linux-gnu-objdump -T "$bin" | grep "GLIBC_$needed" >&2
    exit 1
fi
echo "glibc: needs at most $needed (the package declares $MAX_GLIBC; JetPack 6 has 2.35)"

# The binary starts and knows itself on an aarch64 CPU.
qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin" --version

if [ "$run_tests" = 1 ]; then
    # Tests that start other programs (the ceusd binary, mosquitto, python) stay on the host:
    # a child process of a test under qemu-user would be an x86_64 program.
    # Always: the library's tests (the int8 kernels, NEON `sdot` against the scalar reference,
    # bit for bit), pixel formats, layouts, the demo model's forward pass, commands, DICOM,
    # replays and the contract. CEUSD_CROSS_FULL=1 adds what takes minutes under emulation:
    # the network's tests (Grad-CAM against autograd, the im2col engine against candle's conv2d;
    # over 4 minutes), the model files' (int8 and f16 files on both engines; about 3 minutes)
    # and the demo model's held-out AUC (about 7 minutes, 50 forward passes).
    cargo test --locked --release --target "$TARGET" --lib "${tests[@]}" -- "${skip[@]}"
    # The committed V4L2 bindings' layouts, as the arm64 compiler lays them out.
    cargo test --locked --release --target "$TARGET" -p v4l2-sys-mit --lib --quiet
fi

if [ "$make_deb" = 1 ]; then
    # --strip: the release profile keeps line tables for backtraces; the package does not.
    deb="$(cargo deb --target "$TARGET" --no-build --strip | tail -n 1)"
    echo "$deb: $(dpkg-deb -f "$deb" Architecture), depends: $(dpkg-deb -f "$deb" Depends)"
    unpacked="$(mktemp -d)"
    dpkg-deb -x "$deb" "$unpacked"
    qemu-aarch64 -L /usr/aarch64-linux-gnu "$unpacked/usr/bin/ceusd" --version
    rm -rf "$unpacked"
fi
