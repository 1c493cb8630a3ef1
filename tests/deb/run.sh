#!/usr/bin/env bash
# Tests the Debian package and the systemd unit in it: builds the .deb with cargo-deb, installs
# it with dpkg into a scratch Debian 12 root (debootstrap, with systemd and adduser; dpkg runs
# the maintainer scripts chrooted there), then checks what an installation must hold:
#   - the files, their modes and owners; the conffile; the ceusd user in group video;
#   - the unit: `systemd-analyze verify` silent and successful, `systemd-analyze security`
#     exposure 2.0 or less; enabled, and not started while no model is configured;
#   - an upgrade keeps the site's edited configuration; remove keeps it; purge removes it and
#     the service's state, but not the site's models;
#   - the Jetson CUDA variant adds its drop-in, and the unit with it still verifies and rates
#     2.0 or less.
#
# Needs root, cargo-deb, debootstrap, systemd (for systemd-analyze) and access to a Debian mirror.
# Usage: tests/deb/run.sh [WORKDIR]. The binary packaged is the one `cargo build` makes (dev
# profile): this tests the packaging, not the release build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="${1:-$repo/target/deb-test}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"

failures=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
check() { # check "what" command...
    local what="$1"; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

# 1. The packages: the same binary as two versions, for the upgrade.
. "$repo/tests/debian.sh"
deb_packages "$repo" "$work/debs"
deb1="$DEB1"
deb2="$DEB2"

listing="$(dpkg-deb -c "$deb1" | awk '{print $1, $2, $6}')"
for entry in \
    "-rwxr-xr-x 0/0 ./usr/bin/ceusd" \
    "-rw-r--r-- 0/0 ./usr/lib/systemd/system/ceusd.service" \
    "-rw-r--r-- 0/0 ./etc/ceusd/ceusd.toml" \
    "-rw-r--r-- 0/0 ./usr/share/doc/ceusd/examples/jetson-cuda.conf" \
    "-rw-r--r-- 0/0 ./usr/share/doc/ceusd/asyncapi.yaml" \
    "-rw-r--r-- 0/0 ./usr/share/doc/ceusd/README.md" \
    "-rw-r--r-- 0/0 ./usr/share/ceusd/display/index.html" \
    "-rw-r--r-- 0/0 ./usr/share/ceusd/display/display.js" \
    "-rw-r--r-- 0/0 ./usr/share/ceusd/display/display.css" \
    "-rw-r--r-- 0/0 ./usr/share/ceusd/display/vendor/mqtt.min.js" \
    "-rw-r--r-- 0/0 ./usr/share/ceusd/display/vendor/mqtt.LICENSE.md" \
    "-rw-r--r-- 0/0 ./usr/share/ceusd/display/mosquitto-ceusd-display.conf" \
    "-rw-r--r-- 0/0 ./usr/share/ceusd/display/mosquitto-ceusd-bridge.conf"; do
    check "package holds: $entry" grep -qxF -- "$entry" <<<"$listing"
done
# The shipped Mosquitto snippet serves the shipped page (on free ports, from the unpacked files).
mkdir -p "$work/display"
dpkg-deb -x "$deb1" "$work/display"
served="$work/display/usr/share/ceusd/display"
plain_port=$((20000 + RANDOM % 20000)); ws_port=$((plain_port + 1))
sed -e "s|^listener 1883 |listener $plain_port |" -e "s|^listener 9001 |listener $ws_port |" \
    -e "s|^http_dir .*|http_dir $served|" "$served/mosquitto-ceusd-display.conf" > "$work/display.conf"
if [ "$(id -u)" = 0 ]; then echo "user root" >> "$work/display.conf"; fi
mosquitto -c "$work/display.conf" > "$work/display-mosquitto.log" 2>&1 &
display_broker=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$ws_port/" && break; sleep 0.1; done
check "Mosquitto with the shipped snippet serves the display page" \
    cmp -s <(curl -s "http://127.0.0.1:$ws_port/index.html") "$repo/display/index.html"
check "... and its MQTT client" \
    cmp -s <(curl -s "http://127.0.0.1:$ws_port/vendor/mqtt.min.js") "$repo/display/vendor/mqtt.min.js"
kill "$display_broker" 2>/dev/null; wait "$display_broker" 2>/dev/null || true
check "the only conffile is /etc/ceusd/ceusd.toml" \
    test "$(dpkg-deb -f "$deb1" Package >/dev/null; dpkg-deb --ctrl-tarfile "$deb1" | tar -xO ./conffiles)" = "/etc/ceusd/ceusd.toml"
depends="$(dpkg-deb -f "$deb1" Depends)"
check "depends on adduser and systemd ($depends)" grep -q "adduser.*systemd" <<<"$depends"
glibc="$(dpkg-deb --fsys-tarfile "$deb1" | tar -xO ./usr/bin/ceusd > "$work/ceusd.bin" && objdump -T "$work/ceusd.bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)"
check "the binary needs glibc $glibc, no newer than the declared libc6 (>= 2.34)" \
    test "$(printf '%s\n2.34\n' "$glibc" | sort -V | tail -n 1)" = 2.34
