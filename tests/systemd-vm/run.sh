#!/usr/bin/env bash
# Runs the installed package under a real systemd: a QEMU guest boots Debian 12 with systemd as
# PID 1, from a root that holds the ceusd .deb installed by dpkg, Mosquitto, and the kernel's
# vivid driver as a capture card. A oneshot unit in the guest drives the service through
# systemctl and prints what it saw on the serial console; this script checks it:
#   - as installed, with no model configured, it fails at boot with 78 and is not restarted;
#   - `systemctl start ceusd` returns once the daemon says READY=1 (Type=notify) under the
#     unit's whole sandbox (user ceusd, group video, DevicePolicy=closed + video4linux,
#     system call filter, ProtectSystem=strict ...), and frames flow from /dev/video0;
#   - after SIGKILL, systemd restarts it (Restart=on-failure);
#   - on the synthetic scanner a whole exam is scored and its result published;
#   - `systemctl stop` ends it cleanly (exit 0) within TimeoutStopSec;
#   - a capture call that hangs stops the watchdog pings, and systemd kills and restarts it;
#   - journald holds the start, the model, the source's format, the result id and its
#     warnings, at their priorities (info, warning).
#
# Needs: root, qemu-system-x86, cpio, kmod, debootstrap, cargo-deb, apt-get download access.
# Usage: tests/systemd-vm/run.sh [WORKDIR]   (work files under target/systemd-vm/)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="${1:-$repo/target/systemd-vm}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
. "$repo/tests/debian.sh"

# 1. Kernel, root, package.
debian_kernel "$work"
debian_root_tar "${CEUSD_DEBIAN_CACHE:-$repo/target/debian-cache}"
deb_packages "$repo" "$work/debs"
root="$work/root"
rm -rf "$root" && mkdir -p "$root"
tar -C "$root" -xf "$ROOT_TAR"
dpkg --root="$root" -i "$DEB1" > "$work/install.log" 2>&1 || { cat "$work/install.log"; exit 1; }

# 2. vivid and the modules it needs, loaded at boot (one instance: a webcam capture node).
mods="$(grep "^kernel/drivers/media/test-drivers/vivid/vivid.ko:" "$KERNEL_DIR/lib/modules/$KVER/modules.dep" | tr -d ':')"
for m in $mods; do
    mkdir -p "$root/lib/modules/$KVER/$(dirname "$m")"
    cp "$KERNEL_DIR/lib/modules/$KVER/$m" "$root/lib/modules/$KVER/$m"
done
cp "$KERNEL_DIR/lib/modules/$KVER"/modules.* "$root/lib/modules/$KVER/"
echo vivid > "$root/etc/modules-load.d/vivid.conf"
mkdir -p "$root/etc/modprobe.d" "$root/usr/local/bin"
echo "options vivid n_devs=1 node_types=0x1 input_types=0x0" > "$root/etc/modprobe.d/vivid.conf"

# 3. Two site configurations: the vivid webcam, and the synthetic scanner for a whole exam.
#    The guest runs under emulation (TCG): one frame is scored, and a model run may be slow.
common='[model]
path = "demo"
[mqtt]
broker = "mqtt://127.0.0.1:1883"
[pipeline]
inference_stall_s = 900.0'
cat > "$root/etc/ceusd/vivid.toml" <<CONF
[device]
id = "vm"
[source]
uri = "v4l2:/dev/video0?format=YUYV&size=640x360&fps=10"
$common
CONF
cat > "$root/etc/ceusd/synthetic.toml" <<CONF
[device]
id = "vm"
[source]
uri = "synthetic:pdac?seed=7&fps=4&duration=50"
speed = 2.0
$common
[exam]
auto_start = true
keep = 1
use_recorded_injection = false
CONF

# The synthetic scanner whose capture call hangs 5 s into the exam: the watchdog's case.
sed -e 's|^uri = .*|uri = "synthetic:pdac?seed=7\&fps=4\&duration=50\&stall=5"|' \
    "$root/etc/ceusd/synthetic.toml" > "$root/etc/ceusd/stall.toml"

