//! The service's edges: configuration errors name their field, `ceusd check` reports pass or
//! fail per part, and systemd hears READY=1, STATUS= and WATCHDOG=1 — the pings continue while
//! the scanner shows no signal and stop when a stage is stuck inside a call.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ceusd::config::{Config, Overrides};
use support::*;

/// `ceusd run` on this configuration: its exit code and its log.
fn run_with(config_text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ceusd.toml");
    std::fs::write(&path, config_text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = r#"
[device]
id = "cart-7"
[source]
uri = "synthetic:pdac"
[model]
path = "demo"
[state]
dir = "/tmp/ceusd-config-test"
"#;

#[test]
fn the_example_configuration_is_valid() {
    let path = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/ceusd.example.toml"
    ));
    let text = std::fs::read_to_string(path).unwrap();
    let c = Config::parse(&text, path).unwrap();
    assert_eq!(c.device.id, "cart-01");
    assert_eq!(c.mqtt.keep_alive, std::time::Duration::from_secs(10));
    // Every section of the configuration appears in the example.
    for section in [
        "[device]",
        "[source]",
        "[model]",
        "[mqtt]",
        "[exam]",
        "[state]",
        "[pipeline]",
        "[preview]",
    ] {
        assert!(text.contains(section), "{section}");
    }
}

#[test]
fn configuration_errors_name_the_field_and_the_service_does_not_start() {
    let cases = [
        (
            GOOD.replace("[model]", "[model]\ndevise = \"cpu\""),
            "unknown field `devise`",
        ),
        (
            format!("{GOOD}[mqtt]\nkeep_alive_s = \"ten\"\n"),
            "keep_alive_s",
        ),
        (
            format!("{GOOD}[mqtt]\nkeep_alive_s = 1\n"),
            "mqtt.keep_alive_s: 1: expected 5 to 3600",
        ),
        (GOOD.replace("cart-7", "cart 7"), "device.id"),
        (GOOD.replace("synthetic:pdac", "webcam:0"), "source.uri"),
        (
            GOOD.replace("[model]\npath = \"demo\"", ""),
            "missing field `model`",
        ),
        (
            format!("{GOOD}[mqtt]\nbroker = \"http://x\"\n"),
            "mqtt.broker",
        ),
        (
            format!("{GOOD}[mqtt]\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n"),
            "mqtt.password_file: /nonexistent/pw: no such file",
        ),
        (format!("{GOOD}[exam]\nkeep = 0\n"), "exam.keep"),
        (
            format!("{GOOD}[pipeline]\nframe_queue = 0\n"),
            "pipeline.frame_queue",
        ),
        (
            format!("{GOOD}[preview]\nenabled = true\nfps = 30.0\n"),
            "preview.fps: 30: expected 0.1 to 10",
        ),
        (
            GOOD.replace("path = \"demo\"", "path = \"demo\"\nsha256 = \"sha256:00\""),
            "model.sha256",
        ),
        (
            GOOD.replace(
                "path = \"demo\"",
                &format!("path = \"demo\"\nsha256 = \"sha256:{}\"", "0".repeat(64)),
            ),
            "content hash",
        ),
        (
            GOOD.replace("path = \"demo\"", "path = \"/nonexistent/ceus-dlr.gguf\""),
            "/nonexistent/ceus-dlr.gguf",
        ),
    ];
    for (text, expected) in cases {
        let (code, stderr) = run_with(&text);
        // 78 (EX_CONFIG): the unit's RestartPreventExitStatus=78 keeps systemd from restarting
        // a service that cannot start until someone changes its configuration.
        assert_eq!(
            code,
            Some(78),
            "started, or the wrong exit code, with:\n{text}\n{stderr}"
        );
        assert!(stderr.contains(expected), "'{expected}' not in:\n{stderr}");
    }
}

