#!/usr/bin/env bash
# Runs the V4L2 capture tests (tests/v4l2_vivid.rs) against the kernel's `vivid` virtual video
# driver, inside a QEMU guest: there is no /dev/video on build machines. The guest is a Debian
# kernel (unpacked, never installed) and a busybox initramfs holding vivid's modules, the test
# binary and the shared libraries it links. The guest prints the test output on the serial console and a
# final EXIT=<code> line, which becomes this script's exit status.
#
# Needs: qemu-system-x86, busybox-static, cpio, kmod (depmod), and apt-get download access to
# Debian's linux-image package. Usage: tests/v4l2-vm/run.sh [WORKDIR]; CEUSD_VM_FILTER=name
# runs only the tests whose names contain it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="${1:-$repo/target/v4l2-vm}"
mkdir -p "$work"
cd "$work"

# 1. A Debian kernel with its modules (vivid is built as a module in Debian's config).
. "$repo/tests/debian.sh"
debian_kernel "$PWD"
kver="$KVER"

# 2. The test binary: the one `cargo test` built (nothing is compiled again when it has run).
#    It is dynamically linked; its libraries go into the guest beside it (step 3).
cargo test --manifest-path "$repo/Cargo.toml" --test v4l2_vivid --no-run \
    --message-format=json 2>/dev/null > build.json
testbin="$(python3 -c '
import json, sys
for line in open("build.json"):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "v4l2_vivid" and m.get("executable"):
        print(m["executable"])
')"
[ -x "$testbin" ] || { echo "test binary not built" >&2; exit 1; }

# 3. The initramfs: busybox, vivid and the modules it depends on, the test binary, /init.
rm -rf initramfs && mkdir -p initramfs/{bin,dev,proc,sys,tmp,lib/modules/$kver}
if ldd /bin/busybox >/dev/null 2>&1; then
    echo "/bin/busybox is dynamically linked: install busybox-static" >&2
    exit 1
fi
cp /bin/busybox initramfs/bin/busybox
mods="$(grep "^kernel/drivers/media/test-drivers/vivid/vivid.ko:" "kernel/lib/modules/$kver/modules.dep" | tr -d ':')"
for m in $mods; do
    mkdir -p "initramfs/lib/modules/$kver/$(dirname "$m")"
    cp "kernel/lib/modules/$kver/$m" "initramfs/lib/modules/$kver/$m"
done
cp "kernel/lib/modules/$kver"/modules.{dep,alias,symbols,builtin,order} "initramfs/lib/modules/$kver/" 2>/dev/null || true
cp "kernel/lib/modules/$kver"/modules.builtin.modinfo "initramfs/lib/modules/$kver/" 2>/dev/null || true
# Without debug info: the guest unpacks the initramfs into its RAM.
strip --strip-debug -o initramfs/ceusd-v4l2-tests "$testbin"
# The dynamic loader and the C libraries, at the paths the binary asks for them.
libs="$(ldd "$testbin" | grep -o '/[^ ]*' | sort -u)"
[ -n "$libs" ] || { echo "ldd found no libraries for $testbin" >&2; exit 1; }
for lib in $libs; do
    cp -L --parents "$lib" initramfs/
done
cat > initramfs/init <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Two vivid instances: vivid-000 is a webcam (capture node only); vivid-001 has an HDMI
# input and an HDMI output, for looping frames back.
modprobe vivid n_devs=2 node_types=0x1,0x101 num_inputs=1,1 input_types=0x0,0x3 \
    num_outputs=1,1 output_types=0x1,0x1 || echo "modprobe vivid failed"
ls -l /dev/video* 2>&1
cd /tmp
RUST_BACKTRACE=1 /ceusd-v4l2-tests --ignored --test-threads=1 --nocapture ${CEUSD_VM_FILTER:-}
echo "EXIT=\$?"
poweroff -f
INIT
chmod +x initramfs/init
(cd initramfs && find . | cpio -o -H newc --quiet) > initramfs.cpio

# 4. Boot. TCG: this machine's KVM cannot run a stock kernel.
timeout 600 qemu-system-x86_64 -accel tcg -cpu max -m 2048 -smp 2 -nographic -no-reboot -nic none \
    -kernel "kernel/boot/vmlinuz-$kver" -initrd initramfs.cpio \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init" </dev/null | tee console.log
code="$(grep -a -o 'EXIT=[0-9]*' console.log | tail -n 1 | cut -d= -f2)"
if [ -z "$code" ]; then
    echo "the guest did not report a result" >&2
    exit 1
fi
grep -a -q "test result: ok" console.log || { echo "no passing test result in the guest's output" >&2; exit 1; }
exit "$code"
