#!/usr/bin/env bash
# Soak test of the service: `ceusd demo` (the service and a display that draws each exam's
# ROI, in one process) against a Mosquitto broker, on 1920x1080 synthetic video at 60 fps,
# exams back to back (PDAC-like and CP-like alternating, 60 s each), for MINUTES minutes
# (default 10). Every 10 s it samples
# the process's resident memory (VmRSS) and the frame counters of the retained status.
# Writes OUT/rss.csv, OUT/demo.log and OUT/report.md. Not part of CI.
#
#   tools/soak.sh [MINUTES] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
out=${2:-target/soak}
mkdir -p "$out"
cargo build --quiet --bin ceusd
bin=target/debug/ceusd
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
state=$(mktemp -d)
# A Mosquitto broker, as on a cart (the demo's embedded broker would count in the RSS).
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n%s' "$port" \
    "$([ "$(id -u)" = 0 ] && echo 'user root')" >"$state/mosquitto.conf"
mosquitto -c "$state/mosquitto.conf" >/dev/null 2>&1 &
broker=$!
sleep 1
"$bin" demo --no-view --speed 1 --size 1920x1080 --fps 60 --exams "$minutes" \
    --broker "mqtt://127.0.0.1:$port" --state-dir "$state" >"$out/demo.out" 2>"$out/demo.log" &
pid=$!
trap 'kill $pid $broker 2>/dev/null || true' EXIT
echo "seconds,rss_kib,frames_received,dropped_in_queue,dropped_by_source,outbox_pending" >"$out/rss.csv"
start=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
    now=$(( $(date +%s) - start ))
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo "")
    status=$(mosquitto_sub -h 127.0.0.1 -p "$port" -t ceus/demo/status -C 1 -W 3 2>/dev/null || true)
    counters=$(printf '%s' "$status" | python3 -c '
import json, sys
try:
    s = json.load(sys.stdin)
    f = s["frames"]; o = s.get("outbox") or {}
    print(",".join(str(v) for v in (f["received"], f["dropped_in_queue"], f["dropped_by_source"], o.get("pending", ""))))
except Exception:
    print(",,,")' || echo ",,,")
    [ -n "$rss" ] && echo "$now,$rss,$counters" >>"$out/rss.csv"
    sleep 10
done
wait "$pid" || true
python3 - "$out" "$minutes" <<'PY'
import csv, sys
out, minutes = sys.argv[1], sys.argv[2]
rows = [r for r in csv.DictReader(open(f"{out}/rss.csv")) if r["rss_kib"]]
rss = [int(r["rss_kib"]) / 1024 for r in rows]
last = next((r for r in reversed(rows) if r["frames_received"]), None)
results = open(f"{out}/demo.out").read().count("→")
# After a two-minute warm-up (model, caches, the first exams' buffers): the least-squares
# slope of RSS over time, and the change from the first to the last sample.
warm = [(int(r["seconds"]), int(r["rss_kib"]) / 1024) for r in rows if int(r["seconds"]) >= 120]
lines = [
    f"# Soak: {minutes} min of 1920x1080 at 60 fps, exams back to back",
    "",
    f"- samples: {len(rss)} (every 10 s)",
    f"- RSS MiB: first {rss[0]:.0f}, min {min(rss):.0f}, max {max(rss):.0f}, last {rss[-1]:.0f}",
]
if len(warm) >= 2:
    n = len(warm)
    mt = sum(t for t, _ in warm) / n
    mr = sum(r for _, r in warm) / n
    slope = sum((t - mt) * (r - mr) for t, r in warm) / sum((t - mt) ** 2 for t, _ in warm)
    lines.append(
        f"- RSS from 120 s on: {warm[0][1]:.1f} MiB at {warm[0][0]} s, {warm[-1][1]:.1f} MiB at {warm[-1][0]} s, "
        f"min {min(r for _, r in warm):.1f}, max {max(r for _, r in warm):.1f}; slope {slope * 60:+.2f} MiB/min"
    )
if last:
    recv, dq, ds = int(last["frames_received"]), int(last["dropped_in_queue"]), int(last["dropped_by_source"])
    lines.append(f"- frames received by the pipeline: {recv}; dropped in the queue: {dq}; lost at the source: {ds}")
lines.append(f"- exam results in the summary: {results}")
open(f"{out}/report.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
