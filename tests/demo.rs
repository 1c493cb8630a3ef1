//! `ceusd demo`, the README's main command: embedded broker, synthetic scanner, demo model and
//! the terminal display, end to end; each result held on screen before the next exam; stopped
//! in order by SIGTERM or Ctrl-C.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

/// The demo's promise: each result stays current this long before the next exam starts.
const HOLD: Duration = Duration::from_secs(15);

fn exam_of(topic: &str) -> Option<&str> {
    let mut parts = topic.split('/');
    (parts.nth(2) == Some("exam"))
        .then(|| parts.next())
        .flatten()
}

#[test]
fn the_demo_scores_a_pdac_like_and_a_cp_like_exam() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args([
            "demo",
            "--no-view",
            "--exams",
            "2",
            "--speed",
            "8",
            "--port",
            &port.to_string(),
            "--state-dir",
        ])
        .arg(dir.path())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("NOT FOR CLINICAL USE"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "mosquitto_sub -h 127.0.0.1 -p {port} -t 'ceus/demo/#' -v"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("summary: 2 exam(s) started, 2 result(s)"),
        "{stdout}"
    );
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("exam "))
        .collect();
    assert_eq!(summary.len(), 2, "{stdout}");
    assert!(
        summary[0].contains("(PDAC-like lesion)") && summary[0].contains("→ PDAC"),
        "{stdout}"
    );
    assert!(
        summary[1].contains("(CP-like lesion)") && summary[1].contains("→ CP"),
        "{stdout}"
    );
    for line in &summary {
        let bytes: usize = line
            .rsplit("heatmap ")
            .next()
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(bytes > 0, "no heatmap: {line}");
    }
    // The log shows the service's story: the model, the source, each exam's result id, and
    // how long each result took after its window closed.
    assert!(stderr.contains("ready: device demo"), "{stderr}");
    assert!(
        stderr.matches("queued for the broker").count() >= 2,
        "{stderr}"
    );
    assert!(
        stderr.matches("s after the window closed").count() >= 2,
        "{stderr}"
    );
    // Words, not the code's names.
    assert!(stderr.contains("pancreatic phase"), "{stderr}");
    assert!(stderr.contains("recorded by the scanner"), "{stderr}");
    assert!(
        !stderr.contains("Pdac") && !stderr.contains("Recorded"),
        "{stderr}"
    );
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
}

/// On a loaded machine (both cores busy with other work, recorded time 8 times faster), every
/// result stays retained and current for at least the promised time: the next exam starts
/// only after it, and the last result stays until the demo ends and the device goes offline.
#[test]
fn each_result_stays_current_for_the_promised_time_on_a_loaded_machine() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let sub = Subscriber::start(broker.port, "ceus/demo/#", None);
    let stop_hog = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop_hog.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args([
            "demo",
            "--no-view",
            "--no-web",
            "--exams",
            "2",
            "--speed",
            "8",
            "--broker",
            &broker.url(),
            "--state-dir",
        ])
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    stop_hog.store(true, Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    std::thread::sleep(Duration::from_millis(500));
    let messages = sub.snapshot();

    // The exams in the order they became current.
    let mut exams: Vec<(String, Instant)> = Vec::new();
    for m in &messages {
        if m.topic == "ceus/demo/status" {
            let v = m.json();
            if let (true, Some(id)) = (v["exam_running"] == true, v["exam_id"].as_str()) {
                if !exams.iter().any(|(e, _)| e == id) {
                    exams.push((id.to_string(), m.at));
                }
            }
        }
    }
    assert_eq!(exams.len(), 2, "exams: {exams:?}\n{stderr}");
    let offline = messages
        .iter()
        .find(|m| m.topic == "ceus/demo/status" && m.json()["online"] == false)
        .unwrap_or_else(|| panic!("no offline status\n{stderr}"));
    for (i, (exam, _)) in exams.iter().enumerate() {
        let result = messages
            .iter()
            .find(|m| {
                exam_of(&m.topic) == Some(exam.as_str())
                    && m.topic.ends_with("/result")
                    && !m.payload.is_empty()
            })
            .unwrap_or_else(|| panic!("no result for exam {exam}\n{stderr}"));
        assert!(result.json()["score"].is_number(), "{:?}", result.json());
        // The demo runs the int8 form of the demo model, and its results say so.
        assert_eq!(
            result.json()["model"]["quantization"],
            "int8 dynamic",
            "{:?}",
            result.json()
        );
        assert!(
            result.json()["window_to_result_ms"].is_u64(),
            "{:?}",
            result.json()
        );
        // Until the next exam became current (its start clears this one's retained result),
        // or, for the last exam, until the device went offline.
        let replaced_at = match exams.get(i + 1) {
            Some((_, started)) => {
                let cleared = messages
                    .iter()
                    .find(|m| {
                        exam_of(&m.topic) == Some(exam.as_str())
                            && m.topic.ends_with("/result")
                            && m.payload.is_empty()
                    })
                    .unwrap_or_else(|| panic!("exam {exam}'s result was never cleared"));
                assert!(
                    cleared.at >= result.at,
                    "exam {exam}'s result was cleared before it came"
                );
                (*started).min(cleared.at)
            }
            None => offline.at,
        };
        let shown = replaced_at.duration_since(result.at);
        assert!(
            shown >= HOLD,
            "exam {exam}'s result was current for only {shown:?}\n{stderr}"
        );
    }
    // Nothing of the exams is left retained once the demo is over but the last result.
    assert!(
        stdout.contains("summary: 2 exam(s) started, 2 result(s)"),
        "{stdout}"
    );
}

