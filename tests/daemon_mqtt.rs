//! `ceusd run` against a real Mosquitto, read by a real subscriber (`mosquitto_sub`): a full
//! synthetic exam over MQTT, SIGTERM, the broker killed and restarted mid-exam ten times, the
//! daemon killed between a result and its PUBACK, and commands refused for every reason.

mod support;

use std::time::Duration;

use support::*;

const LONG: Duration = Duration::from_secs(240);

fn source(kinds: &str, extra: &str) -> String {
    format!("synthetic:{kinds}?seed=3&fps=8&duration=50&injection=2{extra}")
}

fn topic_kind(topic: &str) -> &str {
    topic.rsplit('/').next().unwrap_or_default()
}

/// The retained status says an exam runs: its id.
fn running_exam(sub: &Subscriber, device: &str) -> String {
    let m = sub.wait_for("a status with an exam running", LONG, |m| {
        m.topic == format!("ceus/{device}/status")
            && serde_json::from_slice::<serde_json::Value>(&m.payload)
                .is_ok_and(|v| v["exam_running"] == true && v["exam_id"].is_string())
    });
    m.json()["exam_id"].as_str().unwrap().to_string()
}

/// The reply to command `id`.
fn reply(sub: &Subscriber, id: &str) -> serde_json::Value {
    sub.wait_for(&format!("a reply to {id}"), Duration::from_secs(30), |m| {
        m.topic.ends_with("/cmd/reply")
            && serde_json::from_slice::<serde_json::Value>(&m.payload).is_ok_and(|v| v["id"] == id)
    })
    .json()
}