#[test]
fn flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, GOOD).unwrap();
    let c = Config::load(
        &path,
        &Overrides {
            broker: Some("mqtts://broker.example:8883".into()),
            device_id: Some("cart-9".into()),
            speed: Some(3.0),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(c.device.id, "cart-9");
    assert!(c.mqtt.broker.tls);
    assert_eq!(
        c.source.pacing,
        ceusd::capture::source::Pacing::RealTime { speed: 3.0 }
    );
    let err = Config::load(
        &path,
        &Overrides {
            speed: Some(0.0),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("source.speed"), "{err}");
}

#[test]
fn check_passes_on_a_good_installation_and_fails_on_a_closed_broker() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let config = dir.path().join("ceusd.toml");
    write_config(
        &config,
        "chk",
        "synthetic:cp",
        &broker.url(),
        &dir.path().join("state"),
        "",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in ["config", "model", "source", "state", "broker"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("PASS") && l.contains(part)),
            "{part}: {text}"
        );
    }
    assert!(text.contains("1280x720"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args([
            "check",
            "--timeout",
            "3",
            "--broker",
            &format!("mqtt://127.0.0.1:{}", free_port()),
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("broker")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("PASS") && l.contains("model")),
        "{text}"
    );
}

#[test]
fn systemd_hears_ready_status_and_watchdog_until_a_stage_is_stuck() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let heard: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    {
        let heard = heard.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    heard.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
    }
    let config = dir.path().join("ceusd.toml");
    // No signal from 6 to 14 s (the scanner off: healthy), then the capture call hangs at 24 s.
    write_config(
        &config,
        "wd",
        "synthetic:pdac?fps=8&duration=60&nosignal=6-14&stall=24",
        &broker.url(),
        &dir.path().join("state"),
        "[exam]\nauto_start = true\n[pipeline]\nstall_s = 2.0",
    );
    let log = dir.path().join("daemon.log");
    let daemon = Daemon::start(
        &config,
        &log,
        &[
            ("NOTIFY_SOCKET", socket_path.display().to_string()),
            ("WATCHDOG_USEC", "1000000".into()),
        ],
    );
    daemon.wait_for_log(
        "watchdog not fed",
        Instant::now() + Duration::from_secs(180),
        "the watchdog never stopped",
    );
    let stopped_feeding = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let heard = heard.lock().unwrap().clone();
    let first = |pred: &dyn Fn(&str) -> bool| heard.iter().find(|(_, m)| pred(m)).map(|(t, _)| *t);
    let ready = first(&|m| m.contains("READY=1")).expect("READY=1");
    let no_signal = first(&|m| m.contains("STATUS=no-signal")).expect("STATUS=no-signal");
    let back = heard
        .iter()
        .find(|(t, m)| *t > no_signal && m.contains("STATUS=exam"))
        .map(|(t, _)| *t)
        .expect("STATUS=exam after the episode");
    let pings = |from: Instant, to: Instant| {
        heard
            .iter()
            .filter(|(t, m)| *t > from && *t < to && m.contains("WATCHDOG=1"))
            .count()
    };
    assert!(pings(ready, no_signal) > 0, "no pings while healthy");
    assert!(
        pings(no_signal, back) > 0,
        "an idle scanner is healthy: pings must go on"
    );
    assert_eq!(
        pings(stopped_feeding, Instant::now()),
        0,
        "pings after the capture thread got stuck"
    );
    let text = daemon.log_text();
    assert!(text.contains("stuck: capture"), "{text}");
    // Stuck in the driver, yet SIGTERM still stops the service cleanly.
    assert!(daemon.terminate().success());
}

/// Under systemd (`JOURNAL_STREAM` set) every log line is `<priority>message` with no timestamp
/// of its own, and the journal holds what an installer looks for: the start, the model's
/// identity, the source's format, each result id and each of the result's warnings.
#[test]
fn journal_lines_carry_priorities_and_what_an_installer_looks_for() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let config = dir.path().join("ceusd.toml");
    // Without the recording's injection time the clock is estimated: the result warns so.
    let source = "synthetic:pdac?fps=8&duration=60";
    write_config(
        &config,
        "jr",
        source,
        &broker.url(),
        &dir.path().join("state"),
        "[exam]\nauto_start = true\nuse_recorded_injection = false",
    );
    let log = dir.path().join("daemon.log");
    let daemon = Daemon::start(&config, &log, &[("JOURNAL_STREAM", "8:12345".into())]);
    let start = Instant::now();
    daemon.wait_for_log(": started", start + Duration::from_secs(120), "no exam");
    // The sonographer draws the lesion's box.
    command(
        broker.port,
        "jr",
        serde_json::json!({"id": "roi", "command": "set_roi", "roi": lesion_roi(source, 0)}),
    );
    daemon.wait_for_log(" stored: ", start + Duration::from_secs(180), "no result");
    let result = wait_retained(
        broker.port,
        "ceus/jr/exam/+/result",
        Duration::from_secs(30),
    )
    .json();
    assert!(daemon.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();

    for line in text.lines() {
        let priority = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .and_then(|(p, _)| p.parse::<u8>().ok());
        assert!(
            priority.is_some_and(|p| p <= 7),
            "a line without a journal priority: {line:?}"
        );
        // env_logger's own format would start with "[2026-…Z INFO …]".
        assert!(
            !line.contains(" INFO ") && !line[3..].starts_with('['),
            "{line:?}"
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!("<6>ceusd {version} starting, configuration ")),
        "{text}"
    );
    let hash = result["model"]["hash"].as_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>model ") && l.contains(hash)),
        "model identity {hash}: {text}"
    );
    assert!(text.contains("<6>source: frames of 1280x720 "), "{text}");
    let exam = result["exam_id"].as_str().unwrap();
    let result_id = result["result_id"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "<6>exam {exam}: result {result_id} stored: P(PDAC) "
        )),
        "{text}"
    );
    let warnings: Vec<&str> = result["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings.iter().any(|w| w.starts_with("timing estimated")),
        "{warnings:?}"
    );
    for warning in warnings {
        assert!(
            text.contains(&format!("<4>exam {exam}: result {result_id}: {warning}")),
            "warning {warning:?} not in the journal: {text}"
        );
    }
    assert!(
        text.contains("<6>stopped; 0 message(s) left in the outbox"),
        "{text}"
    );
}

