//! The bedside display (`display/`) in a real browser: headless Chromium driven by Playwright
//! (`tests/display/browser.mjs`) loads the page from Mosquitto's websockets listener, as a
//! cart serves it, while `ceusd run` plays a PDAC-like and then a CP-like exam of the
//! synthetic scanner with the preview on. The page goes through the phases, the operator's
//! ROI is drawn on the preview, the labels and heatmaps are shown, a rescore with a redrawn
//! ROI comes back, a new exam clears the screen, and killing the daemon and then the broker
//! shows offline. Here the daemon's side is checked: what it published for those commands.
//! A second test opens the page as `ceusd demo` serves it, over the demo's embedded broker.
//!
//! Needs Node.js 20 or later with `npm ci` run in `tests/display` (done here when
//! `node_modules` is missing), and Debian's `chromium` (`CEUSD_CHROMIUM` names another).
//! Screenshots are kept in `target/display-screenshots/`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::{assert_valid, lesion_roi, schema, Daemon, Mosquitto, Subscriber};

const SOURCE: &str = "synthetic:pdac,cp?seed=3&fps=6&duration=100&injection=2";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Installs the pinned Playwright (package-lock.json) once.
fn playwright(tests_dir: &Path) {
    if tests_dir.join("node_modules/playwright-core").is_dir() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(tests_dir)
        .status()
        .expect("npm is installed (Node.js 20 or later)");
    assert!(status.success(), "npm ci in {} failed", tests_dir.display());
}

/// Runs `browser.mjs` with `spec` (plus where its summary goes); its steps go straight to the
/// test's output. Returns its exit status and summary.
fn run_browser(
    tests_dir: &Path,
    spec: &Value,
    summary_path: &Path,
) -> (std::process::ExitStatus, Value) {
    let mut spec = spec.clone();
    spec["summary"] = json!(summary_path);
    let status = Command::new("node")
        .arg("browser.mjs")
        .current_dir(tests_dir)
        .env("CEUSD_DISPLAY_TEST", spec.to_string())
        .stdout(Stdio::inherit())
        .status()
        .expect("node is installed (Node.js 20 or later)");
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(summary_path).expect("the browser script wrote no summary"),
    )
    .unwrap();
    (status, summary)
}

fn chromium() -> String {
    let chromium = std::env::var("CEUSD_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} not found: install Debian's chromium (apt-get install chromium)"
    );
    chromium
}

/// `ceusd demo` serves the page with its embedded broker's WebSockets listener; in a browser
/// it follows the demo's first exam to its result and heatmap.
#[test]
fn the_demo_serves_the_display() {
    let _heavy = support::heavy();
    let tests_dir = manifest_dir().join("tests/display");
    playwright(&tests_dir);
    let dir = tempfile::tempdir().unwrap();
    let (port, web_port, ws_port) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let log = std::fs::File::create(dir.path().join("demo.out")).unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args(["demo", "--no-view", "--exams", "1", "--speed", "4"])
        .args([
            "--port",
            &port.to_string(),
            "--web-port",
            &web_port.to_string(),
        ])
        .args(["--ws-port", &ws_port.to_string(), "--state-dir"])
        .arg(dir.path().join("state"))
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{web_port}/?broker=ws://127.0.0.1:{ws_port}&device=demo");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(dir.path().join("demo.out"))
        .unwrap_or_default()
        .contains(&url)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not print {url}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let spec = json!({
        "url": url,
        "chromium": chromium(),
        "artifacts": manifest_dir().join("target/display-screenshots"),
        "scenario": "demo",
    });
    let (status, summary) = run_browser(&tests_dir, &spec, &dir.path().join("summary.json"));
    let _ = demo.kill();
    let _ = demo.wait();
    assert!(
        status.success(),
        "the browser test failed: {}",
        summary["error"]
    );
    assert_eq!(summary["page_errors"], json!([]), "errors in the page");
    assert_eq!(summary["demo_result"]["label"], "PDAC");
    // The score bar says its side of the threshold; the ROI is said in words.
    assert_eq!(summary["demo_result"]["side"], "above");
    assert!(
        summary["demo_result"]["roiText"]
            .as_str()
            .is_some_and(|t| t.starts_with("ROI: ") && t.contains('×') && t.contains(" at ")),
        "{}",
        summary["demo_result"]
    );
    assert_eq!(
        summary["demo_result"]["heatmapFor"],
        summary["demo_result"]["id"]
    );
}