#[test]
fn a_full_exam_reaches_a_subscriber_in_order_and_matches_the_contract() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let sub = Subscriber::start(broker.port, "ceus/full/#", None);
    let src = source("pdac", "");
    let config = dir.path().join("ceusd.toml");
    write_config(
        &config,
        "full",
        &src,
        &broker.url(),
        &dir.path().join("state"),
        "[exam]\nauto_start = true",
    );
    let daemon = Daemon::start(&config, &dir.path().join("daemon.log"), &[]);
    let exam = running_exam(&sub, "full");
    let roi = lesion_roi(&src, 0);
    command(
        broker.port,
        "full",
        serde_json::json!({"id": "roi-1", "command": "set_roi", "roi": roi}),
    );
    let r = reply(&sub, "roi-1");
    assert_eq!(r["ok"], true, "{r}");
    let result = sub.wait_for("the result", LONG, |m| m.topic.ends_with("/result"));
    let heatmap = sub.wait_for("the heatmap", LONG, |m| m.topic.ends_with("/heatmap"));
    // Rescoring with another ROI (the lesion box, 4 px smaller all round) publishes revision 2
    // on the same topic, with its own result id and heatmap.
    let smaller = ceusd::roi::Roi::new(roi.x + 4, roi.y + 4, roi.width - 8, roi.height - 8);
    command(
        broker.port,
        "full",
        serde_json::json!({"id": "again", "command": "rescore", "roi": smaller}),
    );
    let again = reply(&sub, "again");
    assert_eq!(again["ok"], true, "{again}");
    assert_eq!(again["data"]["result_id"], format!("{exam}-r2"));
    let second = sub.wait_for("the rescored result", LONG, |m| {
        m.topic.ends_with("/result")
            && serde_json::from_slice::<serde_json::Value>(&m.payload)
                .is_ok_and(|v| v["revision"] == 2)
    });
    let second = second.json();
    assert_eq!(second["result_id"], format!("{exam}-r2"));
    assert_eq!(second["roi"]["width"], smaller.width);
    assert_eq!(second["label"], "PDAC");
    let kept = retained(broker.port, &format!("ceus/full/exam/{exam}/result"));
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].json()["result_id"], format!("{exam}-r2"));
    // A new exam clears the previous exam's retained result and heatmap.
    command(
        broker.port,
        "full",
        serde_json::json!({"id": "stop", "command": "stop_exam"}),
    );
    reply(&sub, "stop");
    command(
        broker.port,
        "full",
        serde_json::json!({"id": "next", "command": "start_exam"}),
    );
    assert_eq!(reply(&sub, "next")["ok"], true);
    sub.wait_for("the clearing of the result", LONG, |m| {
        m.topic == format!("ceus/full/exam/{exam}/result") && m.payload.is_empty()
    });
    assert!(retained(broker.port, &format!("ceus/full/exam/{exam}/#"))
        .iter()
        .all(|m| m.payload.is_empty()));
    // While it ran, the daemon never looked offline (a connection dropped while connecting
    // would have fired the will).
    for m in sub
        .snapshot()
        .iter()
        .filter(|m| m.topic == "ceus/full/status")
    {
        assert_eq!(m.json()["online"], true, "{}", daemon.log_text());
    }
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status:?}");

    // Contents.
    let r = result.json();
    assert_eq!(result.topic, format!("ceus/full/exam/{exam}/result"));
    assert_eq!(r["exam_id"], exam.as_str());
    assert_eq!(r["result_id"], format!("{exam}-r1"));
    assert_eq!(r["label"], "PDAC", "{r:#}");
    assert!(r["score"].as_f64().unwrap() >= r["threshold"].as_f64().unwrap());
    assert_eq!(r["model"]["not_for_clinical_use"], true);
    assert_eq!(r["timing"]["clock_source"], "recorded");
    assert!(heatmap.payload.starts_with(b"\x89PNG\r\n\x1a\n"));
    let png = image::load_from_memory(&heatmap.payload).unwrap();
    assert_eq!(png.width(), r["heatmap"]["width"].as_u64().unwrap() as u32);
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&heatmap.payload)),
        r["heatmap"]["sha256"].as_str().unwrap()
    );

    // Order: status (online), then timing, then the result, then its heatmap.
    let all = sub.snapshot();
    let first = |kind: &str| {
        all.iter()
            .position(|m| topic_kind(&m.topic) == kind && !m.payload.is_empty())
            .unwrap_or_else(|| panic!("no {kind} message"))
    };
    assert!(first("status") < first("timing"));
    assert!(first("timing") < first("result"));
    assert!(first("result") < first("heatmap"));

    // Every JSON payload matches the AsyncAPI document's schema for its channel.
    let (status_schema, timing_schema, result_schema, reply_schema) = (
        schema("Status"),
        schema("Timing"),
        schema("Result"),
        schema("CommandReply"),
    );
    let mut checked = [0usize; 4];
    for m in all.iter().filter(|m| !m.payload.is_empty()) {
        match topic_kind(&m.topic) {
            "status" => {
                assert_valid(&status_schema, &m.topic, &m.json());
                checked[0] += 1;
            }
            "timing" => {
                assert_valid(&timing_schema, &m.topic, &m.json());
                checked[1] += 1;
            }
            "result" => {
                assert_valid(&result_schema, &m.topic, &m.json());
                checked[2] += 1;
            }
            "reply" => {
                assert_valid(&reply_schema, &m.topic, &m.json());
                checked[3] += 1;
            }
            _ => {}
        }
    }
    assert!(
        checked.iter().all(|&n| n > 0),
        "payloads checked: {checked:?}"
    );

    // After SIGTERM: the retained status says offline, and the outbox is empty.
    let kept = retained(broker.port, "ceus/full/status");
    let last = kept.last().expect("a retained status").json();
    assert_eq!(last["online"], false, "{last}");
    assert_valid(&status_schema, "retained status", &last);
    let outbox =
        ceusd::publish::outbox::Outbox::open(&dir.path().join("state/outbox.sqlite"), 1000)
            .unwrap();
    assert_eq!(outbox.len().unwrap(), 0);
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(
        log.contains("model ceus-dlr-demo") || log.contains("model "),
        "{log}"
    );
}