# The lesion's box in that exam, as the sonographer would draw it (the scanner's ground truth).
"$repo/target/debug/ceusd" synth --kind pdac --seed 7 --duration 1 --fps 1 --out "$work/truth" >/dev/null
roi="$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["lesion_ceus"], separators=(",", ":")))' "$work/truth/ground_truth.json")"
rm -rf "$work/truth"
echo "{\"id\":\"vm-roi\",\"command\":\"set_roi\",\"roi\":$roi}" > "$root/etc/ceusd/set-roi.json"

# 4. The driver: a oneshot unit after boot, its output on the serial console.
cat > "$root/usr/local/bin/ceusd-vm-test" <<'DRIVER'
#!/bin/sh
exec > /dev/ttyS0 2>&1
# Each line also with the guest's uptime, on a line of its own: where the stage's time goes.
say() { echo "VMTEST $*"; echo "VMTIME $(cut -d' ' -f1 /proc/uptime) s: $*"; }
show() { systemctl show ceusd -p "$1" --value; }
wait_for() { # wait_for SECONDS TOPIC PATTERN: the first retained/live message on TOPIC matching
    end=$(( $(date +%s) + $1 ))
    while [ "$(date +%s)" -lt "$end" ]; do
        m="$(mosquitto_sub -h 127.0.0.1 -t "$2" -C 1 -W 5 2>/dev/null || true)"
        case "$m" in *$3*) echo "$m"; return 0 ;; esac
        sleep 1
    done
    return 1
}
say boot "$(uname -r)"
ls -l /dev/video0 | sed 's/^/VMTEST device /'

# At boot, as installed: no model yet. It must fail once with 78 and not be restarted.
for _ in $(seq 1 120); do
    [ "$(show ActiveState)" = failed ] && break
    sleep 1
done
sleep 5
say "at boot without a model: $(show ActiveState) status=$(show ExecMainStatus) restarts=$(show NRestarts)"

cp /etc/ceusd/vivid.toml /etc/ceusd/ceusd.toml
started=$(date +%s)
if systemctl start ceusd; then say "start ok $(( $(date +%s) - started ))s"; else say "start FAILED"; fi
say "active $(show ActiveState)/$(show SubState) status=$(show StatusText)"
pid="$(show MainPID)"
groups=""
for g in $(sed -n 's/^Groups:[[:space:]]*//p' "/proc/$pid/status"); do groups="$groups $(getent group "$g" | cut -d: -f1)"; done
say "user $(stat -c %U "/proc/$pid") groups$groups"
# The sandbox as the service sees it: its mount namespace, and its cgroup's device policy.
in_ns() { nsenter -t "$pid" -m -- sh -c "$1" 2>/dev/null; }
touch /tmp/outside
in_ns 'touch /var/lib/ceusd/probe && rm /var/lib/ceusd/probe' && say "sandbox state writable" || say "sandbox state NOT writable"
in_ns 'touch /var/lib/ceusd/models/probe' && say "sandbox models WRITABLE" || say "sandbox models read-only"
in_ns 'touch /etc/ceusd/probe' && say "sandbox etc WRITABLE" || say "sandbox etc read-only"
in_ns 'touch /usr/bin/probe' && say "sandbox usr WRITABLE" || say "sandbox usr read-only"
[ -n "$(ls -A /root)" ] && [ -z "$(in_ns 'ls -A /root')" ] && say "sandbox home hidden" || say "sandbox home VISIBLE"
in_ns 'test -e /tmp/outside' && say "sandbox tmp SHARED" || say "sandbox tmp private"
cg="/sys/fs/cgroup$(cut -d: -f3 "/proc/$pid/cgroup")"
# /dev/tty1 opens outside the service's cgroup; inside, DevicePolicy=closed must refuse it.
if sh -c 'exec 3< /dev/tty1' 2>/dev/null; then
    sh -c "echo \$\$ > $cg/cgroup.procs; exec 3< /dev/tty1" 2>/dev/null && say "sandbox tty1 OPEN" || say "sandbox other devices closed"
