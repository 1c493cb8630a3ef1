//! The cart's Mosquitto bridged to a hospital broker with the shipped snippet
//! (`display/mosquitto-ceusd-bridge.conf`, only its address changed): two daemons on the cart,
//! the hospital broker killed while a result is computed and restarted, and what the hospital
//! then holds and delivers.

mod support;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use support::*;

const LONG: Duration = Duration::from_secs(240);

/// The shipped bridge snippet pointed at the test's hospital broker: its `address` line is the
/// only change.
fn bridge_snippet(hospital_port: u16) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/display/mosquitto-ceusd-bridge.conf"
    );
    let text = std::fs::read_to_string(path).expect("the bridge snippet is in display/");
    let mut addresses = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with("address ") {
                addresses += 1;
                format!("address 127.0.0.1:{hospital_port}")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert_eq!(addresses, 1, "the snippet names one address line");
    lines.join("\n") + "\n"
}

fn is_json(m: &Received, pred: impl Fn(&serde_json::Value) -> bool) -> bool {
    serde_json::from_slice::<serde_json::Value>(&m.payload).is_ok_and(|v| pred(&v))
}

/// Waits until Mosquitto has written its persistence file after `since`: what it held then
/// (the hospital subscriber's session) survives a SIGKILL.
fn wait_for_save(broker_dir: &Path, since: SystemTime) {
    let db = broker_dir.join("mosquitto.db");
    let start = Instant::now();
    while !std::fs::metadata(&db)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t > since)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} was never saved",
            db.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn results_sent_while_the_hospital_is_down_arrive_on_its_return_with_every_cart_status() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let hospital_dir = dir.path().join("hospital");
    let mut hospital = Mosquitto::start(&hospital_dir, true);
    let mut cart = Mosquitto::start_with(
        &dir.path().join("cart"),
        false,
        &bridge_snippet(hospital.port),
    );
    const RECORDS: &str = "hospital-records";
    let records = Subscriber::start(hospital.port, "ceus/#", Some(RECORDS));
    let on_cart = Subscriber::start(cart.port, "ceus/#", None);

    // Device cart-12 idles: its retained status is all it publishes.
    let idle_config = dir.path().join("cart-12.toml");
    write_config(
        &idle_config,
        "cart-12",
        "synthetic:cp?seed=4&fps=4&rounds=0",
        &cart.url(),
        &dir.path().join("state-12"),
        "",
    );
    let idle = Daemon::start(&idle_config, &dir.path().join("cart-12.log"), &[]);
    records.wait_for("cart-12's status through the bridge", LONG, |m| {
        m.topic == "ceus/cart-12/status" && is_json(m, |v| v["online"] == true)
    });
    wait_for_save(&hospital_dir, SystemTime::now());
    drop(records);
    hospital.kill();

    // Device cart-07 starts and scores an exam while the hospital broker is gone.
    let src = "synthetic:pdac?seed=3&fps=8&duration=50&injection=2";
    let exam_config = dir.path().join("cart-07.toml");
    write_config(
        &exam_config,
        "cart-07",
        src,
        &cart.url(),
        &dir.path().join("state-07"),
        "[exam]\nauto_start = true",
    );
    let scanning = Daemon::start(&exam_config, &dir.path().join("cart-07.log"), &[]);
    let exam = on_cart
        .wait_for("cart-07's exam", LONG, |m| {
            m.topic == "ceus/cart-07/status"
                && is_json(m, |v| v["exam_running"] == true && v["exam_id"].is_string())
        })
        .json()["exam_id"]
        .as_str()
        .expect("a string exam id")
        .to_string();
    command(
        cart.port,
        "cart-07",
        serde_json::json!({"id": "roi", "command": "set_roi", "roi": lesion_roi(src, 0)}),
    );
    let roi_reply = on_cart.wait_for("the reply to set_roi", LONG, |m| {
        m.topic == "ceus/cart-07/cmd/reply" && is_json(m, |v| v["id"] == "roi")
    });
    assert_eq!(roi_reply.json()["ok"], true, "{}", roi_reply.json());
    let result_topic = format!("ceus/cart-07/exam/{exam}/result");
    let heatmap_topic = format!("ceus/cart-07/exam/{exam}/heatmap");
    let result = on_cart
        .wait_for("the result on the cart", LONG, |m| {
            m.topic == result_topic && !m.payload.is_empty()
        })
        .json();
    let result_id = format!("{exam}-r1");
    assert_eq!(result["result_id"], result_id.as_str(), "{result:#}");
    on_cart.wait_for("the heatmap on the cart", LONG, |m| {
        m.topic == heatmap_topic && !m.payload.is_empty()
    });

    // The hospital broker returns; the bridge reconnects on its own schedule.
    hospital.restart();
    let at_hospital = Subscriber::start(hospital.port, "ceus/#", None);
    let link = Subscriber::start(hospital.port, "$SYS/broker/connection/#", None);
    at_hospital.wait_for("the result at the hospital", LONG, |m| {
        m.topic == result_topic && is_json(m, |v| v["result_id"] == result_id.as_str())
    });
    at_hospital.wait_for("the heatmap at the hospital", LONG, |m| {
        m.topic == heatmap_topic && !m.payload.is_empty()
    });

    // What the hospital broker holds for a newcomer: the result, its heatmap, and every
    // device's status, online.
    let kept = retained(hospital.port, &result_topic);
    assert_eq!(kept.len(), 1, "retained results: {kept:?}");
    assert_eq!(kept[0].json()["result_id"], result_id.as_str());
    let heatmap = retained(hospital.port, &heatmap_topic);
    assert_eq!(heatmap.len(), 1, "retained heatmaps");
    assert!(heatmap[0].payload.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&heatmap[0].payload)),
        result["heatmap"]["sha256"]
            .as_str()
            .expect("the result names its heatmap's hash")
    );
    let statuses = retained(hospital.port, "ceus/+/status");
    for device in ["cart-07", "cart-12"] {
        let status = statuses
            .iter()
            .find(|m| m.topic == format!("ceus/{device}/status"))
            .unwrap_or_else(|| panic!("no retained status of {device} at the hospital"));
        assert_eq!(status.json()["online"], true, "{device}: {}", status.json());
        assert_valid(&schema("Status"), device, &status.json());
    }

    // The hospital's own subscriber, back on its persistent session, gets the result that was
    // computed while it and its broker were away: queued for it, not only the retained copy.
    let records = Subscriber::start(hospital.port, "ceus/#", Some(RECORDS));
    records.wait_for("the result in the hospital's session", LONG, |m| {
        m.topic == result_topic
            && !m.retained
            && is_json(m, |v| v["result_id"] == result_id.as_str())
    });
    // Commands stay on the cart: set_roi and its reply were queued before the result, and
    // the bridge delivers in order, so they would have come first.
    let seen = records.snapshot();
    let commands: Vec<&str> = seen
        .iter()
        .map(|m| m.topic.as_str())
        .filter(|t| t.ends_with("/cmd") || t.ends_with("/cmd/reply"))
        .collect();
    assert!(commands.is_empty(), "bridged to the hospital: {commands:?}");

    // The bridge says it is up, and when the cart disappears the hospital hears of it.
    link.wait_for("the bridge's state 1", LONG, |m| m.payload == b"1");
    assert!(scanning.terminate().success());
    assert!(idle.terminate().success());
    at_hospital.wait_for("cart-07 offline at the hospital", LONG, |m| {
        m.topic == "ceus/cart-07/status" && is_json(m, |v| v["online"] == false)
    });
    let up_at = Instant::now();
    cart.kill();
    link.wait_for("the bridge's state 0 once the cart is gone", LONG, |m| {
        m.at > up_at && m.payload == b"0"
    });
}