/// `--only` runs the named checks after the configuration's; the state check refuses a
/// directory of another user rather than create root-owned files the service cannot write.
#[test]
fn check_only_runs_the_named_checks_and_refuses_another_users_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let config = dir.path().join("ceusd.toml");
    // No broker listens there: only the model is checked, so the check passes.
    let closed = format!("mqtt://127.0.0.1:{}", free_port());
    write_config(&config, "only", "synthetic:cp", &closed, &state, "");
    let check = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ceusd"))
            .arg("check")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = check(&["--only", "model"]);
    assert!(ok, "{text}");
    let names: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(names, ["config", "model"], "{text}");

    let (ok, text) = check(&["--only", "state,broker"]);
    assert!(!ok, "{text}");
    assert!(text.contains("PASS state"), "{text}");
    assert!(text.contains("FAIL broker"), "{text}");

    let (ok, text) = check(&["--only", "modle"]);
    assert!(!ok, "an unknown check name is refused: {text}");

    // The state directory of another user: as root, hand it to nobody; otherwise it is root's.
    let other = if unsafe { libc::geteuid() } == 0 {
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        let path = std::ffi::CString::new(theirs.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0);
        theirs
    } else {
        std::path::PathBuf::from("/")
    };
    write_config(&config, "only", "synthetic:cp", &closed, &other, "");
    let (ok, text) = check(&["--only", "state"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("FAIL state") && text.contains("run it as the service's user"),
        "{text}"
    );
    assert!(
        !other.join("outbox.sqlite").exists(),
        "the check created an outbox in another user's directory"
    );
}

/// Everything under `dir`: each file's path and bytes.
fn tree(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(tree(&path));
        } else {
            files.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    files.sort();
    files
}

/// The state check writes nothing: a state directory that does not exist yet stays absent,
/// and an outbox the service left is counted without a byte or a file changing beside it.
#[test]
fn check_writes_nothing_in_the_state_directory() {
    use ceusd::publish::outbox::{Outbox, OutgoingMessage};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("lib").join("ceusd");
    let config = dir.path().join("ceusd.toml");
    let closed = format!("mqtt://127.0.0.1:{}", free_port());
    write_config(&config, "quiet", "synthetic:cp", &closed, &state, "");
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_ceusd"))
            .args(["check", "--only", "state", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = check();
    assert!(ok, "{text}");
    assert!(
        text.contains("PASS state") && text.contains("does not exist yet"),
        "{text}"
    );
    assert!(
        !dir.path().join("lib").exists(),
        "the check created the state directory"
    );

    std::fs::create_dir_all(&state).unwrap();
    {
        let mut outbox = Outbox::open(&state.join("outbox.sqlite"), 100).unwrap();
        outbox
            .enqueue(
                "r-1",
                &[OutgoingMessage {
                    topic: "ceus/quiet/exam/e-1/result".into(),
                    payload: b"{}".to_vec(),
                    retain: true,
                }],
            )
            .unwrap();
    }
    let before = tree(dir.path());
    let (ok, text) = check();
    assert!(ok, "{text}");
    assert!(text.contains("outbox holds 1 message(s)"), "{text}");
    assert_eq!(
        tree(dir.path()),
        before,
        "the check changed the state directory"
    );
}

/// A capture device that is not there is reported as not opened, never as "open, but".
#[test]
fn check_says_a_missing_capture_device_cannot_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ceusd.toml");
    let closed = format!("mqtt://127.0.0.1:{}", free_port());
    let device = dir.path().join("video-absent");
    let source = format!("v4l2:{}", device.display());
    write_config(
        &config,
        "nocard",
        &source,
        &closed,
        &dir.path().join("state"),
        "",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args(["check", "--only", "source", "--timeout", "3", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL source"))
        .unwrap_or_else(|| panic!("no source line: {text}"));
    assert!(line.contains("cannot open"), "{line}");
    assert!(!line.contains("open, but"), "{line}");
}