else
    say "sandbox: /dev/tty1 does not open even outside"
fi
sh -c "echo \$\$ > $cg/cgroup.procs; exec 3< /dev/video0" 2>/dev/null && say "sandbox video4linux open" || say "sandbox video4linux CLOSED"
if wait_for 120 ceus/vm/status '"received":[1-9]' > /tmp/status; then say "frames flowing"; else say "no frames"; fi
pid="$(show MainPID)"
kill -9 "$pid"
sleep 1
for _ in $(seq 1 120); do
    [ "$(show ActiveState)" = active ] && [ "$(show MainPID)" != "$pid" ] && break
    sleep 1
done
say "after SIGKILL: restarts=$(show NRestarts) $(show ActiveState)/$(show SubState)"

cp /etc/ceusd/synthetic.toml /etc/ceusd/ceusd.toml
systemctl restart ceusd && say "restart ok" || say "restart FAILED"
if wait_for 300 ceus/vm/status '"state":"exam"' > /dev/null; then
    mosquitto_sub -h 127.0.0.1 -t ceus/vm/cmd/reply -C 1 -W 120 > /tmp/reply &
    sleep 1
    mosquitto_pub -h 127.0.0.1 -q 1 -t ceus/vm/cmd -f /etc/ceusd/set-roi.json
    wait
    say "set_roi reply $(grep -o '"ok":[a-z]*' /tmp/reply)"
else
    say "no exam started"
fi
if result="$(wait_for 900 'ceus/vm/exam/+/result' '"result_id"')"; then
    say "result $(echo "$result" | grep -o '"result_id":"[^"]*"') $(echo "$result" | grep -o '"label":"[^"]*"')"
else
    say "no result"
fi
stopped=$(date +%s)
systemctl stop ceusd
say "stop $(( $(date +%s) - stopped ))s result=$(show Result) status=$(show ExecMainStatus)"
say "restarts-total $(show NRestarts)"

cp /etc/ceusd/stall.toml /etc/ceusd/ceusd.toml
systemctl start ceusd && say "stall start ok" || say "stall start FAILED"
for _ in $(seq 1 240); do
    [ "$(show NRestarts)" -ge 1 ] 2>/dev/null && break
    sleep 1
done
say "after a stuck capture: restarts=$(show NRestarts)"
systemctl stop ceusd
journalctl -u ceusd -o export --no-pager | grep -a -E '^(PRIORITY|MESSAGE)=' | paste -d' ' - - | sed 's/^/VMTEST journal /'
systemd-analyze security ceusd --no-pager 2>/dev/null | tail -n 1 | sed 's/^/VMTEST /'
say done
systemctl poweroff --force --force
DRIVER
chmod 755 "$root/usr/local/bin/ceusd-vm-test"
cat > "$root/etc/systemd/system/ceusd-vm-test.service" <<'UNIT'
[Unit]
Description=ceusd test driver
After=multi-user.target mosquitto.service systemd-modules-load.service systemd-udev-settle.service
Wants=systemd-udev-settle.service
[Service]
Type=oneshot
ExecStart=/usr/local/bin/ceusd-vm-test
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/ceusd-vm-test.service "$root/etc/systemd/system/multi-user.target.wants/ceusd-vm-test.service"
# The package enabled ceusd: at boot it starts on the package's configuration, which names no
# model yet. The driver then starts it with each test configuration in turn.
# No login prompts on the console the driver writes to.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$root/etc/systemd/system/getty@tty1.service"
echo ceusd-vm > "$root/etc/hostname"
: > "$root/etc/machine-id"