check "the packaged unit is systemd/ceusd.service" \
    cmp -s <(dpkg-deb --fsys-tarfile "$deb1" | tar -xO ./usr/lib/systemd/system/ceusd.service) "$repo/systemd/ceusd.service"

# 2. A scratch Debian 12 root, made once and kept as a tarball.
debian_root_tar "${CEUSD_DEBIAN_CACHE:-$repo/target/debian-cache}"
root="$work/root"
fresh_root() { rm -rf "$root" && mkdir -p "$root" && tar -C "$root" -xf "$ROOT_TAR"; }
in_root() { chroot "$root" "$@"; }
# check_unit PREFIX: the installed unit (with its drop-ins) verifies without a word and rates an
# exposure of 2.0 or less.
check_unit() {
    local prefix="$1" verify_out verify_rc security exposure
    verify_out="$(systemd-analyze verify --root="$root" ceusd.service 2>&1)" && verify_rc=0 || verify_rc=$?
    check "${prefix}systemd-analyze verify: exit 0, nothing to say (${verify_out:-silent})" \
        test "$verify_rc" = 0 -a -z "$verify_out"
    security="$(systemd-analyze security --offline=true --root="$root" ceusd.service 2>&1 | tail -n 1)"
    echo "$security"
    exposure="$(grep -o 'level for ceusd.service: [0-9.]*' <<<"$security" | awk '{print $4}')"
    check "${prefix}systemd-analyze security: exposure ${exposure:-?} is 2.0 or less" \
        awk -v e="${exposure:-99}" 'BEGIN { exit !(e <= 2.0) }'
}
fresh_root

# 3. Install.
if dpkg --root="$root" -i "$deb1" > "$work/install.log" 2>&1; then pass "dpkg -i"; else fail "dpkg -i"; cat "$work/install.log"; fi
check "postinst says the service is not started without a model" \
    grep -q "enabled but NOT started" "$work/install.log"
check "ceusd runs in the installed system" in_root /usr/bin/ceusd --version
check "user ceusd is a system user" \
    test "$(in_root getent passwd ceusd | cut -d: -f6,7)" = "/var/lib/ceusd:/usr/sbin/nologin"
check "user ceusd is in group video" grep -qw video <<<"$(in_root id -nG ceusd)"
check "/var/lib/ceusd is ceusd:ceusd 750" test "$(in_root stat -c '%U:%G %a' /var/lib/ceusd)" = "ceusd:ceusd 750"
check "/var/lib/ceusd/models is root:ceusd 750" test "$(in_root stat -c '%U:%G %a' /var/lib/ceusd/models)" = "root:ceusd 750"
check "the unit is enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/ceusd.service"
check "the shipped configuration names no model yet: check fails on the model" \
    bash -c "! chroot '$root' ceusd check --config /etc/ceusd/ceusd.toml --only model > '$work/check.log' 2>&1 && grep -q 'FAIL model' '$work/check.log'"

# 4. The unit, as installed.
check_unit ""
check "systemd-analyze security --threshold=20 agrees" \
    bash -c "systemd-analyze security --offline=true --root='$root' --threshold=20 ceusd.service >/dev/null 2>&1"