#[test]
fn the_last_will_marks_a_killed_daemon_offline() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let sub = Subscriber::start(broker.port, "ceus/will/status", None);
    let config = dir.path().join("ceusd.toml");
    write_config(
        &config,
        "will",
        &source("cp", ""),
        &broker.url(),
        &dir.path().join("state"),
        "",
    );
    let daemon = Daemon::start(&config, &dir.path().join("daemon.log"), &[]);
    sub.wait_for("online", LONG, |m| {
        serde_json::from_slice::<serde_json::Value>(&m.payload).is_ok_and(|v| v["online"] == true)
    });
    daemon.kill();
    // Mosquitto publishes the will when it notices the socket closed.
    let will = sub.wait_for("the last will", Duration::from_secs(60), |m| {
        serde_json::from_slice::<serde_json::Value>(&m.payload)
            .is_ok_and(|v| v["online"] == false && v["state"] == "offline")
    });
    assert_valid(&schema("Status"), "last will", &will.json());
}

#[test]
fn results_survive_ten_broker_restarts_mid_exam() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(&dir.path().join("broker"), true);
    let exams = 10u64;
    let src = source("pdac,cp", "&rounds=5");
    let sub = Subscriber::start(broker.port, "ceus/restart/#", Some("restart-watcher"));
    let config = dir.path().join("ceusd.toml");
    write_config(
        &config,
        "restart",
        &src,
        &broker.url(),
        &dir.path().join("state"),
        "[exam]\nauto_start = true",
    );
    let daemon = Daemon::start(&config, &dir.path().join("daemon.log"), &[]);
    let mut exam_ids: Vec<String> = Vec::new();
    for k in 0..exams {
        // Wait for exam k, give it its ROI, then kill the broker when its clock passes
        // 30 + k seconds: before, inside and after the key-frame window (30–40 s).
        let exam = sub
            .wait_for(&format!("exam {k}"), LONG, |m| {
                m.topic == "ceus/restart/status"
                    && serde_json::from_slice::<serde_json::Value>(&m.payload).is_ok_and(|v| {
                        v["exam_running"] == true
                            && v["exam_id"]
                                .as_str()
                                .is_some_and(|id| !exam_ids.iter().any(|e| e == id))
                    })
            })
            .json()["exam_id"]
            .as_str()
            .unwrap()
            .to_string();
        exam_ids.push(exam.clone());
        let id = format!("roi-{k}");
        command(
            broker.port,
            "restart",
            serde_json::json!({"id": id, "command": "set_roi", "roi": lesion_roi(&src, k)}),
        );
        assert_eq!(reply(&sub, &id)["ok"], true);
        let kill_at = 30.0 + k as f64;
        sub.wait_for(&format!("exam {k} at {kill_at} s"), LONG, |m| {
            m.topic == format!("ceus/restart/exam/{exam}/timing")
                && serde_json::from_slice::<serde_json::Value>(&m.payload)
                    .is_ok_and(|v| v["elapsed_s"].as_f64().is_some_and(|e| e >= kill_at))
        });
        broker.kill();
        std::thread::sleep(Duration::from_millis(1500));
        broker.restart();
    }
    // Every exam's result arrives; count deliveries per result id.
    let mut report = Vec::new();
    for (k, exam) in exam_ids.iter().enumerate() {
        let result_id = format!("{exam}-r1");
        sub.wait_for(&format!("result {result_id}"), LONG, |m| {
            m.topic.ends_with("/result")
                && serde_json::from_slice::<serde_json::Value>(&m.payload)
                    .is_ok_and(|v| v["result_id"] == result_id.as_str())
        });
        let deliveries = sub
            .snapshot()
            .iter()
            .filter(|m| {
                m.topic.ends_with("/result")
                    && serde_json::from_slice::<serde_json::Value>(&m.payload)
                        .is_ok_and(|v| v["result_id"] == result_id.as_str())
            })
            .count();
        let label = sub
            .snapshot()
            .iter()
            .rev()
            .find(|m| m.topic.ends_with(&format!("{exam}/result")) && !m.payload.is_empty())
            .map(|m| m.json()["label"].clone())
            .unwrap();
        let expected = if k % 2 == 0 { "PDAC" } else { "CP" };
        assert_eq!(label, expected, "exam {k} ({exam})");
        report.push(format!(
            "exam {k}: broker killed at {} s, result {result_id} delivered {deliveries}x, label {label}",
            30 + k
        ));
    }
    let status = daemon.terminate();
    assert!(status.success());
    // The retained state: each retained result sits on its own exam's topic with that exam's
    // one result id, and the last exam's is there. (Earlier exams' results were cleared when
    // the next exam started, but Mosquitto saves its retained state once a second, so a clear
    // acknowledged just before a SIGKILL can be undone by the restart: counted, not failed.)
    let kept: Vec<_> = retained(broker.port, "ceus/restart/exam/+/result")
        .into_iter()
        .filter(|m| !m.payload.is_empty())
        .collect();
    for m in &kept {
        let exam = m.topic.split('/').nth(3).unwrap();
        assert_eq!(m.json()["result_id"], format!("{exam}-r1"), "{}", m.topic);
    }
    let last = exam_ids.last().unwrap();
    assert!(
        kept.iter()
            .any(|m| m.json()["result_id"] == format!("{last}-r1")),
        "the last exam's result is not retained"
    );
    report.push(format!(
        "retained results afterwards: {} (the last exam's, plus {} restored by the broker's restarts)",
        kept.len(),
        kept.len() - 1
    ));
    eprintln!("broker restarts mid-exam:\n{}", report.join("\n"));
}