# 5. Boot the root as the initramfs, systemd as PID 1.
(cd "$root" && find . | cpio -o -H newc --quiet) > "$work/root.cpio"
timeout 1500 qemu-system-x86_64 -accel tcg -cpu max -m 3072 -smp 2 -nographic -no-reboot -nic none \
    -kernel "$KERNEL_DIR/boot/vmlinuz-$KVER" -initrd "$work/root.cpio" \
    -append "console=ttyS0 rdinit=/lib/systemd/systemd panic=-1 quiet systemd.show_status=0" \
    </dev/null > "$work/console.log" 2>&1 || true
tr -d '\r' < "$work/console.log" | grep -a '^VMTEST' | tee "$work/vmtest.log"
tr -d '\r' < "$work/console.log" | grep -a '^VMTIME' || true

# 6. What the guest saw.
failures=0
expect() { # expect "what" extended-regex
    if grep -a -q -E "$2" "$work/vmtest.log"; then echo "PASS $1"; else echo "FAIL $1"; failures=$((failures + 1)); fi
}
expect "the guest ran the driver to its end" '^VMTEST done$'
expect "udev gives /dev/video0 to group video" '^VMTEST device crw-rw----\+? 1 root video '
expect "enabled without a model: fails at boot with 78, not restarted" '^VMTEST at boot without a model: failed status=78 restarts=0$'
expect "journal: why it did not start" '^VMTEST journal PRIORITY=3 MESSAGE=not starting: fix the configuration'
expect "systemctl start returned after READY=1" '^VMTEST start ok '
expect "running, and the daemon's STATUS= reached systemd" '^VMTEST active active/running status=[a-z]'
expect "runs as ceusd with group video" '^VMTEST user ceusd groups.* video( |$)'
for what in "state writable" "models read-only" "etc read-only" "usr read-only" "home hidden" \
    "tmp private" "other devices closed" "video4linux open"; do
    expect "sandbox: $what" "^VMTEST sandbox $what\$"
done
expect "frames flow from the capture card inside the sandbox" '^VMTEST frames flowing$'
expect "restarted after SIGKILL" '^VMTEST after SIGKILL: restarts=1 active/running$'
expect "the ROI command was accepted" '^VMTEST set_roi reply "ok":true$'
expect "a whole exam is scored under systemd" '^VMTEST result "result_id":"[^"]+-r1" "label":"'
expect "systemctl stop: clean exit 0" '^VMTEST stop [0-9]+s result=success status=0$'
expect "a stuck capture call stops the pings: systemd's watchdog kills and restarts it" '^VMTEST after a stuck capture: restarts=[1-9]'
expect "journal: systemd says why" '^VMTEST journal PRIORITY=[0-9] MESSAGE=ceusd.service: Watchdog timeout'
expect "journal: the daemon says which stage was stuck" '^VMTEST journal PRIORITY=[0-9] MESSAGE=.*stuck: capture'
expect "journal: start line at info" '^VMTEST journal PRIORITY=6 MESSAGE=ceusd [0-9.]+ starting, configuration /etc/ceusd/ceusd.toml$'
expect "journal: model identity at info" '^VMTEST journal PRIORITY=6 MESSAGE=model .*sha256:'
expect "journal: the capture card's format at info" '^VMTEST journal PRIORITY=6 MESSAGE=source: frames of 640x360 YUYV$'
expect "journal: the result id at info" '^VMTEST journal PRIORITY=6 MESSAGE=exam [^ ]+: result [^ ]+-r1 stored: '
expect "journal: the result's warning at warning" '^VMTEST journal PRIORITY=4 MESSAGE=exam [^ ]+: result [^ ]+-r1: timing estimated'
expect "journal: no doubled timestamps" '^VMTEST journal PRIORITY=6 MESSAGE=stopped; 0 message\(s\) left in the outbox$'
if grep -a -q -E '^VMTEST journal .*MESSAGE=(\[|<[0-9]>)' "$work/vmtest.log"; then
    echo "FAIL a journal message carries its own timestamp or priority prefix"; failures=$((failures + 1))
fi
echo "$failures failure(s); console: $work/console.log"
[ "$failures" = 0 ]