/// SIGTERM (systemd, `kill`) and SIGINT (Ctrl-C) end an endless demo in order: a "stopping"
/// line, the retained status offline, a summary, exit 0.
#[test]
fn a_signal_stops_the_demo_in_order() {
    let _heavy = heavy();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start(&dir.path().join("broker"), false);
        let sub = Subscriber::start(broker.port, "ceus/demo/status", None);
        let child = Command::new(env!("CARGO_BIN_EXE_ceusd"))
            .args([
                "demo",
                "--no-view",
                "--no-web",
                "--speed",
                "4",
                "--broker",
                &broker.url(),
                "--state-dir",
            ])
            .arg(dir.path().join("state"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        sub.wait_for("an exam running", Duration::from_secs(120), |m| {
            m.json()["exam_running"] == true
        });
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "signal {signal}: {:?}\n{stdout}\n{stderr}",
            out.status
        );
        assert!(stdout.contains("stopping:"), "{stdout}");
        assert!(stdout.contains("summary: 1 exam(s) started"), "{stdout}");
        let status = retained(broker.port, "ceus/demo/status");
        assert_eq!(status.len(), 1, "{status:?}");
        assert_eq!(status[0].json()["online"], false, "{:?}", status[0].json());
    }
}

/// On a terminal (a pseudo-terminal from `script`), the live view: the fixed lines are drawn
/// while log lines scroll, the exam's result lands on its line, and the demo ends on its own.
#[test]
fn the_live_view_draws_on_a_terminal() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let command = format!(
        "{} demo --exams 1 --speed 8 --no-web --port {} --state-dir {}",
        env!("CARGO_BIN_EXE_ceusd"),
        free_port(),
        dir.path().join("state").display()
    );
    // A view that blocks the daemon (it once did: stdout held locked) hangs; `timeout` ends it.
    let out = Command::new("timeout")
        .args([
            "300",
            "script",
            "--quiet",
            "--return",
            "--command",
            &command,
            "/dev/null",
        ])
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs a command on a pseudo-terminal");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}\n{screen}", out.status);
    for drawn in [
        "NOT FOR CLINICAL USE",
        "(PDAC-like lesion); the operator drew the ROI",
        "since injection (recorded by the scanner)",
        "hold the probe still in",
        "last result: exam ",
        "summary: 1 exam(s) started, 1 result(s)",
    ] {
        assert!(screen.contains(drawn), "'{drawn}' never drawn:\n{screen}");
    }
    // The log's lines were printed too (above the view), not lost.
    assert!(screen.contains("ready: device demo"), "{screen}");
}