# 5. The site configures it (the embedded demo model stands in for a real one) and upgrades.
sed -i -e 's/^id = "cart-01"/id = "cart-07"/' -e 's|^path = "/var/lib/ceusd/models/ceus-dlr.gguf"|path = "demo"|' \
    "$root/etc/ceusd/ceusd.toml"
check "the site's edit is in place" grep -q '^id = "cart-07"' "$root/etc/ceusd/ceusd.toml"
check "check passes on the model once configured" in_root ceusd check --config /etc/ceusd/ceusd.toml --only model
if dpkg --root="$root" -i "$deb2" > "$work/upgrade.log" 2>&1; then pass "dpkg -i (upgrade to 0.1.0-2)"; else fail "upgrade"; cat "$work/upgrade.log"; fi
check "installed version is 0.1.0-2" \
    test "$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Version}' ceusd)" = "0.1.0-2"
check "the upgrade kept the site's configuration" grep -q '^id = "cart-07"' "$root/etc/ceusd/ceusd.toml"
check "the upgrade kept the site's model setting" grep -q '^path = "demo"' "$root/etc/ceusd/ceusd.toml"
check "no conffile prompt or copy" test -z "$(find "$root/etc/ceusd" -name '*.dpkg-*')"
check "with a model configured, postinst would start it (no systemd running here)" \
    grep -q "model configured; systemd is not running" "$work/upgrade.log"

# 6. Remove, then purge.
echo "site model" > "$root/var/lib/ceusd/models/site.gguf"
touch "$root/var/lib/ceusd/outbox.sqlite" "$root/var/lib/ceusd/state.json"
if dpkg --root="$root" -r ceusd > "$work/remove.log" 2>&1; then pass "dpkg -r"; else fail "dpkg -r"; cat "$work/remove.log"; fi
check "remove takes the binary" test ! -e "$root/usr/bin/ceusd"
check "remove keeps the configuration" grep -q '^id = "cart-07"' "$root/etc/ceusd/ceusd.toml"
check "remove keeps the outbox" test -e "$root/var/lib/ceusd/outbox.sqlite"
if dpkg --root="$root" -P ceusd > "$work/purge.log" 2>&1; then pass "dpkg -P"; else fail "dpkg -P"; cat "$work/purge.log"; fi
check "purge removes the configuration" test ! -e "$root/etc/ceusd/ceusd.toml"
check "purge removes the outbox and state" test ! -e "$root/var/lib/ceusd/outbox.sqlite" -a ! -e "$root/var/lib/ceusd/state.json"
check "purge keeps the site's models" test -f "$root/var/lib/ceusd/models/site.gguf"
check "purge removes the enablement" test ! -e "$root/etc/systemd/system/multi-user.target.wants/ceusd.service"

# 7. The Jetson CUDA variant: the same package plus the drop-in that opens the GPU's nodes. Its
#    binary here is the CPU one; the packaging and the unit with the drop-in are what is tested.
(cd "$repo" && cargo deb --no-build --profile dev --variant cuda -o "$work/debs/cuda/") \
    2> >(grep -v "dev profile is not supported\|To enable debug symbols" >&2)
cuda_deb="$(ls "$work"/debs/cuda/ceusd_*.deb)"
check "the cuda variant is package ceusd" test "$(dpkg-deb -f "$cuda_deb" Package)" = ceusd
check "the cuda variant holds the drop-in" \
    cmp -s <(dpkg-deb --fsys-tarfile "$cuda_deb" | tar -xO ./usr/lib/systemd/system/ceusd.service.d/jetson-cuda.conf) "$repo/systemd/jetson-cuda.conf"
fresh_root
if dpkg --root="$root" -i "$cuda_deb" > "$work/install-cuda.log" 2>&1; then pass "dpkg -i (cuda variant)"; else fail "dpkg -i (cuda variant)"; cat "$work/install-cuda.log"; fi
check_unit "with the drop-in, "
check "with the drop-in, the GPU's nodes are allowed" \
    bash -c "systemd-analyze cat-config --root='$root' systemd/system/ceusd.service | grep -q '^DeviceAllow=/dev/nvmap rw'"

echo "$failures failure(s)"
[ "$failures" = 0 ]