#[test]
fn the_display_follows_two_exams_in_a_browser() {
    let _heavy = support::heavy();
    let tests_dir = manifest_dir().join("tests/display");
    playwright(&tests_dir);
    let chromium = chromium();
    let artifacts = manifest_dir().join("target/display-screenshots");

    let dir = tempfile::tempdir().unwrap();
    let (broker, ws_port) = Mosquitto::start_with_websockets(
        &dir.path().join("broker"),
        &manifest_dir().join("display"),
    );
    let config = dir.path().join("ceusd.toml");
    support::write_config(
        &config,
        "bedside",
        SOURCE,
        &broker.url(),
        &dir.path().join("state"),
        "[exam]\nauto_start = true\n[preview]\nenabled = true\nfps = 4.0\n",
    );
    // Real time: after the first exam's result the page has until the exam's end (98 s after
    // the injection, about 55 s after the result) for its steps (mark, start, redraw,
    // rescore, stop), which took up to 40 s on a busy two-core machine; the next exam begins
    // at 100 s.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("speed = 4.0", "speed = 1.0");
    std::fs::write(&config, text).unwrap();
    let sub = Subscriber::start(broker.port, "ceus/bedside/#", None);
    let daemon = Daemon::start(&config, &dir.path().join("daemon.log"), &[]);

    let spec = json!({
        "url": format!("http://127.0.0.1:{ws_port}/index.html?device=bedside"),
        "chromium": chromium,
        "lesions": [lesion_roi(SOURCE, 0), lesion_roi(SOURCE, 1)],
        "daemon_pid": daemon.child.id(),
        "broker_pid": broker.pid().unwrap(),
        "artifacts": artifacts,
        "scenario": "full",
    });
    let (status, summary) = run_browser(&tests_dir, &spec, &dir.path().join("summary.json"));
    assert!(
        status.success(),
        "the browser test failed: {}\ndaemon log:\n{}",
        summary["error"],
        daemon.log_text()
    );
    assert_eq!(summary["page_errors"], json!([]), "errors in the page");

    // The page went through the phases in order, and asked for a still probe before and
    // during the window.
    let phases: Vec<&str> = summary["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let vascular = phases.iter().position(|p| *p == "vascular");
    let pancreatic = phases.iter().position(|p| *p == "pancreatic");
    assert!(
        matches!((vascular, pancreatic), (Some(v), Some(p)) if v < p),
        "phases shown: {phases:?}"
    );
    let hold: Vec<&str> = summary["hold"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        hold.contains(&"soon") && hold.contains(&"now"),
        "hold-still states: {hold:?}"
    );
    assert_eq!(summary["not_for_clinical_use"], json!(true));
    assert!(summary["mark_reply"].as_str().unwrap().contains("refused"));
    assert!(summary["start_reply"]
        .as_str()
        .unwrap()
        .contains("refused: exam"));
    assert!(summary["offline_text"]
        .as_str()
        .unwrap()
        .starts_with("OFFLINE"));

    // What the daemon published for the page's commands.
    let received = sub.snapshot();
    let results: Vec<Value> = received
        .iter()
        .filter(|m| m.topic.ends_with("/result") && !m.payload.is_empty())
        .map(|m| m.json())
        .collect();
    let result_of = |exam: &str, revision: u64| {
        results
            .iter()
            .find(|r| r["exam_id"] == exam && r["revision"] == revision)
            .unwrap_or_else(|| panic!("no result r{revision} of exam {exam}: {results:#?}"))
            .clone()
    };
    let exam_a = summary["exam_a"].as_str().unwrap();
    let exam_b = summary["exam_b"].as_str().unwrap();
    // Each result: the label, and the ROI the page drew is the one scored.
    let expect = |exam: &str, revision: u64, label: &str, drawn: &str| {
        let r = result_of(exam, revision);
        assert_eq!(r["label"], label, "{r}");
        assert_eq!(
            r["roi"], summary[drawn],
            "the ROI scored is the one drawn ({drawn})"
        );
        r
    };
    let a1 = expect(exam_a, 1, "PDAC", "roi_a");
    assert_eq!(summary["result_a1"]["id"], a1["result_id"]);
    let a2 = expect(exam_a, 2, "PDAC", "rescore_roi");
    assert_eq!(summary["result_a2"]["heatmapFor"], a2["result_id"]);
    let b1 = expect(exam_b, 1, "CP", "roi_b");
    assert_eq!(summary["result_b1"]["heatmapFor"], b1["result_id"]);
    assert_eq!(summary["result_a1"]["side"], "above");
    assert_eq!(summary["result_b1"]["side"], "below");

    // The previews the page drew on match the contract.
    let preview_messages: Vec<_> = received
        .iter()
        .filter(|m| m.topic == "ceus/bedside/preview")
        .collect();
    let sizes: Vec<usize> = preview_messages.iter().map(|m| m.payload.len()).collect();
    eprintln!(
        "previews: {} messages of {} to {} bytes",
        sizes.len(),
        sizes.iter().min().unwrap_or(&0),
        sizes.iter().max().unwrap_or(&0)
    );
    let previews: Vec<Value> = preview_messages.iter().map(|m| m.json()).collect();
    assert!(previews.len() >= 10, "{} previews", previews.len());
    let validator = schema("Preview");
    for p in &previews {
        assert_valid(&validator, "preview", p);
    }
    assert!(previews
        .iter()
        .any(|p| p["exam_id"] == exam_b && p["roi"] == summary["roi_b"]));

    let shots = summary["screenshots"].as_array().unwrap();
    for name in [
        "hold-still",
        "pdac-result",
        "pdac-rescored",
        "new-exam-cleared",
        "cp-result",
        "daemon-offline",
        "broker-lost",
    ] {
        assert!(
            shots.iter().any(|s| s
                .as_str()
                .is_some_and(|s| s.ends_with(&format!("{name}.png")))),
            "screenshot {name} missing: {shots:?}"
        );
    }
    eprintln!(
        "offline shown {:.1} s after SIGKILL of the daemon; broker loss shown after {:.1} s",
        summary["offline_after_s"].as_f64().unwrap_or(f64::NAN),
        summary["broker_lost_after_s"].as_f64().unwrap_or(f64::NAN)
    );
    drop(daemon);
    drop(broker);
}