#[test]
fn a_result_computed_before_a_sigkill_is_delivered_after_restart() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(&dir.path().join("broker"), true);
    let sub = Subscriber::start(broker.port, "ceus/crash/#", Some("crash-watcher"));
    let src = source("cp", "");
    let config = dir.path().join("ceusd.toml");
    let state = dir.path().join("state");
    write_config(
        &config,
        "crash",
        &src,
        &broker.url(),
        &state,
        "[exam]\nauto_start = true",
    );
    let daemon = Daemon::start(&config, &dir.path().join("daemon1.log"), &[]);
    let exam = running_exam(&sub, "crash");
    command(
        broker.port,
        "crash",
        serde_json::json!({"id": "roi", "command": "set_roi", "roi": lesion_roi(&src, 0)}),
    );
    assert_eq!(reply(&sub, "roi")["ok"], true);
    sub.wait_for("the exam at 25 s", LONG, |m| {
        m.topic.ends_with("/timing")
            && serde_json::from_slice::<serde_json::Value>(&m.payload)
                .is_ok_and(|v| v["elapsed_s"].as_f64().is_some_and(|e| e >= 25.0))
    });
    // No broker when the result is computed: it can only wait in the outbox.
    broker.kill();
    let outbox_path = state.join("outbox.sqlite");
    let start = std::time::Instant::now();
    loop {
        let outbox = ceusd::publish::outbox::Outbox::open(&outbox_path, 1000).unwrap();
        if outbox
            .pending()
            .unwrap()
            .iter()
            .any(|m| m.result_id == format!("{exam}-r1"))
        {
            break;
        }
        assert!(
            start.elapsed() < LONG,
            "the result never reached the outbox"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.kill();
    broker.restart();
    // Restarted without automatic exams: only the outbox has something to say.
    write_config(&config, "crash", &src, &broker.url(), &state, "");
    let daemon = Daemon::start(&config, &dir.path().join("daemon2.log"), &[]);
    let result = sub.wait_for("the result after restart", LONG, |m| {
        m.topic == format!("ceus/crash/exam/{exam}/result") && !m.payload.is_empty()
    });
    assert_eq!(result.json()["result_id"], format!("{exam}-r1"));
    assert_eq!(result.json()["label"], "CP");
    sub.wait_for("the heatmap after restart", LONG, |m| {
        m.topic == format!("ceus/crash/exam/{exam}/heatmap") && !m.payload.is_empty()
    });
    assert!(daemon.terminate().success());
    let kept = retained(broker.port, &format!("ceus/crash/exam/{exam}/result"));
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].json()["result_id"], format!("{exam}-r1"));
    let log = std::fs::read_to_string(dir.path().join("daemon2.log")).unwrap();
    assert!(log.contains("from before the restart"), "{log}");
}

