#!/usr/bin/env bash
# Replay cost against cine length: writes synthetic cines of 900, 1800 and 3600 frames (15 fps)
# and measures, each in its own process, replaying them through DicomReplay
# (benches/dicom_cine.rs `decode`), `ceusd analyze` on them, and `ceusd run` replaying them as
# the service's source (`dicom:CINE` at `source.speed = 100`, the most it takes, against a
# Mosquitto broker on loopback, the ROI set by command once the exam starts): wall time per
# frame and peak RSS. Time per frame should stay flat and peak RSS should not grow with the
# length. Needs jq, bc, mosquitto and mosquitto_pub.
#
#   tools/cine_scaling.sh [OUT_DIR] [FRAMES...]      (default /tmp/ceusd-cine-scaling 900 1800 3600)
#
# CINE_SCALING_CASES="jpeg native" (the default) picks the cases; CINE_SCALING_NO_BUILD=1 uses
# the binaries already built.
#
# Cases: JPEG baseline at 1920x1080 (`ceusd synth`), and uncompressed RGB at 640x480 (the same
# exam's frames rewritten natively): uncompressed 1080p is 6.2 MB a frame, so 3600 frames would
# be 22 GB, past the 4 GiB a defined-length Pixel Data can hold. Each cine is deleted once
# measured. Uses the dev profile's binaries (built here, as the tests are).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/ceusd-cine-scaling}
shift || true
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(900 1800 3600)
mkdir -p "$out"

if [ -z "${CINE_SCALING_NO_BUILD:-}" ]; then
    cargo build --locked --bin ceusd >&2
    cargo build --locked --profile dev --bench dicom_cine >&2
