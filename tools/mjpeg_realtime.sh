#!/usr/bin/env bash
# A 120 s 1080p60 MJPEG exam through `ceusd run` (release build) in real time, against a
# Mosquitto broker on loopback: the synthetic scanner plays a loop of 31 frames encoded once
# at start (`format=MJPEG&loop=31`), the exam starts itself (`exam.auto_start`), the demo model
# scores the window at a ROI on the CEUS pane. Prints the last status's frame counters (received,
# dropped in the queue, dropped by the source), the command reply, the result and the daemon's
# CPU time. Run it with no build beside it (`flock /tmp/cargo.lock tools/mjpeg_realtime.sh`
# where builds share that lock): on a busy machine the queue may drop for want of a core. Not part of CI.
#
#   tools/mjpeg_realtime.sh [OUT]      (default target/mjpeg-realtime)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/mjpeg-realtime}
mkdir -p "$out"
cargo build --quiet --release --bin ceusd
bin=target/release/ceusd
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
state=$(mktemp -d)
mosquitto -p "$port" >"$out/mosquitto.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true; rm -rf "$state"' EXIT
sleep 1
source='synthetic:pdac?seed=7&size=1920x1080&fps=60&duration=120&format=MJPEG&loop=31&rounds=1'
cat >"$state/ceusd.toml" <<CONF
[device]
id = "mjpeg"
[source]
uri = "$source"
[model]
path = "demo"
[mqtt]
broker = "mqtt://127.0.0.1:$port"
[exam]
auto_start = true
[state]
dir = "$state"
CONF
mosquitto_sub -h 127.0.0.1 -p "$port" -t 'ceus/mjpeg/#' -v >"$out/topics.txt" 2>/dev/null &
sub=$!
trap 'kill $sub $broker 2>/dev/null || true; rm -rf "$state"' EXIT
/usr/bin/time -v "$bin" run --config "$state/ceusd.toml" >"$out/ceusd.out" 2>"$out/ceusd.log" &
daemon=$!
# The lesion's ROI on the CEUS pane (the display's set_roi), once the exam has started.
for _ in $(seq 1 60); do
    sleep 1
    grep -q ': started$' "$out/ceusd.log" && break
done
mosquitto_pub -h 127.0.0.1 -p "$port" -t ceus/mjpeg/cmd \
    -m '{"id": "roi-1", "command": "set_roi", "roi": {"x": 1214, "y": 398, "width": 432, "height": 352}}'
# The window closes 40 s after injection (scored then); the exam stops when the recording ends.
for _ in $(seq 1 200); do
    sleep 1
    grep -q ': stopped (' "$out/ceusd.log" && break
done
sleep 6 # one more status (every 5 s) with the final counters
kill -TERM "$(pgrep -P "$daemon" -x ceusd)" 2>/dev/null || true
wait "$daemon" || true
grep -a '^ceus/mjpeg/status {"contract":1,"device_id":"mjpeg","online":true' "$out/topics.txt" | tail -n 1 | cut -d' ' -f2- | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("last status:", s["state"], "frames", json.dumps(s["frames"]))'
grep -a -E 'cmd/reply|/result ' "$out/topics.txt" | cut -c1-240
grep -E 'stored|stopped \(' "$out/ceusd.log" | cut -c1-200
grep -E 'User time|System time|Elapsed|Maximum resident' "$out/ceusd.log"