#[test]
fn bad_commands_are_refused_with_a_reason_and_change_nothing() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let sub = Subscriber::start(broker.port, "ceus/cmd/#", None);
    let src = source("pdac", "&rounds=0");
    let config = dir.path().join("ceusd.toml");
    write_config(
        &config,
        "cmd",
        &src,
        &broker.url(),
        &dir.path().join("state"),
        "",
    );
    let daemon = Daemon::start(&config, &dir.path().join("daemon.log"), &[]);
    sub.wait_for("online", LONG, |m| m.topic == "ceus/cmd/status");
    let reply_schema = schema("CommandReply");
    let refused = |id: &str, body: serde_json::Value, why: &str| {
        command(broker.port, "cmd", body);
        let r = reply(&sub, id);
        assert_valid(&reply_schema, id, &r);
        assert_eq!(r["ok"], false, "{id}: {r}");
        let error = r["error"].as_str().unwrap();
        assert!(error.contains(why), "{id}: '{error}' should say '{why}'");
    };
    // Malformed payloads: answered without an id where none could be read.
    for (payload, why) in [
        (&b"{not json"[..], "not JSON"),
        (&b"\xff\xfe"[..], "not UTF-8"),
    ] {
        publish(broker.port, "ceus/cmd/cmd", payload);
        sub.wait_for(why, Duration::from_secs(30), |m| {
            m.topic.ends_with("/cmd/reply") && String::from_utf8_lossy(&m.payload).contains(why)
        });
    }
    use serde_json::json;
    refused(
        "n1",
        json!({"id": "n1", "command": "launch"}),
        "unknown command 'launch'",
    );
    refused(
        "n2",
        json!({"id": "n2", "command": "status", "extra": 1}),
        "unknown field",
    );
    refused(
        "n3",
        json!({"id": "n3", "command": "mark_injection"}),
        "no exam is running",
    );
    refused(
        "n4",
        json!({"id": "n4", "command": "stop_exam"}),
        "no exam is running",
    );
    refused("n5", json!({"id": "n5", "command": "rescore"}), "no exam");
    refused(
        "n6",
        json!({"id": "n6", "command": "set_roi", "roi": {"x": 1, "y": 1, "width": 100, "height": 100}}),
        "no exam",
    );
    refused(
        "n7",
        json!({"id": "n7", "command": "start_exam", "exam_id": "a/b"}),
        "exam_id",
    );
    refused(
        "n8",
        json!({"id": "n8", "command": "mark_injection", "seconds_ago": -3}),
        "seconds_ago -3",
    );
    refused(
        "n9",
        json!({"id": "n9", "command": "set_roi", "roi": {"x": 1, "y": 1, "width": 2, "height": 2}}),
        "too small",
    );
    refused(
        "n10",
        json!({"id": "n10", "command": "start_exam", "seconds_ago": 1}),
        "does not belong",
    );

    // Nothing changed: no exam.
    command(broker.port, "cmd", json!({"id": "s1", "command": "status"}));
    let s = reply(&sub, "s1");
    assert_eq!(s["ok"], true);
    assert_eq!(s["data"]["exam_running"], false);

    // Out of order with an exam running.
    command(
        broker.port,
        "cmd",
        json!({"id": "go", "command": "start_exam", "exam_id": "exam-1"}),
    );
    assert_eq!(reply(&sub, "go")["ok"], true);
    // The operator marks the injection, back-dated by 3 s.
    // A mark meant for another exam (sent before this one began) changes nothing here.
    refused(
        "o0",
        json!({"id": "o0", "command": "mark_injection", "exam_id": "exam-0"}),
        "exam exam-0 is not the current exam (exam-1 is)",
    );
    command(
        broker.port,
        "cmd",
        json!({"id": "inj", "command": "mark_injection", "seconds_ago": 3, "exam_id": "exam-1"}),
    );
    let inj = reply(&sub, "inj");
    assert_eq!(inj["ok"], true, "{inj}");
    assert_valid(&reply_schema, "mark_injection reply", &inj);
    // Delivered again (a display re-sending after a reconnection): the same answer, and the
    // injection is not marked a second time.
    std::thread::sleep(Duration::from_millis(500));
    command(
        broker.port,
        "cmd",
        json!({"id": "inj", "command": "mark_injection", "seconds_ago": 3, "exam_id": "exam-1"}),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let replies = loop {
        let replies: Vec<serde_json::Value> = sub
            .snapshot()
            .iter()
            .filter(|m| m.topic.ends_with("/cmd/reply"))
            .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
            .filter(|v| v["id"] == "inj")
            .collect();
        if replies.len() >= 2 || std::time::Instant::now() > deadline {
            break replies;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(
        replies[0], replies[1],
        "a repeated command is answered as before"
    );
    refused(
        "o1",
        json!({"id": "o1", "command": "start_exam"}),
        "exam exam-1 is running",
    );
    refused(
        "o2",
        json!({"id": "o2", "command": "rescore", "roi": {"x": 500, "y": 100, "width": 100, "height": 100}}),
        "not been scored",
    );
    // Let a frame arrive, then an ROI that fits neither pane.
    std::thread::sleep(Duration::from_secs(2));
    refused(
        "o3",
        json!({"id": "o3", "command": "set_roi", "roi": {"x": 0, "y": 0, "width": 950, "height": 530}}),
        "neither inside the B-mode pane",
    );
    command(
        broker.port,
        "cmd",
        json!({"id": "stop", "command": "stop_exam"}),
    );
    assert_eq!(reply(&sub, "stop")["ok"], true);
    refused(
        "o5",
        json!({"id": "o5", "command": "stop_exam", "exam_id": "exam-2"}),
        "exam exam-2 is not the current exam (exam-1 is)",
    );
    refused(
        "o4",
        json!({"id": "o4", "command": "start_exam", "exam_id": "exam-1"}),
        "used already",
    );
    assert!(daemon.terminate().success());
}

#[test]
fn a_source_without_signal_is_reported_and_recovers() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let sub = Subscriber::start(broker.port, "ceus/nosig/status", None);
    let config = dir.path().join("ceusd.toml");
    write_config(
        &config,
        "nosig",
        &source("pdac", "&nosignal=8-16"),
        &broker.url(),
        &dir.path().join("state"),
        "[exam]\nauto_start = true",
    );
    let daemon = Daemon::start(&config, &dir.path().join("daemon.log"), &[]);
    let no_signal = sub.wait_for("no-signal", LONG, |m| {
        serde_json::from_slice::<serde_json::Value>(&m.payload)
            .is_ok_and(|v| v["state"] == "no-signal")
    });
    assert!(no_signal.json()["detail"]
        .as_str()
        .unwrap()
        .contains("no signal"));
    sub.wait_for("recovery", LONG, |m| {
        m.at > no_signal.at
            && serde_json::from_slice::<serde_json::Value>(&m.payload)
                .is_ok_and(|v| v["state"] == "exam")
    });
    assert!(daemon.terminate().success());
}