fi
# Copies, so that a rebuild during the run does not change what is measured.
mkdir -p "$out/bin"
cp target/debug/ceusd "$out/bin/ceusd"
cp "$(ls -t target/debug/deps/dicom_cine-* | grep -v '\.d$' | head -1)" "$out/bin/dicom_cine"
ceusd=$out/bin/ceusd
bench=$out/bin/dicom_cine

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
fam=$(grep -m1 '^cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')
model=$(grep -m1 '^model\s*:' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')
echo "CPU: $cpu (family $fam model $model), $(nproc) CPUs; $(git rev-parse --short HEAD)"
printf '| %-22s | %6s | %8s | %16s | %15s | %10s | %17s | %16s |\n' \
    case frames "file MB" "replay ms/frame" "replay peak MB" "analyze s" "analyze ms/frame" "analyze peak MB"
printf '|%s|\n' "------------------------|--------|----------|------------------|-----------------|------------|-------------------|------------------"
runs=()

# run_service CASE FRAMES CINE ROI [CONFIG LINES for [source]]: `ceusd run` on the cine until
# the recording ends; appends a row to `runs`.
run_service() {
    local case=$1 n=$2 cine=$3 roi=$4 source_extra=${5:-}
    local dir port broker daemon t0 t1 kb status
    dir=$(mktemp -d)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mosquitto -p "$port" >"$dir/mosquitto.log" 2>&1 &
    broker=$!
    sleep 0.5
    cat >"$dir/ceusd.toml" <<CONF
[device]
id = "cine"
[source]
uri = "dicom:$cine"
speed = 100.0
$source_extra
[model]
path = "demo"
[mqtt]
broker = "mqtt://127.0.0.1:$port"
[exam]
auto_start = true
[state]
dir = "$dir/state"
CONF
    t0=$(date +%s.%N)
    /usr/bin/time -f '%M' -o "$dir/rss" "$ceusd" run --config "$dir/ceusd.toml" >/dev/null 2>"$dir/ceusd.log" &
    daemon=$!
    until grep -q ': started$' "$dir/ceusd.log" || ! kill -0 "$daemon" 2>/dev/null; do sleep 0.1; done
    IFS=, read -r x y w h <<<"$roi"
    mosquitto_pub -p "$port" -t ceus/cine/cmd \
        -m "{\"id\": \"roi\", \"command\": \"set_roi\", \"roi\": {\"x\": $x, \"y\": $y, \"width\": $w, \"height\": $h}}"
    until grep -q 'source: the recording ended' "$dir/ceusd.log" || ! kill -0 "$daemon" 2>/dev/null; do
        sleep 0.1
    done
    t1=$(date +%s.%N)
    status=$(mosquitto_sub -p "$port" -t ceus/cine/status -C 1 -W 5 || true)
    kill -TERM "$(pgrep -P "$daemon" -x ceusd)" 2>/dev/null || true
    wait "$daemon" || true
    kill "$broker" 2>/dev/null || true
    read -r kb <"$dir/rss"
    local secs received dropped result
    secs=$(echo "$t1 - $t0" | bc -l)
    received=$(jq -r '.frames.received' <<<"$status")
    dropped=$(jq -r '.frames.dropped_in_queue' <<<"$status")
    result=$(grep -c ' stored: P(PDAC)' "$dir/ceusd.log" || true)
    runs+=("$(printf '| %-22s | %6d | %8.1f | %12.2f | %13d | %8s | %7s | %6s |' "$case" "$n" "$secs" \
        "$(echo "1000 * $secs / $n" | bc -l)" $((kb / 1024)) "$received" "$dropped" "$result")")
    rm -rf "$dir"
}

# measure CASE FRAMES CINE GROUND_TRUTH [ANALYZE OPTIONS...]
measure() {
    local case=$1 n=$2 cine=$3 truth=$4
    shift 4
    local mb roi line rms ms tv secs kb
    mb=$(( $(stat -c %s "$cine") / 1000000 ))
    roi=$(jq -r '.lesion_ceus | "\(.x),\(.y),\(.width),\(.height)"' "$truth")
    line=$("$bench" decode "$cine")
    # The frames the file holds (what synth wrote), not the count asked for.
    n=$(sed -E 's/.*: ([0-9]+) frames,.*/\1/' <<<"$line")
    ms=$(sed -E 's/.* ([0-9.]+) ms\/frame.*/\1/' <<<"$line")
    rms=$(sed -E 's/.*peak RSS ([0-9]+) MB.*/\1/' <<<"$line")
    tv=$(mktemp)
    /usr/bin/time -f '%e %M' -o "$tv" "$ceusd" analyze "$cine" --roi "$roi" --json "$@" >/dev/null 2>"$out/analyze.log"
    read -r secs kb <"$tv"
    rm -f "$tv"
    printf '| %-22s | %6d | %8d | %16s | %15s | %10s | %17.2f | %16d |\n' "$case" "$n" "$mb" "$ms" "$rms" \
        "$secs" "$(echo "1000 * $secs / $n" | bc -l)" $((kb / 1024))
    run_service "$case" "$n" "$cine" "$roi" "${run_source_extra:-}"
}

cases=${CINE_SCALING_CASES:-jpeg native}
for n in "${counts[@]}"; do
    secs=$(echo "$n / 15" | bc -l)
    if [[ " $cases " == *" jpeg "* ]]; then
        jpeg="$out/jpeg_1080p_$n.dcm"
        "$ceusd" synth --kind pdac --size 1920x1080 --fps 15 --duration "$secs" --out "$jpeg" >&2
        measure "JPEG baseline 1920x1080" "$n" "$jpeg" "${jpeg%.dcm}.ground_truth.json"
        rm -f "$jpeg"
    fi
    [[ " $cases " == *" native "* ]] || continue

    small="$out/jpeg_480p_$n.dcm"
    raw="$out/native_480p_$n.dcm"
    "$ceusd" synth --kind pdac --size 640x480 --fps 15 --duration "$secs" --out "$small" >&2
    "$bench" native "$small" "$raw"
    # No built-in preset is for 640x480: the synthetic exam's panes, from its ground truth.
    truth="${small%.dcm}.ground_truth.json"
    jq -r '"[[preset]]\nname = \"synthetic-480p\"\nwidth = 640\nheight = 480\n" +
        "bmode = \"\(.bmode_pane | "\(.x),\(.y),\(.width),\(.height)")\"\n" +
        "ceus = \"\(.ceus_pane | "\(.x),\(.y),\(.width),\(.height)")\""' "$truth" >"$out/layouts.toml"
    run_source_extra="layout = \"synthetic-480p\"
layouts_file = \"$out/layouts.toml\"" \
        measure "uncompressed 640x480" "$n" "$raw" "$truth" --layouts "$out/layouts.toml" --layout synthetic-480p
    rm -f "$small" "$raw"
done

echo
echo "ceusd run --source dicom:CINE (source.speed 100), until the recording ended:"
printf '| %-22s | %6s | %8s | %12s | %13s | %8s | %7s | %6s |\n' case frames "run s" "run ms/frame" "run peak MB" received dropped scored
printf '|%s|\n' "------------------------|--------|----------|--------------|---------------|----------|---------|--------"
printf '%s\n' "${runs[@]}"
